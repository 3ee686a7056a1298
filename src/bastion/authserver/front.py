"""The authorization server's own HTTP/1.1 front end: ``asyncio.Protocol`` + ``httptools``.

The same pattern as the gateway's front end (``gateway/server.py``), for a server whose every
request is small: the head and the whole body are read (within limits) and handed to
:meth:`AuthServer.handle` as one :class:`~bastion.authserver.http.Request`; the response is
written with a ``Content-Length``. Measured against uvicorn + the ASGI adapter it saves about
half of the per-request overhead on ``/token`` (``docs/authserver.md``); the ASGI adapter stays
for running the server under any ASGI server.

Limits, enforced while parsing: URL length (414), header bytes and count (431), body size (413,
from ``Content-Length`` before reading, or while reading a chunked body), time to receive the
head and the body (408, then close), idle keep-alive connections closed. A repeated
``Authorization``, ``Content-Type``, ``Cookie``, ``Host`` or ``Content-Length`` is 400.
Requests on one connection are answered in order.

Flow control (a client that pipelines requests and never reads must not grow the server's
memory): received bytes are handed to the parser in slices of :data:`_FEED_SLICE` and only while
fewer than :data:`_MAX_QUEUED` parsed requests wait; the rest stays unparsed and reading is
paused until the queue drains. Responses are not written while the transport has paused writing
(its buffer is over the high-water mark); a peer that does not read for ``body_timeout`` seconds
is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools

from bastion.authserver.asgi import SINGLE_HEADERS
from bastion.authserver.http import Request, Response
from bastion.authserver.server import AuthServer

log = logging.getLogger("bastion.authserver.front")

_REASONS = {
    200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    413: "Content Too Large", 414: "URI Too Long", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FrontLimits:
    """Limits of the front end; durations in seconds."""

    max_body: int = 16_384
    max_url: int = 8_192
    max_header_bytes: int = 16_384
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 75.0


def _error(status: int) -> bytes:
    body = b'{"error":"invalid_request"}'
    return _head(status, [("content-type", "application/json")], len(body), False) + body


def _head(status: int, headers: list[tuple[str, str]], length: int, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"content-length: {length}")
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_MAX_QUEUED = 8
"""Parsed requests waiting for an answer on one connection before parsing stops."""

_FEED_SLICE = 4_096
"""Bytes handed to the parser at a time, so one large read cannot queue thousands of requests."""


class _Parsed:
    __slots__ = ("body", "headers", "keep_alive", "method", "url")

    def __init__(self) -> None:
        self.url = b""
        self.method = ""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.keep_alive = True


class _Refuse(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class AuthHttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: AuthServer, limits: FrontLimits, tls: bool) -> None:
        self._server = server
        self._limits = limits
        self._scheme = "https" if tls else "http"
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._current: _Parsed | None = None
        self._header_bytes = 0
        self._body_bytes = 0
        self._queue: deque[_Parsed] = deque()
        self._unparsed = bytearray()
        self._reading_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._serving = False
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_event_loop()

    # -- connection -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""
        self._arm(self._limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._disarm()
        self._transport = None
        self._unparsed.clear()
        self._wake_writer()

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark: hold further responses."""
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._unparsed += data
        self._feed()

    def _feed(self) -> None:
        """Parse what was received while few requests wait; otherwise pause reading."""
        try:
            while self._unparsed and len(self._queue) < _MAX_QUEUED and not self._closing:
                piece = bytes(self._unparsed[:_FEED_SLICE])
                del self._unparsed[:_FEED_SLICE]
                self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            self._refuse(400)
            return
        except (httptools.HttpParserError, _Refuse) as exc:
            # httptools wraps what a callback raised; the limit that stopped it is the context.
            cause = exc if isinstance(exc, _Refuse) else exc.__context__
            self._refuse(cause.status if isinstance(cause, _Refuse) else 400)
            return
        transport = self._transport
        if transport is None or self._closing:
            return
        if self._unparsed and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not self._unparsed and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _refuse(self, status: int) -> None:
        if self._transport is not None and not self._closing:
            self._transport.write(_error(status))
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._disarm()
        self._unparsed.clear()
        self._wake_writer()
        if self._transport is not None:
            self._transport.close()

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._timer = self._loop.call_later(delay, self._on_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self._current is not None:
            self._refuse(408)  # a head or body that does not arrive in time
        elif not self._serving:
            self._close()  # idle keep-alive connection

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._current = _Parsed()
        self._header_bytes = 0
        self._body_bytes = 0
        self._arm(self._limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        p = self._current
        if p is None:
            return
        p.url += url
        if len(p.url) > self._limits.max_url:
            raise _Refuse(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        p = self._current
        if p is None:
            return
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._limits.max_header_bytes:
            raise _Refuse(431)
        if len(p.headers) >= self._limits.max_headers:
            raise _Refuse(431)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in p.headers:
            if key in SINGLE_HEADERS:
                raise _Refuse(400)
            p.headers[key] = p.headers[key] + ", " + text
        else:
            p.headers[key] = text

    def on_headers_complete(self) -> None:
        p = self._current
        if p is None:
            return
        p.method = self._parser.get_method().decode("ascii", "replace")
        p.keep_alive = self._parser.should_keep_alive()
        declared = p.headers.get("content-length")
        if declared is not None and (
            not declared.isdigit() or int(declared) > self._limits.max_body
        ):
            raise _Refuse(413)
        self._arm(self._limits.body_timeout)

    def on_body(self, body: bytes) -> None:
        p = self._current
        if p is None:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._limits.max_body:
            raise _Refuse(413)
        p.body.append(body)

    def on_message_complete(self) -> None:
        p, self._current = self._current, None
        if p is None:
            return
        self._queue.append(p)
        if not self._serving:
            self._serving = True
            self._disarm()
            self._loop.create_task(self._serve())

    # -- answering --------------------------------------------------------------------------
    async def _serve(self) -> None:
        try:
            while self._queue and not self._closing:
                p = self._queue.popleft()
                response = await self._answer(p)
                if not await self._wait_writable():
                    return
                transport = self._transport
                if transport is None:
                    return
                keep = p.keep_alive and not self._closing
                transport.write(
                    _head(response.status, response.headers, len(response.body), keep)
                    + response.body
                )
                if not keep:
                    self._close()
                    return
                if not self._queue:
                    self._feed()  # parse what waited while the queue was full
        finally:
            self._serving = False
            if not self._closing and self._current is None:
                self._arm(self._limits.keepalive_timeout)

    async def _wait_writable(self) -> bool:
        """Wait until the peer has read enough of what was written; a peer that does not read
        within ``body_timeout`` is disconnected. False when the connection is gone."""
        waiter = self._writable
        if waiter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self._limits.body_timeout)
            except TimeoutError:
                self._close()
                return False
        return not self._closing and self._transport is not None

    async def _answer(self, p: _Parsed) -> Response:
        try:
            url = httptools.parse_url(p.url)
        except httptools.HttpParserInvalidURLError:
            return Response(
                400, b'{"error":"invalid_request"}', [("content-type", "application/json")]
            )
        request = Request(
            method=p.method,
            path=(url.path or b"/").decode("latin-1"),
            headers=p.headers,
            query_string=url.query or b"",
            body=b"".join(p.body),
            client_ip=self._peer,
            scheme=self._scheme,
        )
        return await self._server.handle(request)
