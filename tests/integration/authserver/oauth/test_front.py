"""The authorization server's own HTTP front end on a real loopback socket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator

import orjson
import pytest

from bastion.authserver.front import _FEED_SLICE, _MAX_QUEUED, AuthHttpProtocol, FrontLimits
from tests.unit.authserver.oauth.harness import Harness, make_harness

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]


@contextlib.asynccontextmanager
async def front(h: Harness, limits: FrontLimits) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: AuthHttpProtocol(h.server, limits, False), "127.0.0.1", 0
    )
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


def token_request(client: str, secret: str, *, close: bool = False) -> bytes:
    body = b"grant_type=client_credentials"
    auth = base64.b64encode(f"{client}:{secret}".encode()).decode()
    head = (
        "POST /token HTTP/1.1\r\nHost: auth\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Authorization: Basic {auth}\r\nContent-Length: {len(body)}\r\n"
    )
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    h = await make_harness()
    secret = await h.register()
    async with front(h, FrontLimits()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(token_request("svc", secret) + token_request("svc", "wrong"))
        first = await read_response(reader)
        second = await read_response(reader)
        assert first[0] == 200
        assert orjson.loads(first[2])["token_type"] == "Bearer"
        assert second[0] == 401
        writer.write(token_request("svc", secret, close=True))
        third = await read_response(reader)
        assert third[0] == 200
        assert third[1]["connection"] == "close"
        assert await reader.read() == b""
        writer.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST /token HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", 413),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 17000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (
            b"POST /token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"800\r\n"
            + b"a" * 2048
            + b"\r\n",
            413,
        ),
    ],
)
async def test_limits_are_enforced_while_parsing(raw: bytes, status: int) -> None:
    h = await make_harness()
    async with front(h, FrontLimits(max_body=1024)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        got = await read_response(reader)
        assert got[0] == status
        assert await reader.read() == b""  # and the connection is closed
        writer.close()


async def test_a_slow_head_gets_408_and_an_idle_connection_is_closed() -> None:
    h = await make_harness()
    limits = FrontLimits(header_timeout=0.2, keepalive_timeout=0.2)
    async with front(h, limits) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /jwks HTTP/1.1\r\nHost: a\r\n")  # never finished
        got = await asyncio.wait_for(read_response(reader), 5)
        assert got[0] == 408
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /jwks HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed when idle
        writer.close()


METADATA_GET = b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_a_pipelining_client_that_never_reads_cannot_grow_server_memory() -> None:
    """The attack: pipeline ~1 MB of small requests on one socket and never read a byte. The
    server must stop parsing (bounded queue) and stop writing (bounded write buffer) instead of
    holding every request and every response in memory."""
    h = await make_harness()
    protocols: list[AuthHttpProtocol] = []

    def factory() -> AuthHttpProtocol:
        protocol = AuthHttpProtocol(h.server, FrontLimits(), False)
        protocols.append(protocol)
        return protocol

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(factory, "127.0.0.1", 0)
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(srv.sockets[0].getsockname())
        sock.setblocking(False)
        flood = METADATA_GET * 18_000
        sent = 0
        for _ in range(200):
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(flood[sent : sent + 65_536])
            if sent >= len(flood):
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)
        (protocol,) = protocols
        transport = protocol._transport
        assert transport is not None
        assert transport.get_write_buffer_size() < 1_000_000
        assert len(protocol._queue) <= _MAX_QUEUED + _FEED_SLICE // len(METADATA_GET) + 1
        assert len(protocol._unparsed) <= 262_144  # at most one read waits unparsed
    finally:
        sock.close()
        srv.close()
        await srv.wait_closed()


async def test_pipelined_requests_beyond_the_queue_limit_are_all_answered_in_order() -> None:
    h = await make_harness()
    async with front(h, FrontLimits()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        count = 3 * _MAX_QUEUED + 200
        writer.write(b"GET /jwks HTTP/1.1\r\nHost: x\r\n\r\n" * (count - 1))
        writer.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        statuses = [(await asyncio.wait_for(read_response(reader), 5))[0] for _ in range(count)]
        assert statuses == [200] * (count - 1) + [404]
        writer.close()
