"""Where the OAuth records live: one protocol, a memory version and one SQL version for SQLite
and PostgreSQL (the tables of migration 2).

The two operations that decide security are single atomic statements:

* :meth:`OAuthRepo.consume_code` — ``UPDATE … SET used_at WHERE client_id = ? AND used_at IS
  NULL``: of two concurrent redemptions of one code exactly one sees ``first_use``, and a code
  presented by another client is neither consumed nor marked as replayed;
* :meth:`OAuthRepo.rotate_family` — compare-and-swap on the family's ``generation``: of N
  concurrent refreshes of one token exactly one rotates; the others find the family one
  generation ahead and take the idempotent-retry path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from bastion.authserver.oauth.records import (
    AuthorizationCode,
    ClientSecret,
    OAuthClient,
    RefreshFamily,
)
from bastion.errors import StoreError
from bastion.store.base import Store
from bastion.store.memory import MemoryStore
from bastion.store.postgres import PostgresStore
from bastion.store.sqlite import SqliteStore

if TYPE_CHECKING:
    import sqlite3


class OAuthRepo(Protocol):
    """Durable OAuth state. Every method may raise :class:`~bastion.errors.StoreError`."""

    async def put_client(self, client: OAuthClient) -> None:
        """Register a client; StoreError if the id exists."""

    async def get_client(self, client_id: str) -> OAuthClient | None: ...

    async def list_clients(self) -> list[OAuthClient]: ...

    async def set_client_secrets(
        self, client_id: str, secrets: tuple[ClientSecret, ...], now: float
    ) -> bool:
        """Replace the client's secrets; False if there is no such client."""

    async def set_client_introspect(self, client_id: str, allowed: bool, now: float) -> bool:
        """Grant or withdraw the client's ``introspect`` permission; False if no such client."""

    async def delete_client(self, client_id: str, now: float) -> bool:
        """Delete a client and revoke its refresh families; False if there is no such client."""

    async def put_code(self, code: AuthorizationCode) -> None: ...

    async def get_code(self, code_hash: str) -> AuthorizationCode | None:
        """The stored code (used or not), or None."""

    async def consume_code(
        self, code_hash: str, client_id: str, now: float, issued: tuple[str | None, str, float]
    ) -> tuple[AuthorizationCode | None, bool]:
        """Mark the code used if it belongs to ``client_id``, recording in the same statement
        what will be issued from it (``issued`` = refresh family id, access-token jti, its exp)
        so a replay can revoke it. ``(code, True)`` on the first use, ``(code, False)`` on a
        replay by the same client (the stored record, with what the first use recorded; the
        replay is marked), ``(None, False)`` if unknown or another client's (nothing marked)."""

    async def code_replayed(self, code_hash: str) -> bool:
        """Whether a replay of the code was seen (the first use checks after issuing)."""

    async def create_family(self, family: RefreshFamily, token_hash: str) -> None:
        """Store a new family with its first refresh token (generation 0)."""

    async def find_refresh(self, token_hash: str) -> tuple[RefreshFamily, int] | None:
        """The family of a refresh token and the token's generation, or None."""

    async def rotate_family(
        self,
        family_id: str,
        expected_generation: int,
        new_token_hash: str,
        now: float,
        retry_response: str,
        access_jti: str,
        access_exp: float,
    ) -> bool:
        """Compare-and-swap: advance the family to ``expected_generation + 1`` with a new token
        if it is still at ``expected_generation`` and not revoked. False: someone else won."""

    async def revoke_family(self, family_id: str, now: float, reason: str) -> RefreshFamily | None:
        """Revoke a family in one statement; the family as revoked — with the access-token
        ``jti`` of its latest rotation, even one that raced the revocation — if it was not yet
        revoked, else None."""

    async def revoke_subject_families(
        self, subject: str, now: float, reason: str
    ) -> list[RefreshFamily]:
        """Revoke every live family of ``subject`` (a disabled user) in one statement; the
        families as revoked (see :meth:`revoke_family`)."""

    async def revoke_client_families(
        self, client_id: str, now: float, reason: str
    ) -> list[RefreshFamily]:
        """Revoke every live family issued to the OAuth client ``client_id`` (an incident's
        revoke-application), whoever its user, in one statement; the families as revoked (see
        :meth:`revoke_family`), so the caller can revoke their last access tokens too."""

    async def use_assertion_jti(self, client_id: str, jti: str, expires_at: float) -> bool:
        """Record an RFC 7523 assertion's ``jti``; False when it was already used."""

    async def purge(self, now: float) -> int:
        """Delete expired codes, families and assertion ``jti``s; how many rows went."""


# -- memory -------------------------------------------------------------------------------------
class MemoryOAuthRepo:
    """Everything in dicts, for unit tests and ``memory://``. Each method runs without an
    ``await`` inside, so it is atomic on the event loop."""

    def __init__(self) -> None:
        self.clients: dict[str, OAuthClient] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.families: dict[str, RefreshFamily] = {}
        self.tokens: dict[str, tuple[str, int]] = {}
        self.jtis: dict[tuple[str, str], float] = {}
        self.replayed: set[str] = set()

    async def put_client(self, client: OAuthClient) -> None:
        if client.id in self.clients:
            raise StoreError(diagnosis=f"memory put_client: client {client.id!r} exists")
        self.clients[client.id] = client

    async def get_client(self, client_id: str) -> OAuthClient | None:
        return self.clients.get(client_id)

    async def list_clients(self) -> list[OAuthClient]:
        return sorted(self.clients.values(), key=lambda c: c.id)

    async def set_client_secrets(
        self, client_id: str, secrets: tuple[ClientSecret, ...], now: float
    ) -> bool:
        client = self.clients.get(client_id)
        if client is None:
            return False
        self.clients[client_id] = replace(client, secrets=secrets, updated_at=now)
        return True

    async def set_client_introspect(self, client_id: str, allowed: bool, now: float) -> bool:
        client = self.clients.get(client_id)
        if client is None:
            return False
        self.clients[client_id] = replace(client, introspect=allowed, updated_at=now)
        return True

    async def delete_client(self, client_id: str, now: float) -> bool:
        if self.clients.pop(client_id, None) is None:
            return False
        for fam in list(self.families.values()):
            if fam.client_id == client_id and fam.revoked_at is None:
                self.families[fam.id] = replace(fam, revoked_at=now, revoked_reason="client")
        return True

    async def put_code(self, code: AuthorizationCode) -> None:
        if code.code_hash in self.codes:
            raise StoreError(diagnosis="memory put_code: duplicate code")
        self.codes[code.code_hash] = code

    async def get_code(self, code_hash: str) -> AuthorizationCode | None:
        return self.codes.get(code_hash)

    async def consume_code(
        self, code_hash: str, client_id: str, now: float, issued: tuple[str | None, str, float]
    ) -> tuple[AuthorizationCode | None, bool]:
        code = self.codes.get(code_hash)
        if code is None or code.client_id != client_id:
            return None, False
        if code.used_at is not None:
            self.replayed.add(code_hash)
            return code, False
        family_id, jti, exp = issued
        self.codes[code_hash] = used = replace(
            code, used_at=now, family_id=family_id, access_jti=jti, access_exp=exp
        )
        return used, True

    async def code_replayed(self, code_hash: str) -> bool:
        return code_hash in self.replayed

    async def create_family(self, family: RefreshFamily, token_hash: str) -> None:
        if family.id in self.families or token_hash in self.tokens:
            raise StoreError(diagnosis="memory create_family: duplicate")
        self.families[family.id] = family
        self.tokens[token_hash] = (family.id, family.generation)

    async def find_refresh(self, token_hash: str) -> tuple[RefreshFamily, int] | None:
        found = self.tokens.get(token_hash)
        if found is None:
            return None
        fam = self.families.get(found[0])
        return None if fam is None else (fam, found[1])

    async def rotate_family(
        self,
        family_id: str,
        expected_generation: int,
        new_token_hash: str,
        now: float,
        retry_response: str,
        access_jti: str,
        access_exp: float,
    ) -> bool:
        fam = self.families.get(family_id)
        if fam is None or fam.generation != expected_generation or fam.revoked_at is not None:
            return False
        gen = expected_generation + 1
        self.families[family_id] = replace(
            fam,
            generation=gen,
            rotated_at=now,
            last_used_at=now,
            retry_response=retry_response,
            access_jti=access_jti,
            access_exp=access_exp,
        )
        self.tokens[new_token_hash] = (family_id, gen)
        return True

    async def revoke_family(self, family_id: str, now: float, reason: str) -> RefreshFamily | None:
        fam = self.families.get(family_id)
        if fam is None or fam.revoked_at is not None:
            return None
        self.families[family_id] = revoked = replace(
            fam, revoked_at=now, revoked_reason=reason, retry_response=None
        )
        return revoked

    async def revoke_subject_families(
        self, subject: str, now: float, reason: str
    ) -> list[RefreshFamily]:
        done = []
        for fam in list(self.families.values()):
            if fam.subject == subject and fam.revoked_at is None:
                revoked = await self.revoke_family(fam.id, now, reason)
                if revoked is not None:
                    done.append(revoked)
        return done

    async def revoke_client_families(
        self, client_id: str, now: float, reason: str
    ) -> list[RefreshFamily]:
        done = []
        for fam in list(self.families.values()):
            if fam.client_id == client_id and fam.revoked_at is None:
                revoked = await self.revoke_family(fam.id, now, reason)
                if revoked is not None:
                    done.append(revoked)
        return done

    async def use_assertion_jti(self, client_id: str, jti: str, expires_at: float) -> bool:
        if (client_id, jti) in self.jtis:
            return False
        self.jtis[(client_id, jti)] = expires_at
        return True

    async def purge(self, now: float) -> int:
        gone = [h for h, c in self.codes.items() if c.expires_at <= now]
        for h in gone:
            del self.codes[h]
        fams = [f.id for f in self.families.values() if f.expires_at <= now]
        for fid in fams:
            del self.families[fid]
        for h, (fid, _) in list(self.tokens.items()):
            if fid not in self.families:
                del self.tokens[h]
        jtis = [k for k, exp in self.jtis.items() if exp <= now]
        for k in jtis:
            del self.jtis[k]
        return len(gone) + len(fams) + len(jtis)


# -- SQL ------------------------------------------------------------------------------------------
_CLIENT_COLS = (
    "id, name, auth_method, secrets, jwks, redirect_uris, grant_types, scopes, audiences,"
    " created_at, updated_at, introspect"
)
_CODE_COLS = (
    "code_hash, client_id, redirect_uri, scope, subject, nonce, code_challenge, auth_time, amr,"
    " acr, created_at, expires_at, used_at, family_id, access_jti, access_exp"
)
_FAMILY_COLS = (
    "id, client_id, subject, scope, audience, auth_time, amr, acr, created_at, expires_at,"
    " last_used_at, generation, rotated_at, retry_response, access_jti, access_exp, revoked_at,"
    " revoked_reason"
)
_FAMILY_COLS_F = ", ".join("f." + c.strip() for c in _FAMILY_COLS.split(","))


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _client_params(c: OAuthClient) -> tuple[Any, ...]:
    secrets = [
        {"hash": s.hash, "created_at": s.created_at, "expires_at": s.expires_at} for s in c.secrets
    ]
    return (
        c.id,
        c.name,
        c.auth_method,
        _json(secrets),
        None if c.jwks is None else _json(c.jwks),
        _json(list(c.redirect_uris)),
        _json(list(c.grant_types)),
        _json(list(c.scopes)),
        _json(list(c.audiences)),
        c.created_at,
        c.updated_at,
        c.introspect,
    )


def _secrets_json(secrets: tuple[ClientSecret, ...]) -> str:
    return _json(
        [{"hash": s.hash, "created_at": s.created_at, "expires_at": s.expires_at} for s in secrets]
    )


def _client(row: Sequence[Any]) -> OAuthClient:
    secrets = tuple(
        ClientSecret(str(s["hash"]), float(s["created_at"]), s.get("expires_at"))
        for s in orjson.loads(row[3])
    )
    return OAuthClient(
        id=row[0],
        name=row[1],
        auth_method=row[2],
        secrets=secrets,
        jwks=None if row[4] is None else orjson.loads(row[4]),
        redirect_uris=tuple(orjson.loads(row[5])),
        grant_types=tuple(str(g) for g in orjson.loads(row[6])),
        introspect=bool(row[11]),  # SQLite returns 0/1, PostgreSQL a bool
        scopes=tuple(orjson.loads(row[7])),
        audiences=tuple(orjson.loads(row[8])),
        created_at=row[9],
        updated_at=row[10],
    )


def _code_params(c: AuthorizationCode) -> tuple[Any, ...]:
    return (
        c.code_hash,
        c.client_id,
        c.redirect_uri,
        c.scope,
        c.subject,
        c.nonce,
        c.code_challenge,
        c.auth_time,
        _json(list(c.amr)),
        c.acr,
        c.created_at,
        c.expires_at,
        c.used_at,
        c.family_id,
        c.access_jti,
        c.access_exp,
    )


def _code(row: Sequence[Any]) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash=row[0],
        client_id=row[1],
        redirect_uri=row[2],
        scope=row[3],
        subject=row[4],
        nonce=row[5],
        code_challenge=row[6],
        auth_time=row[7],
        amr=tuple(orjson.loads(row[8])),
        acr=row[9],
        created_at=row[10],
        expires_at=row[11],
        used_at=row[12],
        family_id=row[13],
        access_jti=row[14],
        access_exp=row[15],
    )


def _family_params(f: RefreshFamily) -> tuple[Any, ...]:
    return (
        f.id,
        f.client_id,
        f.subject,
        f.scope,
        _json(list(f.audience)),
        f.auth_time,
        _json(list(f.amr)),
        f.acr,
        f.created_at,
        f.expires_at,
        f.last_used_at,
        f.generation,
        f.rotated_at,
        f.retry_response,
        f.access_jti,
        f.access_exp,
        f.revoked_at,
        f.revoked_reason,
    )


def _family(row: Sequence[Any]) -> RefreshFamily:
    return RefreshFamily(
        id=row[0],
        client_id=row[1],
        subject=row[2],
        scope=row[3],
        audience=tuple(orjson.loads(row[4])),
        auth_time=row[5],
        amr=tuple(orjson.loads(row[6])),
        acr=row[7],
        created_at=row[8],
        expires_at=row[9],
        last_used_at=row[10],
        generation=row[11],
        rotated_at=row[12],
        retry_response=row[13],
        access_jti=row[14],
        access_exp=row[15],
        revoked_at=row[16],
        revoked_reason=row[17],
    )


_Q = {
    "put_client": f"INSERT INTO oauth_clients ({_CLIENT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608 - constant column lists
    "get_client": f"SELECT {_CLIENT_COLS} FROM oauth_clients WHERE id = ?",  # noqa: S608 - constant column lists
    "list_clients": f"SELECT {_CLIENT_COLS} FROM oauth_clients ORDER BY id",  # noqa: S608 - constant column lists
    "set_secrets": "UPDATE oauth_clients SET secrets = ?, updated_at = ? WHERE id = ?",
    "set_introspect": "UPDATE oauth_clients SET introspect = ?, updated_at = ? WHERE id = ?",
    "delete_client": "DELETE FROM oauth_clients WHERE id = ?",
    "revoke_client_families": "UPDATE oauth_refresh_families SET revoked_at = ?,"
    " revoked_reason = 'client', retry_response = NULL"
    " WHERE client_id = ? AND revoked_at IS NULL",
    "put_code": f"INSERT INTO oauth_codes ({_CODE_COLS}) VALUES"  # noqa: S608 - constant column lists
    " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "use_code": "UPDATE oauth_codes SET used_at = ?, family_id = ?, access_jti = ?,"
    " access_exp = ? WHERE code_hash = ? AND client_id = ? AND used_at IS NULL",
    "mark_replay": "UPDATE oauth_codes SET replayed_at = ? WHERE code_hash = ? AND client_id = ?",
    "code_replayed": "SELECT replayed_at FROM oauth_codes WHERE code_hash = ?",
    "get_code": f"SELECT {_CODE_COLS} FROM oauth_codes WHERE code_hash = ?",  # noqa: S608 - constant column lists
    "put_family": f"INSERT INTO oauth_refresh_families ({_FAMILY_COLS}) VALUES"  # noqa: S608 - constant column lists
    " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "put_token": "INSERT INTO oauth_refresh_tokens (token_hash, family_id, generation,"
    " created_at) VALUES (?,?,?,?)",
    "find_refresh": f"SELECT {_FAMILY_COLS_F}, t.generation FROM oauth_refresh_tokens t"  # noqa: S608 - constant column lists
    " JOIN oauth_refresh_families f ON f.id = t.family_id WHERE t.token_hash = ?",
    "rotate": "UPDATE oauth_refresh_families SET generation = ?, rotated_at = ?,"
    " last_used_at = ?, retry_response = ?, access_jti = ?, access_exp = ?"
    " WHERE id = ? AND generation = ? AND revoked_at IS NULL",
    "get_family": f"SELECT {_FAMILY_COLS} FROM oauth_refresh_families WHERE id = ?",  # noqa: S608 - constant column lists
    # RETURNING (SQLite ≥ 3.35, PostgreSQL): the row as this statement revoked it — no read
    # before the UPDATE that a concurrent rotation could make stale.
    "revoke_family": "UPDATE oauth_refresh_families SET revoked_at = ?, revoked_reason = ?,"  # noqa: S608 - constant column lists
    f" retry_response = NULL WHERE id = ? AND revoked_at IS NULL RETURNING {_FAMILY_COLS}",
    "revoke_subject_families": "UPDATE oauth_refresh_families SET revoked_at = ?,"  # noqa: S608 - constant column lists
    " revoked_reason = ?, retry_response = NULL WHERE subject = ? AND revoked_at IS NULL"
    f" RETURNING {_FAMILY_COLS}",
    "revoke_families_of_client": "UPDATE oauth_refresh_families SET revoked_at = ?,"  # noqa: S608 - constant column lists
    " revoked_reason = ?, retry_response = NULL WHERE client_id = ? AND revoked_at IS NULL"
    f" RETURNING {_FAMILY_COLS}",
    "use_jti": "INSERT INTO oauth_assertion_jtis (client_id, jti, expires_at) VALUES (?,?,?)"
    " ON CONFLICT DO NOTHING",
    "purge_codes": "DELETE FROM oauth_codes WHERE expires_at <= ?",
    "purge_families": "DELETE FROM oauth_refresh_families WHERE expires_at <= ?",
    "purge_jtis": "DELETE FROM oauth_assertion_jtis WHERE expires_at <= ?",
}
_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, …`` (no statement here has a literal ``?``)."""
    counter = iter(range(1, 1000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


#: A transaction as data: (statement name, parameters, must_change_one_row). A step whose flag
#: is set and that changes no row ends the transaction early, rolled back, with result False.
Step = tuple[str, tuple[Any, ...], bool]


class _Abort(Exception):
    """A guarded step changed no row: roll back."""


class SqlOAuthRepo:
    """The OAuth tables in the store's own SQLite file or PostgreSQL database.

    The statements are written once with ``?`` placeholders; the backend adapter runs them.
    """

    def __init__(self, backend: _SqlBackend) -> None:
        self._db = backend

    async def put_client(self, client: OAuthClient) -> None:
        await self._db.steps("put_client", [("put_client", _client_params(client), True)])

    async def get_client(self, client_id: str) -> OAuthClient | None:
        row = await self._db.one("get_client", (client_id,))
        return None if row is None else _client(row)

    async def list_clients(self) -> list[OAuthClient]:
        return [_client(r) for r in await self._db.all("list_clients", ())]

    async def set_client_secrets(
        self, client_id: str, secrets: tuple[ClientSecret, ...], now: float
    ) -> bool:
        return await self._db.steps(
            "set_secrets", [("set_secrets", (_secrets_json(secrets), now, client_id), True)]
        )

    async def set_client_introspect(self, client_id: str, allowed: bool, now: float) -> bool:
        return await self._db.steps(
            "set_introspect", [("set_introspect", (allowed, now, client_id), True)]
        )

    async def delete_client(self, client_id: str, now: float) -> bool:
        return await self._db.steps(
            "delete_client",
            [
                ("delete_client", (client_id,), True),
                ("revoke_client_families", (now, client_id), False),
            ],
        )

    async def put_code(self, code: AuthorizationCode) -> None:
        await self._db.steps("put_code", [("put_code", _code_params(code), True)])

    async def get_code(self, code_hash: str) -> AuthorizationCode | None:
        row = await self._db.one("get_code", (code_hash,))
        return None if row is None else _code(row)

    async def consume_code(
        self, code_hash: str, client_id: str, now: float, issued: tuple[str | None, str, float]
    ) -> tuple[AuthorizationCode | None, bool]:
        first = await self._db.steps(
            "use_code", [("use_code", (now, *issued, code_hash, client_id), True)]
        )
        if not first:
            await self._db.steps(
                "mark_replay", [("mark_replay", (now, code_hash, client_id), False)]
            )
        code = await self.get_code(code_hash)
        if code is None or code.client_id != client_id:
            return None, False
        return code, first

    async def code_replayed(self, code_hash: str) -> bool:
        row = await self._db.one("code_replayed", (code_hash,))
        return row is not None and row[0] is not None

    async def create_family(self, family: RefreshFamily, token_hash: str) -> None:
        await self._db.steps(
            "create_family",
            [
                ("put_family", _family_params(family), True),
                ("put_token", (token_hash, family.id, family.generation, family.created_at), True),
            ],
        )

    async def find_refresh(self, token_hash: str) -> tuple[RefreshFamily, int] | None:
        row = await self._db.one("find_refresh", (token_hash,))
        return None if row is None else (_family(row[:18]), int(row[18]))

    async def rotate_family(
        self,
        family_id: str,
        expected_generation: int,
        new_token_hash: str,
        now: float,
        retry_response: str,
        access_jti: str,
        access_exp: float,
    ) -> bool:
        gen = expected_generation + 1
        return await self._db.steps(
            "rotate_family",
            [
                (
                    "rotate",
                    (
                        gen,
                        now,
                        now,
                        retry_response,
                        access_jti,
                        access_exp,
                        family_id,
                        expected_generation,
                    ),
                    True,
                ),
                ("put_token", (new_token_hash, family_id, gen, now), True),
            ],
        )

    async def revoke_family(self, family_id: str, now: float, reason: str) -> RefreshFamily | None:
        rows = await self._db.returning("revoke_family", (now, reason, family_id))
        return _family(rows[0]) if rows else None

    async def revoke_subject_families(
        self, subject: str, now: float, reason: str
    ) -> list[RefreshFamily]:
        rows = await self._db.returning("revoke_subject_families", (now, reason, subject))
        return [_family(row) for row in rows]

    async def revoke_client_families(
        self, client_id: str, now: float, reason: str
    ) -> list[RefreshFamily]:
        rows = await self._db.returning("revoke_families_of_client", (now, reason, client_id))
        return [_family(row) for row in rows]

    async def use_assertion_jti(self, client_id: str, jti: str, expires_at: float) -> bool:
        return await self._db.steps("use_jti", [("use_jti", (client_id, jti, expires_at), True)])

    async def purge(self, now: float) -> int:
        counts = await self._db.counts(
            "purge",
            [("purge_codes", (now,)), ("purge_families", (now,)), ("purge_jtis", (now,))],
        )
        return sum(counts)


class _SqlBackend(Protocol):
    async def one(self, name: str, params: tuple[Any, ...]) -> Sequence[Any] | None: ...

    async def all(self, name: str, params: tuple[Any, ...]) -> list[Sequence[Any]]: ...

    async def steps(self, op: str, steps: list[Step]) -> bool: ...

    async def counts(self, op: str, stmts: list[tuple[str, tuple[Any, ...]]]) -> list[int]: ...

    async def returning(self, name: str, params: tuple[Any, ...]) -> list[Sequence[Any]]:
        """Run one writing statement with ``RETURNING``; the rows it returned."""


class _SqliteBackend:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def one(self, name: str, params: tuple[Any, ...]) -> Sequence[Any] | None:
        sql = _Q[name]
        row: Sequence[Any] | None = await self._store.read(
            name, lambda c: c.execute(sql, params).fetchone()
        )
        return row

    async def all(self, name: str, params: tuple[Any, ...]) -> list[Sequence[Any]]:
        sql = _Q[name]
        rows: list[Sequence[Any]] = await self._store.read(
            name, lambda c: c.execute(sql, params).fetchall()
        )
        return rows

    async def steps(self, op: str, steps: list[Step]) -> bool:
        def tx(conn: sqlite3.Connection) -> None:
            for name, params, guarded in steps:
                if conn.execute(_Q[name], params).rowcount != 1 and guarded:
                    raise _Abort

        try:
            await self._store.write(op, tx)
        except _Abort:
            return False
        return True

    async def counts(self, op: str, stmts: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        def tx(conn: sqlite3.Connection) -> list[int]:
            return [conn.execute(_Q[n], p).rowcount for n, p in stmts]

        result: list[int] = await self._store.write(op, tx)
        return result

    async def returning(self, name: str, params: tuple[Any, ...]) -> list[Sequence[Any]]:
        sql = _Q[name]
        # fetchall: the statement must be stepped to its end before the COMMIT.
        rows: list[Sequence[Any]] = await self._store.write(
            name, lambda c: c.execute(sql, params).fetchall()
        )
        return rows


class _PostgresBackend:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._sql = {name: _numbered(sql) for name, sql in _Q.items()}

    async def one(self, name: str, params: tuple[Any, ...]) -> Sequence[Any] | None:
        sql = self._sql[name]

        async def q(conn: Any) -> Sequence[Any] | None:
            row = await conn.fetchrow(sql, *params)
            return None if row is None else tuple(row)

        return await self._store.read(name, q)

    async def all(self, name: str, params: tuple[Any, ...]) -> list[Sequence[Any]]:
        sql = self._sql[name]

        async def q(conn: Any) -> list[Sequence[Any]]:
            return [tuple(r) for r in await conn.fetch(sql, *params)]

        return await self._store.read(name, q)

    async def steps(self, op: str, steps: list[Step]) -> bool:
        async def tx(conn: Any) -> bool:
            try:
                # No change-feed lock: these tables are not in the feed, and one lock for every
                # refresh in the cluster would serialise them for nothing.
                async with conn.transaction():
                    for name, params, guarded in steps:
                        status = await conn.execute(self._sql[name], *params)
                        if guarded and _affected(status) != 1:
                            raise _Abort
            except _Abort:
                return False
            return True

        return await self._store.read(op, tx)

    async def counts(self, op: str, stmts: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        async def tx(conn: Any) -> list[int]:
            async with conn.transaction():
                return [_affected(await conn.execute(self._sql[n], *p)) for n, p in stmts]

        return await self._store.read(op, tx)

    async def returning(self, name: str, params: tuple[Any, ...]) -> list[Sequence[Any]]:
        sql = self._sql[name]

        async def q(conn: Any) -> list[Sequence[Any]]:
            return [tuple(r) for r in await conn.fetch(sql, *params)]

        return await self._store.read(name, q)


def _affected(status: str) -> int:
    """Rows changed, from an asyncpg status string such as ``UPDATE 1`` or ``INSERT 0 1``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def open_oauth_repo(store: Store) -> OAuthRepo:
    """The repository that keeps OAuth state next to ``store``'s own tables."""
    if isinstance(store, SqliteStore):
        return SqlOAuthRepo(_SqliteBackend(store))
    if isinstance(store, PostgresStore):
        return SqlOAuthRepo(_PostgresBackend(store))
    if isinstance(store, MemoryStore):
        return MemoryOAuthRepo()
    raise TypeError(f"no OAuth repository for {type(store).__name__}")


__all__ = ["MemoryOAuthRepo", "OAuthRepo", "SqlOAuthRepo", "open_oauth_repo"]
