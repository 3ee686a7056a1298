"""``bastion auth serve`` and ``bastion auth clients …`` as a user runs them: real processes, a
SQLite file, HTTP on loopback."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def bastion() -> list[str]:
    script = Path(sys.executable).with_name("bastion")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from bastion.cli.main import main; main(sys.argv[1:])",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, int]:
    port = free_port()
    (tmp_path / "pepper").write_text(secrets.token_urlsafe(48))
    (tmp_path / "kek").write_text(secrets.token_urlsafe(32))
    config = tmp_path / "auth.yaml"
    config.write_text(
        f"""
store: sqlite:///{tmp_path}/auth.db
auth:
  issuer: http://127.0.0.1:{port}
  bind: 127.0.0.1:{port}
  client_secret_pepper: file:{tmp_path}/pepper
  default_audience: https://api.example
  client_cache_ttl: 1s
  keys:
    local:
      kek: file:{tmp_path}/kek
"""
    )
    return config, port


def cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*bastion(), *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def post(port: int, path: str, form: str, client: tuple[str, str]) -> tuple[int, Any]:
    auth = base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=form.encode(),
        headers={
            "Authorization": f"Basic {auth}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "bastion auth serve exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail("bastion auth serve did not listen")


def test_serve_clients_tokens_rotation_and_revocation(setup: tuple[Path, int]) -> None:
    config, port = setup
    created = json.loads(
        cli(
            config,
            *("auth", "clients", "create", "--id", "svc", "--scope", "read", "--introspect"),
            "--json",
        ).stdout
    )
    secret = created["client_secret"]
    assert secret.startswith("bcs_")
    listed = cli(config, "auth", "clients", "list", "--json").stdout
    assert secret not in listed
    assert json.loads(listed)[0]["id"] == "svc"
    proc = subprocess.Popen(
        [*bastion(), "auth", "serve", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_listening(port, proc)
        status, doc = post(port, "/token", "grant_type=client_credentials", ("svc", secret))
        assert status == 200
        token = doc["access_token"]
        status, seen = post(port, "/introspect", f"token={token}", ("svc", secret))
        assert (status, seen["active"], seen["sub"]) == (200, True, "svc")
        # Rotation with an hour of overlap: both secrets work (after the cache's few seconds).
        rotated = json.loads(
            cli(
                config, "auth", "clients", "rotate-secret", "svc", "--overlap", "1h", "--json"
            ).stdout
        )
        new = rotated["client_secret"]
        deadline = time.monotonic() + 10
        while post(port, "/token", "grant_type=client_credentials", ("svc", new))[0] != 200:
            assert time.monotonic() < deadline, "the new secret was never accepted"
            time.sleep(0.5)
        assert post(port, "/token", "grant_type=client_credentials", ("svc", secret))[0] == 200
        # Revocation: the token is dead at once.
        assert post(port, "/revoke", f"token={token}", ("svc", new))[0] == 200
        status, seen = post(port, "/introspect", f"token={token}", ("svc", new))
        assert seen == {"active": False}
        # Deleting the client: refused within the cache lifetime.
        cli(config, "auth", "clients", "delete", "svc")
        deadline = time.monotonic() + 10
        while post(port, "/token", "grant_type=client_credentials", ("svc", new))[0] != 401:
            assert time.monotonic() < deadline, "a deleted client kept getting tokens"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"Traceback" not in stderr


def test_cli_errors_are_one_line(setup: tuple[Path, int], tmp_path: Path) -> None:
    config, _ = setup
    bad = cli(
        config,
        "auth",
        "clients",
        "create",
        "--id",
        "web",
        "--grant",
        "authorization_code",
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: authorization_code needs at least one redirect URI"
    ]
    bad = cli(config, "auth", "clients", "create", "--grant", "password", check=False)
    assert bad.returncode == 2
    assert "not supported" in bad.stderr
    bad = cli(
        config,
        "auth",
        "clients",
        "create",
        "--id",
        "w",
        "--grant",
        "authorization_code",
        "--redirect-uri",
        "http://evil.example/cb",
        check=False,
    )
    assert "https" in bad.stderr
    missing = cli(config, "auth", "clients", "delete", "ghost", check=False)
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
    no_auth = tmp_path / "plain.yaml"
    no_auth.write_text("store: memory://\n")
    done = cli(no_auth, "auth", "clients", "list", check=False)
    assert done.returncode == 2
    assert "no `auth` section" in done.stderr


def test_up_with_two_workers_validates_its_tokens_everywhere(tmp_path: Path) -> None:
    """`bastion up --workers 2`: worker 0 runs the authorization server; both workers accept its
    tokens from the first request on, and refuse a revoked one."""
    auth_port, http_port, upstream_port = free_port(), free_port(), free_port()
    (tmp_path / "pepper").write_text(secrets.token_urlsafe(48))
    (tmp_path / "kek").write_text(secrets.token_urlsafe(32))
    config = tmp_path / "up.yaml"
    config.write_text(
        f"""
store: sqlite:///{tmp_path}/up.db
change_poll_interval: 200ms
listeners:
  - bind: 127.0.0.1:{http_port}
routes:
  - name: echo
    path_prefix: /api/echo
    upstream: http://127.0.0.1:{upstream_port}
    authn:
      methods: [jwt]
      audience: https://api.example
auth:
  issuer: http://127.0.0.1:{auth_port}
  bind: 127.0.0.1:{auth_port}
  client_secret_pepper: file:{tmp_path}/pepper
  default_audience: https://api.example
  keys:
    local:
      kek: file:{tmp_path}/kek
"""
    )
    created = cli(config, "auth", "clients", "create", "--id", "svc", "--scope", "read", "--json")
    secret = json.loads(created.stdout)["client_secret"]
    api = Path(__file__).resolve().parents[2] / "examples" / "saas_api.py"
    upstream = subprocess.Popen(
        [sys.executable, str(api), "--port", str(upstream_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    up = subprocess.Popen(
        [*bastion(), "up", "-c", str(config), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_listening(upstream_port, upstream)
        wait_listening(auth_port, up)
        wait_listening(http_port, up)
        status, doc = post(auth_port, "/token", "grant_type=client_credentials", ("svc", secret))
        assert status == 200
        token = doc["access_token"]

        def call() -> int:
            req = urllib.request.Request(
                f"http://127.0.0.1:{http_port}/api/echo",
                headers={"Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        # New connections land on either worker (SO_REUSEPORT): all of them accept the token.
        assert [call() for _ in range(12)] == [200] * 12
        assert post(auth_port, "/revoke", f"token={token}", ("svc", secret))[0] == 200
        deadline = time.monotonic() + 5
        while any(call() != 401 for _ in range(6)):
            assert time.monotonic() < deadline, "a worker kept accepting a revoked token"
            time.sleep(0.2)
    finally:
        for proc in (up, upstream):
            os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = up.communicate(timeout=20)
        upstream.wait(10)
    assert b"Traceback" not in stderr
