"""Migration 10 on SQLite and PostgreSQL from version 9: ``revocations`` accepts the ``client``
kind; existing rows survive with their ids, new ids continue after them, the expiry index keeps
its name, and an unknown kind is still refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from bastion.store import PostgresStore, SqliteStore
from bastion.store.base import Revocation, Store
from bastion.store.migrations import LATEST_VERSION
from tests.support.postgres import pg_schema
from tests.support.schema_at import postgres_at, sqlite_at

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

ROWS = (
    "INSERT INTO revocations (kind, value, issuer, not_before, expires_at, created_at) VALUES"
    " ('jti', 'tok-1', 'https://iss', NULL, 5000.0, 100.0),"
    " ('subject', 'user-7', NULL, 250.0, 9000.0, 260.0)"
)
CLIENT_ROW = (
    "INSERT INTO revocations (kind, value, issuer, not_before, expires_at, created_at)"
    " VALUES ('client', 'app-1', 'https://iss', 300.0, 4200.0, 300.0)"
)
BAD_ROW = CLIENT_ROW.replace("'client'", "'session'")
OLD = [
    Revocation("jti", "tok-1", "https://iss", None, 5000.0, 100.0),
    Revocation("subject", "user-7", None, 250.0, 9000.0, 260.0),
]
NEW = Revocation("client", "app-2", "https://iss", 400.0, 4300.0, 400.0)


async def check(store: Store) -> None:
    """The old rows are kept; a client revocation is accepted after them, in id order."""
    assert await store.active_revocations(now=0.0) == OLD
    await store.add_revocation(NEW)
    assert await store.active_revocations(now=0.0) == [*OLD, NEW]
    [change] = [c for c in await store.changes_since(0) if c.kind == "client.revoked"]
    assert change.payload["client_id"] == "app-2"


async def test_a_version_9_sqlite_file_upgrades(tmp_path: Path) -> None:
    path = str(tmp_path / "v9.db")
    raw = sqlite_at(path, 9)
    raw.execute(ROWS)
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute(CLIENT_ROW)  # not allowed before migration 10
    raw.commit()
    raw.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert LATEST_VERSION >= 10
        await check(store)
    finally:
        await store.close()
    raw = sqlite3.connect(path)
    try:
        ids = [r[0] for r in raw.execute("SELECT id FROM revocations ORDER BY id")]
        assert ids == [1, 2, 3]
        raw.execute(CLIENT_ROW)
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute(BAD_ROW)
        indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "revocations_expires_idx" in indexes
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "revocations_v10" not in tables
    finally:
        raw.close()


async def test_a_version_9_postgresql_database_upgrades(monkeypatch: pytest.MonkeyPatch) -> None:
    async with pg_schema("revoc9") as url:
        await postgres_at(url, 9, monkeypatch)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(ROWS)
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(CLIENT_ROW)
        finally:
            await conn.close()
        assert await PostgresStore(url).upgrade() == (9, LATEST_VERSION)
        store = PostgresStore(url)
        await store.open()
        try:
            await check(store)
        finally:
            await store.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(CLIENT_ROW)
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(BAD_ROW)
            checks = await conn.fetch(
                "SELECT conname FROM pg_constraint"
                " WHERE conrelid = 'revocations'::regclass AND contype = 'c'"
            )
            assert [r["conname"] for r in checks] == ["revocations_kind_check"]
        finally:
            await conn.close()
