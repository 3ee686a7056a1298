"""The one ASGI adapter of the authorization server: ASGI scope and messages in, plain
:class:`~bastion.authserver.http.Request` to :meth:`AuthServer.handle`, its
:class:`~bastion.authserver.http.Response` out.

What it decides itself, before any endpoint runs:

* the body is read up to ``max_body_bytes``; more is refused with 413 without reading on;
* a repeated ``Authorization``, ``Content-Type``, ``Cookie`` or ``Host`` header is refused with
  400 (two credentials in one request is an attack on whichever parser reads which);
* the path is the decoded ASGI path; the client IP is the peer address (no forwarded headers:
  put the server behind the gateway or a proxy you configure for that).

``lifespan`` events start and stop the server's background work, so ``uvicorn`` runs it as is.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bastion.authserver.http import Request, Response, json_response
from bastion.authserver.server import AuthServer

log = logging.getLogger("bastion.authserver.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SINGLE_HEADERS = frozenset({"authorization", "content-type", "cookie", "host", "content-length"})


class AuthAsgiApp:
    """``app = AuthAsgiApp(server)``; an ASGI 3 application."""

    def __init__(self, server: AuthServer, *, max_body_bytes: int | None = None) -> None:
        self.server = server
        self.max_body = max_body_bytes or server.ctx.config.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.server.start()
                except Exception as exc:
                    log.exception("authorization server failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.server.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            if name in headers:
                if name in SINGLE_HEADERS:
                    await _send(send, json_response(400, {"error": "invalid_request"}))
                    return
                headers[name] = headers[name] + ", " + value
            else:
                headers[name] = value
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await _send(send, json_response(413, {"error": "invalid_request"}))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _send(send, json_response(413, {"error": "invalid_request"}))
                return
            if chunk:
                chunks.append(chunk)
            more = message.get("more_body", False)
        client = scope.get("client")
        request = Request(
            method=scope["method"],
            path=scope["path"],
            headers=headers,
            query_string=scope.get("query_string", b""),
            body=b"".join(chunks),
            client_ip=client[0] if client else "",
            scheme=scope.get("scheme", "http"),
        )
        await _send(send, await self.server.handle(request))


async def _send(send: Send, response: Response) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode("ascii")))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
