"""The SQL repositories of users, recovery codes and sessions (tables of migration 4).

One set of statements serves SQLite and PostgreSQL: they are written with ``?`` placeholders and
rewritten to ``$n`` for asyncpg. Each guarded operation is a single conditional ``UPDATE``
(``… WHERE <precondition> RETURNING …``), atomic in both databases without explicit locking:

* :meth:`reserve_attempt` counts an attempt only while the account is not locked, and sets the
  lock in the same statement (right-hand sides of ``SET`` see the row's old values);
* :meth:`use_totp_step` moves ``totp_last_step`` forward only;
* :meth:`use_recovery_code` sets ``used_at`` only where it is NULL.

Single statements run in autocommit (the stores' ``read``); several statements that must hold
together (enrolment, session rotation) run in one transaction (the stores' ``write``).
"""

from __future__ import annotations

import functools
import sqlite3
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import orjson

from bastion.authserver.users.model import AttemptGrant, SessionRecord, UserRecord
from bastion.authserver.users.repo import UserExists
from bastion.store.postgres import PostgresStore
from bastion.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from bastion.store.postgres import Conn

Row = tuple[Any, ...]
Stmt = tuple[str, tuple[Any, ...]]

_SELECT_USER = (
    "SELECT id, username, email, name, roles, password_hash, disabled, totp_secret,"
    " totp_last_step, failed_logins, locked_until, created_at, updated_at, must_change_password"
    " FROM auth_users"
)
_INSERT_USER = (
    "INSERT INTO auth_users (id, username, email, name, roles, password_hash, disabled,"
    " totp_secret, totp_last_step, failed_logins, locked_until, created_at, updated_at,"
    " must_change_password) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_SESSION = (
    "SELECT id_hash, user_id, state, amr, auth_time, created_at, expires_at, last_seen, data"
    " FROM auth_sessions WHERE id_hash = ?"
)
_INSERT_SESSION = (
    "INSERT INTO auth_sessions (id_hash, user_id, state, amr, auth_time, created_at,"
    " expires_at, last_seen, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_RESERVE = (
    "UPDATE auth_users SET"
    " failed_logins = CASE WHEN locked_until IS NULL THEN failed_logins + 1 ELSE 1 END,"
    " locked_until = CASE"
    "  WHEN (CASE WHEN locked_until IS NULL THEN failed_logins + 1 ELSE 1 END)"
    "   >= CAST(? AS INTEGER) THEN CAST(? AS DOUBLE PRECISION)"
    "  ELSE NULL END"
    " WHERE id = ? AND disabled = 0"
    " AND (locked_until IS NULL OR locked_until <= CAST(? AS DOUBLE PRECISION))"
    " RETURNING failed_logins"
)


def _user(row: Row) -> UserRecord:
    return UserRecord(
        id=row[0],
        username=row[1],
        email=row[2],
        name=row[3],
        roles=tuple(orjson.loads(row[4])),
        password_hash=row[5],
        disabled=bool(row[6]),
        totp_secret=row[7],
        totp_last_step=None if row[8] is None else int(row[8]),
        failed_logins=int(row[9]),
        locked_until=row[10],
        created_at=row[11],
        updated_at=row[12],
        must_change_password=bool(row[13]),
    )


def _session(row: Row) -> SessionRecord:
    return SessionRecord(
        id_hash=row[0],
        user_id=row[1],
        state=row[2],
        amr=tuple(orjson.loads(row[3])),
        auth_time=row[4],
        created_at=row[5],
        expires_at=row[6],
        last_seen=row[7],
        data=orjson.loads(row[8]),
    )


def _insert_session(s: SessionRecord) -> Stmt:
    return (
        _INSERT_SESSION,
        (
            s.id_hash,
            s.user_id,
            s.state,
            orjson.dumps(list(s.amr)).decode(),
            s.auth_time,
            s.created_at,
            s.expires_at,
            s.last_seen,
            orjson.dumps(s.data).decode(),
        ),
    )


class StatementRunner(Protocol):
    """Runs the repository's statements on one database."""

    async def one(self, op: str, sql: str, args: tuple[Any, ...]) -> list[Row]:
        """One statement in autocommit; its rows (RETURNING rows for writes)."""

    async def tx(self, op: str, stmts: list[Stmt], conflict: UserExists | None) -> list[list[Row]]:
        """Several statements in one transaction, the rows of each; ``conflict`` is raised
        for a unique or primary-key violation."""


class SqlUserRepo:
    """:class:`~bastion.authserver.users.repo.UserRepo` over a :class:`StatementRunner`."""

    def __init__(self, runner: StatementRunner) -> None:
        self.runner = runner

    async def _one(self, op: str, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        return await self.runner.one(op, sql, args)

    async def _tx(
        self, op: str, stmts: list[Stmt], conflict: UserExists | None = None
    ) -> list[list[Row]]:
        return await self.runner.tx(op, stmts, conflict)

    async def create_user(self, user: UserRecord) -> None:
        await self._tx(
            "create_user",
            [
                (
                    _INSERT_USER,
                    (
                        user.id,
                        user.username,
                        user.email,
                        user.name,
                        orjson.dumps(list(user.roles)).decode(),
                        user.password_hash,
                        int(user.disabled),
                        user.totp_secret,
                        user.totp_last_step,
                        user.failed_logins,
                        user.locked_until,
                        user.created_at,
                        user.updated_at,
                        user.must_change_password,
                    ),
                )
            ],
            conflict=UserExists(f"user {user.username!r} exists"),
        )

    async def get_user(self, user_id: str) -> UserRecord | None:
        rows = await self._one("get_user", _SELECT_USER + " WHERE id = ?", (user_id,))
        return _user(rows[0]) if rows else None

    async def find_user(self, username: str) -> UserRecord | None:
        rows = await self._one("find_user", _SELECT_USER + " WHERE username = ?", (username,))
        return _user(rows[0]) if rows else None

    async def list_users(self) -> list[UserRecord]:
        rows = await self._one("list_users", _SELECT_USER + " ORDER BY username")
        return [_user(r) for r in rows]

    async def set_password_hash(
        self, user_id: str, password_hash: str, now: float, *, must_change: bool | None = None
    ) -> bool:
        if must_change is None:
            sql = (
                "UPDATE auth_users SET password_hash = ?, updated_at = ? WHERE id = ? RETURNING id"
            )
            args: tuple[Any, ...] = (password_hash, now, user_id)
        else:
            sql = (
                "UPDATE auth_users SET password_hash = ?, updated_at = ?, must_change_password = ?"
                " WHERE id = ? RETURNING id"
            )
            args = (password_hash, now, must_change, user_id)
        return bool(await self._one("set_password_hash", sql, args))

    async def reserve_attempt(
        self, user_id: str, now: float, threshold: int, lock_for: float
    ) -> AttemptGrant:
        rows = await self._one(
            "reserve_attempt", _RESERVE, (threshold, now + lock_for, user_id, now)
        )
        return AttemptGrant(True, int(rows[0][0])) if rows else AttemptGrant(False, 0)

    async def clear_failures(self, user_id: str, now: float) -> None:
        await self._one(
            "clear_failures",
            "UPDATE auth_users SET failed_logins = 0, locked_until = NULL"
            " WHERE id = ? AND (failed_logins <> 0 OR locked_until IS NOT NULL) RETURNING id",
            (user_id,),
        )

    async def release_attempt(self, user_id: str, threshold: int) -> None:
        await self._one(
            "release_attempt",
            "UPDATE auth_users SET failed_logins = failed_logins - 1,"
            " locked_until = CASE WHEN failed_logins - 1 >= CAST(? AS INTEGER)"
            "  THEN locked_until ELSE NULL END"
            " WHERE id = ? AND failed_logins > 0 RETURNING id",
            (threshold, user_id),
        )

    async def set_disabled(self, user_id: str, disabled: bool, now: float) -> bool:
        if disabled:
            sql = "UPDATE auth_users SET disabled = 1, updated_at = ? WHERE id = ? RETURNING id"
        else:
            sql = (
                "UPDATE auth_users SET disabled = 0, failed_logins = 0, locked_until = NULL,"
                " updated_at = ? WHERE id = ? RETURNING id"
            )
        return bool(await self._one("set_disabled", sql, (now, user_id)))

    async def set_roles(self, user_id: str, roles: tuple[str, ...], now: float) -> bool:
        roles_json = orjson.dumps(list(roles)).decode()
        sql = "UPDATE auth_users SET roles = ?, updated_at = ? WHERE id = ? RETURNING id"
        return bool(await self._one("set_roles", sql, (roles_json, now, user_id)))

    async def enable_totp(
        self, user_id: str, secret: str, step: int, code_hashes: list[str], now: float
    ) -> bool:
        stmts: list[Stmt] = [
            (
                "UPDATE auth_users SET totp_secret = ?, totp_last_step = ?, updated_at = ?"
                " WHERE id = ? RETURNING id",
                (secret, step, now, user_id),
            ),
            ("DELETE FROM auth_recovery_codes WHERE user_id = ? RETURNING code_hash", (user_id,)),
        ]
        stmts.extend(
            (
                "INSERT INTO auth_recovery_codes (user_id, code_hash)"
                " SELECT id, ? FROM auth_users WHERE id = ? RETURNING code_hash",
                (code_hash, user_id),
            )
            for code_hash in code_hashes
        )
        results = await self._tx("enable_totp", stmts)
        return bool(results[0])

    async def clear_mfa(self, user_id: str, now: float) -> bool:
        results = await self._tx(
            "clear_mfa",
            [
                (
                    "UPDATE auth_users SET totp_secret = NULL, totp_last_step = NULL,"
                    " updated_at = ? WHERE id = ? RETURNING id",
                    (now, user_id),
                ),
                (
                    "DELETE FROM auth_recovery_codes WHERE user_id = ? RETURNING code_hash",
                    (user_id,),
                ),
            ],
        )
        return bool(results[0])

    async def use_totp_step(self, user_id: str, step: int) -> bool:
        rows = await self._one(
            "use_totp_step",
            "UPDATE auth_users SET totp_last_step = ?"
            " WHERE id = ? AND totp_secret IS NOT NULL"
            " AND (totp_last_step IS NULL OR totp_last_step < ?) RETURNING id",
            (step, user_id, step),
        )
        return bool(rows)

    async def use_recovery_code(self, user_id: str, code_hash: str, now: float) -> bool:
        rows = await self._one(
            "use_recovery_code",
            "UPDATE auth_recovery_codes SET used_at = ?"
            " WHERE user_id = ? AND code_hash = ? AND used_at IS NULL RETURNING code_hash",
            (now, user_id, code_hash),
        )
        return bool(rows)

    async def recovery_codes_left(self, user_id: str) -> int:
        rows = await self._one(
            "recovery_codes_left",
            "SELECT COUNT(*) FROM auth_recovery_codes WHERE user_id = ? AND used_at IS NULL",
            (user_id,),
        )
        return int(rows[0][0])

    async def create_session(self, session: SessionRecord) -> None:
        await self._tx("create_session", [_insert_session(session)])

    async def get_session(self, id_hash: str) -> SessionRecord | None:
        rows = await self._one(
            "get_session",
            _SELECT_SESSION,
            (id_hash,),
        )
        return _session(rows[0]) if rows else None

    async def replace_session(self, old_id_hash: str | None, session: SessionRecord) -> None:
        stmts: list[Stmt] = []
        if old_id_hash is not None:
            stmts.append(
                (
                    "DELETE FROM auth_sessions WHERE id_hash = ? RETURNING id_hash",
                    (old_id_hash,),
                )
            )
        stmts.append(_insert_session(session))
        await self._tx("replace_session", stmts)

    async def touch_session(self, id_hash: str, now: float) -> None:
        await self._one(
            "touch_session",
            "UPDATE auth_sessions SET last_seen = ? WHERE id_hash = ? RETURNING id_hash",
            (now, id_hash),
        )

    async def set_session_data(self, id_hash: str, data: dict[str, Any]) -> None:
        await self._one(
            "set_session_data",
            "UPDATE auth_sessions SET data = ? WHERE id_hash = ? RETURNING id_hash",
            (orjson.dumps(data).decode(), id_hash),
        )

    async def delete_session(self, id_hash: str) -> None:
        await self._one(
            "delete_session",
            "DELETE FROM auth_sessions WHERE id_hash = ? RETURNING id_hash",
            (id_hash,),
        )

    async def delete_user_sessions(self, user_id: str) -> int:
        rows = await self._one(
            "delete_user_sessions",
            "DELETE FROM auth_sessions WHERE user_id = ? RETURNING id_hash",
            (user_id,),
        )
        return len(rows)

    async def purge_sessions(self, now: float) -> int:
        rows = await self._one(
            "purge_sessions",
            "DELETE FROM auth_sessions WHERE expires_at <= ? RETURNING id_hash",
            (now,),
        )
        return len(rows)


class SqliteRunner:
    """Statements on the SQLite file of a :class:`SqliteStore` (opened, so migrated)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    async def one(self, op: str, sql: str, args: tuple[Any, ...]) -> list[Row]:
        return await self.store.read(f"users.{op}", lambda c: c.execute(sql, args).fetchall())

    async def tx(self, op: str, stmts: list[Stmt], conflict: UserExists | None) -> list[list[Row]]:
        def run(conn: sqlite3.Connection) -> list[list[Row]]:
            try:
                return [conn.execute(sql, args).fetchall() for sql, args in stmts]
            except sqlite3.IntegrityError:
                if conflict is not None:
                    raise conflict from None
                raise

        return await self.store.write(f"users.{op}", run)


@functools.lru_cache(maxsize=128)
def pg_sql(sql: str) -> str:
    """``?`` placeholders rewritten as asyncpg's ``$1, $2, …`` (our statements hold no other
    question mark)."""
    parts = sql.split("?")
    out = [parts[0]]
    for n, part in enumerate(parts[1:], start=1):
        out.append(f"${n}{part}")
    return "".join(out)


class PostgresRunner:
    """Statements on the database of a :class:`PostgresStore` (schema upgraded)."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def one(self, op: str, sql: str, args: tuple[Any, ...]) -> list[Row]:
        async def run(conn: Conn) -> list[Row]:
            return [tuple(r) for r in await conn.fetch(pg_sql(sql), *args)]

        return await self.store.read(f"users.{op}", run)

    async def tx(self, op: str, stmts: list[Stmt], conflict: UserExists | None) -> list[list[Row]]:
        async def run(conn: Conn) -> list[list[Row]]:
            results: list[list[Row]] = []
            try:
                for sql, args in stmts:
                    results.append([tuple(r) for r in await conn.fetch(pg_sql(sql), *args)])
            except asyncpg.UniqueViolationError:
                if conflict is not None:
                    raise conflict from None
                raise
            return results

        return await self.store.write(f"users.{op}", run)
