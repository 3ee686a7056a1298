"""Ownership resolvers: who owns object ``42``, asked of a database or an internal service.

Every lookup returns the owners' ids as strings (empty: no such object) or raises
:class:`ResolverError`; the authz layer fails closed on errors. :class:`CachedResolver` keeps
answers for a short TTL in a bounded LRU (negative answers too, shorter), lets concurrent
requests for one object share one lookup, and bounds every lookup by a timeout.

Backends: SQLite through ``sqlite3`` on one worker thread (the event loop never waits on
disk), PostgreSQL through ``asyncpg`` (imported only when used), HTTP through the gateway's
own upstream pool (``httptools``; no third-party client on the request path).
"""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import quote, unquote

import orjson

from bastion.core.clock import Clock
from bastion.errors import BastionError, ConfigError
from bastion.gateway.layers.authz.config import HttpResolverConfig, SqlResolverConfig
from bastion.gateway.upstream import UpstreamPool

MAX_OWNERS = 1000


class ResolverError(Exception):
    """A resolver could not answer; ``str()`` is a diagnosis without secrets."""


def as_text(value: Any) -> str | None:
    """An id as the string it is compared as (``5``, ``"5"`` → ``"5"``); None when it is not
    a scalar an id can be."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def _owners(values: Any) -> frozenset[str]:
    items = values if isinstance(values, list) else [values]
    return frozenset(t for t in (as_text(v) for v in items[:MAX_OWNERS]) if t is not None)


class OwnerLookup(Protocol):
    """One backend: the owners of ``object_id`` (typed as the parameter was coerced)."""

    async def lookup(self, object_id: Any) -> frozenset[str]: ...

    async def aclose(self) -> None: ...


class SqliteLookup:
    """Runs the query on a read-only connection owned by one worker thread."""

    def __init__(self, path: str, query: str, timeout: float) -> None:
        self._path = path
        self._query = query
        self._timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-authz")
        self._conn: sqlite3.Connection | None = None

    def _run(self, object_id: Any) -> list[Any]:
        if self._conn is None:
            uri = f"file:{quote(self._path)}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=self._timeout)
        rows = self._conn.execute(self._query, (object_id,)).fetchmany(MAX_OWNERS)
        return [row[0] for row in rows]

    async def lookup(self, object_id: Any) -> frozenset[str]:
        loop = asyncio.get_running_loop()
        try:
            values = await loop.run_in_executor(self._executor, self._run, object_id)
        except sqlite3.Error as exc:
            raise ResolverError(f"sqlite: {exc}") from None
        return _owners(values)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)


class PostgresLookup:
    """Runs the query on a small asyncpg pool, created on first use."""

    def __init__(self, url: str, query: str, pool_size: int, timeout: float) -> None:
        try:
            import asyncpg  # noqa: F401 - only needed when a PostgreSQL resolver is configured
        except ImportError:  # pragma: no cover - asyncpg is a dependency
            raise ConfigError(
                ["authz.resolvers: postgresql:// needs the asyncpg package"]
            ) from None
        self._url = url
        self._query = query
        self._size = pool_size
        self._timeout = timeout
        self._pool: Any = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> Any:
        import asyncpg

        async with self._lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._url, min_size=0, max_size=self._size, timeout=self._timeout
                )
        return self._pool

    async def lookup(self, object_id: Any) -> frozenset[str]:
        import asyncpg

        try:
            pool = await self._get_pool()
            rows = await pool.fetch(self._query, object_id, timeout=self._timeout)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            # Never the URL: it may hold a password.
            raise ResolverError(f"postgresql: {type(exc).__name__}") from None
        return _owners([row[0] for row in rows])

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class _Collect:
    """A ResponseSink that keeps a small response whole."""

    __slots__ = ("body", "done", "error", "limit", "status", "too_large")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.status = 0
        self.body = bytearray()
        self.too_large = False
        self.done = False
        self.error: Exception | None = None

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        self.status = status
        if length is not None and length > self.limit:
            self.too_large = True

    def on_body(self, chunk: bytes) -> None:
        if len(self.body) + len(chunk) > self.limit:
            self.too_large = True
        elif not self.too_large:
            self.body += chunk

    def on_end(self) -> None:
        self.done = True

    def on_error(self, exc: Exception) -> None:
        self.error = exc

    def flush(self) -> None:
        return None


class HttpLookup:
    """GET ``<url><path with {id}>`` on a keep-alive pool; ``{"owner": …}`` or 404."""

    def __init__(self, cfg: HttpResolverConfig) -> None:
        url = cfg.url
        tls = url.scheme == "https"
        host = url.host or "127.0.0.1"
        port = url.port or (443 if tls else 80)
        self._pool = UpstreamPool(
            host.strip("[]"),
            port,
            tls=ssl.create_default_context() if tls else None,
            server_hostname=host if tls else None,
            connect_timeout=cfg.timeout,
            read_timeout=cfg.timeout,
            max_connections=16,
            idle_timeout=30.0,
        )
        default_port = port == (443 if tls else 80)
        host_header = host if default_port else f"{host}:{port}"
        base = (url.path or "").rstrip("/")
        self._prefix, self._suffix = (base + cfg.path).split("{id}")
        auth = cfg.authorization
        extra = f"authorization: {auth.get_secret_value()}\r\n" if auth is not None else ""
        self._head_rest = (
            f" HTTP/1.1\r\nhost: {host_header}\r\naccept: application/json\r\n"
            f"user-agent: bastion-authz\r\n{extra}\r\n"
        ).encode("latin-1")
        self._limit = cfg.max_response_bytes

    async def lookup(self, object_id: Any) -> frozenset[str]:
        text = as_text(object_id) or ""
        # quote(safe=""): an id like "../admin" or "1?x=" stays one path segment.
        target = self._prefix + quote(text, safe="") + self._suffix
        request = b"GET " + target.encode("ascii") + self._head_rest
        sink = _Collect(self._limit)
        try:
            await self._pool.request("GET", request, sink)
        except BastionError as exc:
            raise ResolverError(f"http: {exc.diagnosis or exc.code}") from None
        if sink.error is not None:
            err = sink.error
            raise ResolverError(f"http: {getattr(err, 'diagnosis', None) or type(err).__name__}")
        if not sink.done:
            raise ResolverError("http: no complete response")
        if sink.status == 404:
            return frozenset()
        if sink.status != 200:
            raise ResolverError(f"http: status {sink.status}")
        if sink.too_large:
            raise ResolverError(f"http: answer larger than {self._limit} bytes")
        try:
            data = orjson.loads(bytes(sink.body))
        except orjson.JSONDecodeError:
            raise ResolverError("http: answer is not JSON") from None
        if not isinstance(data, dict) or "owner" not in data:
            raise ResolverError('http: answer has no "owner"')
        return _owners(data["owner"])

    async def aclose(self) -> None:
        await self._pool.aclose()


def open_lookup(cfg: SqlResolverConfig | HttpResolverConfig) -> OwnerLookup:
    """The backend for one resolver config."""
    if isinstance(cfg, HttpResolverConfig):
        return HttpLookup(cfg)
    url = cfg.database.get_secret_value()
    if url.startswith("sqlite:///"):
        return SqliteLookup(unquote(url[len("sqlite:///") :]), cfg.query, cfg.timeout)
    return PostgresLookup(url, cfg.query, cfg.pool_size, cfg.timeout)


class CachedResolver:
    """A lookup with a TTL cache, request coalescing and a timeout (see the module docstring)."""

    def __init__(
        self,
        name: str,
        lookup: OwnerLookup,
        clock: Clock,
        *,
        ttl: float,
        negative_ttl: float,
        size: int,
        timeout: float,
    ) -> None:
        self.name = name
        self._lookup = lookup
        self._clock = clock
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._size = size
        self._timeout = timeout
        self._cache: OrderedDict[str, tuple[frozenset[str], float]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[frozenset[str]]] = {}

    @classmethod
    def from_config(
        cls, cfg: SqlResolverConfig | HttpResolverConfig, clock: Clock
    ) -> CachedResolver:
        """The resolver a config entry describes."""
        return cls(
            cfg.name,
            open_lookup(cfg),
            clock,
            ttl=cfg.cache_ttl,
            negative_ttl=cfg.negative_ttl,
            size=cfg.cache_size,
            timeout=cfg.timeout,
        )

    def __len__(self) -> int:
        return len(self._cache)

    def cached(self, key: str) -> frozenset[str] | None:
        """The cached owners of the object ``key``, or None when they must be looked up
        (never cached, or expired: the entry is dropped)."""
        hit = self._cache.get(key)
        if hit is None:
            return None
        if self._clock.monotonic() < hit[1]:
            self._cache.move_to_end(key)
            return hit[0]
        del self._cache[key]
        return None

    async def owners(self, object_id: Any, key: str) -> frozenset[str]:
        """Owners of the object ``key`` (its id as text; ``object_id`` is passed to the
        backend). ResolverError when the backend fails or times out."""
        hit = self.cached(key)
        if hit is not None:
            return hit
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[frozenset[str]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            owners = await asyncio.wait_for(self._lookup.lookup(object_id), self._timeout)
        except (Exception, asyncio.CancelledError) as exc:
            err = _as_resolver_error(exc, self._timeout)
            future.set_exception(err)
            future.exception()  # retrieved: waiters may be none
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise err from None
        finally:
            self._inflight.pop(key, None)
        future.set_result(owners)
        self._remember(key, owners)
        return owners

    def _remember(self, key: str, owners: frozenset[str]) -> None:
        ttl = self._ttl if owners else self._negative_ttl
        if ttl <= 0 or self._size <= 0:
            return
        self._cache[key] = (owners, self._clock.monotonic() + ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)

    async def aclose(self) -> None:
        await self._lookup.aclose()


def _as_resolver_error(exc: BaseException, timeout: float) -> ResolverError:
    if isinstance(exc, ResolverError):
        return exc
    if isinstance(exc, TimeoutError):
        return ResolverError(f"no answer within {timeout:g}s")
    if isinstance(exc, asyncio.CancelledError):
        return ResolverError("lookup cancelled")
    return ResolverError(f"lookup failed: {type(exc).__name__}")
