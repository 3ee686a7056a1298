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
