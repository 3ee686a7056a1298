"""A whole gateway on loopback for integration tests: test upstream, TLS listener, JWKS
file, API keys — all generated at test time — running in a background event loop."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from joserfc.jwk import ECKey

from bastion.config import parse_config
from bastion.config.model import BastionConfig
from bastion.core.apikeys import hash_secret, new_api_key
from bastion.crypto.certs import write_self_signed
from bastion.gateway.serve import RunningGateway, start_gateway
from bastion.gateway.services import GatewayServices
from bastion.store.base import ApiKeyRecord, ClientRecord
from bastion.store.memory import MemoryStore
from tests.support.loop_thread import LoopThread
from tests.support.upstream import TestUpstream

ISSUER = "https://idp.test"
AUDIENCE = "https://api.test"
PEPPER = "test-pepper-" + "x" * 32


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def json(self) -> Any:
        return orjson.loads(self.body)


def default_doc(tmp: Path, upstream_port: int) -> dict[str, Any]:
    """The config the integration tests run: see the route names for what each is for."""
    up = f"http://127.0.0.1:{upstream_port}"
    return {
        "store": "memory://",
        "listeners": [
            {"name": "http", "bind": "127.0.0.1:0"},
            {
                "name": "https",
                "bind": "127.0.0.1:0",
                "tls": {"cert": str(tmp / "cert.pem"), "key": str(tmp / "key.pem")},
            },
        ],
        "server": {
            "max_url_bytes": 1024,
            "max_header_bytes": 4096,
            "header_timeout": 2,
            "body_timeout": 2,
        },
        "issuers": [
            {"issuer": ISSUER, "jwks_file": str(tmp / "jwks.json"), "audiences": [AUDIENCE]}
        ],
        "api_keys": {"pepper": PEPPER},
        "audit": {
            "sinks": [{"type": "file", "path": str(tmp / "audit.jsonl")}, {"type": "store"}],
            "flush_interval": 0.05,
        },
        "defaults": {
            "ratelimit": {"limits": [{"rate": 10000, "per": "1s"}]},
            "cors": {"allow_origins": ["https://app.example"], "allow_credentials": True},
            "proxy": {"read_timeout": 1, "connect_timeout": 1},
            "transport": {"max_body_bytes": 4096},
        },
        "routes": [
            {"name": "api", "path_prefix": "/api", "upstream": up, "strip_prefix": True},
            {
                "name": "limited",
                "path_prefix": "/limited",
                "upstream": up,
                "strip_prefix": True,
                "ratelimit": {"limits": [{"rate": 5, "per": "1s"}, {"rate": 100, "per": "1h"}]},
            },
            {
                "name": "public",
                "path_prefix": "/public",
                "upstream": up,
                "strip_prefix": True,
                "authn": {"methods": [], "unsafe_allow_anonymous": True},
            },
            {
                "name": "scoped",
                "path_prefix": "/admin",
                "upstream": up,
                "strip_prefix": True,
                "authn": {"required_scopes": ["admin"]},
            },
            {
                "name": "down",
                "path_prefix": "/down",
                "upstream": "http://127.0.0.1:9",
                "strip_prefix": True,
            },
        ],
    }


class GatewayHarness:
    """Gateway + upstream in a background loop. ``request`` is a blocking client."""

    def __init__(
        self,
        tmp: Path,
        doc_overrides: dict[str, Any] | None = None,
        extra_routes: list[dict[str, Any]] | None = None,
    ) -> None:
        """``extra_routes`` are appended to the routes, with the test upstream as their
        default ``upstream``."""
        self.tmp = tmp
        write_self_signed(tmp, hostnames=["localhost"], ip_addresses=["127.0.0.1"])
        self.signing_key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
        (tmp / "jwks.json").write_bytes(
            orjson.dumps({"keys": [self.signing_key.as_dict(private=False)]})
        )
        self.thread = LoopThread()
        self.upstream = self.thread.call(TestUpstream().start())
        doc = default_doc(tmp, self.upstream.port)
        doc.update(doc_overrides or {})
        for route in extra_routes or []:
            doc["routes"].append({"upstream": f"http://127.0.0.1:{self.upstream.port}", **route})
        self.config: BastionConfig = parse_config(doc, {})
        self.store = MemoryStore()
        self.services = GatewayServices.create(self.config, store=self.store)
        self.running: RunningGateway = self.thread.call(start_gateway(self.config, self.services))
        (_, self.http_port), (_, self.https_port) = self.running.addresses[:2]
        self.api_key = self.create_key("acme", ("read",))
        self.closed = False

    # -- credentials --------------------------------------------------------------------------
    def create_key(self, client: str, scopes: tuple[str, ...] = (), *, ttl: float = 3600) -> str:
        key_id, secret, full = new_api_key()
        now = time.time()

        async def put() -> None:
            if await self.store.get_client(client) is None:
                await self.store.put_client(ClientRecord(client, client, now))
            await self.store.put_api_key(
                ApiKeyRecord(
                    key_id, client, hash_secret(PEPPER.encode(), secret), scopes, now, now + ttl
                )
            )

        self.thread.call(put())
        return full

    def token(self, **claims: Any) -> str:
        from joserfc import jwt

        now = int(time.time())
        body = {
            "iss": ISSUER,
            "sub": "user-1",
            "aud": AUDIENCE,
            "exp": now + 300,
            "iat": now,
            "jti": f"j{time.monotonic_ns()}",
            "scope": "read",
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}, body, self.signing_key)

    # -- client --------------------------------------------------------------------------------
    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.tmp / "cert.pem"))
        return ctx

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        tls: bool = False,
        key: bool = False,
    ) -> Response:
        conn: http.client.HTTPConnection
        if tls:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.https_port, context=self.tls_context(), timeout=10
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        h = dict(headers or {})
        if key:
            h["Authorization"] = f"Bearer {self.api_key}"
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            return Response(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()

    def raw(self, data: bytes, *, timeout: float = 5.0) -> bytes:
        """Send raw bytes on a new connection, return everything until the server closes."""
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=timeout) as s:
            s.sendall(data)
            chunks = []
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    chunks.append(b)
            except TimeoutError:
                pass
            return b"".join(chunks)

    def audit_records(self) -> list[dict[str, Any]]:
        """Every record in the audit file (call after close() to be sure all are flushed)."""
        path = self.tmp / "audit.jsonl"
        if not path.exists():
            return []
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.thread.call(self.running.aclose())
            self.thread.call(self.upstream.aclose())
        finally:
            self.thread.stop()
