"""A refresh-token family follows its user: an administrator's password reset, MFA reset or
lock revokes it, and the refresh grant refuses a user who is gone or locked (review #3)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode

import orjson
import pytest

from bastion.authserver.config import AuthConfig
from bastion.authserver.http import Request, Response
from bastion.authserver.oauth.client_auth import new_client_secret, secret_record
from bastion.authserver.oauth.records import OAuthClient
from bastion.authserver.server import AuthServer, open_auth_server
from bastion.authserver.users.model import UserRecord
from bastion.store.memory import MemoryStore
from tests.unit.authserver.oauth.harness import body, make_harness

ISSUER = "https://auth.example"
PEPPER = "p" * 40


@dataclass
class World:
    server: AuthServer
    secret: str
    user: UserRecord
    events: list[str]

    async def family(self, family_id: str = "f1") -> str:
        """A refresh family of the user, as the code grant creates it (the stolen token)."""
        ctx = self.server.ctx
        now = ctx.clock.now()
        return await ctx.refresh.start_family(
            family_id=family_id,
            client_id="web",
            subject=self.user.id,
            scope="openid",
            audience=(ISSUER,),
            auth_time=now,
            amr=("pwd",),
            acr="urn:bastion:acr:pwd",
            access_jti=f"jti-{family_id}",
            access_exp=now + 300,
        )

    async def refresh(self, token: str) -> Response:
        auth = "Basic " + base64.b64encode(f"web:{self.secret}".encode()).decode()
        return await self.server.handle(
            Request(
                "POST",
                "/token",
                {"content-type": "application/x-www-form-urlencoded", "authorization": auth},
                body=urlencode({"grant_type": "refresh_token", "refresh_token": token}).encode(),
            )
        )


@pytest.fixture
async def world() -> AsyncIterator[World]:
    cfg = AuthConfig.model_validate({"issuer": ISSUER, "client_secret_pepper": PEPPER})
    store = MemoryStore()
    await store.open()
    server = await open_auth_server(cfg, store, follow_feed=False)
    ctx = server.ctx
    secret = new_client_secret()
    await ctx.repo.put_client(
        OAuthClient(
            id="web",
            name="web",
            auth_method="client_secret_basic",
            secrets=(secret_record(PEPPER.encode(), secret, ctx.clock.now()),),
            redirect_uris=("https://a.example/cb",),
            grant_types=("authorization_code", "refresh_token"),
            scopes=("openid",),
        )
    )
    assert ctx.users is not None
    user = await ctx.users.create_user("alice", "correct horse battery")
    events: list[str] = []
    # what the security team sees: the server's bus (the users' events are published there)
    ctx.bus.subscribe("security", lambda event: events.append(str(event["event.action"])))
    try:
        yield World(server, secret, user, events)
    finally:
        await server.aclose()
        await store.close()


async def test_refresh_works_before_any_reset(world: World) -> None:
    reply = await world.refresh(await world.family())
    assert reply.status == 200, reply.body


@pytest.mark.parametrize("reset", ["set_password", "reset_mfa", "lock"])
async def test_a_reset_revokes_the_users_refresh_families_and_access_tokens(
    world: World, reset: str
) -> None:
    stolen = await world.family()
    users = world.server.ctx.users
    assert users is not None
    if reset == "set_password":
        assert await users.set_password(world.user.id, "a brand new password")
    elif reset == "reset_mfa":
        assert await users.reset_mfa(world.user.id)
    else:
        assert await users.lock(world.user.id)
    reply = await world.refresh(stolen)
    assert reply.status == 400
    assert orjson.loads(reply.body)["error"] == "invalid_grant"
    assert world.server.ctx.revocations.is_token_revoked(ISSUER, world.user.id, "jti-f1", None)
    expected = {"set_password": "user.password_reset", "reset_mfa": "user.mfa_reset"}
    assert expected.get(reset, "user.disabled") in world.events


async def test_the_refresh_grant_refuses_a_locked_user_even_if_the_families_survived(
    world: World,
) -> None:
    """The lock was written behind the server's back (no hook ran): the grant still refuses."""
    stolen = await world.family()
    users = world.server.ctx.users
    assert users is not None
    assert await users.repo.set_disabled(world.user.id, True, world.server.ctx.clock.now())
    reply = await world.refresh(stolen)
    assert reply.status == 400
    assert orjson.loads(reply.body)["error"] == "invalid_grant"
    # and the family was not rotated: unlocking makes the same token work again
    assert await users.unlock(world.user.id)
    assert (await world.refresh(stolen)).status == 200


async def test_the_refresh_grant_refuses_a_user_who_is_gone() -> None:
    h = await make_harness()
    secret = await h.register(
        "web",
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=("https://app.example/cb",),
        scopes=("openid", "read"),
    )
    h.users.sign_in("u1", at=h.clock.now() - 5)
    code, verifier = await h.code_flow("web", "https://app.example/cb", scope="openid read")
    reply = await h.post(
        "/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://app.example/cb",
            "code_verifier": verifier,
        },
        basic=("web", secret),
    )
    token = body(reply)["refresh_token"]
    del h.users.users["u1"]
    reply = await h.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": token}, basic=("web", secret)
    )
    assert reply.status == 400
    assert body(reply)["error"] == "invalid_grant"


async def test_login_security_events_are_published_on_the_bus(world: World) -> None:
    users = world.server.ctx.users
    assert users is not None
    users.security_event("user.login_failed", **{"source.ip": "192.0.2.9", "reason": "unknown"})
    assert world.events == ["user.login_failed"]


async def test_aclose_releases_the_signer_the_server_opened_and_only_that() -> None:
    cfg = AuthConfig.model_validate({"issuer": ISSUER, "client_secret_pepper": PEPPER})
    store = MemoryStore()
    await store.open()
    try:
        server = await open_auth_server(cfg, store, follow_feed=False)
        closed: list[bool] = []
        server.ctx.signer.close = lambda: closed.append(True)
        await server.aclose()
        await server.aclose()
        assert closed == [True]
        # a signer passed in belongs to the caller
        other = await open_auth_server(cfg, store, signer=server.ctx.signer, follow_feed=False)
        await other.aclose()
        assert closed == [True]
    finally:
        await store.close()
