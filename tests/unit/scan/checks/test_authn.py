"""Token attacks: the vulnerable example accepts alg none, is signed with 'secret' (cracked from
the wordlist) and ignores exp/iss/aud; the secure one refuses every forged token."""

from __future__ import annotations

import warnings

import httpx
from joserfc import jwt
from joserfc.jwk import OctKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.scan.auth import parse_auth
from bastion.scan.checks.authn import Authn, crack_hmac_key
from bastion.scan.model import Severity
from bastion.scan.session import ScanOptions, open_session
from bastion.scan.spec import scan_spec_from_document
from tests.unit.scan.checks.conftest import Target, run_check


async def test_vulnerable_tokens_are_forged(target: Target) -> None:
    async with target(True) as ctx:
        found = await run_check(Authn(), ctx)
    keys = {f.key for f in found}
    assert keys == {"alg-none", "weak-hmac-key", "expired", "wrong-iss-aud"}
    weak = next(f for f in found if f.key == "weak-hmac-key")
    assert weak.severity is Severity.CRITICAL
    assert "secret" not in weak.detail
    for f in found:  # the cracked key never shows up in the evidence
        assert all("secret" not in e.as_text().replace("x-bastion", "") for e in f.evidence)


async def test_secure_tokens_resist(target: Target) -> None:
    async with target(False) as ctx:
        assert await run_check(Authn(), ctx) == []


def test_crack_finds_numbers_and_words_and_gives_up_on_random_keys() -> None:
    for key in (b"changeme", b"4711"):
        token = jwt.encode({"alg": "HS256"}, {"sub": "2"}, _key(key))
        assert crack_hmac_key(token) == key
    strong = jwt.encode({"alg": "HS256"}, {"sub": "2"}, OctKey.generate_key(256))
    assert crack_hmac_key(strong, seconds=0.05) is None
    assert crack_hmac_key("not.a.jwt") is None
    es = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"  # ES256: no HMAC key to find
    assert crack_hmac_key(es) is None


def _key(raw: bytes) -> OctKey:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return OctKey.import_key(raw)


def careless_app() -> Starlette:
    """Logs anyone in with a token signed under the key 4711 and never checks a token."""

    async def login(request: Request) -> Response:
        token = jwt.encode({"alg": "HS256"}, {"sub": "1", "exp": 4102444800}, _key(b"4711"))
        return JSONResponse({"access_token": token})

    async def me(request: Request) -> Response:
        return JSONResponse({"id": 1, "name": "alice"})

    return Starlette(routes=[Route("/login", login, methods=["POST"]), Route("/me", me)])


CARELESS_SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "careless", "version": "1"},
    "security": [{"bearer": []}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {"/me": {"get": {"responses": {"200": {"description": "ok"}}}}},
}


async def test_a_target_that_checks_nothing_fails_every_test() -> None:
    auth = parse_auth(
        {
            "version": 1,
            "login": {"path": "/login"},
            "identities": {
                "user_a": {"login": {"username": "a", "password": "a"}},
                "user_b": {"login": {"username": "b", "password": "b"}},
            },
        }
    )
    transport = httpx.ASGITransport(app=careless_app())
    async with open_session(
        scan_spec_from_document(CARELESS_SPEC),
        "http://testserver",
        auth,
        ScanOptions(rate=1000.0, canary=False),
        transport=transport,
    ) as ctx:
        found = await run_check(Authn(), ctx)
    assert {f.key for f in found} == {
        "no-token",
        "garbage-token",
        "alg-none",
        "signature-stripped",
        "signature-altered",
        "weak-hmac-key",
        "expired",
        "wrong-iss-aud",
    }
    assert all("4711" not in e.as_text() for f in found for e in f.evidence)
