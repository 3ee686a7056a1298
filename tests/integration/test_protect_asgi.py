"""Middleware mode: ``bastion.protect(app, config)`` around a Starlette app runs the same
layers as the gateway. Driven as ASGI directly (hand-built scope, receive, send), and once
under uvicorn on a real socket."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import bastion
from bastion.config import parse_config
from bastion.config.model import BastionConfig, gateway_problems
from bastion.core.apikeys import hash_secret, new_api_key
from bastion.errors import StoreError
from bastion.gateway.asgi import BastionMiddleware
from bastion.gateway.services import GatewayServices
from bastion.store.base import ApiKeyRecord, ClientRecord
from bastion.store.memory import MemoryStore

pytestmark = pytest.mark.integration

PEPPER = "asgi-pepper-" + "x" * 32
PROBLEM = "application/problem+json"
TRACE = 'Traceback (most recent call last):\n  File "/srv/app.py", line 9\nKeyError: db_password'


# -- the protected app --------------------------------------------------------------------------
@dataclass
class AppLog:
    """What the wrapped app saw: every request's headers and state, lifespan events."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    lifespan: list[str] = field(default_factory=list)


def make_app(log: AppLog) -> Starlette:
    async def whoami(request: Request) -> Response:
        principal = request.scope["state"].get("bastion.principal")
        seen = {
            "path": request.url.path,
            "headers": request.headers.items(),
            "principal": principal.subject if principal is not None else None,
            "request_id": request.scope["state"].get("bastion.request_id"),
            "body": (await request.body()).decode("latin-1"),
        }
        log.calls.append(seen)
        return JSONResponse({"ok": True})

    async def failing(request: Request) -> Response:
        log.calls.append({"path": request.url.path})
        return PlainTextResponse(TRACE, status_code=500, headers={"server": "Werkzeug/2.0"})

    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.lifespan.append("startup")
        yield
        log.lifespan.append("shutdown")

    return Starlette(
        routes=[
            Route("/{path:path}", whoami, methods=["GET", "POST", "PUT", "OPTIONS"]),
            Route("/fail", failing),
        ][::-1],  # /fail first: the catch-all would shadow it
        lifespan=asynccontextmanager(lifespan),
    )


def config_doc(tmp: Path) -> dict[str, Any]:
    """Routes without `upstream`: in this mode the wrapped app is the upstream."""
    return {
        "store": "memory://",
        "listeners": [{"bind": "127.0.0.1:0"}],
        "api_keys": {"pepper": PEPPER},
        "audit": {
            "sinks": [{"type": "file", "path": str(tmp / "audit.jsonl")}],
            "flush_interval": 10,  # only the shutdown flush can write the records in time
        },
        "defaults": {
            "transport": {"max_body_bytes": 1024},
            "authn": {"methods": ["api_key"]},
            "cors": {"allow_origins": ["https://app.example"]},
            "ratelimit": {"limits": [{"rate": 1000, "per": "1s"}]},
        },
        "routes": [
            {"name": "limited", "path_prefix": "/limited", "ratelimit": {"limits": [{"rate": 3, "per": "1m"}]}},
            {"name": "public", "path_prefix": "/public", "authn": {"methods": [], "unsafe_allow_anonymous": True}},
            {"name": "app", "path_prefix": "/"},
        ],
    }  # fmt: skip


@dataclass
class Protected:
    """A protected app, its services' store, a valid key and what the app saw."""

    mw: BastionMiddleware
    store: MemoryStore
    key: str
    log: AppLog
    tmp: Path

    def audit_records(self) -> list[dict[str, Any]]:
        path = self.tmp / "audit.jsonl"
        lines = path.read_bytes().splitlines() if path.exists() else []
        return [orjson.loads(line) for line in lines if line]


async def add_key(store: MemoryStore, client: str) -> str:
    key_id, secret, full = new_api_key()
    now = time.time()
    await store.put_client(ClientRecord(client, client, now))
    await store.put_api_key(
        ApiKeyRecord(
            key_id, client, hash_secret(PEPPER.encode(), secret), ("read",), now, now + 3600
        )
    )
    return full


async def build(tmp: Path, app: Any = None) -> Protected:
    """``app`` defaults to the Starlette app of :func:`make_app`."""
    cfg = parse_config(config_doc(tmp), {})
    store = MemoryStore()
    key = await add_key(store, "acme")
    log = AppLog()
    services = GatewayServices.create(cfg, store=store)
    mw = bastion.protect(app or make_app(log), cfg, services=services)
    return Protected(mw, store, key, log, tmp)


@pytest.fixture
async def protected(tmp_path: Path) -> AsyncIterator[Protected]:
    p = await build(tmp_path)
    try:
        yield p
    finally:
        await p.mw.aclose()


# -- a minimal ASGI client ----------------------------------------------------------------------
@dataclass
class Result:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def json(self) -> Any:
        return orjson.loads(self.body)


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body_chunks: list[bytes] | None = None,
    key: str | None = None,
) -> Result:
    raw_headers = [(b"host", b"api.test")]
    raw_headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in headers or []]
    if key is not None:
        raw_headers.append((b"authorization", f"Bearer {key}".encode()))
    path_part, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path_part,
        "raw_path": path_part.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw_headers,
        "client": ("203.0.113.9", 50000),
        "server": ("api.test", 80),
        "state": {},
    }
    chunks = list(body_chunks or [b""])

    async def receive() -> dict[str, Any]:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await asyncio.sleep(3600)  # a real server would wait for the client to disconnect
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert sum(m["type"] == "http.response.start" for m in sent) == 1
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    hdrs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in start["headers"]]
    return Result(start["status"], hdrs, body)


class Lifespan:
    """Runs the ASGI lifespan protocol the way a server does: startup on enter, shutdown on
    exit, each acknowledged by the app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lifespan:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.to_app.get, self.from_app.put))
        await self.to_app.put({"type": "lifespan.startup"})
        reply = await asyncio.wait_for(self.from_app.get(), 10)
        assert reply["type"] == "lifespan.startup.complete", reply
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        await self.to_app.put({"type": "lifespan.shutdown"})
        reply = await asyncio.wait_for(self.from_app.get(), 30)
        assert reply["type"] == "lifespan.shutdown.complete", reply
        await asyncio.wait_for(self.task, 10)


def header_names(seen: dict[str, Any]) -> list[str]:
    return [k for k, _ in seen["headers"]]


def header_values(seen: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in seen["headers"] if k == name]


def assert_problem(r: Result, status: int, code: str) -> None:
    assert r.status == status, (r.status, r.body)
    assert r.header("content-type") == PROBLEM
    assert r.json()["code"] == code
    assert r.header("x-content-type-options") == "nosniff"


# -- authentication and identity ---------------------------------------------------------------
async def test_no_key_is_401_and_the_app_is_not_called(protected: Protected) -> None:
    for auth in (None, "Bearer not-a-key", f"Bearer {protected.key[:-4]}AAAA"):
        headers = [("authorization", auth)] if auth else []
        r = await call(protected.mw, "GET", "/whoami", headers=headers)
        assert_problem(r, 401, "authn.failed")
        assert r.header("www-authenticate") is not None
    assert protected.log.calls == []


async def test_valid_key_reaches_the_app_with_its_identity(protected: Protected) -> None:
    r = await call(protected.mw, "GET", "/whoami?x=1", key=protected.key)
    assert r.status == 200
    assert r.json() == {"ok": True}
    assert r.header("cache-control") == "no-store"  # authenticated response
    [seen] = protected.log.calls
    assert seen["principal"] == "acme"
    assert header_values(seen, "x-bastion-subject") == ["acme"]
    assert header_values(seen, "x-bastion-auth") == ["api_key"]
    assert header_values(seen, "x-bastion-scopes") == ["read"]
    assert header_values(seen, "x-request-id") == [seen["request_id"]]
    assert seen["request_id"]


async def test_client_sent_bastion_headers_are_removed(protected: Protected) -> None:
    forged = [
        ("X-Bastion-Subject", "admin"),
        ("x-bastion-scopes", "admin"),
        ("X-BASTION-AUTH", "jwt"),
    ]
    await call(protected.mw, "GET", "/whoami", headers=forged, key=protected.key)
    await call(protected.mw, "GET", "/public/whoami", headers=forged)
    authed, anonymous = protected.log.calls
    assert header_values(authed, "x-bastion-subject") == ["acme"]
    assert header_values(authed, "x-bastion-scopes") == ["read"]
    assert header_values(authed, "x-bastion-auth") == ["api_key"]
    assert anonymous["principal"] is None
    assert not [n for n in header_names(anonymous) if n.startswith("x-bastion-")]


@pytest.mark.parametrize("how", ["authorization", "x-api-key"])
async def test_credentials_are_hidden_from_the_app(protected: Protected, how: str) -> None:
    value = f"Bearer {protected.key}" if how == "authorization" else protected.key
    r = await call(protected.mw, "GET", "/whoami", headers=[(how, value)])
    assert r.status == 200
    [seen] = protected.log.calls
    assert "authorization" not in header_names(seen)
    assert "x-api-key" not in header_names(seen)
    assert protected.key not in repr(seen["headers"])
    assert seen["principal"] == "acme"


# -- the other layers --------------------------------------------------------------------------
async def test_burst_gets_429(protected: Protected) -> None:
    results = [await call(protected.mw, "GET", "/limited/x", key=protected.key) for _ in range(6)]
    assert [r.status for r in results] == [200, 200, 200, 429, 429, 429]
    refused = results[-1]
    assert_problem(refused, 429, "ratelimit.exceeded")
    assert int(refused.header("retry-after") or "0") >= 1
    assert refused.header("ratelimit-policy") is not None
    assert len(protected.log.calls) == 3


@pytest.mark.parametrize(
    "chunks", [[b"x" * 1025], [b"x" * 600, b"x" * 600]], ids=["one-message", "streamed"]
)
async def test_oversized_body_is_413(protected: Protected, chunks: list[bytes]) -> None:
    r = await call(protected.mw, "POST", "/whoami", body_chunks=chunks, key=protected.key)
    assert_problem(r, 413, "transport.body_too_large")
    assert protected.log.calls == []
    # At the limit it passes, in one piece.
    ok = await call(
        protected.mw, "POST", "/whoami", body_chunks=[b"y" * 512] * 2, key=protected.key
    )
    assert ok.status == 200
    assert protected.log.calls[0]["body"] == "y" * 1024


async def test_cors_preflight(protected: Protected) -> None:
    ask = [("access-control-request-method", "POST")]
    foreign = await call(
        protected.mw, "OPTIONS", "/whoami", headers=[("origin", "https://evil.example"), *ask]
    )
    assert foreign.status == 403
    assert foreign.header("access-control-allow-origin") is None
    allowed = await call(
        protected.mw, "OPTIONS", "/whoami", headers=[("origin", "https://app.example"), *ask]
    )
    assert allowed.status == 204
    assert allowed.header("access-control-allow-origin") == "https://app.example"
    assert protected.log.calls == []  # preflights are answered by Bastion


async def test_app_500_replaced_by_502_problem(protected: Protected) -> None:
    r = await call(protected.mw, "GET", "/fail", key=protected.key)
    assert_problem(r, 502, "upstream.error")
    assert b"Traceback" not in r.body
    assert b"db_password" not in r.body
    assert b'File "' not in r.body
    assert r.header("server") is None
    assert len(protected.log.calls) == 1  # the app did run


async def test_app_exception_answered_without_traceback(tmp_path: Path) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("db_password=hunter2")

    p = await build(tmp_path, broken)
    try:
        r = await call(p.mw, "GET", "/whoami", key=p.key)
    finally:
        await p.mw.aclose()
    assert_problem(r, 500, "internal.error")
    assert b"hunter2" not in r.body
    assert b"RuntimeError" not in r.body
    assert b"Traceback" not in r.body


async def test_websocket_refused(protected: Protected) -> None:
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/whoami",
        "raw_path": b"/whoami",
        "query_string": b"",
        "headers": [(b"host", b"api.test"), (b"authorization", f"Bearer {protected.key}".encode())],
        "client": ("203.0.113.9", 50000),
        "subprotocols": [],
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(protected.mw(scope, receive, send), 10)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert protected.log.calls == []


# -- lifespan and audit ------------------------------------------------------------------------
async def test_lifespan_starts_and_stops_services_and_flushes_audit(protected: Protected) -> None:
    mw = protected.mw
    async with Lifespan(mw):
        assert protected.log.lifespan == ["startup"]  # the app's own lifespan still runs
        assert mw.services.api_keys is not None
        assert len(mw.services.api_keys) == 1  # started: keys loaded before any request
        statuses = [
            (await call(mw, "GET", "/whoami", key=protected.key)).status,
            (await call(mw, "GET", "/whoami")).status,
            (
                await call(mw, "POST", "/whoami", body_chunks=[b"z" * 2000], key=protected.key)
            ).status,
            (await call(mw, "GET", "/public/whoami")).status,
            (await call(mw, "GET", "/fail", key=protected.key)).status,
        ]
        assert statuses == [200, 401, 413, 200, 502]
        assert protected.audit_records() == []  # flush_interval is 10 s: nothing written yet
    assert protected.log.lifespan == ["startup", "shutdown"]
    records = protected.audit_records()
    assert len(records) == len(statuses)
    assert [r["http"]["response"]["status_code"] for r in records] == statuses
    assert protected.key not in (protected.tmp / "audit.jsonl").read_text()
    with pytest.raises(StoreError):  # the store was closed at shutdown
        await protected.store.list_api_keys()


async def test_route_without_upstream_is_fine_in_middleware_mode(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(
        "store: memory://\n"
        "listeners: [{bind: '127.0.0.1:0'}]\n"
        f"audit: {{sinks: [{{type: file, path: '{tmp_path / 'audit.jsonl'}'}}]}}\n"
        "routes:\n"
        "  - name: open\n"
        "    path_prefix: /\n"
        "    authn: {methods: [], unsafe_allow_anonymous: true}\n"
    )
    cfg = bastion.load_config(path)
    assert cfg.routes[0].upstream is None
    assert gateway_problems(cfg)  # the standalone gateway would refuse this file
    log = AppLog()
    mw = bastion.protect(make_app(log), path)  # a file path works as well as a loaded config
    try:
        r = await call(mw, "GET", "/hello")
    finally:
        await mw.aclose()
    assert r.status == 200
    assert log.calls[0]["path"] == "/hello"


# -- a real server -----------------------------------------------------------------------------
def test_under_uvicorn(tmp_path: Path) -> None:
    cfg: BastionConfig = parse_config(config_doc(tmp_path), {})
    store = MemoryStore()
    key = asyncio.run(add_key(store, "acme"))
    log = AppLog()
    mw = bastion.protect(make_app(log), cfg, services=GatewayServices.create(cfg, store=store))
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(mw, lifespan="on", log_config=None, ws="none", loop="asyncio")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert thread.is_alive(), "uvicorn stopped"
            time.sleep(0.02)
        statuses = []
        for headers in ({}, {"Authorization": f"Bearer {key}", "X-Bastion-Subject": "admin"}):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/whoami", headers=headers)
                resp = conn.getresponse()
                resp.read()
                statuses.append(resp.status)
            finally:
                conn.close()
        assert statuses == [401, 200]
        assert header_values(log.calls[0], "x-bastion-subject") == ["acme"]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive()
    assert log.lifespan == ["startup", "shutdown"]
    assert len([line for line in (tmp_path / "audit.jsonl").read_bytes().splitlines() if line]) == 2
