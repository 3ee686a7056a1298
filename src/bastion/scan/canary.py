"""The SSRF canary: an HTTP listener on 127.0.0.1 that records who fetched which token.

A check puts :meth:`Canary.url` (a fresh unguessable token in the path) into a URL-like
parameter; if the target then fetches that URL, :meth:`Canary.wait` sees the hit. A hit is
proof: nobody else knows the token. The listener answers every request ``200 ok`` with a tiny
body and keeps at most :data:`MAX_HITS` records; it parses requests with ``httptools``.

It listens on loopback only, so it proves SSRF against targets on this machine (CI services,
a local container with host networking). Against a remote target the SSRF check reports that
it could not test.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass

import httptools

__all__ = ["Canary", "CanaryHit"]

MAX_HITS = 1000
_MAX_REQUEST = 64 * 1024
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n"
    b"connection: close\r\n\r\nok"
)


@dataclass(frozen=True, slots=True)
class CanaryHit:
    token: str
    method: str
    path: str
    peer: str


class _Parser:
    """httptools callbacks: remember the URL, note when the head is complete."""

    def __init__(self) -> None:
        self.url = b""
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        self.done = True


class Canary:
    """Start with :meth:`start`, stop with :meth:`close` (or ``async with``)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.hits: list[CanaryHit] = []
        self._server: asyncio.Server | None = None
        self._event = asyncio.Event()

    async def start(self) -> Canary:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aenter__(self) -> Canary:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @staticmethod
    def new_token() -> str:
        """An unguessable token (URL-safe)."""
        return secrets.token_hex(12)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, token: str) -> str:
        """The URL to plant: ``http://127.0.0.1:<port>/c/<token>``."""
        return f"{self.base_url}/c/{token}"

    def hits_for(self, token: str) -> list[CanaryHit]:
        return [h for h in self.hits if h.token == token]

    async def wait(self, token: str, seconds: float = 1.0) -> CanaryHit | None:
        """The first hit for ``token`` within ``seconds``, else None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            found = self.hits_for(token)
            if found:
                return found[0]
            left = deadline - loop.time()
            if left <= 0:
                return None
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), left)
            except TimeoutError:
                continue

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser_state = _Parser()
        parser = httptools.HttpRequestParser(parser_state)
        received = 0
        try:
            while not parser_state.done and received < _MAX_REQUEST:
                data = await asyncio.wait_for(reader.read(4096), 5.0)
                if not data:
                    break
                received += len(data)
                parser.feed_data(data)
            if parser_state.done:
                self._record(parser.get_method().decode("latin-1"), parser_state.url, writer)
                writer.write(_RESPONSE)
                await writer.drain()
        except (httptools.HttpParserError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _record(self, method: str, raw_url: bytes, writer: asyncio.StreamWriter) -> None:
        try:
            path = httptools.parse_url(raw_url).path.decode("latin-1")
        except httptools.HttpParserInvalidURLError:
            return
        parts = path.split("/")
        token = parts[2] if len(parts) >= 3 and parts[1] == "c" else ""
        peer = writer.get_extra_info("peername")
        if token and len(self.hits) < MAX_HITS:
            self.hits.append(CanaryHit(token, method, path, str(peer[0]) if peer else "?"))
            self._event.set()
