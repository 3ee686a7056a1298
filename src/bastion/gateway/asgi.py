"""Middleware mode: the same layers as ASGI middleware around an existing app.

``app = bastion.protect(app, config)`` — requests run through the route's chain exactly as in
the gateway; instead of forwarding to an upstream URL, an allowed request is passed to the
wrapped app. The principal is available to the app as ``scope["state"]["bastion.principal"]``
and as the same ``x-bastion-*`` headers the gateway sends upstream (client-sent copies are
removed). WebSocket connections are refused (fail closed) until a layer chain exists for them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from bastion.config.load import load_config
from bastion.config.model import BastionConfig
from bastion.core.exchange import Exchange, Headers, Reply, RequestView
from bastion.core.paths import ALLOWED_METHODS, path_problem
from bastion.errors import (
    BadRequest,
    BastionError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UpstreamError,
)
from bastion.gateway.forward import header_safe
from bastion.gateway.layers.base import Layer
from bastion.gateway.runtime import Gateway, RouteRuntime
from bastion.gateway.services import GatewayServices

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CREDENTIALS = (b"authorization", b"x-api-key")


class BastionMiddleware:
    """ASGI middleware running Bastion's layers. Build it with :func:`protect`."""

    def __init__(
        self, app: ASGIApp, config: BastionConfig, services: GatewayServices | None = None
    ) -> None:
        self.app = app
        self.config = config
        self.services = services or GatewayServices.create(config)
        self.gateway = Gateway(config, self.services)
        self._started = False
        self._lock = asyncio.Lock()

    async def _ensure_started(self) -> None:
        if self._started:
            return
        async with self._lock:
            if not self._started:
                await self.gateway.start()
                self._started = True

    async def aclose(self) -> None:
        """Flush the audit log and stop background tasks."""
        if self._started:
            self._started = False
            await self.gateway.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif kind == "http":
            await self._ensure_started()
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def wrapped_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._ensure_started()
            return message

        async def wrapped_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.aclose()
            await send(message)

        await self.app(scope, wrapped_receive, wrapped_send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        headers = Headers(
            [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        )
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        view = RequestView(
            method=scope["method"],
            path=path,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            peer_ip=peer,
            tls=scope.get("scheme") == "https",
            http_version=scope.get("http_version", "1.1"),
            client_ip=peer,
        )
        gw = self.gateway
        ex = gw.new_exchange(view, started)
        route = gw.match(view.host, path)
        problem = path_problem(path)
        if view.method not in ALLOWED_METHODS:
            await _send_reply(
                send, gw.reject(ex, MethodNotAllowed(diagnosis="method not allowed")), ex
            )
            await gw.audit_unrouted(ex)
            return
        if route is None or problem is not None:
            err: BastionError = BadRequest(diagnosis=problem) if problem else NotFound()
            if route is None:
                await _send_reply(send, gw.reject(ex, err), ex)
                await gw.audit_unrouted(ex)
                return
            await self._reply(send, ex.deny(err), ex, route)
            await route.finish(ex)
            return
        try:
            try:
                view.body = await _read_body(receive, route.max_body_bytes)
            except PayloadTooLarge as exc:
                await self._reply(send, ex.deny(exc), ex, route)
                return
            try:
                reply = await route.run_request(ex)
            except Exception:
                reply = ex.deny(InternalError(diagnosis="layer failure"))
            if reply is not None:
                await self._reply(send, reply, ex, route)
                return
            await self._call_app(scope, send, ex, route)
        finally:
            await route.finish(ex)

    async def _reply(self, send: Send, reply: Reply, ex: Exchange, route: RouteRuntime) -> None:
        headers = Headers([(k.lower(), v) for k, v in reply.headers])  # names: lower case
        route.response_headers(ex, reply.status, headers)
        reply.headers = headers.items
        await _send_reply(send, reply, ex)

    async def _call_app(self, scope: Scope, send: Send, ex: Exchange, route: RouteRuntime) -> None:
        body = ex.request.body
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        relay = _ResponseRelay(self, send, ex, route)
        inner = dict(scope)
        inner["headers"] = _inner_headers(scope["headers"], ex, route.hide_credentials)
        inner_state = dict(scope.get("state") or {})
        inner_state["bastion.principal"] = ex.principal
        inner_state["bastion.request_id"] = ex.request_id
        inner["state"] = inner_state
        try:
            await self.app(inner, replay, relay.send)
        except Exception:
            ex.diagnosis = "application raised"
            if not relay.started and not relay.replaced:
                await self._reply(
                    send, ex.deny(InternalError(diagnosis="application raised")), ex, route
                )
                return
            raise


def _encode(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items]


class _ResponseRelay:
    """Passes the app's response to the client through the route's response layers: header
    edits, 5xx replacement, and body filters (the body is held whole up to their limit)."""

    def __init__(
        self, mw: BastionMiddleware, send: Send, ex: Exchange, route: RouteRuntime
    ) -> None:
        self._mw, self._send, self.ex, self._route = mw, send, ex, route
        self.started = False
        self.replaced = False
        self._status = 0
        self._headers = Headers()
        self._filters: tuple[Layer, ...] = ()
        self._limit = 0
        self._held: list[bytes] | None = None
        self._held_bytes = 0

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body":
            await self._body(message)
        else:
            await self._send(message)

    async def _start(self, message: Message) -> None:
        ex, route = self.ex, self._route
        status = int(message["status"])
        ex.upstream_status = status
        ex.upstream_ms = (time.monotonic() - ex.started) * 1000
        if status >= 500 and not route.expose_upstream_errors:
            self.replaced = True
            reply = ex.deny(UpstreamError(diagnosis=f"application answered {status}"))
            reply.status = status if status in (503, 504) else 502
            await self._mw._reply(self._send, reply, ex, route)
            return
        h = Headers(
            [
                (k.decode("latin-1").lower(), v.decode("latin-1"))
                for k, v in message.get("headers", [])
            ]
        )
        route.response_headers(ex, status, h)
        ex.status = status
        self.started = True
        self._status, self._headers = status, h
        self._filters, self._limit = route.body_filters(ex, status, h)
        if self._filters:
            self._held = []
            return
        await self._send({"type": "http.response.start", "status": status, "headers": _encode(h)})

    async def _body(self, message: Message) -> None:
        if self.replaced:
            return
        chunk = message.get("body", b"")
        held = self._held
        if held is None:
            self.ex.bytes_out += len(chunk)
            await self._send(message)
            return
        held.append(chunk)
        self._held_bytes += len(chunk)
        more = message.get("more_body", False)
        if self._held_bytes > self._limit:
            self._held = None
            reply = self._route.body_too_large(self._filters, self.ex, self._status, self._headers)
            if reply is not None:
                self.replaced = True
                await self._mw._reply(self._send, reply, self.ex, self._route)
                return
            await self._send(
                {
                    "type": "http.response.start",
                    "status": self._status,
                    "headers": _encode(self._headers),
                }
            )
            body = b"".join(held)
            self.ex.bytes_out += len(body)
            await self._send({"type": "http.response.body", "body": body, "more_body": more})
            return
        if more:
            return
        self._held = None
        result = self._route.filter_body(
            self._filters, self.ex, self._status, self._headers, b"".join(held)
        )
        if isinstance(result, Reply):
            self.replaced = True
            await self._mw._reply(self._send, result, self.ex, self._route)
            return
        self._headers.set("content-length", str(len(result)))
        await self._send(
            {
                "type": "http.response.start",
                "status": self._status,
                "headers": _encode(self._headers),
            }
        )
        self.ex.bytes_out += len(result)
        await self._send({"type": "http.response.body", "body": result, "more_body": False})


def _inner_headers(
    raw: list[tuple[bytes, bytes]], ex: Exchange, hide_credentials: bool
) -> list[tuple[bytes, bytes]]:
    principal = ex.principal
    hide = hide_credentials and principal is not None
    out = [
        (k, v)
        for k, v in raw
        if not k.lower().startswith(b"x-bastion-") and not (hide and k.lower() in _CREDENTIALS)
    ]
    out.append((b"x-request-id", ex.request_id.encode()))
    if principal is not None:
        out.append((b"x-bastion-auth", principal.kind.encode()))
        out.append((b"x-bastion-subject", header_safe(principal.subject).encode("latin-1")))
        if principal.client_id:
            out.append((b"x-bastion-client-id", header_safe(principal.client_id).encode("latin-1")))
        if principal.scopes:
            out.append(
                (
                    b"x-bastion-scopes",
                    header_safe(" ".join(sorted(principal.scopes))).encode("latin-1"),
                )
            )
    return out


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(diagnosis=f"body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send_reply(send: Send, reply: Reply, ex: Exchange) -> None:
    ex.status = reply.status
    ex.bytes_out = len(reply.body)
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def protect(
    app: ASGIApp, config: BastionConfig | str | Path, *, services: GatewayServices | None = None
) -> BastionMiddleware:
    """Wrap an ASGI app in Bastion's layers. ``config`` is a loaded config or a file path.

    Route ``upstream`` URLs are not used in this mode; the wrapped app is the upstream.
    Raises :class:`~bastion.errors.ConfigError` on an invalid config.
    """
    cfg = config if isinstance(config, BastionConfig) else load_config(config)
    return BastionMiddleware(app, cfg, services)
