"""Authorization-server benchmark: Bastion's token endpoint against node ``oidc-provider``.

Starts, on loopback, in one run:

* **bastion**: ``bastion auth serve`` (one process, one event loop), SQLite store, the local key
  store (ES256 signing keys sealed under a KEK made for the run), one client registered with
  ``bastion auth clients create`` (``client_secret_basic``, scope ``read``); the per-IP
  throttle of ``/token`` set far above what the run reaches;
* **oidc-provider**: the pinned version of ``bench/oidc/package.json``, installed here with
  ``npm install`` into ``bench/oidc/node_modules`` on first use; ``bench/oidc/server.mjs``:
  in-memory adapter, ES256 JWT access tokens (resource indicators), ``client_secret_basic``,
  one node process.

Then, per round and interleaved, ``wrk -t1 -cN`` POSTs (``bench/post.lua`` with a form body):

* **token**: ``grant_type=client_credentials&scope=read`` with HTTP Basic: tokens/s, p50, p99;
* **introspect**: RFC 7662 introspection of one valid token: ours on its JWT access token
  (the verified-token cache is warm after the first request), theirs on an opaque token
  (oidc-provider refuses to introspect JWT access tokens).

The server's CPU per request is read from ``/proc`` around each run. The table shows medians
over the rounds and the ratio bastion / oidc-provider; the goal is a token ratio of at least 1.0.

    .venv/bin/python bench/authserver.py [--duration 10] [--rounds 3] [--connections 32]
                                         [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from bench.processes import ChildFailed, Children, free_port, session_stat, wait_for_port
from bench.wrk import WrkFailed, WrkResult, run_wrk

REPO = Path(__file__).resolve().parent.parent
OIDC_DIR = REPO / "bench" / "oidc"
TOKEN_FORM = "grant_type=client_credentials&scope=read"  # noqa: S105 - not a secret


@dataclass
class Server:
    """One side of the comparison: where it listens and how to authenticate to it."""

    name: str
    url: str
    session: int
    token_auth: str  # Authorization header for /token
    introspect_path: str
    introspect_auth: str
    introspect_token: str = ""
    samples: dict[str, list[tuple[WrkResult, float]]] = field(default_factory=dict)


def basic(client: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client}:{secret}".encode()).decode()


def post(url: str, form: str, authorization: str) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=form.encode(),
        headers={
            "Authorization": authorization,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        doc: dict[str, Any] = json.loads(r.read())
        return doc


def run_wrk_form(
    url: str, path: str, form: str, authorization: str, *, connections: int, duration: float
) -> WrkResult:
    """wrk POSTing ``form`` to ``path`` (bench/wrk.py's runner and ``post.lua``, in their form
    mode); the credential and form go through the environment."""
    return run_wrk(
        url,
        connections=connections,
        duration_s=duration,
        authorization=authorization,
        path=path,
        form=form,
        timeout_s=5.0,
    )


def measure(server: Server, kind: str, *, connections: int, duration: float) -> None:
    """One wrk run of ``kind`` (token or introspect); records the result and CPU/request."""
    if kind == "token":
        path, form, auth = "/token", TOKEN_FORM, server.token_auth
    else:
        path, form, auth = (
            server.introspect_path,
            f"token={server.introspect_token}",
            server.introspect_auth,
        )
    before = session_stat(server.session).cpu_seconds
    result = run_wrk_form(server.url, path, form, auth, connections=connections, duration=duration)
    cpu = session_stat(server.session).cpu_seconds - before
    if result.error_count:
        raise WrkFailed(f"{server.name} {kind}: {result.errors} (non-2xx or socket errors)")
    per_request_us = cpu / result.requests * 1e6 if result.requests else 0.0
    server.samples.setdefault(kind, []).append((result, per_request_us))


# -- starting the two servers ---------------------------------------------------------------------
def bastion_cli() -> list[str]:
    script = Path(sys.executable).with_name("bastion")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from bastion.cli.main import main; main(sys.argv[1:])",
    ]


def start_bastion(children: Children, work: Path) -> Server:
    port = free_port()
    for name, size in (("pepper", 48), ("kek", 32)):
        path = work / name
        path.write_text(secrets.token_urlsafe(size))
        path.chmod(0o600)
    config = work / "auth.yaml"
    config.write_text(
        f"""store: sqlite:///{work}/auth.db
auth:
  issuer: http://127.0.0.1:{port}
  bind: 127.0.0.1:{port}
  client_secret_pepper: file:{work}/pepper
  default_audience: https://api.example
  token_rate_limit: {{rate: 10000000, per: 1s, burst: 10000000}}
  keys:
    local:
      kek: file:{work}/kek
"""
    )
    created = subprocess.run(
        [*bastion_cli(), "auth", "clients", "create", "-c", str(config), "--id", "bench",
         "--scope", "read", "--introspect", "--json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    secret = json.loads(created.stdout)["client_secret"]
    log = work / "bastion.log"
    proc = children.start([*bastion_cli(), "auth", "serve", "-c", str(config)], log=log)
    wait_for_port(port, proc, log, timeout=30)
    auth = basic("bench", secret)
    url = f"http://127.0.0.1:{port}"
    token = post(url + "/token", TOKEN_FORM, auth)["access_token"]
    return Server("bastion", url, proc.pid, auth, "/introspect", auth, token)


def ensure_oidc_provider(console: Console) -> None:
    """``npm install`` the pinned oidc-provider into bench/oidc/node_modules (git-ignored)."""
    if (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise ChildFailed("npm is not installed (Debian: apt-get install npm)")
    console.print("installing oidc-provider with npm (bench/oidc/node_modules) …")
    subprocess.run(
        # No lockfile: the direct dependency is pinned in package.json, and a lockfile would
        # only be a second, untracked copy of the registry's answers.
        [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"],
        cwd=OIDC_DIR,
        check=True,
        timeout=600,
    )


def oidc_provider_version() -> str:
    try:
        doc = json.loads((OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").read_text())
        return str(doc["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def start_oidc_provider(children: Children, work: Path) -> Server:
    node = shutil.which("node")
    if node is None:
        raise ChildFailed("node is not installed (Debian: apt-get install nodejs)")
    port = free_port()
    secret = secrets.token_urlsafe(32)
    log = work / "oidc-provider.log"
    env = {**os.environ, "PORT": str(port), "CLIENT_SECRET": secret, "NODE_ENV": "production"}
    proc = children.start([node, str(OIDC_DIR / "server.mjs")], log=log, env=env, cwd=OIDC_DIR)
    wait_for_port(port, proc, log, timeout=30)
    url = f"http://127.0.0.1:{port}"
    auth = basic("bench", secret)
    opaque_auth = basic("bench-opaque", secret)
    post(url + "/token", TOKEN_FORM, auth)  # the JWT path answers
    opaque = post(url + "/token", TOKEN_FORM, opaque_auth)["access_token"]
    return Server("oidc-provider", url, proc.pid, auth, "/token/introspection", opaque_auth, opaque)


# -- report ---------------------------------------------------------------------------------------
def summary(server: Server, kind: str) -> dict[str, float]:
    runs = server.samples.get(kind, [])
    if not runs:
        return {}
    return {
        "rps": statistics.median(r.rps for r, _ in runs),
        "p50_ms": statistics.median(r.p50_ms for r, _ in runs),
        "p99_ms": statistics.median(r.p99_ms for r, _ in runs),
        "cpu_us_per_request": statistics.median(c for _, c in runs),
    }


def report(servers: list[Server], console: Console) -> dict[str, Any]:
    ours, theirs = servers
    table = Table(title="Authorization servers, one process each (medians)")
    for col in ("endpoint", "server", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "ratio"):
        table.add_column(col, justify="right" if col not in ("endpoint", "server") else "left")
    results: dict[str, Any] = {}
    for kind in ("token", "introspect"):
        a, b = summary(ours, kind), summary(theirs, kind)
        if not a or not b:
            continue
        ratio = a["rps"] / b["rps"] if b["rps"] else 0.0
        results[kind] = {"bastion": a, "oidc-provider": b, "ratio": ratio}
        for name, s in (("bastion", a), ("oidc-provider", b)):
            table.add_row(
                kind if name == "bastion" else "",
                name,
                f"{s['rps']:.0f}",
                f"{s['p50_ms']:.2f}",
                f"{s['p99_ms']:.2f}",
                f"{s['cpu_us_per_request']:.0f}",
                f"{ratio:.2f}" if name == "bastion" else "1.00",
            )
    console.print(table)
    token = results.get("token")
    if token:
        ok = token["ratio"] >= 1.0
        console.print(
            f"goal: client_credentials tokens/s >= 1.0x oidc-provider with one worker: "
            f"{token['ratio']:.2f}x {'met' if ok else 'NOT met'}",
            style="green" if ok else "red",
        )
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per endpoint")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--only", default="token,introspect", help="token, introspect or both")
    p.add_argument("--json", type=Path, default=None, help="write the results here too")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    kinds = [k for k in ("token", "introspect") if k in args.only.split(",")]
    try:
        ensure_oidc_provider(console)
    except (ChildFailed, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        console.print(f"cannot install oidc-provider: {exc}", style="red")
        return 1
    with tempfile.TemporaryDirectory(prefix="bastion-bench-auth-") as tmp, Children() as children:
        work = Path(tmp)
        try:
            servers = [start_bastion(children, work), start_oidc_provider(children, work)]
        except (ChildFailed, OSError, subprocess.CalledProcessError, KeyError) as exc:
            console.print(f"a server did not start: {exc}", style="red")
            return 1
        try:
            for server in servers:  # warm-up: caches, JIT, connection set-up
                for kind in kinds:
                    run_wrk_form(
                        server.url,
                        "/token" if kind == "token" else server.introspect_path,
                        TOKEN_FORM if kind == "token" else f"token={server.introspect_token}",
                        server.token_auth if kind == "token" else server.introspect_auth,
                        connections=args.connections,
                        duration=2,
                    )
            for round_no in range(args.rounds):
                order = servers if round_no % 2 == 0 else list(reversed(servers))
                for kind in kinds:
                    for server in order:
                        measure(server, kind, connections=args.connections, duration=args.duration)
        except WrkFailed as exc:
            console.print(f"wrk failed: {exc}", style="red")
            return 1
        results = report(servers, console)
    meta = {
        "oidc_provider": oidc_provider_version(),
        "node": subprocess.run(
            [shutil.which("node") or "node", "--version"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "connections": args.connections,
    }
    console.print(
        f"oidc-provider {meta['oidc_provider']} on node {meta['node']}; Python {meta['python']}; "
        f"{meta['cpus']} CPUs; wrk -t1 -c{args.connections}, {args.rounds} x {args.duration:.0f} s",
        style="dim",
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
