"""Several ``bastion gateway`` processes sharing PostgreSQL and Redis, as an operator runs them.

Used by the distributed-mode tests and ``bench/revocation.py``: a config writer, the real
``bastion`` executable in subprocesses, and a small keep-alive HTTP/1.1 client on asyncio that
can drive many connections at several nodes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from joserfc import jwt
from joserfc.jwk import ECKey

PEPPER = "cluster-pepper-" + "q" * 32
ISSUER = "https://idp.cluster.test"
AUDIENCE = "https://api.cluster.test"
REDIS_URL = "redis://127.0.0.1:6379/0"
_SCRIPT = Path(sys.executable).with_name("bastion")
BASTION = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "from bastion.cli.main import main; main()"]
)
ENV = {
    **{k: v for k, v in os.environ.items() if k != "BASTION_DEBUG"},
    "BASTION_TEST_PEPPER": PEPPER,
    "COLUMNS": "200",
    "NO_COLOR": "1",
}


def new_prefix() -> str:
    """A Redis key prefix of its own, so runs never share counters or streams."""
    return f"bt{secrets.token_hex(4)}:"


async def drop_prefix(prefix: str) -> int:
    """Delete every Redis key under ``prefix`` (what a test left behind); returns how many."""
    from bastion.events.redis_bus import redis_client

    client = redis_client(REDIS_URL, timeout=2.0)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        return int(await client.delete(*keys)) if keys else 0
    finally:
        await client.aclose()


def drop_prefix_sync(prefix: str) -> int:
    """:func:`drop_prefix` from synchronous code."""
    return asyncio.run(drop_prefix(prefix))


def cluster_config(
    workdir: Path,
    *,
    store: str,
    upstream_port: int,
    prefix: str,
    nodes: int = 2,
    jwks: Path | None = None,
    routes: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    name: str = "bastion.yaml",
) -> Path:
    """Write a distributed-mode config (one HTTP listener on a free port) and return its path.

    Route ``/api`` takes API keys, and JWTs of :data:`ISSUER` when ``jwks`` (a JWKS file) is
    given; route ``/burst`` is anonymous with one 100/s limit shared by every caller.
    """
    up = f"http://127.0.0.1:{upstream_port}"
    methods = ["jwt", "api_key"] if jwks is not None else ["api_key"]
    doc: dict[str, Any] = {
        "store": store,
        "cache": REDIS_URL,
        "cluster": {
            "nodes": nodes,
            "key_prefix": prefix,
            "audit_spool_dir": str(workdir / "spool"),
        },
        "listeners": [{"name": "http", "bind": "127.0.0.1:0"}],
        "api_keys": {"pepper": "${BASTION_TEST_PEPPER}"},
        "audit": {"sinks": [{"type": "store"}], "flush_interval": 0.05},
        "routes": routes
        or [
            {
                "name": "api",
                "path_prefix": "/api",
                "upstream": up,
                "strip_prefix": True,
                "authn": {"methods": methods},
                "ratelimit": {"limits": [{"rate": 100000, "per": "1s"}]},
            },
            {
                "name": "burst",
                "path_prefix": "/burst",
                "upstream": up,
                "strip_prefix": True,
                "authn": {"methods": [], "unsafe_allow_anonymous": True},
                "ratelimit": {"limits": [{"rate": 100, "per": "1s", "key": "route"}]},
            },
        ],
    }
    if jwks is not None:
        doc["issuers"] = [{"issuer": ISSUER, "jwks_file": str(jwks), "audiences": [AUDIENCE]}]
    doc.update(extra or {})
    path = workdir / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_jwks(workdir: Path) -> tuple[Path, ECKey]:
    """A fresh ES256 signing key and its public JWKS file (``kid`` ``k1``)."""
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    path = workdir / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    return path, key


def sign_token(key: ECKey, **claims: Any) -> str:
    """An access token of :data:`ISSUER` for :data:`AUDIENCE`, valid for 5 minutes."""
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_hex(8),
    }
    body.update(claims)
    return jwt.encode({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}, body, key)


def bastion(
    cwd: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``bastion`` CLI to completion."""
    return subprocess.run(
        [*BASTION, *args],
        cwd=cwd,
        env=ENV if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Node:
    """``bastion gateway -c CONFIG`` in a subprocess; its log collected by a thread."""

    def __init__(self, workdir: Path, config: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*BASTION, "gateway", "-c", str(config)],
            cwd=workdir,
            env=ENV if env is None else env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def port(self, timeout: float = 60) -> int:
        """The HTTP port, once the node logs that it listens."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log):
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    return int(m.group(1))
            if self.proc.poll() is not None:
                raise AssertionError("the node exited:\n" + "".join(self.log))
            time.sleep(0.05)
        raise AssertionError("the node did not start:\n" + "".join(self.log))

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        """Kill the process if it still runs and release the pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@dataclass
class Reply:
    """One response: status and when it was sent and received (monotonic s)."""

    status: int
    sent: float
    received: float


class KeepAliveClient:
    """One HTTP/1.1 keep-alive connection; GET only, bodies read by Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, port: int) -> KeepAliveClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        lines = [f"GET {path} HTTP/1.1", "Host: test"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        sent = time.monotonic()
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if m:
            await self._reader.readexactly(int(m.group(1)))
        return Reply(status, sent, time.monotonic())

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def burst(
    ports: list[int], path: str, total: int, connections: int, headers: dict[str, str] | None = None
) -> list[Reply]:
    """``total`` GETs over ``connections`` keep-alive connections spread over ``ports``, as
    fast as the nodes answer; every connection is opened before the first request."""
    clients = [await KeepAliveClient.connect(ports[i % len(ports)]) for i in range(connections)]
    remaining = [total]
    replies: list[Reply] = []

    async def drive(client: KeepAliveClient) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            replies.append(await client.get(path, headers))

    try:
        await asyncio.gather(*(drive(c) for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    return replies
