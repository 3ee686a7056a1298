"""The SQLite store on a real file: WAL, migrations, refusal of newer schemas, concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import orjson
import pytest

from bastion.audit.redact import Redactor
from bastion.audit.writer import Auditor
from bastion.core.exchange import Exchange, Headers, Principal, RequestView
from bastion.errors import StoreError
from bastion.gateway.layers.audit.config import AuditConfig, StoreSink
from bastion.store.base import ApiKeyRecord, ClientRecord, Revocation
from bastion.store.migrations import LATEST_VERSION, MIGRATIONS
from bastion.store.sqlite import SqliteStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "bastion.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(db_path))
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def raw(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A second, plain connection to the same file, for looking behind the store's back."""
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        yield conn


def _key(kid: str, client: str = "acme") -> ApiKeyRecord:
    return ApiKeyRecord(kid, client, "cd" * 32, ("read",), 10.0, None)


async def test_wal_mode_and_schema(
    store: SqliteStore, raw: sqlite3.Connection, db_path: Path
) -> None:
    await store.put_client(ClientRecord("acme", "Acme", 1.0))
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert Path(f"{db_path}-wal").exists()
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "schema_migrations",
        "clients",
        "api_keys",
        "revocations",
        "changes",
        "audit_log",
    } <= tables
    assert raw.execute("SELECT version, name FROM schema_migrations").fetchall() == [
        (m.version, m.name) for m in MIGRATIONS
    ]


async def test_migrations_are_idempotent(db_path: Path, raw: sqlite3.Connection) -> None:
    for _ in range(3):
        s = SqliteStore(str(db_path))
        await s.open()
        await s.put_client(ClientRecord(f"c{time.monotonic_ns()}", "x", 1.0))
        await s.close()
    assert raw.execute("SELECT COUNT(*) FROM schema_migrations").fetchone() == (len(MIGRATIONS),)
    assert raw.execute("SELECT COUNT(*) FROM clients").fetchone() == (3,)


async def test_newer_schema_is_refused_untouched(db_path: Path, raw: sqlite3.Connection) -> None:
    s = SqliteStore(str(db_path))
    await s.open()
    await s.close()
    raw.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from the future', 0)",
        (LATEST_VERSION + 1,),
    )
    before = raw.execute("SELECT * FROM schema_migrations ORDER BY version").fetchall()
    newer = SqliteStore(str(db_path))
    with pytest.raises(StoreError) as info:
        await newer.open()
    assert "newer" in (info.value.diagnosis or "")
    assert raw.execute("SELECT * FROM schema_migrations ORDER BY version").fetchall() == before
    with pytest.raises(StoreError):
        await newer.get_client("acme")  # a refused store stays closed


async def test_open_errors_are_store_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database file" * 100)
    for path in (garbage, tmp_path / "missing-dir" / "x.db"):
        with pytest.raises(StoreError):
            await SqliteStore(str(path)).open()


async def test_calls_before_open_are_store_errors(db_path: Path) -> None:
    s = SqliteStore(str(db_path))
    with pytest.raises(StoreError):
        await s.list_clients()
    await s.close()  # closing a store that never opened is harmless


async def test_reopen_after_close(store: SqliteStore) -> None:
    await store.put_client(ClientRecord("acme", "Acme", 1.0))
    await store.close()
    await store.open()
    assert await store.get_client("acme") == ClientRecord("acme", "Acme", 1.0)


async def test_change_is_written_in_the_same_transaction(
    store: SqliteStore, raw: sqlite3.Connection
) -> None:
    await store.put_client(ClientRecord("acme", "Acme", 1.0))
    raw.execute(
        "CREATE TRIGGER break_changes BEFORE INSERT ON changes"
        " BEGIN SELECT RAISE(ABORT, 'change feed down'); END"
    )
    with pytest.raises(StoreError):
        await store.put_api_key(_key("k1"))
    with pytest.raises(StoreError):
        await store.add_revocation(Revocation("jti", "t1", None, None, 99.0, 1.0))
    assert await store.get_api_key("k1") is None  # the key was rolled back with its change
    assert await store.active_revocations(0.0) == []
    raw.execute("DROP TRIGGER break_changes")
    await store.put_api_key(_key("k1"))
    assert [c.kind for c in await store.changes_since(0)] == ["api_key.created"]


async def test_audit_log_columns_and_append_only(
    store: SqliteStore, raw: sqlite3.Connection
) -> None:
    record = {
        "@timestamp": "2024-05-01T12:00:00.123Z",
        "event": {"outcome": "failure"},
        "http": {"request": {"id": "req-9"}},
        "source": {"ip": "198.51.100.4"},
        "user": {"id": "alice"},
    }
    await store.write_audit([record, {"@timestamp": "2024-05-01T12:00:01.000Z"}])
    rows = raw.execute(
        "SELECT ts, request_id, outcome, source_ip, user_id, record FROM audit_log ORDER BY id"
    ).fetchall()
    assert rows[0][:5] == ("2024-05-01T12:00:00.123Z", "req-9", "failure", "198.51.100.4", "alice")
    assert orjson.loads(rows[0][5]) == record
    assert rows[1][:5] == ("2024-05-01T12:00:01.000Z", None, None, None, None)
    for stmt in ("UPDATE audit_log SET outcome = 'success'", "DELETE FROM audit_log"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(stmt)
    assert await store.count_audit() == 2


async def test_concurrent_first_opens_of_a_new_file(tmp_path: Path) -> None:
    for round_ in range(20):
        path = str(tmp_path / f"fresh-{round_}.db")
        stores = [SqliteStore(path) for _ in range(6)]
        await asyncio.gather(*(s.open() for s in stores))  # all switch to WAL and migrate at once
        assert await stores[-1].last_change_seq() == 0
        await asyncio.gather(*(s.close() for s in stores))


class _RacingConnection:
    """Answers the WAL switch as SQLite does while another connection switches the same file:
    "database is locked" at once, without the busy wait."""

    def __init__(self, failures: int, code: int = sqlite3.SQLITE_BUSY) -> None:
        self.failures = failures
        self.code = code
        self.calls = 0

    def execute(self, sql: str) -> _RacingConnection:
        self.calls += 1
        if self.calls <= self.failures:
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorcode = self.code
            raise exc
        return self

    def fetchone(self) -> tuple[str]:
        return ("wal",)


def test_wal_switch_retries_a_racing_connection(db_path: Path) -> None:
    conn = _RacingConnection(failures=3)
    assert SqliteStore(str(db_path))._enable_wal(conn) == "wal"  # type: ignore[arg-type]
    assert conn.calls == 4
    never = _RacingConnection(failures=10**6)
    with pytest.raises(sqlite3.OperationalError):
        SqliteStore(str(db_path), busy_timeout=0.05)._enable_wal(never)  # type: ignore[arg-type]
    other = _RacingConnection(failures=1, code=sqlite3.SQLITE_IOERR)
    with pytest.raises(sqlite3.OperationalError):
        SqliteStore(str(db_path))._enable_wal(other)  # type: ignore[arg-type]
    assert other.calls == 1


async def test_concurrent_writers_on_one_file(db_path: Path) -> None:
    a, b = SqliteStore(str(db_path)), SqliteStore(str(db_path))
    await asyncio.gather(a.open(), b.open())  # both migrate at once: one wins, one skips
    await a.put_client(ClientRecord("acme", "Acme", 1.0))

    async def writer(s: SqliteStore, name: str) -> None:
        for i in range(40):
            await s.put_api_key(_key(f"{name}{i}"))
            await s.add_revocation(Revocation("jti", f"{name}-t{i}", None, None, 99.0, 1.0))
            await s.write_audit([{"@timestamp": "t", "http": {"request": {"id": f"{name}{i}"}}}])

    await asyncio.gather(writer(a, "a"), writer(b, "b"))
    changes = await a.changes_since(0, limit=10_000)
    assert [c.seq for c in changes] == list(range(1, 161))  # no gap, no reuse
    assert len(await b.list_api_keys("acme")) == 80
    assert len(await a.active_revocations(0.0)) == 80
    assert await b.count_audit() == 80
    await asyncio.gather(a.close(), b.close())


async def test_a_locked_file_does_not_block_the_event_loop(db_path: Path) -> None:
    s = SqliteStore(str(db_path), busy_timeout=5.0)
    await s.open()
    with closing(sqlite3.connect(db_path, isolation_level=None)) as locker:
        locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        write = asyncio.create_task(s.put_client(ClientRecord("acme", "Acme", 1.0)))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20
        assert not write.done()  # waiting on the lock, in its thread
        locker.execute("COMMIT")
        await asyncio.wait_for(write, timeout=5)
    assert await s.get_client("acme") is not None
    await s.close()


async def test_busy_timeout_expiry_is_a_store_error(db_path: Path) -> None:
    s = SqliteStore(str(db_path), busy_timeout=0.1)
    await s.open()
    with closing(sqlite3.connect(db_path, isolation_level=None)) as locker:
        locker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError) as info:
            await s.put_client(ClientRecord("acme", "Acme", 1.0))
        assert not isinstance(info.value.__cause__, StoreError)
        assert "locked" in (info.value.diagnosis or "")
        locker.execute("ROLLBACK")
    await s.put_client(ClientRecord("acme", "Acme", 1.0))  # usable again afterwards
    await s.close()


async def test_audit_store_sink_rows_hold_no_secret(
    store: SqliteStore, raw: sqlite3.Connection
) -> None:
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    auditor = Auditor(AuditConfig(sinks=[StoreSink(type="store")]), store, None, Redactor())
    await auditor.start()
    for i in range(20):
        headers = Headers([("authorization", f"Bearer {jwt}"), ("user-agent", f"x Bearer {jwt}")])
        req = RequestView(
            "GET", "/v1/cards/4111111111111111", "password=hunter2", headers, "192.0.2.1"
        )
        ex = Exchange(req, f"r{i}", time.monotonic(), time.time(), route_name="api")
        ex.status = 200
        ex.principal = Principal("jwt", "alice", key_id="jti-1")
        auditor.submit(ex)
    await auditor.aclose()
    dump = "\n".join(raw.iterdump())
    assert dump.count('INSERT INTO "audit_log"') == 20
    for secret in (jwt, "hunter2", "4111111111111111"):
        assert secret not in dump
    assert raw.execute("SELECT COUNT(*) FROM audit_log WHERE user_id = 'alice'").fetchone() == (20,)
