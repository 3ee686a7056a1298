"""The real users service inside the OAuth server: /authorize → login (→ MFA) → back to
/authorize → code → ID token carrying the login's amr/acr."""

from __future__ import annotations

import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest

from bastion.authserver.oauth import rfc7636
from bastion.authserver.oauth.repo import MemoryOAuthRepo
from bastion.authserver.server import AuthServer, build_context
from bastion.authserver.users import ACR_MFA, ACR_PWD
from bastion.authserver.users.repo import MemoryUserRepo
from bastion.authserver.users.service import UserService
from bastion.core.clock import ManualClock
from bastion.events.bus import EventBus
from bastion.store.memory import MemoryStore
from tests.unit.authserver.oauth.harness import ISSUER, FakeSigner, Harness, body, config
from tests.unit.authserver.users.browser import FAST_HASH, PASSWORD, Browser, csrf_of

REDIRECT = "https://app.example/cb"


@pytest.fixture
async def setup() -> tuple[Harness, Browser, str]:
    from bastion.authserver.users import UsersConfig

    clock = ManualClock(1_700_000_010.0)
    store = MemoryStore()
    service = UserService(
        UsersConfig(password_hash=FAST_HASH), MemoryUserRepo(), issuer=ISSUER, clock=clock
    )
    bus = EventBus()
    signer = FakeSigner()
    repo = MemoryOAuthRepo()
    ctx = build_context(config(), store, repo, signer, service, clock=clock, bus=bus)
    server = AuthServer(ctx)
    harness = Harness(server, signer, service, clock, repo, store, bus, [])  # type: ignore[arg-type]
    client_secret = await harness.register(
        "web",
        grant_types=("authorization_code", "refresh_token"),
        scopes=("openid", "read"),
        redirect_uris=(REDIRECT,),
    )
    await service.create_user("alice", PASSWORD, email="alice@example.com")
    await service.create_user("root", PASSWORD, roles=("admin",))
    return harness, Browser(service, handle=server.handle), client_secret


async def authorize(browser: Browser, verifier: str) -> str:
    """GET /authorize for client "web"; where the server sent the browser."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": "web",
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "state": "st",
            "nonce": "n1",
            "code_challenge": rfc7636.s256_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    reply = await browser.get(f"/authorize?{query}")
    assert reply.status in (302, 303), reply.body
    location = reply.header("location")
    assert location is not None
    return location


def return_to_of(login_location: str) -> str:
    assert login_location.startswith("/login?"), login_location
    return parse_qs(urlsplit(login_location).query)["return_to"][0]


async def finish(
    harness: Harness, browser: Browser, return_to: str, verifier: str, client_secret: str
) -> dict[str, object]:
    """Back to /authorize (signed in now), exchange the code; the ID token's claims."""
    back = await browser.get(return_to)
    target = back.header("location") or ""
    assert target.startswith(REDIRECT + "?"), target
    params = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
    assert params["state"] == "st"
    assert params["iss"] == ISSUER
    reply = await harness.post(
        "/token",
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        basic=("web", client_secret),
    )
    assert reply.status == 200, reply.body
    return await harness.claims(body(reply)["id_token"])


async def test_password_login_round_trip(setup: tuple[Harness, Browser, str]) -> None:
    harness, browser, client_secret = setup
    verifier = secrets.token_urlsafe(48)
    return_to = return_to_of(await authorize(browser, verifier))
    assert return_to.startswith("/authorize?")
    resp = await browser.login("alice", return_to=return_to)
    assert resp.header("location") == return_to
    claims = await finish(harness, browser, return_to, verifier, client_secret)
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == ACR_PWD
    assert claims["nonce"] == "n1"
    user = await browser.service.find_user("alice")
    assert user is not None
    assert claims["sub"] == user.id


async def test_admin_enrols_then_tokens_say_mfa(setup: tuple[Harness, Browser, str]) -> None:
    harness, browser, client_secret = setup
    verifier = secrets.token_urlsafe(48)
    return_to = return_to_of(await authorize(browser, verifier))
    resp = await browser.login("root", return_to=return_to)
    assert resp.header("location") == "/mfa/enroll"
    # Half signed in is not signed in: /authorize sends the browser to the login again.
    assert (await authorize(browser, verifier)).startswith("/login?")
    page = await browser.get("/mfa/enroll")
    key = re.search(r"<code>([A-Z2-7]{32})</code>", page.body.decode()).group(1)  # type: ignore[union-attr]
    code = pyotp.TOTP(key).at(harness.clock.now())
    done = await browser.post("/mfa/enroll", {"csrf_token": csrf_of(page), "code": code})
    assert done.status == 200
    claims = await finish(harness, browser, return_to, verifier, client_secret)
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == ACR_MFA


async def test_lock_runs_the_servers_hook(
    setup: tuple[Harness, Browser, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, browser, _ = setup
    service = browser.service
    assert len(service.on_disable) == 1  # the OAuth server registered its revocation hook
    user = await service.find_user("alice")
    assert user is not None
    assert await service.lock(user.id)
    assert "on_disable hook failed" not in caplog.text
