"""One contract suite for the user repositories: memory, SQLite and the real PostgreSQL.

Each PostgreSQL case gets its own schema (``pg_schema``), migrated with ``bastion db
upgrade``'s code path; each SQLite case its own file.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from bastion.authserver.users.model import SessionRecord, UserRecord
from bastion.authserver.users.repo import UserExists, UserRepo
from bastion.authserver.users.service import repo_for
from bastion.store.base import Store
from bastion.store.memory import MemoryStore
from bastion.store.postgres import PostgresStore
from bastion.store.sqlite import SqliteStore
from tests.support.postgres import pg_schema

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

NOW = 1_700_000_000.0


@asynccontextmanager
async def _memory(tmp_path: Path) -> AsyncIterator[Store]:
    yield MemoryStore()


@asynccontextmanager
async def _sqlite(tmp_path: Path) -> AsyncIterator[Store]:
    store = SqliteStore(str(tmp_path / "users.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def _postgres(tmp_path: Path) -> AsyncIterator[Store]:
    async with pg_schema("users") as url:
        store = PostgresStore(url)
        await store.upgrade()
        await store.open()
        try:
            yield store
        finally:
            await store.close()


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Store]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgresql": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with BACKENDS[request.param](tmp_path) as s:
        yield s


@pytest.fixture
def repo(store: Store) -> UserRepo:
    return repo_for(store)


def user(uid: str = "u1", username: str = "alice", **kw: object) -> UserRecord:
    base = UserRecord(
        id=uid,
        username=username,
        password_hash="$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        created_at=NOW,
        updated_at=NOW,
        email="a@example.com",
        name="Alice A",
        roles=("admin", "user"),
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def session(id_hash: str = "h1", user_id: str = "u1", **kw: object) -> SessionRecord:
    base = SessionRecord(
        id_hash=id_hash,
        user_id=user_id,
        state="done",
        amr=("pwd", "otp", "mfa"),
        auth_time=NOW,
        created_at=NOW,
        expires_at=NOW + 3600,
        last_seen=NOW,
        data={"return_to": "/authorize?x=1"},
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


async def test_users_round_trip(repo: UserRepo) -> None:
    u = user()
    await repo.create_user(u)
    assert await repo.get_user("u1") == u
    assert await repo.find_user("alice") == u
    assert await repo.find_user("ALICE") is None  # the caller normalises
    assert await repo.get_user("nope") is None
    await repo.create_user(user("u2", "bob", email=None, name=None, roles=()))
    assert [x.username for x in await repo.list_users()] == ["alice", "bob"]
    with pytest.raises(UserExists):
        await repo.create_user(user("u3", "alice"))
    with pytest.raises(UserExists):
        await repo.create_user(user("u1", "carol"))
    assert await repo.set_password_hash("u1", "$argon2id$new", NOW + 1)
    got = await repo.get_user("u1")
    assert got is not None
    assert got.password_hash == "$argon2id$new"
    assert got.updated_at == NOW + 1
    assert not await repo.set_password_hash("nope", "x", NOW)


async def test_attempts_lock_at_the_threshold_and_expire(repo: UserRepo) -> None:
    await repo.create_user(user())
    for n in range(1, 4):
        grant = await repo.reserve_attempt("u1", NOW, 3, 1800)
        assert grant.allowed
        assert grant.count == n
    locked = await repo.get_user("u1")
    assert locked is not None
    assert locked.locked_until == NOW + 1800
    assert locked.locked(NOW + 1799)
    assert not (await repo.reserve_attempt("u1", NOW + 1799, 3, 1800)).allowed
    # Expired: the count starts again.
    grant = await repo.reserve_attempt("u1", NOW + 1800, 3, 1800)
    assert grant.allowed
    assert grant.count == 1
    again = await repo.get_user("u1")
    assert again is not None
    assert again.locked_until is None
    await repo.clear_failures("u1", NOW)
    cleared = await repo.get_user("u1")
    assert cleared is not None
    assert cleared.failed_logins == 0
    assert not (await repo.reserve_attempt("nope", NOW, 3, 1800)).allowed


async def test_release_takes_back_one_attempt(repo: UserRepo) -> None:
    await repo.create_user(user())
    for _ in range(3):
        await repo.reserve_attempt("u1", NOW, 3, 1800)
    await repo.release_attempt("u1", 3)  # the third, which set the lock, was right
    got = await repo.get_user("u1")
    assert got is not None
    assert got.failed_logins == 2
    assert got.locked_until is None
    await repo.reserve_attempt("u1", NOW, 10, 1800)
    await repo.reserve_attempt("u1", NOW, 10, 1800)
    await repo.release_attempt("u1", 2)  # still at the threshold without it: lock stays
    got = await repo.get_user("u1")
    assert got is not None
    assert got.failed_logins == 3
    await repo.clear_failures("u1", NOW)
    await repo.release_attempt("u1", 3)  # nothing to take back
    await repo.release_attempt("nope", 3)
    got = await repo.get_user("u1")
    assert got is not None
    assert got.failed_logins == 0


async def test_concurrent_attempts_never_exceed_the_threshold(repo: UserRepo) -> None:
    await repo.create_user(user())
    grants = await asyncio.gather(*(repo.reserve_attempt("u1", NOW, 10, 1800) for _ in range(30)))
    assert sum(g.allowed for g in grants) == 10
    assert sorted(g.count for g in grants if g.allowed) == list(range(1, 11))


async def test_disable_and_enable(repo: UserRepo) -> None:
    await repo.create_user(user())
    await repo.reserve_attempt("u1", NOW, 1, 1800)
    assert await repo.set_disabled("u1", True, NOW)
    got = await repo.get_user("u1")
    assert got is not None
    assert got.disabled
    assert not (await repo.reserve_attempt("u1", NOW + 99999, 10, 1800)).allowed
    assert await repo.set_disabled("u1", False, NOW)
    got = await repo.get_user("u1")
    assert got is not None
    assert not got.disabled
    assert got.locked_until is None
    assert got.failed_logins == 0
    assert not await repo.set_disabled("nope", True, NOW)


async def test_must_change_password_round_trip(repo: UserRepo) -> None:
    await repo.create_user(user(must_change_password=True))
    await repo.create_user(user("u2", "bob"))
    got = await repo.get_user("u1")
    assert got is not None
    assert got.must_change_password
    assert [u.must_change_password for u in await repo.list_users()] == [True, False]
    # A rehash (must_change None) keeps the flag; the user's own change clears it.
    assert await repo.set_password_hash("u1", "$argon2id$rehash", NOW + 1)
    got = await repo.get_user("u1")
    assert got is not None
    assert (got.password_hash, got.must_change_password) == ("$argon2id$rehash", True)
    assert await repo.set_password_hash("u1", "$argon2id$own", NOW + 2, must_change=False)
    got = await repo.get_user("u1")
    assert got is not None
    assert (got.password_hash, got.must_change_password, got.updated_at) == (
        "$argon2id$own",
        False,
        NOW + 2,
    )
    assert await repo.set_password_hash("u2", "$argon2id$temp", NOW, must_change=True)
    bob = await repo.find_user("bob")
    assert bob is not None
    assert bob.must_change_password
    assert not await repo.set_password_hash("nope", "x", NOW, must_change=False)


async def test_a_session_waiting_for_a_password_change_is_stored(repo: UserRepo) -> None:
    await repo.create_user(user(must_change_password=True))
    await repo.create_session(session(state="password"))
    got = await repo.get_session("h1")
    assert got is not None
    assert got.state == "password"


async def test_set_roles(repo: UserRepo) -> None:
    await repo.create_user(user())
    assert await repo.set_roles("u1", ("security", "gateway-user"), NOW + 7)
    got = await repo.get_user("u1")
    assert got is not None
    assert got.roles == ("security", "gateway-user")
    assert got.updated_at == NOW + 7
    assert got.password_hash == user().password_hash  # nothing else changes
    assert await repo.set_roles("u1", (), NOW + 8)
    got = await repo.get_user("u1")
    assert got is not None
    assert got.roles == ()
    # A role name full of SQL and JSON metacharacters is data, not syntax.
    odd = ('x"], "owner', "'; DROP TABLE auth_users; --")
    assert await repo.set_roles("u1", odd, NOW + 9)
    got = await repo.get_user("u1")
    assert got is not None
    assert got.roles == odd
    assert not await repo.set_roles("nope", ("owner",), NOW)
    assert await repo.get_user("nope") is None


async def test_totp_steps_only_move_forward(repo: UserRepo) -> None:
    await repo.create_user(user())
    assert not await repo.use_totp_step("u1", 5)  # no TOTP enrolled
    assert await repo.enable_totp("u1", "SECRET", 100, ["h1", "h2"], NOW)
    assert not await repo.use_totp_step("u1", 100)  # the enrolment's code is spent
    assert not await repo.use_totp_step("u1", 99)
    results = await asyncio.gather(*(repo.use_totp_step("u1", 101) for _ in range(5)))
    assert sum(results) == 1
    assert await repo.use_totp_step("u1", 103)
    assert not await repo.use_totp_step("u1", 102)
    assert not await repo.use_totp_step("nope", 200)
    assert not await repo.enable_totp("nope", "S", 1, ["h9"], NOW)


async def test_recovery_codes_single_use_and_replaced(repo: UserRepo) -> None:
    await repo.create_user(user())
    await repo.create_user(user("u2", "bob"))
    await repo.enable_totp("u1", "SECRET", 1, ["h1", "h2", "h3"], NOW)
    await repo.enable_totp("u2", "SECRET", 1, ["h1"], NOW)
    assert await repo.recovery_codes_left("u1") == 3
    results = await asyncio.gather(*(repo.use_recovery_code("u1", "h1", NOW) for _ in range(5)))
    assert sum(results) == 1
    assert not await repo.use_recovery_code("u1", "h1", NOW)
    assert not await repo.use_recovery_code("u1", "zz", NOW)
    assert await repo.recovery_codes_left("u1") == 2
    assert await repo.use_recovery_code("u2", "h1", NOW)  # per user
    await repo.enable_totp("u1", "SECRET2", 2, ["h4"], NOW)
    assert await repo.recovery_codes_left("u1") == 1
    assert not await repo.use_recovery_code("u1", "h2", NOW)
    assert await repo.clear_mfa("u1", NOW)
    got = await repo.get_user("u1")
    assert got is not None
    assert got.totp_secret is None
    assert got.totp_last_step is None
    assert await repo.recovery_codes_left("u1") == 0
    assert not await repo.clear_mfa("nope", NOW)


async def test_sessions(repo: UserRepo) -> None:
    await repo.create_user(user())
    s1 = session()
    await repo.create_session(s1)
    assert await repo.get_session("h1") == s1
    await repo.touch_session("h1", NOW + 5)
    await repo.set_session_data("h1", {"totp_pending": "ABC"})
    got = await repo.get_session("h1")
    assert got is not None
    assert got.last_seen == NOW + 5
    assert got.data == {"totp_pending": "ABC"}
    s2 = session("h2", state="mfa", amr=())
    await repo.replace_session("h1", s2)
    assert await repo.get_session("h1") is None
    assert await repo.get_session("h2") == s2
    await repo.replace_session(None, session("h3", expires_at=NOW - 1))
    assert await repo.purge_sessions(NOW) == 1
    assert await repo.get_session("h3") is None
    await repo.create_session(session("h4"))
    assert await repo.delete_user_sessions("u1") == 2
    await repo.create_session(session("h5"))
    await repo.delete_session("h5")
    assert await repo.get_session("h5") is None


async def test_one_memory_repo_per_store() -> None:
    store = MemoryStore()
    assert repo_for(store) is repo_for(store)
    assert repo_for(MemoryStore()) is not repo_for(store)
    with pytest.raises(TypeError):
        repo_for(object())  # type: ignore[arg-type]
