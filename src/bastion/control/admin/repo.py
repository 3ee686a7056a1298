"""Where the admin API keeps applications metadata and its audit trail (migration 7).

:class:`ControlRepo` is the contract; :class:`MemoryControlRepo` serves ``memory://`` and unit
tests, :class:`SqlControlRepo` serves SQLite and PostgreSQL through the stores' ``read``/
``write`` plumbing with one set of ``?`` statements. The audit trail has an append method and
a query method and nothing else: no code path here updates or deletes an entry, and the
database's triggers refuse it anyway.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import weakref
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import orjson

from bastion.authserver.users.sql_repo import pg_sql
from bastion.control.admin.errors import AdminConflict
from bastion.control.admin.records import Application, AuditEntry, AuditQuery
from bastion.store.base import ClientRecord, Store
from bastion.store.memory import MemoryStore
from bastion.store.postgres import PostgresStore
from bastion.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from bastion.store.postgres import Conn

Row = tuple[Any, ...]
Stmt = tuple[str, tuple[Any, ...]]


class ControlRepo(Protocol):
    """Applications and the admin audit trail. Every method may raise StoreError."""

    async def create_application(self, app: Application) -> None:
        """Create the client row and its metadata together; AdminConflict if the id exists."""

    async def get_application(self, app_id: str) -> Application | None: ...

    async def list_applications(self) -> list[Application]:
        """Every client, with metadata where it has some, by id."""

    async def update_application(self, app: Application) -> bool:
        """Replace name and metadata of an existing application; False when unknown."""

    async def append_audit(self, entry: AuditEntry) -> int:
        """Store one entry; its id."""

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        """Entries matching ``query``, newest first, at most ``query.limit``."""


def _matches(entry: AuditEntry, q: AuditQuery) -> bool:
    checks = (
        q.before_id is None or entry.id < q.before_id,
        q.actor is None or entry.actor == q.actor,
        q.action is None or entry.action == q.action,
        q.target_id is None or entry.target_id == q.target_id,
        q.outcome is None or entry.outcome == q.outcome,
        q.since is None or entry.at >= q.since,
        q.until is None or entry.at < q.until,
    )
    return all(checks)


class MemoryControlRepo:
    """In-memory :class:`ControlRepo` beside a :class:`MemoryStore` (its clients live there)."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._meta: dict[str, Application] = {}
        self._audit: list[AuditEntry] = []

    async def create_application(self, app: Application) -> None:
        if await self._store.get_client(app.id) is not None:
            raise AdminConflict(f"application {app.id!r} exists")
        await self._store.put_client(ClientRecord(app.id, app.name, app.created_at))
        self._meta[app.id] = app

    async def get_application(self, app_id: str) -> Application | None:
        client = await self._store.get_client(app_id)
        if client is None:
            return None
        return self._meta.get(app_id) or Application(client.id, client.name, client.created_at)

    async def list_applications(self) -> list[Application]:
        clients = sorted(await self._store.list_clients(), key=lambda c: c.id)
        return [self._meta.get(c.id) or Application(c.id, c.name, c.created_at) for c in clients]

    async def update_application(self, app: Application) -> bool:
        if await self._store.get_client(app.id) is None:
            return False
        self._meta[app.id] = app
        return True

    async def append_audit(self, entry: AuditEntry) -> int:
        self._store._check()  # an unavailable store refuses audit writes like any other
        stored = dataclasses.replace(entry, id=len(self._audit) + 1)
        self._audit.append(stored)
        return stored.id

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        self._store._check()
        hits = [e for e in reversed(self._audit) if _matches(e, query)]
        return hits[: query.limit]


_SELECT_APP = (
    "SELECT c.id, c.name, c.created_at, a.owner, a.contact, a.environment, a.risk_class,"
    " a.data_classification, a.allowed_scopes, a.updated_at"
    " FROM clients c LEFT JOIN control_applications a ON a.client_id = c.id"
)
_AUDIT_COLUMNS = (
    "id, at, actor, action, target_type, target_id, outcome, source_ip, request_id,"
    " before_state, after_state"
)


def _app(row: Row) -> Application:
    return Application(
        id=row[0],
        name=row[1],
        created_at=row[2],
        owner=row[3],
        contact=row[4] or "",
        environment=row[5] or "",
        risk_class=row[6],
        data_classification=row[7],
        allowed_scopes=tuple(orjson.loads(row[8])) if row[8] else (),
        updated_at=row[9],
    )


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _entry(row: Row) -> AuditEntry:
    return AuditEntry(
        id=int(row[0]),
        at=row[1],
        actor=row[2],
        action=row[3],
        target_type=row[4],
        target_id=row[5],
        outcome=row[6],
        source_ip=row[7],
        request_id=row[8],
        before=orjson.loads(row[9]) if row[9] else None,
        after=orjson.loads(row[10]) if row[10] else None,
    )


def _meta_params(app: Application) -> tuple[Any, ...]:
    return (
        app.owner or "",
        app.contact,
        app.environment,
        app.risk_class,
        app.data_classification,
        orjson.dumps(list(app.allowed_scopes)).decode(),
        app.created_at,
        app.updated_at if app.updated_at is not None else app.created_at,
    )


class SqlRunner(Protocol):
    """Runs statements on one database: one in autocommit, or several in a transaction."""

    async def one(self, op: str, sql: str, args: tuple[Any, ...]) -> list[Row]: ...

    async def tx(self, op: str, stmts: list[Stmt]) -> list[list[Row]]:
        """All or nothing; AdminConflict on a unique or primary-key violation."""


class SqlControlRepo:
    """:class:`ControlRepo` on the tables of migration 7 (SQLite or PostgreSQL)."""

    def __init__(self, runner: SqlRunner) -> None:
        self.runner = runner

    async def create_application(self, app: Application) -> None:
        await self.runner.tx(
            "create_application",
            [
                (
                    "INSERT INTO clients (id, name, created_at) VALUES (?, ?, ?)",
                    (app.id, app.name, app.created_at),
                ),
                (
                    "INSERT INTO control_applications (owner, contact, environment, risk_class,"
                    " data_classification, allowed_scopes, created_at, updated_at, client_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*_meta_params(app), app.id),
                ),
            ],
        )

    async def get_application(self, app_id: str) -> Application | None:
        rows = await self.runner.one("get_application", _SELECT_APP + " WHERE c.id = ?", (app_id,))
        return _app(rows[0]) if rows else None

    async def list_applications(self) -> list[Application]:
        rows = await self.runner.one("list_applications", _SELECT_APP + " ORDER BY c.id", ())
        return [_app(r) for r in rows]

    async def update_application(self, app: Application) -> bool:
        results = await self.runner.tx(
            "update_application",
            [
                (
                    "UPDATE clients SET name = ? WHERE id = ? RETURNING id",
                    (app.name, app.id),
                ),
                (
                    "DELETE FROM control_applications WHERE client_id = ? RETURNING client_id",
                    (app.id,),
                ),
                (
                    "INSERT INTO control_applications (owner, contact, environment, risk_class,"
                    " data_classification, allowed_scopes, created_at, updated_at, client_id)"
                    " SELECT ?, ?, ?, ?, ?, ?, ?, ?, id FROM clients WHERE id = ?"
                    " RETURNING client_id",
                    (*_meta_params(app), app.id),
                ),
            ],
        )
        return bool(results[0])

    async def append_audit(self, entry: AuditEntry) -> int:
        rows = await self.runner.one(
            "append_audit",
            "INSERT INTO admin_audit (at, actor, action, target_type, target_id, outcome,"
            " source_ip, request_id, before_state, after_state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                entry.at,
                entry.actor[:256],
                entry.action[:64],
                entry.target_type[:32],
                entry.target_id[:256],
                entry.outcome[:16],
                entry.source_ip[:64] if entry.source_ip else None,
                entry.request_id[:128] if entry.request_id else None,
                _json(entry.before),
                _json(entry.after),
            ),
        )
        return int(rows[0][0])

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        where: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("actor", query.actor),
            ("action", query.action),
            ("target_id", query.target_id),
            ("outcome", query.outcome),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.before_id is not None:
            where.append("id < ?")
            args.append(query.before_id)
        if query.since is not None:
            where.append("at >= ?")
            args.append(query.since)
        if query.until is not None:
            where.append("at < ?")
            args.append(query.until)
        # Only fixed column names are joined in; every value is a bound parameter.
        sql = f"SELECT {_AUDIT_COLUMNS} FROM admin_audit"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(query.limit)
        rows = await self.runner.one("list_audit", sql, tuple(args))
        return [_entry(r) for r in rows]


class SqliteControlRunner:
    """Statements on an open :class:`SqliteStore`'s file."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    async def one(self, op: str, sql: str, args: tuple[Any, ...]) -> list[Row]:
        return await self.store.read(f"control.{op}", lambda c: c.execute(sql, args).fetchall())

    async def tx(self, op: str, stmts: list[Stmt]) -> list[list[Row]]:
        def run(conn: sqlite3.Connection) -> list[list[Row]]:
            try:
                return [conn.execute(sql, args).fetchall() for sql, args in stmts]
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                    raise AdminConflict("that id exists already") from None
                raise

        return await self.store.write(f"control.{op}", run)


class PostgresControlRunner:
    """Statements on an upgraded :class:`PostgresStore`'s database."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def one(self, op: str, sql: str, args: tuple[Any, ...]) -> list[Row]:
        async def run(conn: Conn) -> list[Row]:
            return [tuple(r) for r in await conn.fetch(pg_sql(sql), *args)]

        return await self.store.read(f"control.{op}", run)

    async def tx(self, op: str, stmts: list[Stmt]) -> list[list[Row]]:
        async def run(conn: Conn) -> list[list[Row]]:
            results: list[list[Row]] = []
            try:
                for sql, args in stmts:
                    results.append([tuple(r) for r in await conn.fetch(pg_sql(sql), *args)])
            except asyncpg.UniqueViolationError:
                raise AdminConflict("that id exists already") from None
            return results

        return await self.store.write(f"control.{op}", run)


_MEMORY: weakref.WeakKeyDictionary[MemoryStore, MemoryControlRepo] = weakref.WeakKeyDictionary()


def control_repo(store: Store) -> ControlRepo:
    """The repository beside ``store``'s own tables (TypeError for an unknown store type: a
    programming error caught at start-up). One memory repository per MemoryStore."""
    if isinstance(store, SqliteStore):
        return SqlControlRepo(SqliteControlRunner(store))
    if isinstance(store, PostgresStore):
        return SqlControlRepo(PostgresControlRunner(store))
    if isinstance(store, MemoryStore):
        repo = _MEMORY.get(store)
        if repo is None:
            repo = _MEMORY[store] = MemoryControlRepo(store)
        return repo
    raise TypeError(f"no control repository for {type(store).__name__}")
