"""The schema of a PostgreSQL store: applying migrations, and the check every node makes.

``bastion db upgrade`` applies what is pending in one transaction (PostgreSQL DDL is
transactional: a failing statement leaves nothing behind) under an advisory lock, so two
upgrades started at once run one after the other and the second finds nothing to do.

A node only *checks*: many nodes of possibly different versions share one database, so none of
them may change its schema on its own. :func:`check_schema` refuses a database without the
schema or with an older one (the operator runs ``bastion db upgrade``) and one written by a
newer Bastion (the operator upgrades Bastion). Functions here take a connection and raise
:class:`~bastion.errors.StoreError` for a refused schema; driver errors propagate to the store,
which translates them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from bastion.errors import StoreError
from bastion.store import migrations

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]

#: pg_advisory_xact_lock key of schema upgrades ("bastion" in ASCII, then 2).
MIGRATIONS_LOCK = 0x62617374696F6E02

UPGRADE_HINT = "run `bastion db upgrade -c FILE`"


def latest_version() -> int:
    """The newest schema version this code knows."""
    return migrations.MIGRATIONS[-1].version


async def applied_versions(conn: Conn) -> set[int]:
    """Versions recorded in ``schema_migrations`` (the table must exist)."""
    return {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_migrations")}


async def schema_version(conn: Conn) -> int:
    """The highest applied version; 0 when the database has no Bastion schema."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return 0
    return max(await applied_versions(conn), default=0)


def refuse_newer(version: int) -> None:
    """StoreError if ``version`` was written by a newer Bastion."""
    if version > latest_version():
        raise StoreError(
            diagnosis=f"database schema version {version} is newer than this Bastion supports "
            f"({latest_version()}); upgrade Bastion"
        )


async def apply_migrations(conn: Conn) -> tuple[int, int]:
    """Apply every pending migration in one transaction; returns the versions before and after."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATIONS_LOCK)
        await conn.execute(migrations.SCHEMA_TABLE)
        applied = await applied_versions(conn)
        before = max(applied, default=0)
        refuse_newer(before)
        for migration in migrations.pending(applied):
            for stmt in migrations.statements_for(migration, "postgresql"):
                await conn.execute(stmt)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                time.time(),
            )
        return before, max(latest_version(), before)


async def check_schema(conn: Conn) -> None:
    """Refuse a database this code must not write: no schema, an older or a newer one."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        raise StoreError(diagnosis=f"the database has no Bastion schema: {UPGRADE_HINT} first")
    applied = await applied_versions(conn)
    current = max(applied, default=0)
    refuse_newer(current)
    if migrations.pending(applied):
        raise StoreError(
            diagnosis=f"database schema is at version {current}, this Bastion needs "
            f"{latest_version()}: {UPGRADE_HINT}"
        )
