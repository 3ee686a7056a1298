"""PostgreSQL and Redis for the distributed-mode benchmarks: a throw-away schema and a key
prefix of the run's own, removed at the end whatever happens."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from bastion.events.redis_bus import redis_client


async def _execute(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def postgres_schema(server: str, prefix: str = "bench") -> Iterator[str]:
    """Create an empty schema on ``server`` (a ``postgresql://`` URL without a query), yield the
    store URL that selects it (``?search_path=``), drop it and everything in it at the end."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    asyncio.run(_execute(server, f'CREATE SCHEMA "{name}"'))
    try:
        yield f"{server}?search_path={name}"
    finally:
        asyncio.run(_execute(server, f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


async def drop_redis_keys(url: str, prefix: str) -> None:
    """Remove every key under ``prefix`` (the run's counters and streams) from Redis."""
    client = redis_client(url, timeout=2.0)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@contextmanager
def redis_prefix(url: str, prefix: str = "bench") -> Iterator[str]:
    """Yield a fresh key prefix (``bench<hex>:``); delete its keys from Redis at the end."""
    name = f"{prefix}{secrets.token_hex(4)}:"
    try:
        yield name
    finally:
        asyncio.run(drop_redis_keys(url, name))
