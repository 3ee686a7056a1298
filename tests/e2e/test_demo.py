"""``make demo`` end to end: ``examples/demo.py --once`` starts the example API and the gateway as
real processes on free ports, runs every scenario and must exit 0, leaving no process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"

# One line per scenario result, in order: what a person running `make demo` must see.
EXPECTED = [
    "1. An allowed request with an API key",
    "✓ 200 OK: 3 invoices of user 1, with Cache-Control: no-store",
    "2. No credential",
    '✓ 401 application/problem+json, code authn.failed, WWW-Authenticate: Bearer realm="bastion"',
    "3. A forged token",
    "✓ 401 with the same opaque answer as no credential",
    "4. A valid JWT",
    "✓ 200 OK: the upstream got x-bastion-subject: alice and no Authorization header",
    "5. CORS preflights",
    "https://evil.example: 403, no CORS headers",
    "6. An oversized body",
    "✓ 413 application/problem+json, code transport.body_too_large",
    "7. HTTPS with HSTS",
    "Strict-Transport-Security: max-age=31536000; includeSubDomains",
    "8. An upstream 500 with a stack trace",
    "via Bastion: 502, code upstream.error",
    "9. Version headers of the upstream stripped",
    "upstream sends server: uvicorn, x-powered-by: saas-api; via Bastion neither",
    "10. A burst of 10 requests",
    "refused with 429 (Retry-After: 1)",
    "11. A leaked key revoked with `bastion keys revoke`",
    "✓ 200 before; 401 ",
    # The flaws examples/saas_api.py --vulnerable plants (examples/ground_truth.yaml).
    "12. A BOLA",
    "✓ upstream: 200 with user 3's invoice; via Bastion: 403, code access.forbidden",
    "13. Mass assignment",
    "✓ upstream: Dave (user 4) is now an administrator; via Bastion: 400, code openapi.invalid_request",
    "14. Excessive data exposure",
    "✓ upstream: 200 with ssn, card_number, password_hash; via Bastion: 200 without them",
    "15. An administrative operation without a role check",
    "✓ upstream: 204, user 9 deleted by Bob; via Bastion: 403, code access.forbidden",
    "16. An OAuth access token by client credentials",
    "✓ token for demo-service (300 s, ES256, typ at+jwt); 200 through the gateway; revoked at /revoke; the same call: 401",
    "no API key secret or token in the file",
    "demo OK: 16 scenarios behaved as expected",
]


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_demo(
    workdir: Path, ports: list[int], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run the demo in its own process group; kill the whole group if anything is left."""
    http, https, upstream = ports
    argv = [sys.executable, str(DEMO), "--once", "--workdir", str(workdir)]
    argv += ["--http-port", str(http), "--https-port", str(https), "--upstream-port", str(upstream)]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the demo did not finish in {timeout} s:\n{stdout}\n{stderr}")
    finally:
        # The demo stops its children itself; this only matters when it failed to.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


@pytest.fixture
def ports() -> Iterator[list[int]]:
    chosen = free_ports(3)
    yield chosen
    assert not any(listening(p) for p in chosen), "a demo process is still listening"


def test_demo_runs_every_scenario_and_stops_its_processes(tmp_path: Path, ports: list[int]) -> None:
    done = run_demo(tmp_path, ports)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    position = 0
    for line in EXPECTED:
        found = out.find(line, position)
        assert found >= 0, f"{line!r} missing (or out of order) in:\n{out}"
        position = found + len(line)
    assert not any(listening(p) for p in ports)  # children stopped before the demo exited

    demo = tmp_path / ".demo"
    for secret_file in ("pepper", "key.pem"):
        assert stat.S_IMODE((demo / secret_file).stat().st_mode) == 0o600, secret_file
    records = [orjson.loads(x) for x in (demo / "audit.jsonl").read_bytes().splitlines()]
    statuses = [r["http"]["response"]["status_code"] for r in records]
    for status in (200, 400, 401, 403, 413, 429, 502):
        assert status in statuses
    # The printed key is the real one: its secret is on stdout, never in the audit log.
    key = next(w for w in out.split() if w.startswith("KEY=bsk_")).removeprefix("KEY=")
    assert key.split("_", 2)[2] not in (demo / "audit.jsonl").read_text()


def test_demo_refuses_a_taken_port_with_one_clear_line(tmp_path: Path, ports: list[int]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports[0]))
        busy.listen()
        done = run_demo(tmp_path, ports, timeout=30)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [f"demo failed: port {ports[0]} on 127.0.0.1 is in use (pass --http-port)"]
    assert not (tmp_path / ".demo").exists()  # nothing generated, nothing started
