"""The keep-alive pool on its own: limits, waiting, retries only where they are safe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bastion.errors import UpstreamUnavailable
from bastion.gateway.upstream import UpstreamPool
from tests.support.gateway import GatewayHarness
from tests.support.upstream import TestUpstream

pytestmark = pytest.mark.integration


class Collect:
    """A ResponseSink that keeps what it gets."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.error: Exception | None = None
        self.ended = False

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        self.status = status

    def on_body(self, chunk: bytes) -> None:
        self.body += chunk

    def on_end(self) -> None:
        self.ended = True

    def on_error(self, exc: Exception) -> None:
        self.error = exc

    def flush(self) -> None:
        return None


@pytest.fixture
async def upstream() -> AsyncIterator[TestUpstream]:
    up = await TestUpstream().start()
    yield up
    await up.aclose()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: t\r\n\r\n".encode()


async def test_pool_limit_makes_callers_wait_then_reuses(upstream: TestUpstream) -> None:
    pool = UpstreamPool("127.0.0.1", upstream.port, max_connections=1, connect_timeout=5)
    sinks = [Collect() for _ in range(3)]
    await asyncio.gather(*(pool.request("GET", get("/slow?ms=100"), s) for s in sinks))
    assert [s.status for s in sinks] == [200, 200, 200]
    assert upstream.connections == 1
    await pool.aclose()


async def test_pool_exhausted_fails_after_connect_timeout(upstream: TestUpstream) -> None:
    pool = UpstreamPool("127.0.0.1", upstream.port, max_connections=1, connect_timeout=0.3)
    slow = asyncio.ensure_future(pool.request("GET", get("/slow?ms=1500"), Collect()))
    await asyncio.sleep(0.05)
    with pytest.raises(UpstreamUnavailable, match="exhausted"):
        await pool.request("GET", get("/echo"), Collect())
    await slow
    await pool.aclose()


async def test_connect_refused_is_unavailable() -> None:
    pool = UpstreamPool("127.0.0.1", 9, connect_timeout=1)
    with pytest.raises(UpstreamUnavailable):
        await pool.request("GET", get("/"), Collect())
    assert pool.open_connections == 0


async def test_read_timeout_reported_to_sink(upstream: TestUpstream) -> None:
    pool = UpstreamPool("127.0.0.1", upstream.port, read_timeout=0.3)
    sink = Collect()
    await pool.request("GET", get("/slow?ms=2000"), sink)
    assert sink.error is not None
    assert getattr(sink.error, "code", "") == "upstream.timeout"
    assert pool.open_connections == 0  # never reused after a timeout
    await pool.aclose()


def test_reused_connection_dropped_get_is_retried_post_is_not(gateway: GatewayHarness) -> None:
    assert gateway.request("GET", "/public/echo").status == 200  # warm: one idle connection
    seen = len(gateway.upstream.requests)
    assert gateway.request("GET", "/public/drop").status == 502
    # The GET was sent on the reused connection, died unanswered, and was retried once.
    assert len(gateway.upstream.requests) - seen == 2
    assert gateway.request("GET", "/public/echo").status == 200
    seen = len(gateway.upstream.requests)
    assert gateway.request("POST", "/public/drop", body=b"{}").status == 502
    # A POST is never replayed: the upstream may have acted on it.
    assert len(gateway.upstream.requests) - seen == 1


class RawUpstream:
    """An upstream that answers the n-th request on a connection with ``responses[n]``, written
    as separate chunks with a pause between them."""

    def __init__(self, responses: list[list[bytes]]) -> None:
        self.responses = responses
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await asyncio.sleep(0.05)
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            for chunks in self.responses:
                await reader.readuntil(b"\r\n\r\n")
                for chunk in chunks:
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.01)
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_response_head_over_the_limit_in_one_read_is_an_error() -> None:
    big = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 5000 + b"\r\ncontent-length: 0\r\n\r\n"
    async with RawUpstream([[big]]) as up:
        pool = UpstreamPool("127.0.0.1", up.port, max_response_header_bytes=4096)
        sink = Collect()
        await pool.request("GET", get("/"), sink)
        assert sink.status == 0
        assert isinstance(sink.error, Exception)
        assert "headers too large" in str(getattr(sink.error, "diagnosis", ""))
        assert pool.open_connections == 0
        await pool.aclose()


async def test_endless_response_head_is_cut_off_before_it_ends() -> None:
    # The head never completes: each read is counted, the connection dropped past the limit.
    trickle = [b"HTTP/1.1 200 OK\r\n"] + [b"x-h: " + b"b" * 1000 + b"\r\n"] * 10
    async with RawUpstream([trickle]) as up:
        pool = UpstreamPool("127.0.0.1", up.port, max_response_header_bytes=4096, read_timeout=5)
        sink = Collect()
        await pool.request("GET", get("/"), sink)
        assert sink.status == 0
        assert "headers too large" in str(getattr(sink.error, "diagnosis", ""))
        await pool.aclose()


async def test_one_parser_reads_successive_responses_on_a_reused_connection() -> None:
    first = [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfir", b"st"]
    second = [b"HTTP/1.1 204 No Content\r\n\r\n"]
    third = [b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\nlast"]
    fourth = [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nend\r\n0\r\n\r\n"]
    async with RawUpstream([first, second, third, fourth]) as up:
        pool = UpstreamPool("127.0.0.1", up.port, max_connections=1)
        results = []
        for _ in range(4):
            sink = Collect()
            await pool.request("GET", get("/"), sink)
            assert sink.error is None
            assert sink.ended
            results.append((sink.status, sink.body))
            assert pool.open_connections == 1 or len(results) == 4
        assert results == [(200, b"first"), (204, b""), (201, b"last"), (200, b"end")]
        await pool.aclose()
