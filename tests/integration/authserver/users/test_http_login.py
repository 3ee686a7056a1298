"""The login through the OAuth server's ASGI adapter with a real HTTP client and cookie jar
(httpx): the cookies we set are ones a client keeps and sends back, over https only."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from bastion.authserver.asgi import AuthAsgiApp
from bastion.authserver.oauth import rfc7636
from bastion.authserver.oauth.repo import MemoryOAuthRepo
from bastion.authserver.server import AuthServer, build_context
from bastion.authserver.users import UsersConfig
from bastion.authserver.users.repo import MemoryUserRepo
from bastion.authserver.users.service import UserService
from bastion.core.clock import ManualClock
from bastion.events.bus import EventBus
from bastion.store.memory import MemoryStore
from tests.unit.authserver.oauth.harness import ISSUER, FakeSigner, Harness, config
from tests.unit.authserver.users.browser import FAST_HASH, PASSWORD

pytestmark = pytest.mark.integration

REDIRECT = "https://app.example/cb"
_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    clock = ManualClock(1_700_000_010.0)
    service = UserService(
        UsersConfig(password_hash=FAST_HASH), MemoryUserRepo(), issuer=ISSUER, clock=clock
    )
    store, repo, signer, bus = MemoryStore(), MemoryOAuthRepo(), FakeSigner(), EventBus()
    server = AuthServer(build_context(config(), store, repo, signer, service, clock=clock, bus=bus))
    harness = Harness(server, signer, service, clock, repo, store, bus, [])  # type: ignore[arg-type]
    await harness.register(
        "web",
        grant_types=("authorization_code",),
        scopes=("openid",),
        redirect_uris=(REDIRECT,),
    )
    await service.create_user("alice", PASSWORD)
    transport = httpx.ASGITransport(app=AuthAsgiApp(server))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as c:
        yield c


def authorize_path() -> str:
    verifier = secrets.token_urlsafe(48)
    return "/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": "web",
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "state": "st",
            "code_challenge": rfc7636.s256_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )


async def test_browser_like_login_round_trip(client: httpx.AsyncClient) -> None:
    start = await client.get(authorize_path())
    login_location = start.headers["location"]
    assert login_location.startswith("/login?return_to=")
    form_page = await client.get(login_location)
    assert form_page.status_code == 200
    assert "__Host-bastion_csrf" in client.cookies
    token = _CSRF.search(form_page.text).group(1)  # type: ignore[union-attr]
    return_to = parse_qs(urlsplit(login_location).query)["return_to"][0]
    signed_in = await client.post(
        "/login",
        data={
            "csrf_token": token,
            "username": "alice",
            "password": PASSWORD,
            "return_to": return_to,
        },
        headers={"origin": ISSUER},
    )
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == return_to
    assert "__Host-bastion_session" in client.cookies
    back = await client.get(signed_in.headers["location"])
    assert back.headers["location"].startswith(REDIRECT + "?code=")


async def test_cookies_are_not_sent_over_plain_http(client: httpx.AsyncClient) -> None:
    form_page = await client.get("/login")
    token = _CSRF.search(form_page.text).group(1)  # type: ignore[union-attr]
    plain = ISSUER.replace("https://", "http://")
    resp = await client.post(
        plain + "/login",
        data={"csrf_token": token, "username": "alice", "password": PASSWORD},
        headers={"origin": ISSUER},
    )
    assert resp.status_code == 403  # the Secure cookie stayed home: no double-submit match


async def test_two_cookie_headers_are_refused(client: httpx.AsyncClient) -> None:
    resp = await client.get(
        "/login", headers=[("cookie", "a=1"), ("cookie", "__Host-bastion_session=x")]
    )
    assert resp.status_code == 400
