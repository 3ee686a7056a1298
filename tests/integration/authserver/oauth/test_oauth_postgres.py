"""The OAuth repository contract and the refresh race against the real PostgreSQL server
(one throw-away schema per test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bastion.authserver.oauth.repo import OAuthRepo, open_oauth_repo
from bastion.store.postgres import PostgresStore
from tests.support.postgres import pg_schema
from tests.unit.authserver.oauth.harness import body, make_harness
from tests.unit.authserver.oauth.repo_contract import CHECKS

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]


@pytest.fixture
async def pg_store() -> AsyncIterator[PostgresStore]:
    async with pg_schema("oauth") as url:
        store = PostgresStore(url)
        await store.upgrade()
        await store.open()
        try:
            yield store
        finally:
            await store.close()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_contract(
    pg_store: PostgresStore, check: Callable[[OAuthRepo], Awaitable[None]]
) -> None:
    await check(open_oauth_repo(pg_store))


async def test_five_concurrent_refreshes_get_one_pair(pg_store: PostgresStore) -> None:
    h = await make_harness(store=pg_store, repo=open_oauth_repo(pg_store))
    cb = "https://app/cb"
    secret = await h.register(
        "web", grant_types=("authorization_code", "refresh_token"), redirect_uris=(cb,)
    )
    h.users.sign_in()
    code, verifier = await h.code_flow("web", cb, scope="read")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": cb,
        "code_verifier": verifier,
    }
    first = body(await h.post("/token", form, basic=("web", secret)))
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    # Five connections from the pool race on one family row.
    replies = await asyncio.gather(
        *(h.post("/token", refresh, basic=("web", secret)) for _ in range(5))
    )
    assert [r.status for r in replies] == [200] * 5
    assert len({r.body for r in replies}) == 1
    new = body(replies[0])["refresh_token"]
    again = {"grant_type": "refresh_token", "refresh_token": new}
    assert (await h.post("/token", again, basic=("web", secret))).status == 200


async def test_code_replay_across_connections(pg_store: PostgresStore) -> None:
    h = await make_harness(store=pg_store, repo=open_oauth_repo(pg_store))
    cb = "https://app/cb"
    secret = await h.register(
        "web", grant_types=("authorization_code", "refresh_token"), redirect_uris=(cb,)
    )
    h.users.sign_in()
    code, verifier = await h.code_flow("web", cb, scope="read")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": cb,
        "code_verifier": verifier,
    }
    replies = await asyncio.gather(
        *(h.post("/token", form, basic=("web", secret)) for _ in range(3))
    )
    # One redemption wins the code, but the replays arrive while it issues: it sees their mark
    # and revokes what it issued, so nobody walks away with a live token.
    statuses = sorted(r.status for r in replies)
    assert statuses in ([400, 400, 400], [200, 400, 400])
    for reply in replies:
        if reply.status == 200:
            dead = {"grant_type": "refresh_token", "refresh_token": body(reply)["refresh_token"]}
            assert (await h.post("/token", dead, basic=("web", secret))).status == 400


async def test_a_revocation_reaches_another_server_process_through_the_feed() -> None:
    """Two authorization servers on one database (two processes in production): a token
    revoked at one is inactive at the other once its change feed has polled."""
    import base64
    import time

    from bastion.authserver.http import Request
    from bastion.authserver.oauth.client_auth import new_client_secret, secret_record
    from bastion.authserver.oauth.records import OAuthClient
    from bastion.authserver.server import open_auth_server
    from tests.unit.authserver.oauth.harness import PEPPER, FakeSigner, FakeUsers, config

    async with pg_schema("oauth2") as url:
        first, second = PostgresStore(url), PostgresStore(url)
        await first.upgrade()
        await first.open()
        await second.open()
        signer = FakeSigner()
        cfg = config()
        a = await open_auth_server(cfg, first, signer=signer, users=FakeUsers(), poll_interval=0.1)
        b = await open_auth_server(cfg, second, signer=signer, users=FakeUsers(), poll_interval=0.1)
        await a.start()
        await b.start()
        try:
            secret = new_client_secret()
            now = time.time()
            await a.ctx.repo.put_client(
                OAuthClient(
                    "svc",
                    "svc",
                    "client_secret_basic",
                    (secret_record(PEPPER.encode(), secret, now),),
                    audiences=("https://api.example",),
                    created_at=now,
                    updated_at=now,
                    introspect=True,
                )
            )
            basic = "Basic " + base64.b64encode(f"svc:{secret}".encode()).decode()
            headers = {"content-type": "application/x-www-form-urlencoded", "authorization": basic}

            def form(path: str, body: str) -> Request:
                return Request("POST", path, headers, body=body.encode(), client_ip="192.0.2.1")

            token = body(await a.handle(form("/token", "grant_type=client_credentials")))
            access = token["access_token"]
            assert body(await b.handle(form("/introspect", f"token={access}")))["active"] is True
            assert (await a.handle(form("/revoke", f"token={access}"))).status == 200
            assert body(await a.handle(form("/introspect", f"token={access}"))) == {"active": False}
            deadline = time.monotonic() + 5
            while body(await b.handle(form("/introspect", f"token={access}")))["active"]:
                assert time.monotonic() < deadline, "the other server never learnt the revocation"
                await asyncio.sleep(0.05)
        finally:
            await a.aclose()
            await b.aclose()
            await first.close()
            await second.close()
