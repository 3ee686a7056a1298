"""What only the PostgreSQL store has: explicit migrations and the start-up schema check, the
serialised change feed, the database-enforced append-only audit log, safe audit columns, and
no password in any message. Real server on 127.0.0.1:5432 (schema per test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bastion.errors import StoreError
from bastion.store import migrations
from bastion.store.base import Change, Revocation
from bastion.store.migrations import LATEST_VERSION, Migration
from bastion.store.postgres import PostgresStore
from tests.support.postgres import pg_schema

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with pg_schema("pgstore") as u:
        yield u


@pytest.fixture
async def store(url: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(url, max_connections=8)
    await s.upgrade()
    await s.open()
    yield s
    await s.close()


async def test_unmigrated_database_is_refused_with_the_command_to_run(url: str) -> None:
    s = PostgresStore(url)
    with pytest.raises(StoreError, match="bastion db upgrade"):
        await s.open()
    assert await s.schema_version() == 0


async def test_upgrade_is_idempotent(url: str) -> None:
    s = PostgresStore(url)
    assert await s.upgrade() == (0, LATEST_VERSION)
    assert await s.upgrade() == (LATEST_VERSION, LATEST_VERSION)
    assert await s.schema_version() == LATEST_VERSION
    await s.open()
    await s.close()


async def test_concurrent_upgrades_apply_each_migration_once(url: str) -> None:
    results = await asyncio.gather(*(PostgresStore(url).upgrade() for _ in range(4)))
    assert sorted(results)[-1] == (LATEST_VERSION, LATEST_VERSION)
    assert sum(before == 0 for before, _ in results) == 1
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT COUNT(*) FROM schema_migrations") == LATEST_VERSION
    finally:
        await conn.close()


async def test_newer_schema_is_refused_by_nodes_and_upgrade(url: str) -> None:
    s = PostgresStore(url)
    await s.upgrade()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations VALUES ($1, 'from the future', 0)", LATEST_VERSION + 1
        )
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="newer than this Bastion supports"):
        await s.open()
    with pytest.raises(StoreError, match="newer than this Bastion supports"):
        await s.upgrade()


async def test_older_schema_is_refused_until_upgraded(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await PostgresStore(url).upgrade()
    # This code now knows one more migration than the database has.
    extra = Migration(LATEST_VERSION + 1, "test column", ("ALTER TABLE clients ADD note TEXT",))
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, extra))
    s = PostgresStore(url)
    expected = (
        rf"at version {LATEST_VERSION}, this Bastion needs {LATEST_VERSION + 1}: run `bastion db"
    )
    with pytest.raises(StoreError, match=expected):
        await s.open()
    assert await s.upgrade() == (LATEST_VERSION, LATEST_VERSION + 1)
    await s.open()
    await s.close()


async def test_failed_migration_leaves_nothing_behind(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = Migration(
        LATEST_VERSION + 1, "broken", ("CREATE TABLE half_done (x INT)", "THIS IS NOT SQL")
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    with pytest.raises(StoreError):
        await PostgresStore(url).upgrade()
    assert await PostgresStore(url).schema_version() == 0
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    finally:
        await conn.close()


async def test_change_feed_order_is_commit_order_under_concurrent_writers(
    store: PostgresStore, url: str
) -> None:
    other = PostgresStore(url, max_connections=8)
    await other.open()
    seen: list[Change] = []
    done = asyncio.Event()

    async def reader() -> None:
        last = 0
        while not done.is_set() or await store.changes_since(last):
            for change in await store.changes_since(last):
                seen.append(change)
                last = change.seq

    async def writer(s: PostgresStore, name: str) -> None:
        for i in range(25):
            await s.add_revocation(Revocation("jti", f"{name}{i}", None, None, 9e9, float(i)))

    try:
        read = asyncio.create_task(reader())
        await asyncio.gather(*(writer(s, f"w{n}-") for n, s in enumerate([store, other] * 3)))
        done.set()
        await read
    finally:
        await other.close()
    everything = await store.changes_since(0, limit=1000)
    assert len(everything) == 150
    # A reader that polls "after the last seq I saw" never skipped a change.
    assert [c.seq for c in seen] == [c.seq for c in everything]


async def test_audit_log_is_append_only_in_the_database(store: PostgresStore, url: str) -> None:
    await store.write_audit([{"@timestamp": "2024-01-01T00:00:00Z", "event": {"outcome": "x"}}])
    conn = await asyncpg.connect(url)
    try:
        for sql in ("UPDATE audit_log SET outcome = 'y'", "DELETE FROM audit_log",
                    "TRUNCATE audit_log"):  # fmt: skip
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(sql)
    finally:
        await conn.close()
    assert await store.count_audit() == 1


async def test_audit_values_postgres_would_refuse_are_stored_safely(
    store: PostgresStore, url: str
) -> None:
    record = {
        "@timestamp": "2024-01-01T00:00:00Z",
        "user": {"id": "u" * 1000 + "\x00evil"},
        "source": {"ip": "\x00" * 3},
        "http": {"request": {"id": "r1"}},
    }
    await store.write_audit([record])
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT user_id, source_ip, record FROM audit_log")
    finally:
        await conn.close()
    assert row is not None
    assert len(row["user_id"]) == 256
    assert "\x00" not in row["source_ip"]
    assert "\\u0000evil" in row["record"]  # the full record keeps the value, escaped


async def test_messages_never_show_the_password() -> None:
    s = PostgresStore("postgresql://postgres:s3cret-pw@127.0.0.1:1/test", connect_timeout=1)
    with pytest.raises(StoreError) as info:
        await s.open()
    text = f"{info.value} {info.value.diagnosis} {s!r}"
    assert "s3cret-pw" not in text
    assert "127.0.0.1:1/test" in text


async def test_wrong_password_is_a_store_error_without_the_password(url: str) -> None:
    bad = url.replace("postgres@", "nobody:hunter2@")
    with pytest.raises(StoreError) as info:
        await PostgresStore(bad, connect_timeout=2).open()
    assert "hunter2" not in str(info.value)


async def test_spool_drain_stores_each_record_once(url: str, tmp_path: Path) -> None:
    s = PostgresStore(url, spool_dir=str(tmp_path / "spool"))
    await s.upgrade()
    await s.open()
    try:
        committed = {"@timestamp": "2024-01-01T00:00:00.000Z", "http": {"request": {"id": "r1"}}}
        await s.write_audit([committed])
        # The write above committed, but its answer was lost in the outage: it was spooled too.
        assert s.spool is not None
        later = {"@timestamp": "2024-01-01T00:00:01.000Z", "http": {"request": {"id": "r2"}}}
        no_id = {"@timestamp": "2024-01-01T00:00:02.000Z"}
        s.spool.append([committed, later, no_id])
        assert await s.drain_spool() == 3
        assert await s.count_audit() == 3
        assert not s.spool.pending
    finally:
        await s.close()
