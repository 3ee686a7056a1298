"""``make demo``: run Bastion in front of the example API and show, live, what it blocks.

It generates everything under ``<workdir>/.demo/`` (wiped at each start): a self-signed
certificate, a random API-key pepper, an ES256 key whose JWKS the gateway trusts, then starts
``examples/saas_api.py --vulnerable`` and ``bastion up -c examples/bastion.yaml`` (the gateway and
the authorization server) as child processes (logs in ``.demo/*.log``), creates API keys with
``bastion keys create`` and an OAuth client with ``bastion auth clients create``, and runs every
scenario of ``examples/demo_scenarios.py`` with the equivalent curl command and the real answer
(the last four attack the upstream's planted flaws directly, then through the gateway). Then it prints the last audit records and
either exits (``--once``) or keeps running until Ctrl-C so you can try the commands.

Exit code 0 when every scenario behaved as expected; otherwise 1 and one line saying which
request got what. Children are stopped on every exit path (Ctrl-C, SIGTERM, failure).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from joserfc import jwt
from joserfc.jwk import ECKey
from rich import box
from rich.console import Console
from rich.table import Table

if __package__ in (None, ""):  # run as a script: make `examples.*` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.demo_scenarios import AUTH, SCENARIOS, Answer, DemoFailure, expect

from bastion.crypto.certs import write_self_signed

EXAMPLES = Path(__file__).resolve().parent
CONFIG = EXAMPLES / "bastion.yaml"
DEFAULT_PORTS = {"http": 8080, "https": 8443, "upstream": 9001, "auth": 9000}
ISSUER, AUDIENCE = "https://idp.example", "https://api.example"
KID = "demo-es256-1"
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the demo's HTTP and HTTPS listeners and of the example upstream."""

    http: int
    https: int
    upstream: int
    auth: int


class Demo:
    """The demo's state: files, child processes, credentials and the request helpers."""

    def __init__(self, workdir: Path, ports: Ports) -> None:
        self.workdir = workdir
        self.ports = ports
        self.dir = workdir / ".demo"
        self.config = CONFIG
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.gw_requests = 0
        self.http = f"http://127.0.0.1:{ports.http}"
        self.https = f"https://127.0.0.1:{ports.https}"
        self.direct = f"http://127.0.0.1:{ports.upstream}"
        self.auth = f"http://127.0.0.1:{ports.auth}"
        self.secrets: dict[str, str] = {}
        self.leaked_id = ""
        self.done = False
        self.ctx = ssl.create_default_context()

    # -- set-up ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Fresh ``.demo/``: certificate, pepper (0600), JWKS, tokens and, if needed, config."""
        for name, port in vars(self.ports).items():
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise DemoFailure(f"port {port} on 127.0.0.1 is in use (pass --{name}-port)")
        shutil.rmtree(self.dir, ignore_errors=True)
        cert, _ = write_self_signed(self.dir, ["localhost"], ["127.0.0.1"], days=7)
        self.ctx = ssl.create_default_context(cafile=str(cert))
        # Server-side secrets, 0600: the API-key pepper, the OAuth client-secret pepper, the
        # key-encryption key that seals the signing keys and the key that seals TOTP secrets.
        for name in ("pepper", "client_pepper", "kek", "totp_key"):
            fd = os.open(self.dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32 if name == "kek" else 48))
        key = ECKey.generate_key("P-256", parameters={"kid": KID})  # kept in memory only
        jwks = {"keys": [key.as_dict(private=False)]}
        (self.dir / "jwks.json").write_bytes(orjson.dumps(jwks, option=orjson.OPT_INDENT_2))
        attacker = ECKey.generate_key("P-256", parameters={"kid": KID})  # same kid, other key
        self.secrets["TOKEN"] = sign(key, "alice")
        self.secrets["FORGED"] = sign(attacker, "admin")
        self.secrets["BOB"] = sign(key, "2", scope="read write")  # user 2 of the example API
        if vars(self.ports) != DEFAULT_PORTS or self.workdir != EXAMPLES.parent:
            self.config = self.dir / "bastion.yaml"
            self.config.write_text(yaml.safe_dump(config_for(self.ports), sort_keys=False))

    def start(self) -> None:
        """Start the example upstream and the gateway; wait until both accept connections."""
        upstream = [sys.executable, str(EXAMPLES / "saas_api.py"), "--vulnerable", "--port"]
        self.spawn("upstream", [*upstream, str(self.ports.upstream)], self.ports.upstream)
        self.spawn("gateway", [*bastion_cli(), "up", "-c", str(self.config)], self.ports.http)
        wait_for_port(self.procs[-1], self.ports.https, self.dir)
        wait_for_port(self.procs[-1], self.ports.auth, self.dir)

    def spawn(self, name: str, argv: list[str], port: int) -> None:
        """Start a child (output to ``.demo/NAME.log``) and wait for its port."""
        log = (self.dir / f"{name}.log").open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts, no shell
            argv, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        self.procs.append((name, proc))
        wait_for_port((name, proc), port, self.dir)

    def stop(self) -> None:
        """Stop the children, gateway first (it flushes the audit log on SIGTERM)."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def cli(self, *args: str) -> str:
        """Run ``bastion ARGS -c CONFIG`` in the workdir; its stdout, or DemoFailure."""
        argv = [*bastion_cli(), *args, "-c", str(self.config)]
        done = subprocess.run(  # noqa: S603 - our own CLI, no shell
            argv, cwd=self.workdir, capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DemoFailure(f"`bastion {' '.join(args[:2])}` exited {done.returncode}: {last}")
        return done.stdout + done.stderr

    def create_client(self, client: str) -> str:
        """A new OAuth client (client credentials, scope ``read``) made by ``bastion auth
        clients create``; returns its secret."""
        doc = orjson.loads(
            self.cli(
                "auth",
                "clients",
                "create",
                "--id",
                client,
                "--scope",
                "read",
                "--audience",
                AUDIENCE,
                "--json",
            )
        )
        return str(doc["client_secret"])

    def create_key(self, client: str) -> str:
        """A new API key (scope ``read``) for ``client``, made by ``bastion keys create``."""
        doc = orjson.loads(
            self.cli("keys", "create", "--client", client, "--scope", "read", "--json")
        )
        return str(doc["key"])

    @property
    def cli_shown(self) -> str:
        """How the printed commands call ``bastion`` (from the workdir)."""
        cli = Path(bastion_cli()[0])
        return os.path.relpath(cli, self.workdir) if cli.is_relative_to(self.workdir) else "bastion"

    @property
    def config_arg(self) -> str:
        """The config path as the printed commands give it (relative to the workdir)."""
        try:
            return str(self.config.relative_to(self.workdir))
        except ValueError:
            return str(self.config)

    # -- requests -------------------------------------------------------------------------
    def call(
        self,
        method: str,
        url: str,
        *,
        auth: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        """One request on a new connection (like curl); ``auth`` names a secret (KEY, TOKEN…)."""
        scheme, _, rest = url.partition("://")
        hostport, _, path = rest.partition("/")
        host, port = hostport.rsplit(":", 1)
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, int(port), context=self.ctx, timeout=10)
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
        h = dict(headers or {})
        if auth is not None:
            h["Authorization"] = f"Bearer {self.secrets[auth]}"
        if int(port) in (self.ports.http, self.ports.https):
            self.gw_requests += 1
        try:
            # The gateway may answer (413) before reading a whole body: then read its answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.request(method, "/" + path, body=body, headers=h)
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        except OSError as exc:
            raise DemoFailure(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()


def sign(key: ECKey, subject: str, scope: str = "read") -> str:
    """An ES256 access token from the demo issuer for ``subject``, valid for one hour."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "client_id": "demo-web",
    }
    claims |= {"scope": scope, "iat": now, "exp": now + 3600, "jti": secrets.token_hex(8)}
    return jwt.encode({"alg": "ES256", "kid": KID, "typ": "at+jwt"}, claims, key)


def config_for(ports: Ports) -> dict[str, Any]:
    """``examples/bastion.yaml`` with the listeners, the upstream and the ownership resolver
    moved to ``ports``, and the OpenAPI document named by its absolute path (the demo may run
    in another working directory)."""
    doc: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    upstream = f"http://127.0.0.1:{ports.upstream}"
    doc["auth"]["bind"] = f"127.0.0.1:{ports.auth}"
    doc["auth"]["issuer"] = f"http://127.0.0.1:{ports.auth}"
    for listener in doc["listeners"]:
        listener["bind"] = f"127.0.0.1:{ports.https if listener.get('tls') else ports.http}"
    for route in doc["routes"]:
        route["upstream"] = upstream
        if "openapi" in route:
            route["openapi"]["spec"] = str(EXAMPLES / "openapi.yaml")
        for resolver in route.get("authz", {}).get("resolvers", []):
            resolver["url"] = upstream
    return doc


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bastion_cli() -> list[str]:
    """The ``bastion`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("bastion")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from bastion.cli.main import main; main(sys.argv[1:])",
    ]


def wait_for_port(child: tuple[str, subprocess.Popen[bytes]], port: int, logs: Path) -> None:
    """Wait up to 20 s for 127.0.0.1:``port``; fail with the child's last log line if it exits."""
    name, proc = child
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            lines = (logs / f"{name}.log").read_text(errors="replace").strip().splitlines()
            raise DemoFailure(f"the {name} exited with code {code}: {(lines or ['-'])[-1]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise DemoFailure(f"the {name} did not listen on 127.0.0.1:{port} within 20 s")


# -- the run ---------------------------------------------------------------------------------------
def placeholders(d: Demo) -> dict[str, str]:
    """Values of the {names} the scenarios' curl lines use."""
    auth = {name.lower(): AUTH.format(name) for name in ("KEY", "TOKEN", "FORGED", "LEAKED", "BOB")}
    urls = {"http": d.http, "https": d.https, "direct": d.direct, "auth": d.auth}
    return {
        **urls,
        **auth,
        "bastion": d.cli_shown,
        "config": d.config_arg,
        "leaked_id": d.leaked_id,
    }


def run(d: Demo, once: bool) -> None:
    """Prepare, start, create keys, run every scenario, show the audit log; then wait or return."""
    out.rule("[bold]Bastion demo[/bold]: the example SaaS API behind the gateway")
    d.prepare()
    out.print(f"$ {d.cli_shown} config check -c {d.config_arg}", style="cyan", soft_wrap=True)
    for line in d.cli("config", "check").strip().splitlines():
        out.print(f"  {line}", markup=False, soft_wrap=True)
    d.start()
    out.print(
        f"upstream {d.direct} (examples/saas_api.py --vulnerable), gateway {d.http} and {d.https}"
        f" and authorization server {d.auth} (bastion up); logs in {d.dir}",
        markup=False,
        soft_wrap=True,
    )
    d.secrets["KEY"] = d.create_key("demo-app")
    d.secrets["LEAKED"] = d.create_key("demo-leaked")
    d.leaked_id = "_".join(d.secrets["LEAKED"].split("_")[:2])  # bsk_<id>: no secret
    d.secrets["CLIENT_SECRET"] = d.create_client("demo-service")
    print_exports(d)
    fmt = placeholders(d)
    for i, (title, curls, check) in enumerate(SCENARIOS, 1):
        out.print(f"\n[bold]{i}. {title}[/bold]", soft_wrap=True)
        for line in curls:
            out.print(f"  $ {line.format(**fmt)}", style="cyan", markup=False, soft_wrap=True)
        try:
            result = check(d)
        except DemoFailure as exc:
            raise DemoFailure(f"scenario {i} ({title}): {exc}") from None
        out.print(f"  ✓ {result}", style="green", markup=False, soft_wrap=True)
    show_audit(d)
    d.done = True
    if once:
        out.print(f"\ndemo OK: {len(SCENARIOS)} scenarios behaved as expected", style="bold green")
        return
    out.rule("Try it yourself")
    print_exports(d)
    for _, curls, _ in SCENARIOS:
        for line in curls:
            if "keys revoke" not in line:  # $LEAKED is revoked already: its curl shows the 401
                out.print(f"$ {line.format(**fmt)}", markup=False, soft_wrap=True)
    keys = f"{d.cli_shown} keys {{}} -c {d.config_arg}"
    out.print(f"$ {keys.format('create --client me --scope read')}", markup=False, soft_wrap=True)
    out.print(f"$ {keys.format('list')}", markup=False, soft_wrap=True)
    out.print(f"$ {keys.format('revoke bsk_<id>')}", markup=False, soft_wrap=True)
    out.print(f"\nRunning until Ctrl-C. Gateway: {d.http} and {d.https}", style="bold")
    while True:
        time.sleep(0.5)
        for name, proc in d.procs:
            if proc.poll() is not None:
                raise DemoFailure(f"the {name} exited with code {proc.returncode}; see {d.dir}")


def print_exports(d: Demo) -> None:
    """The shell lines that define $KEY, $LEAKED, $TOKEN and $FORGED for the curl commands."""
    out.print("\nCredentials for the curl commands (run these in your shell):", style="bold")
    notes = {
        "KEY": "API key of client demo-app, scope read",
        "LEAKED": "API key of client demo-leaked (revoked in the last scenario)",
        "TOKEN": "ES256 access token for alice, valid 1 h",
        "FORGED": "the same claims with sub=admin, signed by an attacker's key",
        "BOB": "ES256 access token for user 2 (Bob), scopes read write, no admin role",
        "CLIENT_SECRET": "secret of the OAuth client demo-service (bastion auth clients create)",
    }
    for name, note in notes.items():
        if name in d.secrets:
            out.print(f"export {name}={d.secrets[name]}  # {note}", markup=False, soft_wrap=True)


def secret_parts(value: str) -> list[str]:
    """What must never reach a log: the whole credential and its secret part (an API key's
    secret, a token's signature)."""
    if value.startswith("bsk_"):
        return [value, value.split("_", 2)[2]]
    if "." not in value:  # an OAuth client secret
        return [value]
    return [value, value.rsplit(".", 1)[1]]


def show_audit(d: Demo) -> None:
    """Check one record per gateway request and no secret in the file; print what they say."""
    path = d.dir / "audit.jsonl"
    deadline, lines = time.monotonic() + 3, []
    while time.monotonic() < deadline:
        lines = path.read_bytes().splitlines() if path.exists() else []
        if len(lines) >= d.gw_requests:
            break
        time.sleep(0.1)
    try:
        expect(len(lines) == d.gw_requests, f"{d.gw_requests} records", len(lines))
        text = path.read_text(encoding="utf-8")
        for name, value in d.secrets.items():
            leaked = any(part in text for part in secret_parts(value))
            expect(not leaked, f"no {name} in the file", f"{name} in it")
    except DemoFailure as exc:
        raise DemoFailure(f"audit log {path}: {exc}") from None
    out.print(f"\n[bold]Audit log[/bold] {path}: one redacted JSON line per request")
    table = Table("request", "status", "decision", "who", "why", "times", box=box.SIMPLE_HEAD)
    rows: list[list[str]] = []
    for line in lines:
        rec = orjson.loads(line)
        url = rec.get("url", {})
        query = f"?{url['query']}" if url.get("query") else ""
        row = [
            f"{rec['http']['request']['method']} {url.get('path', '')}{query}",
            str(rec["http"]["response"]["status_code"]),
            rec["bastion"]["decision"],
            rec.get("user", {}).get("id", "-"),
            rec["bastion"].get("diagnosis") or rec["event"].get("reason", ""),
        ]
        if rows and rows[-1][:-1] == row:  # a burst: one row with a count
            rows[-1][-1] = str(int(rows[-1][-1]) + 1)
        else:
            rows.append([*row, "1"])
    for row in rows:
        table.add_row(*row)
    out.print(table)
    forged = next(x for x in lines if b'"jwt: ' in x)
    out.print("The forged token's record, as written:", style="bold")
    out.print(forged.decode(), markup=False, soft_wrap=True)
    out.print(
        f"✓ {len(lines)} requests through the gateway, {len(lines)} records; "
        "no API key secret or token in the file",
        style="green",
    )


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the demo, always stop the children; the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--once", action="store_true", help="exit after the scenarios")
    parser.add_argument("--workdir", type=Path, default=EXAMPLES.parent, help=".demo/ goes here")
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port, metavar="PORT")
    args = parser.parse_args(argv)
    auth_port = args.auth_port
    chosen = (args.http_port, args.https_port, args.upstream_port)
    if auth_port == DEFAULT_PORTS["auth"] and chosen != tuple(list(DEFAULT_PORTS.values())[:3]):
        auth_port = free_port()  # other ports were chosen: do not insist on the default one
    ports = Ports(args.http_port, args.https_port, args.upstream_port, auth_port)
    d = Demo(args.workdir.resolve(), ports)

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally below

    signal.signal(signal.SIGTERM, terminate)
    # Ctrl-C ends the demo even when started with SIGINT ignored (e.g. as a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run(d, args.once)
    except DemoFailure as exc:
        err.print(f"demo failed: {exc}", markup=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        out.print("\nstopped")
        return 0 if d.done else 130
    finally:
        d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
