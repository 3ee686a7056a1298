"""The OAuth repository contract on memory and on a SQLite file; the refresh race on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bastion.authserver.oauth.repo import MemoryOAuthRepo, OAuthRepo, open_oauth_repo
from bastion.store.memory import MemoryStore
from bastion.store.sqlite import SqliteStore
from tests.unit.authserver.oauth.harness import body, make_harness
from tests.unit.authserver.oauth.repo_contract import CHECKS


@pytest.fixture(params=["memory", "sqlite"])
async def repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OAuthRepo]:
    if request.param == "memory":
        yield MemoryOAuthRepo()
        return
    store = SqliteStore(str(tmp_path / "oauth.db"))
    await store.open()
    try:
        yield open_oauth_repo(store)
    finally:
        await store.close()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_contract(repo: OAuthRepo, check: Callable[[OAuthRepo], Awaitable[None]]) -> None:
    await check(repo)


def test_memory_store_gets_the_memory_repo() -> None:
    assert isinstance(open_oauth_repo(MemoryStore()), MemoryOAuthRepo)
    with pytest.raises(TypeError):
        open_oauth_repo(object())  # type: ignore[arg-type]


async def test_sqlite_rows_hold_no_secret(tmp_path: Path) -> None:
    """Client secrets, codes and refresh tokens are only hashes in the file."""
    import sqlite3

    path = tmp_path / "raw.db"
    store = SqliteStore(str(path))
    await store.open()
    h = await make_harness(store=store, repo=open_oauth_repo(store))
    cb = "https://app/cb"
    secret = await h.register(
        "web",
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=(cb,),
        scopes=("read",),
    )
    h.users.sign_in()
    code, verifier = await h.code_flow("web", cb, scope="read")
    doc = body(await h.redeem_code("web", secret, cb, code, verifier))
    rotated = body(
        await h.post(
            "/token",
            {"grant_type": "refresh_token", "refresh_token": doc["refresh_token"]},
            basic=("web", secret),
        )
    )
    await store.close()
    raw = sqlite3.connect(path)
    dump = "\n".join(raw.iterdump())
    raw.close()
    for value in (
        secret,
        code,
        doc["refresh_token"],
        rotated["refresh_token"],
        rotated["access_token"],
    ):
        assert value not in dump


async def test_refresh_race_on_sqlite(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "race.db"))
    await store.open()
    try:
        await _race(store)
    finally:
        await store.close()


async def _race(store: SqliteStore) -> None:
    h = await make_harness(store=store, repo=open_oauth_repo(store))
    cb = "https://app/cb"
    secret = await h.register(
        "web",
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=(cb,),
        scopes=("read",),
    )
    h.users.sign_in()
    code, verifier = await h.code_flow("web", cb, scope="read")
    first = body(await h.redeem_code("web", secret, cb, code, verifier))
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    replies = await asyncio.gather(
        *(h.post("/token", form, basic=("web", secret)) for _ in range(5))
    )
    assert [r.status for r in replies] == [200] * 5
    assert len({r.body for r in replies}) == 1
    new = body(replies[0])["refresh_token"]
    after = await h.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": new}, basic=("web", secret)
    )
    assert after.status == 200


async def test_a_rotation_racing_a_revocation_cannot_keep_its_access_token(tmp_path: Path) -> None:
    """The race: revoke_family used to read the family, then UPDATE it; a rotation landing
    between the two left the newest access token out of the revocation (it stayed valid).
    Simulate that rotation on the first read the revocation makes, if it makes one."""
    from bastion.authserver.oauth.repo import SqlOAuthRepo
    from tests.unit.authserver.oauth.repo_contract import NOW, family

    store = SqliteStore(str(tmp_path / "race.db"))
    await store.open()
    try:
        repo = open_oauth_repo(store)
        assert isinstance(repo, SqlOAuthRepo)
        await repo.create_family(family(), "t0" * 32)
        db = repo._db
        real_one = db.one
        raced: list[bool] = []

        async def one_then_rotate(name: str, params: tuple[object, ...]):  # type: ignore[no-untyped-def]
            row = await real_one(name, params)
            if name == "get_family" and not raced:
                raced.append(await repo.rotate_family("f1", 0, "t1" * 32, NOW, "s", "newest", NOW))
            return row

        db.one = one_then_rotate  # type: ignore[method-assign]
        revoked = await repo.revoke_family("f1", NOW + 1, "reuse")
        assert revoked is not None
        fam = (await repo.find_refresh("t0" * 32) or (None, 0))[0]
        assert fam is not None
        # whatever rotated before the revocation, the revocation names its access token
        assert revoked.access_jti == fam.access_jti
    finally:
        await store.close()
