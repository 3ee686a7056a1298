"""The SQLite :class:`~bastion.store.base.Store`: the embedded default (``sqlite:///PATH``).

One connection, owned by one dedicated worker thread: every call is handed to it with
``loop.run_in_executor`` so the event loop never blocks on disk or on a lock held by another
process. The file runs in WAL mode (readers never block the writer), with a busy timeout (a
second process writing the same file waits instead of failing) and foreign keys on.

Write transactions start with ``BEGIN IMMEDIATE`` so the write lock is taken up front and the busy
timeout applies; that and the PRAGMAs are the only SQLite-specific SQL. Statements use ``?``
placeholders (a PostgreSQL backend uses ``%s``). Every ``sqlite3`` error is translated into
:class:`~bastion.errors.StoreError` at this boundary.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from bastion.errors import StoreError
from bastion.store.base import ApiKeyRecord, Change, ClientRecord, IpBlock, Revocation
from bastion.store.memory import (
    check_announced,
    ip_block_change,
    revocation_change,
    rotatable,
)
from bastion.store.migrations import LATEST_VERSION, SCHEMA_TABLE, pending, statements_for
from bastion.store.rows import audit_row, key_from_row, key_params, rotation_change

T = TypeVar("T")

_SELECT_KEYS = (
    "SELECT id, client_id, secret_hash, scopes, name, created_at, expires_at, revoked_at,"
    " owner, rotated_from, replaced_by, last_used_at, usage_count FROM api_keys"
)
_INSERT_KEY = (
    "INSERT INTO api_keys (id, client_id, secret_hash, scopes, name, created_at, expires_at,"
    " revoked_at, owner, rotated_from, replaced_by, last_used_at, usage_count)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# One statement for a whole usage batch (executemany); last_used_at never moves back.
_RECORD_USAGE = (
    "UPDATE api_keys SET usage_count = usage_count + ?,"
    " last_used_at = MAX(COALESCE(last_used_at, ?), ?) WHERE id = ?"
)
_INSERT_CHANGE = "INSERT INTO changes (kind, payload, created_at) VALUES (?, ?, ?)"
_INSERT_AUDIT = (
    "INSERT INTO audit_log (ts, request_id, outcome, source_ip, user_id, record)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


class SqliteStore:
    """State in one SQLite file; ``await open()`` before use, ``await close()`` at the end.

    ``busy_timeout`` (s) is how long a write waits for another connection's lock before the
    call fails with StoreError. Opening applies pending migrations and refuses (StoreError) a
    file written by a newer schema version.
    """

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._busy_ms = int(busy_timeout * 1000)
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- plumbing -------------------------------------------------------------------------

    async def _call(self, op: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        executor = self._executor
        if executor is None or self._conn is None:
            raise StoreError(diagnosis=f"sqlite {op}: store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._run, op, fn)

    def _run(self, op: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Runs on the worker thread."""
        conn = self._conn
        if conn is None:
            raise StoreError(diagnosis=f"sqlite {op}: store is closed")
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            raise StoreError(diagnosis=f"sqlite {op}: {exc}") from exc
        except ValueError as exc:  # a stored JSON column that does not parse
            raise StoreError(diagnosis=f"sqlite {op}: corrupt row: {exc}") from exc

    async def read(self, op: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the store's thread (for repositories of later features that keep
        their own tables in this file). ``op`` names the call in errors; sqlite3 errors become
        StoreError."""
        return await self._call(op, fn)

    async def write(self, op: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Like :meth:`read`, inside one ``BEGIN IMMEDIATE`` transaction: all of it, or none."""
        return await self._call(op, lambda conn: self._write(conn, fn))

    @staticmethod
    def _write(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction: all of it commits, or none."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _connect(self) -> sqlite3.Connection:
        """Runs on the worker thread: connect, set the PRAGMAs, migrate."""
        conn = sqlite3.connect(
            self.path, timeout=self._busy_ms / 1000, isolation_level=None, check_same_thread=True
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms:d}")
            conn.execute("PRAGMA foreign_keys = ON")
            if conn.execute("PRAGMA foreign_keys").fetchone() != (1,):
                raise StoreError(diagnosis="sqlite: foreign keys are not supported")
            mode = self._enable_wal(conn)
            if self.path != ":memory:" and mode != "wal":
                raise StoreError(diagnosis=f"sqlite: cannot switch {self.path!r} to WAL mode")
            conn.execute("PRAGMA synchronous = FULL")
            self._write(conn, _migrate)
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch the file to WAL (persistent), retrying while another connection does the same:
        SQLite answers that race with an immediate "database is locked", not the busy wait."""
        deadline = time.monotonic() + self._busy_ms / 1000
        while True:
            try:
                row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                return str(row[0]).lower() if row else ""
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)

    async def open(self) -> None:
        """Connect, enable WAL, apply pending migrations; StoreError if any of it fails."""
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(executor, self._open_on_worker)
        except BaseException:
            executor.shutdown(wait=True)
            raise
        self._executor = executor

    def _open_on_worker(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.Error as exc:
            raise StoreError(diagnosis=f"sqlite open {self.path!r}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection and stop the worker thread; later calls raise StoreError."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._close_on_worker)
        finally:
            executor.shutdown(wait=True)

    def _close_on_worker(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- clients and keys ----------------------------------------------------------------

    async def put_client(self, client: ClientRecord) -> None:
        """Create a client; StoreError if the id exists."""

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO clients (id, name, created_at) VALUES (?, ?, ?)",
                (client.id, client.name, client.created_at),
            )

        await self._call("put_client", lambda conn: self._write(conn, tx))

    async def get_client(self, client_id: str) -> ClientRecord | None:
        def q(conn: sqlite3.Connection) -> ClientRecord | None:
            row = conn.execute(
                "SELECT id, name, created_at FROM clients WHERE id = ?", (client_id,)
            ).fetchone()
            return ClientRecord(*row) if row else None

        return await self._call("get_client", q)

    async def list_clients(self) -> list[ClientRecord]:
        """Every client, by creation time then id."""

        def q(conn: sqlite3.Connection) -> list[ClientRecord]:
            rows = conn.execute("SELECT id, name, created_at FROM clients ORDER BY created_at, id")
            return [ClientRecord(*row) for row in rows]

        return await self._call("list_clients", q)

    async def put_api_key(self, key: ApiKeyRecord) -> None:
        """Create a key of an existing client and append an ``api_key.created`` change."""
        payload = orjson.dumps({"key_id": key.id, "client_id": key.client_id}).decode()

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(_INSERT_KEY, key_params(key))
            conn.execute(_INSERT_CHANGE, ("api_key.created", payload, key.created_at))

        await self._call("put_api_key", lambda conn: self._write(conn, tx))

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        def q(conn: sqlite3.Connection) -> ApiKeyRecord | None:
            row = conn.execute(_SELECT_KEYS + " WHERE id = ?", (key_id,)).fetchone()
            return key_from_row(row) if row else None

        return await self._call("get_api_key", q)

    async def list_api_keys(self, client_id: str | None = None) -> list[ApiKeyRecord]:
        """Keys (of one client, or all), by creation time then id."""

        def q(conn: sqlite3.Connection) -> list[ApiKeyRecord]:
            if client_id is None:
                rows = conn.execute(_SELECT_KEYS + " ORDER BY created_at, id")
            else:
                rows = conn.execute(
                    _SELECT_KEYS + " WHERE client_id = ? ORDER BY created_at, id", (client_id,)
                )
            return [key_from_row(row) for row in rows]

        return await self._call("list_api_keys", q)

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        """Mark revoked and append an ``api_key.revoked`` change; False if unknown or revoked."""
        payload = orjson.dumps({"key_id": key_id, "at": at}).decode()

        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            if cur.rowcount != 1:
                return False
            conn.execute(_INSERT_CHANGE, ("api_key.revoked", payload, at))
            return True

        return await self._call("revoke_api_key", lambda conn: self._write(conn, tx))

    async def rotate_api_key(self, old_id: str, successor: ApiKeyRecord, old_until: float) -> bool:
        """Shorten ``old_id`` to ``old_until``, link it to ``successor`` and insert that, with
        one ``api_key.created`` change; False (nothing written) if ``old_id`` cannot rotate."""
        linked = dataclasses.replace(successor, rotated_from=old_id)

        def tx(conn: sqlite3.Connection) -> bool:
            row = conn.execute(_SELECT_KEYS + " WHERE id = ?", (old_id,)).fetchone()
            if row is None:
                return False
            old = key_from_row(row)
            if not rotatable(old, successor.created_at):
                return False
            if old.client_id != successor.client_id:
                raise StoreError(diagnosis=f"api key {successor.id!r}: successor of another client")
            until = old_until if old.expires_at is None else min(old.expires_at, old_until)
            conn.execute(_INSERT_KEY, key_params(linked))
            conn.execute(
                "UPDATE api_keys SET expires_at = ?, replaced_by = ? WHERE id = ?",
                (until, successor.id, old_id),
            )
            payload = orjson.dumps(rotation_change(successor, old_id, until)).decode()
            conn.execute(_INSERT_CHANGE, ("api_key.created", payload, successor.created_at))
            return True

        return await self._call("rotate_api_key", lambda conn: self._write(conn, tx))

    async def record_key_usage(self, usage: Mapping[str, tuple[int, float]]) -> None:
        """Add the counts and move ``last_used_at`` forward in one statement (executemany)."""
        rows = [(int(n), last, last, key_id) for key_id, (n, last) in usage.items()]
        if not rows:
            return
        await self._call(
            "record_key_usage",
            lambda conn: self._write(conn, lambda c: c.executemany(_RECORD_USAGE, rows)),
        )

    # -- revocations and the change feed --------------------------------------------------

    async def add_revocation(self, rev: Revocation) -> None:
        """Store a revocation and append its ``token.revoked`` / ``subject.revoked`` /
        ``client.revoked`` change."""
        kind, body = revocation_change(rev)
        payload = orjson.dumps(body).decode()

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO revocations (kind, value, issuer, not_before, expires_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (rev.kind, rev.value, rev.issuer, rev.not_before, rev.expires_at, rev.created_at),
            )
            conn.execute(_INSERT_CHANGE, (kind, payload, rev.created_at))

        await self._call("add_revocation", lambda conn: self._write(conn, tx))

    async def active_revocations(self, now: float) -> list[Revocation]:
        """Revocations whose ``expires_at`` is after ``now``, oldest first."""

        def q(conn: sqlite3.Connection) -> list[Revocation]:
            rows = conn.execute(
                "SELECT kind, value, issuer, not_before, expires_at, created_at"
                " FROM revocations WHERE expires_at > ? ORDER BY id",
                (now,),
            )
            return [Revocation(*row) for row in rows]

        return await self._call("active_revocations", q)

    async def add_ip_block(self, block: IpBlock) -> None:
        """Store a block and append its ``ip.blocked`` change."""
        payload = orjson.dumps(ip_block_change(block)).decode()

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO ip_blocks (cidr, reason, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (block.cidr, block.reason, block.created_at, block.expires_at),
            )
            conn.execute(_INSERT_CHANGE, ("ip.blocked", payload, block.created_at))

        await self._call("add_ip_block", lambda conn: self._write(conn, tx))

    async def lift_ip_block(self, cidr: str, at: float) -> bool:
        """Lift the active blocks of ``cidr``; append ``ip.unblocked`` if there were any."""
        payload = orjson.dumps({"cidr": cidr, "at": at}).decode()

        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE ip_blocks SET lifted_at = ?"
                " WHERE cidr = ? AND lifted_at IS NULL AND expires_at > ?",
                (at, cidr, at),
            )
            if cur.rowcount == 0:
                return False
            conn.execute(_INSERT_CHANGE, ("ip.unblocked", payload, at))
            return True

        return await self._call("lift_ip_block", lambda conn: self._write(conn, tx))

    async def active_ip_blocks(self, now: float) -> list[IpBlock]:
        """Blocks neither lifted nor expired at ``now``, oldest first."""

        def q(conn: sqlite3.Connection) -> list[IpBlock]:
            rows = conn.execute(
                "SELECT cidr, reason, created_at, expires_at, lifted_at FROM ip_blocks"
                " WHERE lifted_at IS NULL AND expires_at > ? ORDER BY id",
                (now,),
            )
            return [IpBlock(*row) for row in rows]

        return await self._call("active_ip_blocks", q)

    async def announce(self, kind: str, payload: dict[str, Any], at: float) -> None:
        """Append a change of a kind in ``ANNOUNCED_KINDS``."""
        body = check_announced(kind, payload)
        await self._call(
            "announce",
            lambda conn: self._write(conn, lambda c: c.execute(_INSERT_CHANGE, (kind, body, at))),
        )

    async def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        """Changes with a ``seq`` greater than ``seq``, oldest first, at most ``limit``."""
        if limit <= 0:
            return []

        def q(conn: sqlite3.Connection) -> list[Change]:
            rows = conn.execute(
                "SELECT seq, kind, payload, created_at FROM changes"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            )
            return [Change(s, k, orjson.loads(p), at) for s, k, p, at in rows]

        return await self._call("changes_since", q)

    async def last_change_seq(self) -> int:
        """The newest ``seq`` (0 when the feed is empty)."""

        def q(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
            return int(row[0])

        return await self._call("last_change_seq", q)

    # -- audit log --------------------------------------------------------------------------

    async def write_audit(self, records: list[dict[str, Any]]) -> None:
        """Append audit records (already redacted) in one transaction."""
        if not records:
            return
        try:
            rows = [audit_row(r) for r in records]
        except TypeError as exc:
            raise StoreError(diagnosis=f"audit record not serialisable: {exc}") from exc
        await self._call(
            "write_audit",
            lambda conn: self._write(conn, lambda c: c.executemany(_INSERT_AUDIT, rows)),
        )

    async def count_audit(self) -> int:
        def q(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])

        return await self._call("count_audit", q)


def sqlite_schema_version(path: str) -> int:
    """The highest migration applied to the file at ``path`` (0: no file or no schema).

    Blocking; StoreError if the file cannot be read as a database.
    """
    if path == ":memory:" or not os.path.exists(path):
        return 0
    try:
        conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            if (
                conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
                ).fetchone()
                is None
            ):
                return 0
            row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            return int(row[0] or 0)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(diagnosis=f"sqlite {path!r}: {exc}") from exc


def _migrate(conn: sqlite3.Connection) -> None:
    """Inside the open transaction: refuse a newer schema, apply what is missing."""
    conn.execute(SCHEMA_TABLE)
    applied = {int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    newest = max(applied, default=0)
    if newest > LATEST_VERSION:
        raise StoreError(
            diagnosis=f"database schema version {newest} is newer than this Bastion supports "
            f"({LATEST_VERSION}); upgrade Bastion"
        )
    for migration in pending(applied):
        for stmt in statements_for(migration, "sqlite"):
            conn.execute(stmt)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, time.time()),
        )
