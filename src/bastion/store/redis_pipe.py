"""One Redis connection for the gateway's per-request path: commands pipelined, replies in order.

redis-py costs about 70 µs of client CPU per command on this project's machines (measured:
``bench/ratelimit.py`` and docs/benchmarks.md); most of it is its generic machinery (connection
pool, retries, per-argument encoding, stream reader), none of it the protocol. Here hiredis
packs each command and parses the replies (both in C), an :class:`asyncio.Protocol` writes and
reads, and a FIFO of futures matches replies to commands: about 14 µs per round trip.

It takes its settings from a redis-py client (:meth:`RedisPipe.from_client`): host and port or
unix socket, TLS (``rediss://``: the default context, or the URL's ``ssl_cert_reqs``,
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``), user and password
(``AUTH``), database (``SELECT``), client name and timeouts. It connects on the first call and
again after a failure. Every failure (refused connection, timeout, lost connection, an error
reply) raises; a timeout or a lost connection also closes it, because the order of replies can
no longer be trusted. Callers decide what a failure means (the rate limiter falls back to its
local limiter).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

Arg = str | bytes | int | float


class RedisReplyError(Exception):
    """Redis answered with an error (``-ERR …``, ``-NOSCRIPT …``)."""


@dataclass(frozen=True)
class PipeSettings:
    """Where and how to connect (no password in ``repr``)."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    client_name: str | None = None
    timeout: float = 1.0
    connect_timeout: float = 1.0
    tls: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        where = self.path or f"{self.host}:{self.port}"
        return f"PipeSettings({where}/{self.db}, tls={self.tls is not None})"


def _tls_context(kwargs: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=kwargs.get("ssl_ca_certs"))
    reqs = kwargs.get("ssl_cert_reqs", "required")
    if isinstance(reqs, str):
        reqs = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(
            reqs.lower(), ssl.CERT_REQUIRED
        )
    check_hostname = bool(kwargs.get("ssl_check_hostname", True)) and reqs != ssl.CERT_NONE
    ctx.check_hostname = check_hostname
    ctx.verify_mode = reqs
    if kwargs.get("ssl_certfile"):
        ctx.load_cert_chain(kwargs["ssl_certfile"], kwargs.get("ssl_keyfile"))
    return ctx


def settings_of(client: Redis) -> PipeSettings:
    """The connection settings of a redis-py client."""
    pool = client.connection_pool
    kw = pool.connection_kwargs
    timeout = kw.get("socket_timeout") or 1.0
    return PipeSettings(
        host=str(kw.get("host", "127.0.0.1")),
        port=int(kw.get("port", 6379)),
        path=kw.get("path")
        if issubclass(pool.connection_class, UnixDomainSocketConnection)
        else None,
        db=int(kw.get("db", 0) or 0),
        username=kw.get("username"),
        password=kw.get("password"),
        client_name=kw.get("client_name"),
        timeout=float(timeout),
        connect_timeout=float(kw.get("socket_connect_timeout") or timeout),
        tls=_tls_context(kw) if issubclass(pool.connection_class, SSLConnection) else None,
    )


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader, pending = self.reader, self.pending
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                if not pending:
                    raise hiredis.ProtocolError("reply without a command")
                future = pending.popleft()
                if not future.done():
                    if isinstance(reply, hiredis.ReplyError):
                        future.set_exception(RedisReplyError(str(reply)))
                    else:
                        future.set_result(reply)
        except hiredis.ProtocolError as exc:
            self._fail(ConnectionError(f"Redis protocol error: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("Redis connection lost") if exc is None else exc)

    def _fail(self, exc: BaseException) -> None:
        self.lost = exc
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(exc)


class RedisPipe:
    """A pipelined connection; use from one event loop."""

    def __init__(self, settings: PipeSettings) -> None:
        self.settings = settings
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    @classmethod
    def from_client(cls, client: Redis) -> RedisPipe:
        return cls(settings_of(client))

    async def _connect(self) -> _Protocol:
        s = self.settings
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(s.connect_timeout):
            if s.path is not None:
                transport, proto = await loop.create_unix_connection(_Protocol, s.path)
            else:
                transport, proto = await loop.create_connection(
                    _Protocol,
                    s.host,
                    s.port,
                    ssl=s.tls,
                    server_hostname=s.host if s.tls is not None else None,
                )
        try:
            if s.password is not None:
                auth: list[Arg] = ["AUTH", s.password]
                if s.username:
                    auth.insert(1, s.username)
                await self._send(proto, auth, s.connect_timeout)
            if s.db:
                await self._send(proto, ["SELECT", s.db], s.connect_timeout)
            if s.client_name:
                await self._send(proto, ["CLIENT", "SETNAME", s.client_name], s.connect_timeout)
        except BaseException:
            transport.abort()
            raise
        return proto

    async def _ready(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.lost is None:
            return proto
        self._proto = None
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        task = self._connecting
        try:
            proto = await asyncio.shield(task)
        finally:
            if task.done():
                self._connecting = None
        self._proto = proto
        return proto

    @staticmethod
    async def _send(proto: _Protocol, args: Sequence[Arg], limit: float) -> Any:
        transport = proto.transport
        if transport is None or proto.lost is not None:
            raise ConnectionError("Redis connection lost")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        proto.pending.append(future)
        transport.write(hiredis.pack_command(tuple(args)))  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(limit):
                return await future
        except TimeoutError:
            # A reply may still come: the FIFO can no longer be trusted.
            proto._fail(TimeoutError("Redis reply timed out"))
            transport.abort()
            raise

    async def call(self, *args: Arg) -> Any:
        """Send one command and return its reply (bytes, int, list, None).

        Raises RedisReplyError for an error reply, TimeoutError after the client's timeout,
        OSError/ConnectionError when Redis cannot be reached.
        """
        proto = await self._ready()
        return await self._send(proto, args, self.settings.timeout)

    async def aclose(self) -> None:
        task, self._connecting = self._connecting, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
