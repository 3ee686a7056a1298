"""Migration 9 on SQLite and PostgreSQL from version 8: users gain ``must_change_password``
(false for every existing user), and ``auth_sessions`` is rebuilt to accept the ``password``
state — existing sessions survive, and an unknown state is still refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from bastion.authserver.users.service import repo_for
from bastion.store import PostgresStore, SqliteStore
from bastion.store.base import Store
from bastion.store.migrations import LATEST_VERSION
from tests.support.postgres import pg_schema
from tests.support.schema_at import postgres_at, sqlite_at

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

USER = (
    "INSERT INTO auth_users (id, username, email, name, roles, password_hash, disabled,"
    " created_at, updated_at) VALUES ('u1', 'alice', NULL, NULL, '[\"admin\"]', 'h', 0, 1.0, 1.0)"
)
SESSION = (
    "INSERT INTO auth_sessions (id_hash, user_id, state, amr, auth_time, created_at, expires_at,"
    " last_seen, data) VALUES ('s1', 'u1', 'done', '[\"pwd\"]', 1.0, 1.0, 9e18, 1.0, '{}')"
)
BAD_STATE = SESSION.replace("'s1'", "'s2'").replace("'done'", "'root'")
PASSWORD_STATE = SESSION.replace("'s1'", "'s3'").replace("'done'", "'password'")


async def check(store: Store) -> None:
    repo = repo_for(store)
    user = await repo.get_user("u1")
    assert user is not None
    assert (user.username, user.roles, user.must_change_password) == ("alice", ("admin",), False)
    kept = await repo.get_session("s1")
    assert kept is not None
    assert kept.state == "done"


async def test_a_version_8_sqlite_file_upgrades(tmp_path: Path) -> None:
    path = str(tmp_path / "v8.db")
    raw = sqlite_at(path, 8)
    raw.execute(USER)
    raw.execute(SESSION)
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute(PASSWORD_STATE)  # not allowed before migration 9
    raw.commit()
    raw.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert LATEST_VERSION >= 9
        await check(store)
    finally:
        await store.close()
    raw = sqlite3.connect(path)
    try:
        raw.execute("PRAGMA foreign_keys = ON")
        raw.execute(PASSWORD_STATE)
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute(BAD_STATE)
        with pytest.raises(sqlite3.IntegrityError):  # the user reference is still enforced
            raw.execute(SESSION.replace("'s1', 'u1'", "'s4', 'ghost'"))
        indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"auth_sessions_user_idx", "auth_sessions_expires_idx"} <= indexes
    finally:
        raw.close()


async def test_a_version_8_postgresql_database_upgrades(monkeypatch: pytest.MonkeyPatch) -> None:
    async with pg_schema("users8") as url:
        await postgres_at(url, 8, monkeypatch)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(USER)
            await conn.execute(SESSION)
        finally:
            await conn.close()
        assert await PostgresStore(url).upgrade() == (8, LATEST_VERSION)
        store = PostgresStore(url)
        await store.open()
        try:
            await check(store)
        finally:
            await store.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(PASSWORD_STATE)
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(BAD_STATE)
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await conn.execute(SESSION.replace("'s1', 'u1'", "'s4', 'ghost'"))
        finally:
            await conn.close()
