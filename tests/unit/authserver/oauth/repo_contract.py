"""What every OAuth repository must do; run against memory and SQLite (unit tier) and against
SQLite and the real PostgreSQL (integration tier, ``tests/integration/authserver``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from bastion.authserver.oauth.records import (
    AuthorizationCode,
    ClientSecret,
    OAuthClient,
    RefreshFamily,
)
from bastion.authserver.oauth.repo import OAuthRepo
from bastion.errors import StoreError

NOW = 1_700_000_000.0

CLIENT = OAuthClient(
    id="web",
    name="Web app",
    auth_method="client_secret_basic",
    secrets=(ClientSecret("ab" * 32, NOW, None), ClientSecret("cd" * 32, NOW - 10, NOW + 60)),
    jwks={"keys": []},
    redirect_uris=("https://app/cb",),
    grant_types=("authorization_code", "refresh_token"),
    scopes=("openid", "read"),
    audiences=("https://api",),
    created_at=NOW,
    updated_at=NOW,
)

CODE = AuthorizationCode(
    code_hash="c" * 64,
    client_id="web",
    redirect_uri="https://app/cb",
    scope="openid read",
    subject="u1",
    nonce="n",
    code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    auth_time=NOW - 5,
    amr=("pwd", "otp"),
    acr="urn:bastion:acr:mfa",
    created_at=NOW,
    expires_at=NOW + 60,
)


def family(fid: str = "f1", subject: str = "u1") -> RefreshFamily:
    return RefreshFamily(
        id=fid,
        client_id="web",
        subject=subject,
        scope="openid read",
        audience=("https://api",),
        auth_time=NOW,
        amr=("pwd",),
        acr="urn:bastion:acr:pwd",
        created_at=NOW,
        expires_at=NOW + 3600,
        last_used_at=NOW,
        access_jti="j0",
        access_exp=NOW + 300,
    )


async def check_clients(repo: OAuthRepo) -> None:
    await repo.put_client(CLIENT)
    assert await repo.get_client("web") == CLIENT
    assert await repo.get_client("nope") is None
    with pytest.raises(StoreError):
        await repo.put_client(CLIENT)
    public = replace(CLIENT, id="spa", auth_method="none", secrets=(), jwks=None)
    await repo.put_client(public)
    assert [c.id for c in await repo.list_clients()] == ["spa", "web"]
    new = (ClientSecret("ef" * 32, NOW + 1, None),)
    assert await repo.set_client_secrets("web", new, NOW + 1)
    got = await repo.get_client("web")
    assert got is not None
    assert got.secrets == new
    assert got.updated_at == NOW + 1
    assert not await repo.set_client_secrets("ghost", new, NOW)
    assert got.introspect is False
    assert await repo.set_client_introspect("web", True, NOW + 2)
    got = await repo.get_client("web")
    assert got is not None
    assert (got.introspect, got.grant_types, got.updated_at) == (True, CLIENT.grant_types, NOW + 2)
    assert [c.introspect for c in await repo.list_clients()] == [False, True]
    assert await repo.set_client_introspect("web", False, NOW + 3)
    assert (await repo.get_client("web")) == replace(got, introspect=False, updated_at=NOW + 3)
    assert not await repo.set_client_introspect("ghost", True, NOW)
    await repo.put_client(replace(CLIENT, id="rs", introspect=True))
    assert (await repo.get_client("rs")) == replace(CLIENT, id="rs", introspect=True)
    await repo.create_family(family(), "t0" * 32)
    assert await repo.delete_client("web", NOW + 2)
    assert not await repo.delete_client("web", NOW + 2)
    assert await repo.get_client("web") is None
    found = await repo.find_refresh("t0" * 32)
    assert found is not None
    assert found[0].revoked_reason == "client"


async def check_codes(repo: OAuthRepo) -> None:
    await repo.put_code(CODE)
    assert await repo.get_code(CODE.code_hash) == CODE
    assert await repo.get_code("0" * 64) is None
    # another client's attempt neither consumes the code nor marks a replay
    other = await repo.consume_code(CODE.code_hash, "evil", NOW + 1, ("fx", "jx", NOW + 301))
    assert other == (None, False)
    assert await repo.get_code(CODE.code_hash) == CODE
    assert not await repo.code_replayed(CODE.code_hash)
    got, first = await repo.consume_code(CODE.code_hash, "web", NOW + 1, ("f1", "j1", NOW + 301))
    assert first
    assert got == replace(
        CODE, used_at=NOW + 1, family_id="f1", access_jti="j1", access_exp=NOW + 301
    )
    assert await repo.consume_code(CODE.code_hash, "evil", NOW + 2, ("f", "j", NOW)) == (
        None,
        False,
    )
    assert not await repo.code_replayed(CODE.code_hash)
    again, first = await repo.consume_code(CODE.code_hash, "web", NOW + 2, ("f2", "j2", NOW + 302))
    assert not first
    assert again is not None
    assert (again.family_id, again.access_jti, again.used_at) == ("f1", "j1", NOW + 1)
    assert await repo.code_replayed(CODE.code_hash)
    assert await repo.consume_code("0" * 64, "web", NOW, (None, "j", NOW)) == (None, False)


async def check_concurrent_code_use(repo: OAuthRepo) -> None:
    await repo.put_code(CODE)
    results = await asyncio.gather(
        *(
            repo.consume_code(CODE.code_hash, "web", NOW + 1, (f"f{i}", f"j{i}", NOW))
            for i in range(5)
        )
    )
    assert sorted(first for _, first in results) == [False, False, False, False, True]


async def check_families(repo: OAuthRepo) -> None:
    await repo.create_family(family(), "t0" * 32)
    found = await repo.find_refresh("t0" * 32)
    assert found == (family(), 0)
    assert await repo.find_refresh("zz" * 32) is None
    assert await repo.rotate_family("f1", 0, "t1" * 32, NOW + 5, "sealed", "j1", NOW + 305)
    assert not await repo.rotate_family("f1", 0, "t9" * 32, NOW + 6, "other", "j9", NOW + 306)
    assert await repo.find_refresh("t9" * 32) is None  # the loser's token never existed
    fam, gen = await repo.find_refresh("t0" * 32) or (None, -1)
    assert gen == 0
    assert fam is not None
    assert (fam.generation, fam.rotated_at, fam.retry_response, fam.access_jti) == (
        1,
        NOW + 5,
        "sealed",
        "j1",
    )
    assert fam.last_used_at == NOW + 5
    assert (await repo.find_refresh("t1" * 32) or (None, -1))[1] == 1
    revoked = await repo.revoke_family("f1", NOW + 7, "reuse")
    assert revoked is not None
    assert revoked.generation == 1
    # the family as revoked: the latest rotation's access token, the revocation itself
    assert (revoked.access_jti, revoked.access_exp) == ("j1", NOW + 305)
    assert (revoked.revoked_at, revoked.revoked_reason) == (NOW + 7, "reuse")
    assert await repo.revoke_family("f1", NOW + 8, "reuse") is None
    assert await repo.revoke_family("ghost", NOW, "reuse") is None
    fam = (await repo.find_refresh("t1" * 32) or (None, 0))[0]
    assert fam is not None
    assert (fam.revoked_at, fam.revoked_reason, fam.retry_response) == (NOW + 7, "reuse", None)
    assert not await repo.rotate_family("f1", 1, "t2" * 32, NOW + 9, "x", "j2", NOW)


async def check_concurrent_rotation(repo: OAuthRepo) -> None:
    await repo.create_family(family(), "t0" * 32)
    results = await asyncio.gather(
        *(repo.rotate_family("f1", 0, f"n{i}" * 32, NOW, "s", f"j{i}", NOW) for i in range(5))
    )
    assert sorted(results) == [False, False, False, False, True]


async def check_subject_revocation(repo: OAuthRepo) -> None:
    await repo.create_family(family("a", "u1"), "ta" * 32)
    await repo.create_family(family("b", "u1"), "tb" * 32)
    await repo.create_family(family("c", "u2"), "tc" * 32)
    await repo.rotate_family("a", 0, "ta2" * 21 + "x", NOW + 1, "s", "ja-new", NOW + 300)
    done = await repo.revoke_subject_families("u1", NOW + 2, "user")
    assert sorted(f.id for f in done) == ["a", "b"]
    assert {f.id: f.access_jti for f in done}["a"] == "ja-new"
    assert {f.revoked_at for f in done} == {NOW + 2}
    assert await repo.revoke_subject_families("u1", NOW, "user") == []
    fam = (await repo.find_refresh("tc" * 32) or (None, 0))[0]
    assert fam is not None
    assert fam.revoked_at is None


async def check_client_revocation(repo: OAuthRepo) -> None:
    """Incident: every live family issued to one client, whoever the user; other clients'
    families (even of the same user) stay."""
    await repo.create_family(family("a", "u1"), "ta" * 32)
    await repo.create_family(family("b", "u2"), "tb" * 32)
    await repo.create_family(replace(family("c", "u1"), client_id="other"), "tc" * 32)
    await repo.create_family(family("d", "u3"), "td" * 32)
    assert await repo.revoke_family("d", NOW + 1, "reuse") is not None
    await repo.rotate_family("a", 0, "ta2" * 21 + "x", NOW + 1, "s", "ja-new", NOW + 300)
    done = await repo.revoke_client_families("web", NOW + 2, "incident")
    assert sorted(f.id for f in done) == ["a", "b"]  # d was revoked already
    assert {f.id: f.access_jti for f in done} == {"a": "ja-new", "b": "j0"}
    assert {(f.revoked_at, f.revoked_reason) for f in done} == {(NOW + 2, "incident")}
    assert await repo.revoke_client_families("web", NOW + 3, "incident") == []
    assert await repo.revoke_client_families("ghost", NOW + 3, "incident") == []
    assert await repo.find_refresh("ta2" * 21 + "x") is not None  # found, but revoked
    other = (await repo.find_refresh("tc" * 32) or (None, 0))[0]
    assert other is not None
    assert other.revoked_at is None


async def check_assertion_jtis_and_purge(repo: OAuthRepo) -> None:
    assert await repo.use_assertion_jti("web", "j1", NOW + 60)
    assert not await repo.use_assertion_jti("web", "j1", NOW + 60)
    assert await repo.use_assertion_jti("other", "j1", NOW + 60)
    await repo.put_code(CODE)
    await repo.create_family(family(), "t0" * 32)
    assert await repo.purge(NOW) == 0
    assert await repo.purge(NOW + 3600) == 4  # code, family, two jtis
    assert await repo.find_refresh("t0" * 32) is None
    assert await repo.use_assertion_jti("web", "j1", NOW + 7200)


CHECKS = [
    check_clients,
    check_codes,
    check_concurrent_code_use,
    check_families,
    check_concurrent_rotation,
    check_subject_revocation,
    check_client_revocation,
    check_assertion_jtis_and_purge,
]
