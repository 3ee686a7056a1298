"""A small, controllable HTTP/1.1 upstream for gateway tests (raw asyncio + httptools).

Paths: ``/echo`` (JSON of what arrived), ``/chunked``, ``/close`` (close-delimited body),
``/boom`` (500 with a stack trace), ``/leaky`` (version headers), ``/slow?ms=N``,
``/big?kb=N`` (chunked, large), ``/drop`` (closes without answering), ``/status/N``.
It counts connections, so tests can prove keep-alive reuse.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import httptools
import orjson


class _Conn(asyncio.Protocol):
    def __init__(self, owner: TestUpstream) -> None:
        self.owner = owner
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner.connections += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode().lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        url = httptools.parse_url(self.url)
        asyncio.get_running_loop().create_task(
            self.respond(
                method,
                url.path.decode(),
                (url.query or b"").decode(),
                list(self.headers),
                self.body,
            )
        )

    def send(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, length: bool = True
    ) -> None:
        assert self.transport is not None
        head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        if length:
            head += f"content-length: {len(body)}\r\n"
        self.transport.write(head.encode() + b"\r\n" + body)

    async def respond(
        self, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        assert self.transport is not None
        self.owner.requests.append((method, path, query, headers, body))
        q = {k: v[0] for k, v in parse_qs(query).items()}
        if path == "/drop":
            self.transport.close()
        elif path == "/chunked":
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
        elif path == "/close":
            self.transport.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil-eof")
            self.transport.close()
        elif path == "/boom":
            trace = b'Traceback (most recent call last):\n  File "/srv/app.py", line 3\nKeyError: db_password'
            self.send(
                500,
                [("content-type", "text/plain"), ("server", "Werkzeug/2.0.1 Python/3.8")],
                trace,
            )
        elif path == "/leaky":
            self.send(
                200,
                [
                    ("server", "Apache/2.4.1"),
                    ("x-powered-by", "PHP/5.6"),
                    ("x-aspnet-version", "4.0"),
                    ("content-type", "application/json"),
                ],
                b"{}",
            )
        elif path == "/slow":
            await asyncio.sleep(int(q.get("ms", "100")) / 1000)
            self.send(200, [], b"slow")
        elif path == "/big":
            kb = int(q.get("kb", "1024"))
            self.transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            chunk = b"x" * 1024
            for _ in range(kb):
                self.transport.write(b"400\r\n" + chunk + b"\r\n")
                await asyncio.sleep(0)
            self.transport.write(b"0\r\n\r\n")
        elif path.startswith("/status/"):
            self.send(int(path.rsplit("/", 1)[1]), [("content-type", "text/plain")], b"status body")
        else:
            payload = {
                "method": method,
                "path": path,
                "query": query,
                "headers": dict(headers),
                "body": body.decode("latin-1"),
            }
            if method == "HEAD":
                self.send(
                    200,
                    [("content-type", "application/json"), ("content-length", "1234")],
                    b"",
                    length=False,
                )
            else:
                self.send(200, [("content-type", "application/json")], orjson.dumps(payload))


class TestUpstream:
    """Start with ``await start()``; ``port`` is then set."""

    __test__ = False

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[str, str, str, list[tuple[str, str]], bytes]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> TestUpstream:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
