"""End to end in one process: a browser-style login at our authorization server (password,
then TOTP) through /authorize + /token, and the admin API deciding on the access token it got.

The admin API trusts ``amr`` and ``auth_time`` only because the authorization server copies
them from the login (kept with the code and the refresh family) into the access token. These
tests pin that: MFA login → accepted; password only → ``admin.mfa_required``; a refresh keeps
the original login's ``auth_time``, so 10 minutes after the login a destructive operation
needs a new login even with a freshly refreshed token."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyotp
import pytest
from joserfc.jwk import KeySet

from bastion.authserver.oauth import rfc7636
from bastion.authserver.oauth.repo import MemoryOAuthRepo
from bastion.authserver.server import AuthServer, build_context
from bastion.authserver.users.config import UsersConfig
from bastion.authserver.users.service import UserService, open_user_service
from bastion.control.admin import AdminTokenVerifier, build_admin_api
from bastion.control.admin.app import AdminApi
from bastion.control.admin.records import AuditQuery
from bastion.control.admin.repo import control_repo
from bastion.control.admin.service import AdminContext
from bastion.core.clock import ManualClock
from bastion.events.bus import Event, EventBus
from bastion.store.memory import MemoryStore
from tests.unit.authserver.oauth.harness import ISSUER, FakeSigner, Harness, body, config
from tests.unit.authserver.users.browser import PASSWORD, Browser, csrf_of
from tests.unit.control.harness import FAST_HASH

REDIRECT = "https://console.example/cb"
AUDIENCE = "urn:bastion:admin"
BLOCK = {"cidr": "203.0.113.0/24", "duration_seconds": 3600, "reason": "incident 7"}


@dataclass
class World:
    auth: Harness
    users: UserService
    admin: AdminApi
    secret: str
    admin_ctx: AdminContext

    def browser(self) -> Browser:
        return Browser(self.users, handle=self.auth.server.handle)

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.admin.app, client=("198.51.100.7", 4711))
        return httpx.AsyncClient(transport=transport, base_url="http://admin.test")


@pytest.fixture
async def world() -> World:
    clock = ManualClock(1_700_000_010.0)
    store = MemoryStore()
    await store.open()
    # "auditor" deliberately left out of the MFA roles: the misconfiguration whose tokens the
    # admin API must still refuse.
    users = await open_user_service(
        UsersConfig(
            password_hash=FAST_HASH, mfa_required_roles=("owner", "admin", "security", "developer")
        ),
        store,
        issuer=ISSUER,
        clock=clock,
    )
    bus = EventBus()
    signer = FakeSigner()
    repo = MemoryOAuthRepo()
    ctx = build_context(config(), store, repo, signer, users, clock=clock, bus=bus)
    auth = Harness(AuthServer(ctx), signer, users, clock, repo, store, bus, [])  # type: ignore[arg-type]
    secret = await auth.register(
        "console",
        grant_types=("authorization_code", "refresh_token"),
        scopes=("openid",),
        redirect_uris=(REDIRECT,),
        audiences=(AUDIENCE,),
    )
    await users.create_user("root", PASSWORD, roles=("owner",))
    await users.create_user("audrey", PASSWORD, roles=("auditor",))

    async def keys() -> KeySet:
        return await signer.public_key_set()

    async def publish(event: Event) -> None:
        return None

    admin_ctx = AdminContext(
        store=store,
        repo=control_repo(store),
        clock=clock,
        publish=publish,
        users=users,
        issuer=ISSUER,
        oauth=repo,
    )
    verifier = AdminTokenVerifier(issuer=ISSUER, audience=AUDIENCE, keys=keys, clock=clock)
    return World(auth, users, build_admin_api(admin_ctx, verifier), secret, admin_ctx)


async def login_for_tokens(world: World, username: str, *, totp: bool) -> dict[str, Any]:
    """/authorize → login page (→ TOTP enrolment) → /authorize → code → /token."""
    browser = world.browser()
    verifier = secrets.token_urlsafe(48)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": "console",
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "state": "st",
            "code_challenge": rfc7636.s256_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    first = await browser.get(f"/authorize?{query}")
    login_at = first.header("location") or ""
    assert login_at.startswith("/login?"), login_at
    return_to = parse_qs(urlsplit(login_at).query)["return_to"][0]
    resp = await browser.login(username, return_to=return_to)
    if totp:
        assert resp.header("location") == "/mfa/enroll"
        page = await browser.get("/mfa/enroll")
        found = re.search(r"<code>([A-Z2-7]{32})</code>", page.body.decode())
        assert found is not None
        code = pyotp.TOTP(found.group(1)).at(world.auth.clock.now())
        done = await browser.post("/mfa/enroll", {"csrf_token": csrf_of(page), "code": code})
        assert done.status == 200
    else:
        assert resp.header("location") == return_to
    back = await browser.get(return_to)
    target = back.header("location") or ""
    assert target.startswith(REDIRECT + "?"), target
    code = parse_qs(urlsplit(target).query)["code"][0]
    reply = await world.auth.post(
        "/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        basic=("console", world.secret),
    )
    assert reply.status == 200, reply.body
    tokens: dict[str, Any] = body(reply)
    return tokens


async def refresh(world: World, refresh_token: str) -> dict[str, Any]:
    reply = await world.auth.post(
        "/token",
        {"grant_type": "refresh_token", "refresh_token": refresh_token},
        basic=("console", world.secret),
    )
    assert reply.status == 200, reply.body
    tokens: dict[str, Any] = body(reply)
    return tokens


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens['access_token']}"}


async def test_totp_login_gives_a_token_the_admin_api_accepts(world: World) -> None:
    login_time = int(world.auth.clock.now())
    tokens = await login_for_tokens(world, "root", totp=True)
    claims = await world.auth.claims(tokens["access_token"])
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["auth_time"] == login_time
    assert claims["aud"] == AUDIENCE
    async with world.client() as http:
        me = await http.get("/admin/v1/me", headers=bearer(tokens))
        assert me.status_code == 200, me.text
        assert "owner" in me.json()["roles"]
        # Destructive, and the login is seconds old: allowed.
        blocked = await http.post(
            "/admin/v1/incidents/block-ip", json=BLOCK, headers=bearer(tokens)
        )
        assert blocked.status_code == 201, blocked.text


async def test_password_only_login_is_mfa_required(world: World) -> None:
    tokens = await login_for_tokens(world, "audrey", totp=False)
    claims = await world.auth.claims(tokens["access_token"])
    assert claims["amr"] == ["pwd"]
    async with world.client() as http:
        me = await http.get("/admin/v1/me", headers=bearer(tokens))
    assert me.status_code == 401
    assert me.json()["code"] == "admin.mfa_required"
    # A refresh does not turn a password login into an MFA one.
    again = await refresh(world, tokens["refresh_token"])
    assert (await world.auth.claims(again["access_token"]))["amr"] == ["pwd"]
    async with world.client() as http:
        me = await http.get("/admin/v1/me", headers=bearer(again))
    assert me.json()["code"] == "admin.mfa_required"


async def test_refresh_keeps_the_login_time_so_step_up_still_applies(world: World) -> None:
    login_time = int(world.auth.clock.now())
    tokens = await login_for_tokens(world, "root", totp=True)
    world.auth.clock.advance(11 * 60)
    # A new access token from the refresh family: freshly issued, but of the same old login.
    fresh = await refresh(world, tokens["refresh_token"])
    claims = await world.auth.claims(fresh["access_token"])
    assert claims["auth_time"] == login_time
    assert claims["iat"] > login_time + 600
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    async with world.client() as http:
        me = await http.get("/admin/v1/me", headers=bearer(fresh))
        assert me.status_code == 200, me.text  # reading needs no step-up
        blocked = await http.post("/admin/v1/incidents/block-ip", json=BLOCK, headers=bearer(fresh))
    assert blocked.status_code == 401
    assert blocked.json()["code"] == "admin.step_up_required"
    assert 'max_age="600"' in blocked.headers["www-authenticate"]


async def test_revoke_application_ends_the_tokens_issued_to_its_oauth_client(world: World) -> None:
    """An incident on the console application: the refresh families and last access tokens
    issued TO its client id (users' logins through it) end at once, not only tokens whose
    subject is the client."""
    admin = await login_for_tokens(world, "root", totp=True)
    victim = await login_for_tokens(world, "audrey", totp=False)
    victim_claims = await world.auth.claims(victim["access_token"])
    assert victim_claims["client_id"] == "console"
    assert victim_claims["sub"] != "console"  # a subject revocation of the client misses it
    app = {
        "id": "console",
        "name": "Admin console",
        "owner": "team-sec",
        "contact": "sec@example.com",
        "environment": "production",
        "risk_class": "internal",
        "data_classification": "confidential",
    }
    async with world.client() as http:
        made = await http.post("/admin/v1/applications", json=app, headers=bearer(admin))
        assert made.status_code == 201, made.text
        r = await http.post(
            "/admin/v1/incidents/revoke-application",
            json={"application": "console", "reason": "client secret leaked"},
            headers=bearer(admin),
        )
    assert r.status_code == 200, r.text
    assert r.json()["revoked_refresh_families"] == 2  # root's and audrey's logins
    assert r.json()["revoked_access_jtis"] == 2
    now = world.auth.clock.now()
    revoked_jtis = {
        v.value for v in await world.admin_ctx.store.active_revocations(now) if v.kind == "jti"
    }
    assert victim_claims["jti"] in revoked_jtis
    # The stolen refresh token no longer works.
    reply = await world.auth.post(
        "/token",
        {"grant_type": "refresh_token", "refresh_token": victim["refresh_token"]},
        basic=("console", world.secret),
    )
    assert reply.status == 400
    assert body(reply)["error"] == "invalid_grant"
    entries = await world.admin_ctx.repo.list_audit(
        AuditQuery(limit=5, action="incident.revoke_app")
    )
    assert entries[0].after is not None
    assert entries[0].after["revoked_refresh_families"] == 2
