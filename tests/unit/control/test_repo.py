"""The control repository on memory and SQLite, and the database refusing to change the audit
trail (the attack: an UPDATE or DELETE on ``admin_audit`` straight through SQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bastion.control.admin.repo import control_repo
from bastion.errors import StoreError
from bastion.store.memory import MemoryStore
from bastion.store.sqlite import SqliteStore
from tests.unit.control.repo_contract import check_applications, check_audit, entry


async def test_memory_contract() -> None:
    store = MemoryStore()
    await store.open()
    await check_applications(store)
    await check_audit(store)


async def test_sqlite_contract(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "c.db"))
    await store.open()
    try:
        await check_applications(store)
        await check_audit(store)
    finally:
        await store.close()


async def test_sqlite_audit_rows_cannot_be_changed_or_deleted(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "c.db"))
    await store.open()
    try:
        await control_repo(store).append_audit(entry(1))
        for sql in (
            "UPDATE admin_audit SET actor = 'mallory'",
            "DELETE FROM admin_audit",
        ):
            with pytest.raises(StoreError, match="append-only"):
                await store.write("attack", lambda c, s=sql: c.execute(s))
        count = await store.read(
            "count", lambda c: c.execute("SELECT COUNT(*) FROM admin_audit").fetchone()
        )
        assert count == (1,)
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "c.db")  # nor through another connection
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM admin_audit")
    finally:
        conn.close()


async def test_unknown_store_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        control_repo(object())  # type: ignore[arg-type]


async def test_memory_repo_fails_when_store_is_down() -> None:
    store = MemoryStore()
    await store.open()
    store.set_unavailable(True)
    with pytest.raises(StoreError):
        await control_repo(store).append_audit(entry(1))
