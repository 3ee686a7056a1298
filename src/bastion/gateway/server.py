"""The gateway's own HTTP/1.1 front end: ``asyncio.Protocol`` + ``httptools``.

No web framework sits on this path (``../shared/PERFORMANCE.md``). Limits are enforced while
parsing, before anything is buffered: URL length (414), header bytes and count (431), body
size (413, from Content-Length before reading, or while reading a chunked body), and time to
receive the head and the body (408). Requests on one connection are answered in order
(pipelining-safe). TLS is terminated by the event loop's SSL transport with a TLS 1.2+ context.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import httptools

from bastion.core.exchange import Exchange, Headers, Reply, RequestView
from bastion.core.paths import ALLOWED_METHODS, path_problem
from bastion.errors import (
    BadRequest,
    BastionError,
    HeadersTooLarge,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UriTooLong,
)
from bastion.gateway.deadlines import sweeper
from bastion.gateway.forward import (
    HEADER_NAME_CACHE,
    header_name,
    response_headers_from_upstream,
)
from bastion.gateway.upstream import IDEMPOTENT, StaleConnection

if TYPE_CHECKING:
    from bastion.config.model import ServerConfig
    from bastion.gateway.layers.base import Layer
    from bastion.gateway.runtime import Gateway, RouteRuntime
    from bastion.gateway.upstream import UpstreamConnection, UpstreamPool

log = logging.getLogger("bastion.gateway")

_REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 409: "Conflict", 413: "Content Too Large", 414: "URI Too Long",
    415: "Unsupported Media Type", 422: "Unprocessable Content", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip


#: Continuations of requests that had to wait (layer I/O, a new upstream connection, audit
#: backpressure); held here so the event loop's weak references are not the only ones.
_CONTINUATIONS: set[asyncio.Task[None]] = set()


class _Parsed(RequestView):
    """A request as it is parsed; once complete it is the exchange's :class:`RequestView`
    (one object per request, not two)."""

    def __init__(self, peer_ip: str, tls: bool) -> None:  # no super(): every field set here
        self.method = ""
        self.path = ""
        self.query = ""
        self.header_items: list[tuple[str, str]] = []
        self.headers = Headers(self.header_items)
        self.peer_ip = peer_ip
        self.tls = tls
        self.body = b""
        self.http_version = "1.1"
        self.client_ip = peer_ip
        self.body_parts: list[bytes] = []
        self.error: BastionError | None = None
        self.keep_alive = True
        self.route: RouteRuntime | None = None
        self.started = 0.0


_METHOD_NAMES = {m.encode("ascii"): m for m in ALLOWED_METHODS}

_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n" for code, reason in _REASONS.items()}


def serialize_head(status: int, headers: Headers, framing: str) -> bytes:
    """Status line, headers and our framing header(s), ending with the blank line."""
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"
    fields = "".join([f"{k}: {v}\r\n" for k, v in headers.items])
    return f"{line}{fields}{framing}\r\n".encode("latin-1")


class _ClientSink:
    """Streams one upstream response to the client connection (a ResponseSink)."""

    _filters: tuple[Layer, ...]
    _limit: int
    _held_bytes: int
    _status: int
    _headers: Headers
    _framing: str

    def __init__(self, proto: HttpProtocol, ex: Exchange, route: RouteRuntime, p: _Parsed) -> None:
        self._proto = proto
        self.route = route
        self.ex = ex
        self.parsed = p
        self.raw = b""  # the request as sent upstream
        self.retry = False  # set when a stale reused connection makes us send it again
        self.tries = 0
        self._finished = False
        self._out: list[bytes] = []
        self._chunked = False
        self._replaced = False
        self.head_sent = False
        # Body filtering (response_filter layers): the body is held until it is complete.
        # _filters, _limit, _held_bytes, _status, _headers and _framing are set by on_head
        # when it starts holding, and read only while _held is not None.
        self._held: list[bytes] | None = None

    def on_head(self, status: int, raw: list[tuple[bytes, bytes]], length: int | None) -> None:
        ex = self.ex
        ex.upstream_status = status
        ex.upstream_ms = (time.monotonic() - ex.started) * 1000
        if status >= 500 and not self.route.expose_upstream_errors:
            # Upstream 5xx bodies may hold stack traces: replace them by a generic problem.
            self._replaced = True
            reply = ex.deny(UpstreamError(diagnosis=f"upstream answered {status}"))
            reply.status = 502 if status != 503 and status != 504 else status
            self._emit_reply(reply)
            return
        headers = response_headers_from_upstream(raw)
        self.route.response_headers(ex, status, headers)
        keep = self._proto.keep_alive_after
        if ex.request.method == "HEAD" or length is not None:
            framing = f"content-length: {length or 0}\r\n" if length is not None else ""
        elif self._proto.current_http11:
            framing = "transfer-encoding: chunked\r\n"
            self._chunked = True
        else:
            framing = "connection: close\r\n"
            self._proto.keep_alive_after = keep = False
        if not keep and "connection: close" not in framing:
            framing += "connection: close\r\n"
        ex.status = status
        filters, limit = self.route.body_filters(ex, status, headers)
        if filters:
            self._filters, self._limit, self._held_bytes = filters, limit, 0
            self._held, self._status, self._headers, self._framing = [], status, headers, framing
            return
        self._out.append(serialize_head(status, headers, framing))
        self.head_sent = True

    def _release_held(self) -> None:
        """Give up filtering: send the head as the upstream framed it, then what was held."""
        held, self._held = self._held or [], None
        self._out.append(serialize_head(self._status, self._headers, self._framing))
        self.head_sent = True
        for chunk in held:
            self._write_chunk(chunk)

    def _finish_held(self) -> None:
        """The whole body is here: filter it and send it with its new length."""
        held, self._held = self._held or [], None
        body = b"".join(held)
        result = self.route.filter_body(self._filters, self.ex, self._status, self._headers, body)
        if isinstance(result, Reply):
            self._replaced = True
            self._emit_reply(result)
            return
        self._chunked = False
        framing = f"content-length: {len(result)}\r\n"
        if not self._proto.keep_alive_after:
            framing += "connection: close\r\n"
        self._out.append(serialize_head(self._status, self._headers, framing))
        self._out.append(result)
        self.ex.bytes_out += len(result)
        self.head_sent = True

    def _emit_reply(self, reply: Reply) -> None:
        self._out.append(self._proto.render_reply(reply, self.route, self.ex))
        self.head_sent = True

    def on_body(self, chunk: bytes) -> None:
        if self._replaced or self.ex.request.method == "HEAD":
            return
        held = self._held
        if held is not None:
            held.append(chunk)
            self._held_bytes += len(chunk)
            if self._held_bytes > self._limit:
                reply = self.route.body_too_large(
                    self._filters, self.ex, self._status, self._headers
                )
                if reply is not None:
                    self._held = None
                    self._replaced = True
                    self._emit_reply(reply)
                else:
                    self._release_held()
            return
        self._write_chunk(chunk)

    def _write_chunk(self, chunk: bytes) -> None:
        self.ex.bytes_out += len(chunk)
        if self._chunked:
            self._out.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self._out.append(chunk)

    def on_end(self) -> None:
        if self._held is not None:
            self._finish_held()
        if self._chunked and not self._replaced:
            self._out.append(b"0\r\n\r\n")
        self._finished = True

    def on_error(self, exc: Exception) -> None:
        self._finished = True
        if (
            isinstance(exc, StaleConnection)
            and not self.tries
            and self._held is None
            and not self.head_sent
            and self.ex.request.method in IDEMPOTENT
        ):
            self.tries += 1
            self.retry = True
            return
        self._held = None  # a partial body is never filtered nor sent
        if self.head_sent:
            # Too late for an error response: the client sees a truncated response.
            self.ex.decision = "error"
            self.ex.reason = getattr(exc, "code", "upstream.error")
            self.ex.diagnosis = str(exc)
            self._proto.keep_alive_after = False
            self._write_out()
            self._proto.abort()
            return
        err = exc if isinstance(exc, BastionError) else UpstreamError(diagnosis=str(exc))
        self._emit_reply(self.ex.deny(err))

    def _write_out(self) -> None:
        if self._out:
            self._proto.write(b"".join(self._out) if len(self._out) > 1 else self._out[0])
            self._out.clear()

    def flush(self) -> None:
        """Write what is buffered; once the response is complete, tell the connection."""
        self._write_out()
        if self._finished:
            self._finished = False
            self._proto.upstream_done(self)


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, gateway: Gateway, limits: ServerConfig, tls: bool) -> None:
        self.gateway = gateway
        self.limits = limits
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self._parser = httptools.HttpRequestParser(self)
        self._cur = _Parsed("", tls)
        self._url = b""
        self._header_timeout = limits.header_timeout
        self._body_timeout = limits.body_timeout
        self._keepalive_timeout = limits.keepalive_timeout
        self._max_url_bytes = limits.max_url_bytes
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._max_head_read = limits.max_url_bytes + limits.max_header_bytes + 8192
        self._read_len = 0  # length of the read being parsed
        self._head_reads = 0  # bytes of the reads the current head came in
        self._in_head = False  # between on_message_begin and on_headers_complete
        self._body_bytes = 0
        self._queue: deque[_Parsed] = deque()
        self._busy = False  # a request is being answered
        self._in_next = False  # _next() is on the stack
        self._reading_paused = False
        self._auditor = gateway.services.auditor
        self.deadline = 0.0  # monotonic; 0: none (see deadlines.py)
        # Bound once: arming a deadline is then two attribute stores.
        self._idle_cb: Callable[[], None] = self._on_idle_timeout
        self._read_cb: Callable[[], None] = self._on_read_timeout
        self._on_timeout = self._idle_cb
        self._pending_error: BastionError | None = None
        self._closed = False
        self._writing_paused = False
        self._upstream: UpstreamConnection | None = None
        self.keep_alive_after = True
        self.current_http11 = True

    # -- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "unknown"
        self.peer_ip = ip[7:] if ip.startswith("::ffff:") else ip
        self._cur = _Parsed(self.peer_ip, self.tls)  # bytes before a request line still get one
        sweeper().add(self)
        self._set_timer(self.limits.keepalive_timeout, self._on_idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        sweeper().discard(self)
        if self._upstream is not None:
            self._upstream.resume_reading()

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._upstream is not None:
            self._upstream.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._read_len = n = len(data)
        if self._in_head:
            # The head began in an earlier read and is still incomplete: this read counts
            # against the head limit (exact sizes are checked once the head is complete).
            self._head_reads += n
            if self._head_reads > self._max_head_read and not self._closed:
                self._in_head = False
                self._fail_parse(HeadersTooLarge(diagnosis="request head over the limit"))
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_parse(BadRequest("Protocol upgrades are not supported", diagnosis="upgrade"))
        except httptools.HttpParserCallbackError:
            self._fail_parse(self._pending_error or BadRequest(diagnosis="callback error"))
        except httptools.HttpParserError as exc:
            self._fail_parse(BadRequest(diagnosis=f"malformed request: {exc}"))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- timers -------------------------------------------------------------------------------
    def _set_timer(self, delay: float, cb: Callable[[], None]) -> None:
        self.deadline = time.monotonic() + delay
        self._on_timeout = cb

    def _cancel_timer(self) -> None:
        self.deadline = 0.0

    def on_deadline(self) -> None:
        self._on_timeout()

    def _on_idle_timeout(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _on_read_timeout(self) -> None:
        self._fail_parse(RequestTimeout(diagnosis="request not received in time"))

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        cur = self._cur = _Parsed(self.peer_ip, self.tls)
        cur.started = now = time.monotonic()
        self._url = b""
        self._head_reads = self._read_len  # bytes of the reads holding this head, at most
        self._in_head = True
        self._body_bytes = 0
        if not self._busy:
            self.deadline = now + self._header_timeout
            self._on_timeout = self._read_cb

    def on_url(self, url: bytes) -> None:
        self._url = self._url + url if self._url else url
        if len(self._url) > self._max_url_bytes:
            self._pending_error = UriTooLong(
                diagnosis=f"URL longer than {self._max_url_bytes} bytes"
            )
            raise self._pending_error

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sizes and count are checked once the head is complete (exactly, when the reads it
        # came in could exceed the limit), and data_received bounds a head that spans reads.
        self._cur.header_items.append(
            (HEADER_NAME_CACHE.get(name) or header_name(name), value.decode("latin-1"))
        )

    def on_headers_complete(self) -> None:
        self._in_head = False
        cur = self._cur
        parser = self._parser
        raw_method = parser.get_method()
        method = _METHOD_NAMES.get(raw_method)  # the allow-list, as str
        cur.method = method or raw_method.decode("ascii", "replace")
        cur.http_version = parser.get_http_version()
        if cur.http_version not in ("1.1", "1.0"):  # HTTP/0.9-style lines are not requests
            self._pending_error = BadRequest(
                diagnosis=f"unsupported HTTP version {cur.http_version}"
            )
            raise self._pending_error
        if method is None:
            self._pending_error = MethodNotAllowed(
                diagnosis=f"method {cur.method[:16]} not allowed"
            )
            raise self._pending_error
        cur.keep_alive = parser.should_keep_alive()
        try:
            url: Any = httptools.parse_url(self._url)  # its stub promises bytes, not None
        except httptools.HttpParserInvalidURLError:
            self._pending_error = BadRequest(diagnosis="invalid request target")
            raise self._pending_error from None
        if url.schema is not None or url.host is not None:
            self._pending_error = BadRequest(diagnosis="absolute-form request target")
            raise self._pending_error
        cur.path = url.path.decode("latin-1") if url.path else ""
        cur.query = url.query.decode("latin-1") if url.query else ""
        items = cur.header_items
        if self._head_reads > self._max_header_bytes or len(items) > self._max_headers:
            # The reads holding this head could exceed a limit: count exactly.
            size = sum([len(k) + len(v) + 4 for k, v in items])
            if size > self._max_header_bytes or len(items) > self._max_headers:
                self._pending_error = HeadersTooLarge(diagnosis="request headers over the limit")
                raise self._pending_error
        host = ""
        length: int | None = None
        expect = False
        for k, v in items:
            if k == "host":
                host = v
            elif k == "content-length":
                length = int(v) if v.isdigit() else None
            elif k == "expect":
                expect = expect or v.lower() == "100-continue"
        hostname = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
        route = self.gateway.match(hostname.lower(), cur.path)
        cur.route = route
        limit = route.max_body_bytes if route is not None else self.gateway.default_max_body
        if length is not None and length > limit:
            self._pending_error = PayloadTooLarge(diagnosis=f"content-length {length} > {limit}")
            raise self._pending_error
        if not self._busy:
            self.deadline = time.monotonic() + self._body_timeout
            self._on_timeout = self._read_cb
            if expect:
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        cur = self._cur
        self._body_bytes += len(body)
        limit = cur.route.max_body_bytes if cur.route is not None else self.gateway.default_max_body
        if self._body_bytes > limit:
            self._pending_error = PayloadTooLarge(diagnosis=f"body over {limit} bytes")
            raise self._pending_error
        cur.body_parts.append(body)

    def on_message_complete(self) -> None:
        self._queue.append(self._cur)
        if self._busy:
            if len(self._queue) > 8 and self.transport is not None:
                self.transport.pause_reading()  # pipelining flood: stop reading until we catch up
                self._reading_paused = True
            return
        self._cancel_timer()
        self._next()

    # -- serving --------------------------------------------------------------------------------
    # Requests on a connection are answered one at a time, in order. The common case runs
    # without a task or a future: the layers decide synchronously (Layer.check), the request
    # goes out on an idle pooled connection, and the upstream's callbacks write the response
    # and hand the exchange to the audit log. Anything that must wait (a layer's I/O, a new
    # upstream connection, a full audit buffer) continues in a task, then comes back here.

    def _next(self) -> None:
        """Answer queued requests until one has to wait or the queue is empty."""
        if self._in_next:
            return  # the loop below is already running further up the stack
        self._in_next = True
        try:
            while not self._busy and not self._closed:
                if not self._queue:
                    if self._reading_paused and self.transport is not None:
                        self._reading_paused = False
                        self.transport.resume_reading()
                    self.deadline = time.monotonic() + self._keepalive_timeout
                    self._on_timeout = self._idle_cb
                    return
                parsed = self._queue.popleft()
                self._busy = True
                try:
                    self._start(parsed)
                except Exception:  # never let a bug become a traceback on the wire
                    log.exception("unhandled error while serving a request")
                    self._close()
        finally:
            self._in_next = False

    def _close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()

    def _end(self, p: _Parsed) -> None:
        """The exchange of ``p`` is answered and audited: go on with the next request."""
        self._busy = False
        if not self.keep_alive_after or p.error is not None:
            self._close()
            return
        self._next()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        _CONTINUATIONS.add(task)  # a strong reference until it is done
        task.add_done_callback(_CONTINUATIONS.discard)

    def _start(self, p: _Parsed) -> None:
        gw = self.gateway
        self.keep_alive_after = p.keep_alive
        self.current_http11 = p.http_version == "1.1"
        parts = p.body_parts
        if parts:
            p.body = parts[0] if len(parts) == 1 else b"".join(parts)
        ex = gw.new_exchange(p, p.started)
        route = p.route
        if route is None:
            err = p.error
            if err is None:
                problem = path_problem(p.path)
                err = BadRequest(diagnosis=problem) if problem else NotFound()
            self._send_reply(gw.reject(ex, err), None, ex)
            self._audit(ex, p)
            return
        ex.route_name = route.name
        err = p.error  # e.g. 413: the route was known from the head
        if err is None:
            problem = path_problem(p.path)
            if problem is not None:
                err = BadRequest(diagnosis=problem)
        if err is not None:
            self._send_reply(ex.deny(err), route, ex)
            self._audit(ex, p)
            return
        try:
            result = route.run_sync(ex)
        except Exception:
            log.exception("layer failed on route %s", route.name)
            result = ex.deny(InternalError(diagnosis="layer failure"))
        if result is None:
            self._forward(ex, route, p)
        elif type(result) is int:
            self._spawn(self._run_layers_async(ex, route, p, result))
        else:
            assert isinstance(result, Reply)
            self._send_reply(result, route, ex)
            self._audit(ex, p)

    async def _run_layers_async(
        self, ex: Exchange, route: RouteRuntime, p: _Parsed, i: int
    ) -> None:
        """A layer needs I/O: await it and the rest of the chain, then go on synchronously."""
        try:
            reply = await route.run_from(ex, i)
        except Exception:
            log.exception("layer failed on route %s", route.name)
            reply = ex.deny(InternalError(diagnosis="layer failure"))
        try:
            if reply is None:
                self._forward(ex, route, p)
            else:
                self._send_reply(reply, route, ex)
                self._audit(ex, p)
        except Exception:
            log.exception("unhandled error while serving a request")
            self._close()

    def _forward(self, ex: Exchange, route: RouteRuntime, p: _Parsed) -> None:
        req = ex.request
        sink = _ClientSink(self, ex, route, p)
        pool = route.pool
        if pool is None:  # excluded by gateway_problems() at start-up
            sink.on_error(UpstreamUnavailable(diagnosis="route has no upstream"))
            sink.flush()
            return
        head = route.request_head(ex)
        sink.raw = head + req.body if req.body else head
        self._send_upstream(sink, pool)

    def _send_upstream(self, sink: _ClientSink, pool: UpstreamPool) -> None:
        conn = pool.idle_connection()
        if conn is None:
            self._spawn(self._connect_and_send(sink, pool))
            return
        self._upstream = conn
        if self._writing_paused:
            conn.pause_reading()
        conn.send(sink.raw, sink, sink.ex.request.method == "HEAD")

    async def _connect_and_send(self, sink: _ClientSink, pool: UpstreamPool) -> None:
        """No idle upstream connection: open one (or wait for a free one), then send."""
        try:
            conn = await pool.connection()
        except (UpstreamUnavailable, UpstreamTimeout) as exc:
            sink.on_error(exc)
            sink.flush()
            return
        except Exception:
            log.exception("unhandled error while connecting upstream")
            self._close()
            return
        self._upstream = conn
        if self._writing_paused:
            conn.pause_reading()
        conn.send(sink.raw, sink, sink.ex.request.method == "HEAD")

    def upstream_done(self, sink: _ClientSink) -> None:
        """Called by the sink once its response is written (or failed)."""
        self._upstream = None
        if sink.retry:
            # A reused connection died before answering an idempotent request: once more.
            sink.retry = False
            pool = sink.route.pool
            assert pool is not None
            self._send_upstream(sink, pool)
            return
        self._audit(sink.ex, sink.parsed)

    def _audit(self, ex: Exchange, p: _Parsed) -> None:
        """Hand the exchange to the audit log (exactly once), then go on."""
        auditor = self._auditor
        if auditor.full:
            self._spawn(self._audit_when_space(ex, p))
            return
        auditor.submit(ex)
        self._end(p)

    async def _audit_when_space(self, ex: Exchange, p: _Parsed) -> None:
        """Backpressure: a stalled audit sink slows requests down, it never loses a record."""
        auditor = self._auditor
        while auditor.full:
            await auditor.wait_for_space()
        auditor.submit(ex)
        self._end(p)

    def render_reply(self, reply: Reply, route: RouteRuntime | None, ex: Exchange) -> bytes:
        """A gateway-made response, with the route's response headers, as bytes; records the
        status on the exchange. A HEAD request gets the head only."""
        headers = Headers([(k.lower(), v) for k, v in reply.headers])  # names: lower case
        if route is not None:
            route.response_headers(ex, reply.status, headers)
        ex.status = reply.status
        body = b"" if ex.request.method == "HEAD" else reply.body
        ex.bytes_out = len(body)
        framing = f"content-length: {len(reply.body)}\r\n"
        if not self.keep_alive_after:
            framing += "connection: close\r\n"
        return serialize_head(reply.status, headers, framing) + body

    def _send_reply(self, reply: Reply, route: RouteRuntime | None, ex: Exchange) -> None:
        self.write(self.render_reply(reply, route, ex))

    def _fail_parse(self, err: BastionError) -> None:
        """Queue an error answer for a request we could not parse or accept; the connection
        closes after it (and after any earlier pipelined responses)."""
        self._cancel_timer()
        self._pending_error = None
        self._in_head = False
        if self._closed or self.transport is None:
            return
        self.transport.pause_reading()
        self._reading_paused = True
        cur = self._cur
        if not cur.path:
            cur.path = bytes(self._url[:256]).decode("latin-1")
        cur.error = err
        cur.keep_alive = False
        if not cur.started:
            cur.started = time.monotonic()
        self._parser = httptools.HttpRequestParser(self)  # the old one is in an error state
        self._queue.append(cur)
        if not self._busy:
            self._next()


def server_tls_context(
    cert: str, key: str, password: str | None, min_version: str
) -> ssl.SSLContext:
    """A TLS server context: TLS 1.2 minimum (1.0/1.1 refused), forward-secret AEAD ciphers
    only for TLS 1.2, no compression, no renegotiation, HTTP/1.1 over ALPN."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!DSS:!RSA+AES")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(cert, key, password)
    return ctx
