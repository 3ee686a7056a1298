"""Where key records live: the memory, SQLite and PostgreSQL repositories (migration 3).

A repository has two operations. :meth:`KeyRepo.load` returns the rotation ``generation`` and
every record; :meth:`KeyRepo.apply` writes a transition **only if the generation is still the
one that was read** (a compare-and-swap on the one-row ``signing_key_generation`` table, in the
same transaction as the row writes). When two auth-server processes decide to rotate at the same
moment, exactly one ``apply`` succeeds; the other gets False, re-reads and finds the work done.

The generation is read *before* the rows: a concurrent change between the two reads makes the
rows newer than the generation, and the compare-and-swap then fails (safe), never the reverse.
"""

from __future__ import annotations

import base64
import weakref
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from bastion.authserver.keys.lifecycle import KeyRecord
from bastion.errors import StoreError
from bastion.store.base import Store
from bastion.store.memory import MemoryStore
from bastion.store.postgres import PostgresStore
from bastion.store.sqlite import SqliteStore

if TYPE_CHECKING:
    import sqlite3

    from bastion.store.postgres import Conn

_COLUMNS = (
    "kid, alg, key_store, state, public_jwk, material, reason,"
    " created_at, activate_at, activated_at, retired_at, remove_at, removed_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM signing_keys ORDER BY created_at, kid"  # noqa: S608 - constants
_SETS = (
    "alg = {}, key_store = {}, state = {}, public_jwk = {}, material = {}, reason = {},"
    " created_at = {}, activate_at = {}, activated_at = {}, retired_at = {}, remove_at = {},"
    " removed_at = {}"
)
_CAS = (
    "UPDATE signing_key_generation SET generation = generation + 1 WHERE id = 1 AND generation = {}"
)
# SQLite: ``?`` placeholders, the kid last; PostgreSQL: ``$n``, the kid first (``$1``).
_SQLITE_UPDATE = f"UPDATE signing_keys SET {_SETS.format(*['?'] * 12)} WHERE kid = ?"  # noqa: S608
_SQLITE_INSERT = f"INSERT INTO signing_keys ({_COLUMNS}) VALUES ({', '.join('?' * 13)})"  # noqa: S608
_SQLITE_CAS = _CAS.format("?")
_PG_UPDATE = (
    f"UPDATE signing_keys SET {_SETS.format(*[f'${i}' for i in range(2, 14)])} WHERE kid = $1"  # noqa: S608
)
_PG_INSERT = (
    f"INSERT INTO signing_keys ({_COLUMNS}) VALUES ({', '.join(f'${i}' for i in range(1, 14))})"  # noqa: S608
)
_PG_CAS = _CAS.format("$1")


class KeyRepo(Protocol):
    """Persistence of key records with a compare-and-swap on the rotation generation."""

    async def load(self) -> tuple[int, list[KeyRecord]]:
        """The current generation and every record (retired ones included)."""

    async def apply(
        self, generation: int, inserts: list[KeyRecord], updates: list[KeyRecord]
    ) -> bool:
        """Write ``updates`` (in order) then ``inserts`` if the generation is still
        ``generation``, and increment it; False, writing nothing, if another process won."""


def _row(rec: KeyRecord) -> tuple[Any, ...]:
    material = base64.b64encode(rec.material).decode("ascii") if rec.material is not None else None
    return (
        rec.kid,
        rec.alg,
        rec.store,
        rec.state,
        orjson.dumps(rec.public_jwk).decode(),
        material,
        rec.reason,
        rec.created_at,
        rec.activate_at,
        rec.activated_at,
        rec.retired_at,
        rec.remove_at,
        rec.removed_at,
    )


def _record(row: Any) -> KeyRecord:
    material = row[5]
    jwk = orjson.loads(row[4])
    if not isinstance(jwk, dict):
        raise ValueError(f"signing key {row[0]}: public_jwk is not an object")
    return KeyRecord(
        kid=row[0],
        alg=row[1],
        store=row[2],
        state=row[3],
        public_jwk=jwk,
        material=base64.b64decode(material, validate=True) if material is not None else None,
        reason=row[6],
        created_at=row[7],
        activate_at=row[8],
        activated_at=row[9],
        retired_at=row[10],
        remove_at=row[11],
        removed_at=row[12],
    )


class MemoryKeyRepo:
    """Records in process memory, shared by every manager opened on one :class:`MemoryStore`
    (so unit tests can run two "processes" against one store). Fails like the store does when
    it is closed or set unavailable."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.generation = 0
        self.records: dict[str, KeyRecord] = {}

    async def _check(self) -> None:
        # The memory store has no public liveness probe; this cheap read raises StoreError
        # exactly when the store is closed or set unavailable.
        await self._store.last_change_seq()

    async def load(self) -> tuple[int, list[KeyRecord]]:
        await self._check()
        records = sorted(self.records.values(), key=lambda r: (r.created_at, r.kid))
        return self.generation, records

    async def apply(
        self, generation: int, inserts: list[KeyRecord], updates: list[KeyRecord]
    ) -> bool:
        await self._check()
        if generation != self.generation:
            return False
        staged = dict(self.records)
        for rec in updates:
            if rec.kid not in staged:
                raise StoreError(diagnosis=f"memory signing_keys: no key {rec.kid}")
            staged[rec.kid] = rec
        for rec in inserts:
            if rec.kid in staged:
                raise StoreError(diagnosis=f"memory signing_keys: key {rec.kid} exists")
            staged[rec.kid] = rec
        if sum(1 for r in staged.values() if r.state == "active") > 1:
            raise StoreError(diagnosis="memory signing_keys: two active keys")
        self.records = staged
        self.generation += 1
        return True


_MEMORY_REPOS: weakref.WeakKeyDictionary[MemoryStore, MemoryKeyRepo] = weakref.WeakKeyDictionary()


class SqliteKeyRepo:
    """Records in the SQLite store's file (its worker thread runs the SQL)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def load(self) -> tuple[int, list[KeyRecord]]:
        def q(conn: sqlite3.Connection) -> tuple[int, list[KeyRecord]]:
            gen = conn.execute("SELECT generation FROM signing_key_generation WHERE id = 1")
            row = gen.fetchone()
            if row is None:
                raise ValueError("signing_key_generation has no row")
            return int(row[0]), [_record(r) for r in conn.execute(_SELECT).fetchall()]

        return await self._store.read("signing_keys.load", q)

    async def apply(
        self, generation: int, inserts: list[KeyRecord], updates: list[KeyRecord]
    ) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            cas = conn.execute(_SQLITE_CAS, (generation,))
            if cas.rowcount != 1:
                return False
            for rec in updates:
                kid, *rest = _row(rec)
                cur = conn.execute(_SQLITE_UPDATE, (*rest, kid))
                if cur.rowcount != 1:
                    raise ValueError(f"no signing key {kid}")
            for rec in inserts:
                conn.execute(_SQLITE_INSERT, _row(rec))
            return True

        return await self._store.write("signing_keys.apply", tx)


class PostgresKeyRepo:
    """Records in the PostgreSQL store's database."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def load(self) -> tuple[int, list[KeyRecord]]:
        async def q(conn: Conn) -> tuple[int, list[KeyRecord]]:
            gen = await conn.fetchval("SELECT generation FROM signing_key_generation WHERE id = 1")
            if gen is None:
                raise ValueError("signing_key_generation has no row")
            rows = await conn.fetch(_SELECT)
            return int(gen), [_record(tuple(r)) for r in rows]

        return await self._store.read("signing_keys.load", q)

    async def apply(
        self, generation: int, inserts: list[KeyRecord], updates: list[KeyRecord]
    ) -> bool:
        async def tx(conn: Conn) -> bool:
            # Under READ COMMITTED a concurrent transaction that incremented the row first makes
            # this UPDATE re-check its WHERE against the committed row: 0 rows, we lost.
            status = await conn.execute(_PG_CAS, generation)
            if status != "UPDATE 1":
                return False
            for rec in updates:
                status = await conn.execute(_PG_UPDATE, *_row(rec))
                if status != "UPDATE 1":
                    raise ValueError(f"no signing key {rec.kid}")
            for rec in inserts:
                await conn.execute(_PG_INSERT, *_row(rec))
            return True

        return await self._store.write("signing_keys.apply", tx)


def key_repo(store: Store) -> KeyRepo:
    """The repository for ``store``'s backend; StoreError for a backend it does not know."""
    if isinstance(store, SqliteStore):
        return SqliteKeyRepo(store)
    if isinstance(store, PostgresStore):
        return PostgresKeyRepo(store)
    if isinstance(store, MemoryStore):
        repo = _MEMORY_REPOS.get(store)
        if repo is None:
            repo = _MEMORY_REPOS[store] = MemoryKeyRepo(store)
        return repo
    raise StoreError(diagnosis=f"signing keys: unsupported store {type(store).__name__}")
