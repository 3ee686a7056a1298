"""A throw-away schema on the real PostgreSQL server (127.0.0.1:5432, database ``test``).

Each test gets its own schema, named in the URL's ``search_path``, so tests never see each
other's rows and need no truncation (the audit log refuses TRUNCATE anyway); dropping the
schema at the end removes everything.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def schema_url(schema: str) -> str:
    """The store URL of ``schema`` on the test server."""
    return f"{SERVER}?search_path={schema}"


@asynccontextmanager
async def pg_schema(prefix: str = "t") -> AsyncIterator[str]:
    """Create an empty schema, yield its store URL, drop it (and everything in it)."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(SERVER)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield schema_url(name)
        finally:
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


def create_schema_sync(prefix: str = "t") -> str:
    """Create a schema from synchronous code (subprocess tests); returns its name."""
    import asyncio

    name = f"{prefix}_{secrets.token_hex(6)}"

    async def go() -> None:
        conn = await asyncpg.connect(SERVER)
        try:
            await conn.execute(f'CREATE SCHEMA "{name}"')
        finally:
            await conn.close()

    asyncio.run(go())
    return name


def drop_schema_sync(name: str) -> None:
    """Drop a schema made by :func:`create_schema_sync`."""
    import asyncio

    async def go() -> None:
        conn = await asyncpg.connect(SERVER)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(go())
