"""The real ``bastion`` executable, run as a user runs it: exit codes, one line per error and
no traceback, keys shown once and never listed, and a running gateway that stops accepting a
key revoked from another process and flushes its audit log on SIGTERM."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from bastion.core.apikeys import hash_secret
from tests.support import cluster
from tests.support.cluster import Node

pytestmark = pytest.mark.e2e

PEPPER = "cli-pepper-" + "z" * 32
ENV = {
    **{k: v for k, v in os.environ.items() if k != "BASTION_DEBUG"},
    "BASTION_TEST_PEPPER": PEPPER,
    "COLUMNS": "200",
    "NO_COLOR": "1",
}


def bastion(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return cluster.bastion(cwd, *args, timeout=timeout, env=ENV)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout
    assert 'File "' not in result.stderr + result.stdout


VALID = """\
store: sqlite:///state.db
listeners:
  - bind: 0.0.0.0:8080          # no TLS, reachable from other hosts: a warning
api_keys:
  pepper: ${BASTION_TEST_PEPPER}
routes:
  - name: api
    path_prefix: /api
    upstream: http://127.0.0.1:9
    authn: {methods: [api_key]}  # and no rate limit: a warning
"""

INVALID = """\
listeners:
  - bind: nowhere
routes:
  - name: a
    upstream: http://127.0.0.1:1
    ratelimit:
      limits: [{rate: -1}]
    bogus: 1
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "bastion.yaml").write_text(VALID)
    return tmp_path


# -- config check ---------------------------------------------------------------------------------
def test_config_check_valid_file_warns_and_exits_0(workdir: Path) -> None:
    result = bastion(workdir, "config", "check", "-c", "bastion.yaml")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    warnings = lines(result.stderr)
    assert any(w.startswith("warning listeners[0]:") and "no TLS" in w for w in warnings)
    assert "warning routes[0].ratelimit: route 'api' has no rate limit" in warnings
    assert_no_traceback(result)


def test_config_check_strict_with_warnings_exits_1(workdir: Path) -> None:
    result = bastion(workdir, "config", "check", "-c", "bastion.yaml", "--strict")
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert_no_traceback(result)


def test_config_check_invalid_file_one_line_per_problem(workdir: Path) -> None:
    (workdir / "bad.yaml").write_text(INVALID)
    result = bastion(workdir, "config", "check", "-c", "bad.yaml")
    assert result.returncode == 2
    assert sorted(lines(result.stderr)) == [
        "config error: listeners[0].bind: bind must be host:port with a port between 0 and 65535",
        "config error: routes[0].bogus: unknown key (not part of the configuration schema)",
        "config error: routes[0].ratelimit.limits[0].rate: Input should be greater than 0",
    ]
    assert_no_traceback(result)


def test_config_check_yaml_syntax_error_names_the_line(workdir: Path) -> None:
    (workdir / "broken.yaml").write_text("routes:\n  - name: [unclosed\n")
    result = bastion(workdir, "config", "check", "-c", "broken.yaml")
    assert result.returncode == 2
    [line] = lines(result.stderr)
    assert re.match(r"config error: broken\.yaml line \d+, column \d+: ", line), line
    assert_no_traceback(result)


def test_config_check_missing_file_exits_2(workdir: Path) -> None:
    result = bastion(workdir, "config", "check", "-c", "missing.yaml")
    assert result.returncode == 2
    [line] = lines(result.stderr)
    assert "missing.yaml" in line
    assert_no_traceback(result)


# VALID's route with a rate limit and the document api.yaml.
SPEC_ROUTE = (
    VALID + "    ratelimit: {limits: [{rate: 10, per: 1s}]}\n    openapi: {spec: api.yaml}\n"
)

BROKEN_SPEC = """\
openapi: 3.1.0
info: {title: t, version: '1'}
paths:
  /users/{id}:
    get:
      security: [{nowhere: []}]
      responses: {'200': {description: ok}}
"""

WEAK_SPEC = """\
openapi: 3.1.0
info: {title: t, version: '1'}
components:
  securitySchemes:
    basic: {type: http, scheme: basic}
paths:
  /users/{id}:
    parameters: [{name: id, in: path, required: true, schema: {type: string}}]
    get:
      security: [{basic: []}]
      responses: {'200': {description: ok}}
"""


def test_an_openapi_document_with_errors_is_refused_with_its_location(workdir: Path) -> None:
    (workdir / "spec.yaml").write_text(SPEC_ROUTE)
    (workdir / "api.yaml").write_text(BROKEN_SPEC)
    for args in (("config", "check", "-c", "spec.yaml"), ("gateway", "-c", "spec.yaml")):
        result = bastion(workdir, *args, timeout=30)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        errors = lines(result.stderr)
        assert errors, args
        assert all(line.startswith("config error: ") for line in errors), errors
        assert any(
            "routes[0].openapi.spec" in line
            and "'nowhere' is not in components.securitySchemes" in line
            for line in errors
        ), errors
        assert any("path parameter" in line and "id" in line for line in errors), errors
        assert_no_traceback(result)


def test_config_check_prints_what_a_reviewer_would_flag_in_the_document(workdir: Path) -> None:
    (workdir / "spec.yaml").write_text(SPEC_ROUTE)
    (workdir / "api.yaml").write_text(WEAK_SPEC)
    result = bastion(workdir, "config", "check", "-c", "spec.yaml")
    assert result.returncode == 0, result.stderr
    warnings = [w for w in lines(result.stderr) if "routes[0].openapi.spec" in w]
    assert any("looks like an object id" in w and "x-bastion-owner" in w for w in warnings)
    assert any("no credential Bastion verifies presents 'basic'" in w for w in warnings)
    strict = bastion(workdir, "config", "check", "-c", "spec.yaml", "--strict")
    assert strict.returncode == 1
    assert_no_traceback(result)


@pytest.mark.parametrize(
    "args",
    [("frobnicate",), ("config", "check", "-c", "bastion.yaml", "--bogus"), ("keys", "list")],
    ids=["unknown-command", "unknown-option", "missing-required-option"],
)
def test_usage_errors_exit_2_with_one_line(workdir: Path, args: tuple[str, ...]) -> None:
    result = bastion(workdir, *args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines(result.stderr)) == 1, result.stderr
    assert_no_traceback(result)


# -- keys -----------------------------------------------------------------------------------------
def create_key(workdir: Path, client: str = "acme") -> dict[str, Any]:
    result = bastion(workdir, "keys", "create", "-c", "bastion.yaml", "--client", client,
                     "--scope", "read", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    created: dict[str, Any] = orjson.loads(result.stdout)
    assert result.stdout.count(created["key"]) == 1  # printed once, and only on stdout
    assert created["key"] not in result.stderr
    return created


def list_keys(workdir: Path) -> tuple[list[dict[str, Any]], str]:
    result = bastion(workdir, "keys", "list", "-c", "bastion.yaml", "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = orjson.loads(result.stdout)
    return rows, result.stdout


def test_key_created_once_and_never_listed(workdir: Path) -> None:
    created = create_key(workdir)
    full = created["key"]
    key_id, secret = full.removeprefix("bsk_").split("_", 1)
    assert created["id"] == key_id
    assert created["client_id"] == "acme"
    assert created["scopes"] == ["read"]
    stored_hash = hash_secret(PEPPER.encode(), secret)
    rows, text = list_keys(workdir)
    assert [r["id"] for r in rows] == [key_id]
    assert rows[0]["state"] == "active"
    for leak in (full, secret, stored_hash):
        assert leak not in text
    table = bastion(workdir, "keys", "list", "-c", "bastion.yaml")
    assert table.returncode == 0
    for leak in (full, secret, stored_hash):
        assert leak not in table.stdout + table.stderr
    # At rest, only the HMAC is stored.
    db = (workdir / "state.db").read_bytes() + (
        (workdir / "state.db-wal").read_bytes() if (workdir / "state.db-wal").exists() else b""
    )
    assert secret.encode() not in db


def test_revoke_then_list_shows_revoked(workdir: Path) -> None:
    keep = create_key(workdir, "keep")
    gone = create_key(workdir, "gone")
    result = bastion(workdir, "keys", "revoke", "-c", "bastion.yaml", gone["id"])
    assert result.returncode == 0, result.stderr
    rows, _ = list_keys(workdir)
    states = {r["id"]: r["state"] for r in rows}
    assert states == {keep["id"]: "active", gone["id"]: "revoked"}
    assert next(r for r in rows if r["id"] == gone["id"])["revoked_at"] is not None
    table = bastion(workdir, "keys", "list", "-c", "bastion.yaml")
    assert "revoked" in table.stdout


def test_revoking_an_unknown_key_exits_1_with_one_line(workdir: Path) -> None:
    create_key(workdir)
    result = bastion(workdir, "keys", "revoke", "-c", "bastion.yaml", "nosuchkey0000000")
    assert result.returncode == 1
    [line] = lines(result.stderr)
    assert "nosuchkey0000000" in line
    assert_no_traceback(result)


# -- a running gateway ------------------------------------------------------------------------------
class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def get(port: int, key: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/x", headers={"Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_running_gateway_sees_revocation_and_flushes_audit_on_sigterm(
    workdir: Path, upstream: int
) -> None:
    (workdir / "gateway.yaml").write_text(
        VALID.replace("0.0.0.0:8080", "127.0.0.1:0").replace(
            "http://127.0.0.1:9", f"http://127.0.0.1:{upstream}"
        )
        + "    strip_prefix: true\n"
        + "    ratelimit: {limits: [{rate: 1000, per: 1s}]}\n"
        + "change_poll_interval: 0.2\n"
        + "audit:\n  sinks: [{type: file, path: audit.jsonl}]\n  flush_interval: 0.05\n"
    )
    (workdir / "bastion.yaml").write_text((workdir / "gateway.yaml").read_text())
    key = create_key(workdir)
    other = create_key(workdir, "other")
    gw = Node(workdir, Path("gateway.yaml"), env=ENV)
    try:
        port = gw.port()
        made = 0
        for k in (key, other):
            assert get(port, k["key"]) == 200
            made += 1
        revoke = bastion(workdir, "keys", "revoke", "-c", "bastion.yaml", key["id"])
        assert revoke.returncode == 0, revoke.stderr
        revoked_at = time.monotonic()
        while True:
            status = get(port, key["key"])
            made += 1
            elapsed = time.monotonic() - revoked_at
            if status == 401:
                break
            assert status == 200
            assert elapsed < 2.0, "the gateway still accepts the revoked key after 2 s"
            time.sleep(0.05)
        assert get(port, other["key"]) == 200  # only the revoked key is refused
        made += 1
        code = gw.stop()
    finally:
        gw.close()
    assert code == 0, "".join(gw.log)
    assert "Traceback" not in "".join(gw.log)
    records = [orjson.loads(line) for line in (workdir / "audit.jsonl").read_bytes().splitlines()]
    assert len(records) == made
    text = (workdir / "audit.jsonl").read_text()
    assert key["key"] not in text
    assert other["key"] not in text
