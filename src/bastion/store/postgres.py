"""The PostgreSQL :class:`~bastion.store.base.Store` for distributed mode (``postgresql://…``).

Same contract as the SQLite store (one test suite runs against both), on an ``asyncpg`` pool.

* **Migrations are explicit.** ``bastion db upgrade`` (:meth:`PostgresStore.upgrade`) applies
  the versioned schema; a gateway node never migrates, and :meth:`open` refuses a schema it
  does not know (``store/pg_schema.py``).
* **Change-feed order is commit order.** Identity values are handed out at insert time, not
  at commit, so every transaction that appends to ``changes`` first takes one transaction-level
  advisory lock: appends are serialised and a reader never sees ``seq`` N+1 before N.
* **Audit survives an outage.** With a ``spool_dir``, :meth:`write_audit` spools a batch to a
  local file when the server cannot be reached (:mod:`bastion.store.spool`) and a background
  task drains the spool once it answers again; nothing is lost and no request waits.

Every driver error becomes :class:`~bastion.errors.StoreError` at this boundary. Diagnoses name
the server as ``host:port/database``, never the URL: it may carry a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg
import orjson

from bastion.errors import StoreError
from bastion.store import pg_schema
from bastion.store.base import ApiKeyRecord, Change, ClientRecord, IpBlock, Revocation
from bastion.store.memory import (
    check_announced,
    ip_block_change,
    revocation_change,
    rotatable,
)
from bastion.store.rows import (
    AUDIT_COLUMNS,
    audit_row,
    key_from_row,
    key_params,
    rotation_change,
)
from bastion.store.spool import AuditSpool

log = logging.getLogger("bastion.store.postgres")

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]

T = TypeVar("T")

#: pg_advisory_xact_lock key of change-feed appends ("bastion" in ASCII, then 1).
CHANGES_LOCK = 0x62617374696F6E01

#: Errors that mean "the server cannot be reached now" (spool), as opposed to a refused query.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, ValueError, *UNAVAILABLE)

_SELECT_KEYS = (
    "SELECT id, client_id, secret_hash, scopes, name, created_at, expires_at, revoked_at,"
    " owner, rotated_from, replaced_by, last_used_at, usage_count FROM api_keys"
)
_INSERT_KEY = (
    "INSERT INTO api_keys (id, client_id, secret_hash, scopes, name, created_at, expires_at,"
    " revoked_at, owner, rotated_from, replaced_by, last_used_at, usage_count)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)
# One UPDATE for a whole usage batch; last_used_at never moves back. Its rows are locked in id
# order first (_LOCK_USAGE, same transaction): two nodes flushing overlapping batches then
# queue instead of deadlocking.
_LOCK_USAGE = "SELECT 1 FROM api_keys WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
_RECORD_USAGE = (
    "UPDATE api_keys AS k SET usage_count = k.usage_count + u.n,"
    " last_used_at = GREATEST(COALESCE(k.last_used_at, u.t), u.t)"
    " FROM unnest($1::text[], $2::bigint[], $3::float8[]) AS u(id, n, t) WHERE k.id = u.id"
)
_INSERT_CHANGE = "INSERT INTO changes (kind, payload, created_at) VALUES ($1, $2, $3)"


def describe_target(url: str) -> str:
    """``host:port/database`` of a PostgreSQL URL, without user or password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    return f"{host}:{port}/{unquote(parts.path.lstrip('/')) or '-'}"


class PostgresStore:
    """State in a PostgreSQL database; ``await open()`` before use, ``await close()`` at the end.

    ``url`` is a libpq-style ``postgresql://user:password@host:port/db?…`` URL (query
    parameters other than libpq's become server settings, e.g. ``search_path``). Pool sizes are
    per process; idle connections stay pooled, and with the default ``min_connections`` of 0 the
    pool does not redial in the background during an outage (it reconnects on the next call).
    ``connect_timeout`` (s) bounds waiting for a connection, ``command_timeout`` (s) one
    statement. ``spool_dir`` enables the audit spool (see the module docstring).
    """

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 0,
        max_connections: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        spool_dir: str | None = None,
        drain_interval: float = 1.0,
    ) -> None:
        self._url = url
        self.target = describe_target(url)
        self._password = urlsplit(url).password
        self._min = min_connections
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self.spool = AuditSpool(spool_dir) if spool_dir else None
        self._drain_interval = drain_interval
        self._drainer: asyncio.Task[None] | None = None
        self._spooling = False  # logged once per outage

    def __repr__(self) -> str:  # never show the URL: it may hold a password
        return f"PostgresStore({self.target})"

    # -- plumbing -----------------------------------------------------------------------------

    def _error(self, op: str, exc: BaseException) -> StoreError:
        text = f"{type(exc).__name__}: {exc}"
        if self._password:
            text = text.replace(self._password, "***")
        return StoreError(diagnosis=f"postgresql {op} ({self.target}): {text}")

    async def _call(self, op: str, fn: Callable[[Conn], Awaitable[T]]) -> T:
        pool = self._pool
        if pool is None:
            raise StoreError(diagnosis=f"postgresql {op}: store is not open")
        try:
            async with pool.acquire(timeout=self._connect_timeout) as conn:
                return await fn(conn)
        except _DRIVER_ERRORS as exc:
            raise self._error(op, exc) from exc

    async def _write(self, op: str, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` in one transaction holding the change-feed lock: all of it, or none."""

        async def tx(conn: Conn) -> T:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", CHANGES_LOCK)
                return await fn(conn)

        return await self._call(op, tx)

    async def read(self, op: str, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn(conn)`` on a pooled connection (for repositories of later features that keep
        their own tables in this database). Driver errors become StoreError."""
        return await self._call(op, fn)

    async def write(self, op: str, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Like :meth:`read`, inside one transaction that holds the change-feed lock."""
        return await self._write(op, fn)

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        try:
            return await asyncpg.connect(
                self._url, timeout=self._connect_timeout, command_timeout=self._command_timeout
            )
        except _DRIVER_ERRORS as exc:
            raise self._error("connect", exc) from exc

    # -- lifecycle ----------------------------------------------------------------------------

    async def upgrade(self) -> tuple[int, int]:
        """Apply every pending migration (``bastion db upgrade``); returns the schema version
        before and after. StoreError when the database is newer than this code or a statement
        fails (then nothing of the upgrade is kept). Needs no :meth:`open`."""
        conn = await self._connect()
        try:
            return await pg_schema.apply_migrations(conn)
        except StoreError:
            raise
        except _DRIVER_ERRORS as exc:
            raise self._error("upgrade", exc) from exc
        finally:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await conn.close()

    async def schema_version(self) -> int:
        """The highest applied migration (0: no Bastion schema). Needs no :meth:`open`."""
        conn = await self._connect()
        try:
            return await pg_schema.schema_version(conn)
        except _DRIVER_ERRORS as exc:
            raise self._error("schema_version", exc) from exc
        finally:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await conn.close()

    async def open(self) -> None:
        """Connect the pool and check the schema; StoreError if either fails (see the module
        docstring for what is refused). Starts the spool drain when a spool is configured."""
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._url,
                min_size=self._min,
                max_size=self._max,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
            )
        except _DRIVER_ERRORS as exc:
            raise self._error("open", exc) from exc
        self._pool = pool
        try:
            await self._call("open", pg_schema.check_schema)
            if self.spool is not None:
                await asyncio.to_thread(self.spool.open)
        except BaseException:
            self._pool = None
            await pool.close()
            raise
        if self.spool is not None:
            self._drainer = asyncio.create_task(self._drain_loop(), name="audit-spool-drain")

    async def close(self) -> None:
        """Stop the drain, close the pool; later calls raise StoreError. Spooled records that
        could not be drained stay on disk for the next process."""
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._connect_timeout)
            except _DRIVER_ERRORS:  # TimeoutError included
                pool.terminate()
        if self.spool is not None:
            self.spool.close()

    # -- clients and keys ---------------------------------------------------------------------

    async def put_client(self, client: ClientRecord) -> None:
        """Create a client; StoreError if the id exists."""

        async def tx(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO clients (id, name, created_at) VALUES ($1, $2, $3)",
                client.id,
                client.name,
                client.created_at,
            )

        await self._call("put_client", tx)

    async def get_client(self, client_id: str) -> ClientRecord | None:
        async def q(conn: Conn) -> ClientRecord | None:
            row = await conn.fetchrow(
                "SELECT id, name, created_at FROM clients WHERE id = $1", client_id
            )
            return ClientRecord(*row) if row else None

        return await self._call("get_client", q)

    async def list_clients(self) -> list[ClientRecord]:
        """Every client, by creation time then id."""

        async def q(conn: Conn) -> list[ClientRecord]:
            rows = await conn.fetch(
                "SELECT id, name, created_at FROM clients ORDER BY created_at, id"
            )
            return [ClientRecord(*row) for row in rows]

        return await self._call("list_clients", q)

    async def put_api_key(self, key: ApiKeyRecord) -> None:
        """Create a key of an existing client and append an ``api_key.created`` change."""
        payload = orjson.dumps({"key_id": key.id, "client_id": key.client_id}).decode()

        async def tx(conn: Conn) -> None:
            await conn.execute(_INSERT_KEY, *key_params(key))
            await conn.execute(_INSERT_CHANGE, "api_key.created", payload, key.created_at)

        await self._write("put_api_key", tx)

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        async def q(conn: Conn) -> ApiKeyRecord | None:
            row = await conn.fetchrow(_SELECT_KEYS + " WHERE id = $1", key_id)
            return key_from_row(tuple(row)) if row else None

        return await self._call("get_api_key", q)

    async def list_api_keys(self, client_id: str | None = None) -> list[ApiKeyRecord]:
        """Keys (of one client, or all), by creation time then id."""

        async def q(conn: Conn) -> list[ApiKeyRecord]:
            if client_id is None:
                rows = await conn.fetch(_SELECT_KEYS + " ORDER BY created_at, id")
            else:
                rows = await conn.fetch(
                    _SELECT_KEYS + " WHERE client_id = $1 ORDER BY created_at, id", client_id
                )
            return [key_from_row(tuple(row)) for row in rows]

        return await self._call("list_api_keys", q)

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        """Mark revoked and append an ``api_key.revoked`` change; False if unknown or revoked."""
        payload = orjson.dumps({"key_id": key_id, "at": at}).decode()

        async def tx(conn: Conn) -> bool:
            status = await conn.execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                at,
                key_id,
            )
            if status != "UPDATE 1":
                return False
            await conn.execute(_INSERT_CHANGE, "api_key.revoked", payload, at)
            return True

        return await self._write("revoke_api_key", tx)

    async def rotate_api_key(self, old_id: str, successor: ApiKeyRecord, old_until: float) -> bool:
        """Shorten ``old_id`` to ``old_until``, link it to ``successor`` and insert that, with
        one ``api_key.created`` change; False (nothing written) if ``old_id`` cannot rotate."""
        linked = dataclasses.replace(successor, rotated_from=old_id)

        async def tx(conn: Conn) -> bool:
            row = await conn.fetchrow(_SELECT_KEYS + " WHERE id = $1 FOR UPDATE", old_id)
            if row is None:
                return False
            old = key_from_row(tuple(row))
            if not rotatable(old, successor.created_at):
                return False
            if old.client_id != successor.client_id:
                raise StoreError(diagnosis=f"api key {successor.id!r}: successor of another client")
            until = old_until if old.expires_at is None else min(old.expires_at, old_until)
            await conn.execute(_INSERT_KEY, *key_params(linked))
            await conn.execute(
                "UPDATE api_keys SET expires_at = $1, replaced_by = $2 WHERE id = $3",
                until,
                successor.id,
                old_id,
            )
            payload = orjson.dumps(rotation_change(successor, old_id, until)).decode()
            await conn.execute(_INSERT_CHANGE, "api_key.created", payload, successor.created_at)
            return True

        return await self._write("rotate_api_key", tx)

    async def record_key_usage(self, usage: Mapping[str, tuple[int, float]]) -> None:
        """Add the counts and move ``last_used_at`` forward in one ``UPDATE … FROM unnest``
        (its rows locked in id order first, so concurrent flushes of several nodes queue)."""
        if not usage:
            return
        ids = list(usage)
        counts = [int(usage[k][0]) for k in ids]
        lasts = [float(usage[k][1]) for k in ids]

        async def q(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(_LOCK_USAGE, ids)
                await conn.execute(_RECORD_USAGE, ids, counts, lasts)

        await self._call("record_key_usage", q)

    # -- revocations and the change feed ------------------------------------------------------

    async def add_revocation(self, rev: Revocation) -> None:
        """Store a revocation and append its ``token.revoked`` / ``subject.revoked`` /
        ``client.revoked`` change."""
        kind, body = revocation_change(rev)
        payload = orjson.dumps(body).decode()

        async def tx(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO revocations (kind, value, issuer, not_before, expires_at, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                rev.kind,
                rev.value,
                rev.issuer,
                rev.not_before,
                rev.expires_at,
                rev.created_at,
            )
            await conn.execute(_INSERT_CHANGE, kind, payload, rev.created_at)

        await self._write("add_revocation", tx)

    async def active_revocations(self, now: float) -> list[Revocation]:
        """Revocations whose ``expires_at`` is after ``now``, oldest first."""

        async def q(conn: Conn) -> list[Revocation]:
            rows = await conn.fetch(
                "SELECT kind, value, issuer, not_before, expires_at, created_at"
                " FROM revocations WHERE expires_at > $1 ORDER BY id",
                now,
            )
            return [Revocation(*row) for row in rows]

        return await self._call("active_revocations", q)

    async def add_ip_block(self, block: IpBlock) -> None:
        """Store a block and append its ``ip.blocked`` change."""
        payload = orjson.dumps(ip_block_change(block)).decode()

        async def tx(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO ip_blocks (cidr, reason, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4)",
                block.cidr,
                block.reason,
                block.created_at,
                block.expires_at,
            )
            await conn.execute(_INSERT_CHANGE, "ip.blocked", payload, block.created_at)

        await self._write("add_ip_block", tx)

    async def lift_ip_block(self, cidr: str, at: float) -> bool:
        """Lift the active blocks of ``cidr``; append ``ip.unblocked`` if there were any."""
        payload = orjson.dumps({"cidr": cidr, "at": at}).decode()

        async def tx(conn: Conn) -> bool:
            status = await conn.execute(
                "UPDATE ip_blocks SET lifted_at = $1"
                " WHERE cidr = $2 AND lifted_at IS NULL AND expires_at > $1",
                at,
                cidr,
            )
            if status.endswith(" 0"):
                return False
            await conn.execute(_INSERT_CHANGE, "ip.unblocked", payload, at)
            return True

        return await self._write("lift_ip_block", tx)

    async def active_ip_blocks(self, now: float) -> list[IpBlock]:
        """Blocks neither lifted nor expired at ``now``, oldest first."""

        async def q(conn: Conn) -> list[IpBlock]:
            rows = await conn.fetch(
                "SELECT cidr, reason, created_at, expires_at, lifted_at FROM ip_blocks"
                " WHERE lifted_at IS NULL AND expires_at > $1 ORDER BY id",
                now,
            )
            return [IpBlock(*row) for row in rows]

        return await self._call("active_ip_blocks", q)

    async def announce(self, kind: str, payload: dict[str, Any], at: float) -> None:
        """Append a change of a kind in ``ANNOUNCED_KINDS``."""
        body = check_announced(kind, payload)

        async def tx(conn: Conn) -> None:
            await conn.execute(_INSERT_CHANGE, kind, body, at)

        await self._write("announce", tx)

    async def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        """Changes with a ``seq`` greater than ``seq``, oldest first, at most ``limit``."""
        if limit <= 0:
            return []

        async def q(conn: Conn) -> list[Change]:
            rows = await conn.fetch(
                "SELECT seq, kind, payload, created_at FROM changes"
                " WHERE seq > $1 ORDER BY seq LIMIT $2",
                seq,
                limit,
            )
            return [Change(s, k, orjson.loads(p), at) for s, k, p, at in rows]

        return await self._call("changes_since", q)

    async def last_change_seq(self) -> int:
        """The newest ``seq`` (0 when the feed is empty)."""

        async def q(conn: Conn) -> int:
            return int(await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM changes"))

        return await self._call("last_change_seq", q)

    # -- audit log ----------------------------------------------------------------------------

    async def write_audit(self, records: list[dict[str, Any]]) -> None:
        """Append audit records (already redacted) in one statement.

        With a spool: while the server is unreachable, or while older records still wait in
        the spool (order is kept), the batch is spooled instead and this returns normally.
        """
        if not records:
            return
        try:
            rows = [audit_row(r) for r in records]
        except TypeError as exc:
            raise StoreError(diagnosis=f"audit record not serialisable: {exc}") from exc
        spool = self.spool
        if spool is not None and spool.pending:
            await self._spool(records)
            return
        try:
            await self._call("write_audit", lambda conn: _copy_audit(conn, rows))
        except StoreError as exc:
            if spool is None or not isinstance(exc.__cause__, UNAVAILABLE):
                log.warning("audit write refused by PostgreSQL: %s", type(exc.__cause__).__name__)
                raise
            await self._spool(records)

    async def count_audit(self) -> int:
        async def q(conn: Conn) -> int:
            return int(await conn.fetchval("SELECT COUNT(*) FROM audit_log"))

        return await self._call("count_audit", q)

    async def _spool(self, records: list[dict[str, Any]]) -> None:
        if self.spool is None or self._pool is None:
            raise StoreError(diagnosis="postgresql write_audit: store is not open")
        if not self._spooling:
            self._spooling = True
            log.warning("PostgreSQL %s unreachable: audit records spooled locally", self.target)
        try:
            await asyncio.to_thread(self.spool.append, records)
        except OSError as exc:
            raise StoreError(diagnosis=f"audit spool: {exc.strerror}") from exc

    async def drain_spool(self) -> int:
        """Move spooled records into the database now; returns how many were read from the
        spool. StoreError if the server is still unreachable (the rest stays spooled).

        A write cut off by the outage may have committed before the client heard back, and
        was spooled all the same; so records already in ``audit_log`` (same request id and
        timestamp) are skipped here, and each record is stored once.
        """
        spool = self.spool
        if spool is None:
            return 0

        async def write(records: list[dict[str, Any]]) -> None:
            rows = [audit_row(r) for r in records]

            async def tx(conn: Conn) -> None:
                ids = list({row[1] for row in rows if row[1] is not None})
                seen = {
                    (r[0], r[1])
                    for r in await conn.fetch(
                        "SELECT request_id, ts FROM audit_log WHERE request_id = ANY($1::text[])",
                        ids,
                    )
                }
                fresh = [row for row in rows if row[1] is None or (row[1], row[0]) not in seen]
                if fresh:
                    await _copy_audit(conn, fresh)

            await self._call("drain_spool", tx)

        sent = await spool.drain(write)
        if self._spooling and not spool.pending:
            self._spooling = False
            log.warning("PostgreSQL %s reachable again: audit spool drained", self.target)
        return sent

    async def _drain_loop(self) -> None:
        while True:
            await asyncio.sleep(self._drain_interval)
            if self.spool is None or not self.spool.pending:
                continue
            try:
                await self.drain_spool()
            except StoreError:
                continue  # still down: the next round retries
            except Exception:
                log.exception("audit spool drain failed")


async def _copy_audit(conn: Conn, rows: list[tuple[str | None, ...]]) -> None:
    await conn.copy_records_to_table(
        "audit_log", records=rows, columns=[name for name, _ in AUDIT_COLUMNS]
    )
