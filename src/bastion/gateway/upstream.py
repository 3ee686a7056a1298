"""A purpose-built keep-alive HTTP/1.1 client pool for forwarding (``httptools`` parser).

Why not httpx or aiohttp: ``../shared/PERFORMANCE.md`` measured 1,170 µs and ~100 µs of CPU
per request for them against ~11 µs for a pool like this one. What a purpose-built pool must
still do, and this one does:

* connect and read timeouts (the caller maps them to 502/504);
* a bound on response header size; response bodies are streamed, never buffered whole;
* no reuse of a connection after an error, a partial read, ``Connection: close``, HTTP/1.0,
  a close-delimited body or a HEAD response;
* a retry only for idempotent methods, only when a *reused* connection died before the first
  response byte (the classic keep-alive race), and only once;
* a per-upstream limit on open connections (callers wait for a free one, bounded by the connect
  timeout).

The response is delivered to a :class:`ResponseSink` by callbacks, so a small response costs no
extra task switches: head, body and end usually arrive in one ``data_received``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import httptools

from bastion.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from bastion.gateway.deadlines import sweeper
from bastion.gateway.forward import HEADER_NAME_CACHE, header_name

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class ResponseSink(Protocol):
    """Receives one upstream response. Called from the event loop, must not block."""

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        """Status and raw headers; ``length`` is the Content-Length, None if not given."""

    def on_body(self, chunk: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_error(self, exc: Exception) -> None:
        """The exchange failed (timeout, reset, malformed response)."""

    def flush(self) -> None:
        """Called after each batch of upstream bytes was parsed: write out what is buffered."""


class _Retry(Exception):
    """A reused connection died before any response byte: safe to retry idempotent requests."""


class StaleConnection(UpstreamError):
    """Given to a sink's ``on_error`` (callback mode, :meth:`UpstreamConnection.send`) when a
    reused connection died before any response byte: the request may be retried once on
    another connection if it is idempotent."""

    def __init__(self) -> None:
        super().__init__(diagnosis="upstream closed a reused connection")


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream. Used by one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._sink: ResponseSink | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._head_done = False
        self._length: int | None = None
        self._bytes_seen = False
        self._closed = False
        self._no_body = False
        self._max_head = pool.max_response_header_bytes
        self.deadline = 0.0  # monotonic; 0: none (see deadlines.py)
        self._read_timeout = pool.read_timeout
        self._waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.reused = False

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)
        sweeper().add(self)

    def data_received(self, data: bytes) -> None:
        sink = self._sink
        if sink is None:
            # Bytes on an idle connection: the upstream is confused; never reuse it.
            self.close()
            return
        self._bytes_seen = True
        self.deadline = time.monotonic() + self._read_timeout
        if not self._head_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
            if not self._head_done and self._head_bytes > self._max_head:
                # Still no end of head: sizes are checked exactly once it is complete, this
                # bounds what an upstream can make us hold before that.
                raise UpstreamError(diagnosis="upstream response headers too large")
        except UpstreamError as exc:
            self._fail(exc)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, Exception) else UpstreamError(diagnosis=str(exc)))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(diagnosis=f"malformed upstream response: {exc}"))
        sink.flush()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.deadline = 0.0
        sweeper().discard(self)
        self._pool.discard(self)
        sink = self._sink
        if sink is None:
            return
        if self._head_done and self._length is None and not self._no_body:
            # Close-delimited body: EOF is its end.
            self._finish()
            sink.flush()
            return
        if not self._bytes_seen and self.reused:
            self._fail(_Retry())
        else:
            self._fail(UpstreamError(diagnosis="upstream closed the connection mid-response"))
        sink.flush()

    # -- httptools callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))  # sizes and framing: on_headers_complete

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        headers = self._headers
        # Counted exactly only when the reads holding this head exceed the limit.
        if self._head_bytes > self._max_head and (
            sum([len(n) + len(v) + 4 for n, v in headers]) > self._max_head
        ):
            raise UpstreamError(diagnosis="upstream response headers too large")
        length = None
        names = HEADER_NAME_CACHE
        for name, value in headers:
            if (names.get(name) or header_name(name)) == "content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise UpstreamError(diagnosis="bad upstream content-length") from None
        if status in (204, 304) or 100 <= status < 200:
            length = 0
        self._length = length
        self._head_done = True
        assert self._sink is not None
        self._sink.on_head(status, self._headers, length)
        if self._no_body or length == 0:
            # HEAD responses carry a length but no body; httptools cannot be told, so the
            # message ends here and the connection is not reused for HEAD.
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self._sink is not None and body:
            self._sink.on_body(body)

    def on_message_complete(self) -> None:
        if self._sink is not None:
            self._finish()

    # -- exchange control -------------------------------------------------------------------
    def start(self, request: bytes, sink: ResponseSink, head_request: bool) -> asyncio.Future[None]:
        """Send ``request`` and deliver the response to ``sink``; the future ends with it (with
        ``_Retry`` when a reused connection died before answering)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.send(request, sink, head_request)
        self._waiter = waiter
        return waiter

    def send(self, request: bytes, sink: ResponseSink, head_request: bool) -> None:
        """Send ``request`` and deliver the response to ``sink`` by callbacks only (no future,
        no task step): ``on_end`` or ``on_error`` (a :class:`StaleConnection` when the request
        may be retried), each followed by ``flush``."""
        assert self.transport is not None
        self._sink = sink
        self._headers = []
        self._head_bytes = 0
        self._head_done = False
        self._length = None
        self._bytes_seen = False
        self._no_body = head_request
        self._waiter = None
        self.deadline = time.monotonic() + self._read_timeout
        self.transport.write(request)

    def _finish(self) -> None:
        sink = self._sink
        self._sink = None
        self._cancel_timer()
        reusable = (
            not self._no_body
            and self._length is not None
            and self._parser.should_keep_alive()
            and not self._closed
        )
        if sink is not None:
            sink.on_end()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if reusable:
            self._pool.release(self)  # the parser goes on with the next response
        else:
            self.close()

    def _fail(self, exc: Exception) -> None:
        sink = self._sink
        self._sink = None
        self._cancel_timer()
        self.close()
        waiter = self._waiter
        if isinstance(exc, _Retry):
            if waiter is None:  # callback mode: the sink decides whether to retry
                if sink is not None:
                    sink.on_error(StaleConnection())
                return
            if not waiter.done():
                waiter.set_exception(exc)
            return
        if sink is not None:
            sink.on_error(exc)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _cancel_timer(self) -> None:
        self.deadline = 0.0

    def on_deadline(self) -> None:
        """The upstream was silent for ``read_timeout`` during an exchange."""
        sink = self._sink
        if sink is not None:
            self._fail(UpstreamTimeout(diagnosis=f"upstream silent for {self._read_timeout:g}s"))
            sink.flush()

    def pause_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()
        self._pool.discard(self)

    @property
    def usable(self) -> bool:
        return not self._closed and self.transport is not None and not self.transport.is_closing()


class UpstreamPool:
    """Connections to one upstream origin (scheme, host, port)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_connections: int = 256,
        idle_timeout: float = 60.0,
        max_response_header_bytes: int = 65536,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.server_hostname = server_hostname
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_response_header_bytes = max_response_header_bytes
        self._idle: deque[UpstreamConnection] = deque()
        self._open = 0
        self._members: set[UpstreamConnection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._clock = clock or time.monotonic
        #: How a new connection is opened: ``loop.create_connection`` to (host, port) unless
        #: replaced (the in-process benchmark plugs fake transports in here).
        self.open_connection: Callable[[Callable[[], asyncio.Protocol]], Awaitable[object]] | None
        self.open_connection = None
        self._reaper: asyncio.TimerHandle | None = None
        self._closing = False

    @property
    def open_connections(self) -> int:
        return len(self._members)

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    def idle_connection(self) -> UpstreamConnection | None:
        """A live idle connection, without suspending (the common case under load)."""
        idle = self._idle
        while idle:
            conn = idle.pop()  # most recently used: likeliest to be alive
            if conn.usable:
                conn.reused = True
                return conn
            self.discard(conn)
        return None

    async def connection(self) -> UpstreamConnection:
        """An idle connection, or a new one (waiting for a free slot up to the connect
        timeout). Raises :class:`UpstreamUnavailable`. The caller must use it for exactly one
        exchange (:meth:`UpstreamConnection.send` or ``start``)."""
        idle = self.idle_connection()
        if idle is not None:
            return idle
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        while len(self._members) >= self.max_connections:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise UpstreamUnavailable(diagnosis="upstream connection pool exhausted") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            idle = self.idle_connection()
            if idle is not None:
                return idle
        conn = UpstreamConnection(self)
        self._members.add(conn)
        opener = self.open_connection
        try:
            await asyncio.wait_for(
                opener(lambda: conn)
                if opener is not None
                else loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.server_hostname if self.tls else None,
                ),
                max(0.001, deadline - loop.time()),
            )
        except TimeoutError:
            self.discard(conn)
            raise UpstreamUnavailable(diagnosis="upstream connect timeout") from None
        except (OSError, ssl.SSLError) as exc:
            self.discard(conn)
            raise UpstreamUnavailable(diagnosis=f"upstream connect failed: {exc}") from None
        conn.reused = False
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a healthy connection after a complete response."""
        if self._closing or not conn.usable:
            conn.close()
            return
        conn.idle_since = self._clock()
        self._idle.append(conn)
        if self._waiters:
            self._wake()
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(
                max(1.0, self.idle_timeout / 2), self._reap
            )

    def discard(self, conn: UpstreamConnection) -> None:
        """Forget a connection (closed or broken)."""
        if conn in self._members:
            self._members.discard(conn)
            self._wake()
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def _wake(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _reap(self) -> None:
        self._reaper = None
        cutoff = self._clock() - self.idle_timeout
        for conn in [c for c in self._idle if c.idle_since < cutoff]:
            conn.close()
        if self._idle and not self._closing:
            self._reaper = asyncio.get_running_loop().call_later(
                max(1.0, self.idle_timeout / 2), self._reap
            )

    async def request(
        self,
        method: str,
        raw_request: bytes,
        sink: ResponseSink,
        on_connection: Callable[[UpstreamConnection], Any] | None = None,
    ) -> None:
        """Send one serialised request and stream the response into ``sink``.

        Raises :class:`UpstreamUnavailable` when no connection can be had; failures after the
        request was sent are reported through ``sink.on_error``.
        """
        for attempt in (0, 1):
            conn = self.idle_connection() or await self.connection()
            if on_connection is not None:
                on_connection(conn)
            try:
                await conn.start(raw_request, sink, method == "HEAD")
                return
            except _Retry:
                if attempt == 1 or method not in IDEMPOTENT:
                    sink.on_error(UpstreamError(diagnosis="upstream closed a reused connection"))
                    return
        return

    async def aclose(self) -> None:
        """Close every connection."""
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conn in list(self._members):
            conn.close()
        self._idle.clear()
