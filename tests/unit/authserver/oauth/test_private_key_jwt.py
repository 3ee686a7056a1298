"""private_key_jwt client authentication (RFC 7523 §2.2, OpenID Connect Core §9)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from bastion.authserver.oauth.client_auth import ASSERTION_TYPE
from tests.unit.authserver.oauth.harness import ISSUER, Harness, body, make_harness


async def setup() -> tuple[Harness, ECKey]:
    h = await make_harness()
    key = ECKey.generate_key("P-256", parameters={"kid": "c1"})
    await h.register(
        "pkj", auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]}
    )
    return h, key


def assertion(h: Harness, key: ECKey, **over: Any) -> str:
    now = int(h.clock.now())
    claims: dict[str, Any] = {
        "iss": "pkj",
        "sub": "pkj",
        "aud": ISSUER,
        "exp": now + 60,
        "iat": now,
        "jti": secrets.token_hex(8),
    }
    claims.update(over)
    return jwt.encode({"alg": "ES256", "kid": "c1"}, claims, key)


async def token(h: Harness, client_assertion: str, **extra: str) -> Any:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion,
        **extra,
    }
    return await h.post("/token", form)


async def test_a_valid_assertion_authenticates() -> None:
    h, key = await setup()
    reply = await token(h, assertion(h, key))
    assert reply.status == 200
    claims = await h.claims(body(reply)["access_token"])
    assert claims["client_id"] == "pkj"
    one_element_list = await token(h, assertion(h, key, aud=[ISSUER]))
    assert one_element_list.status == 200


async def test_an_assertion_is_accepted_once() -> None:
    h, key = await setup()
    a = assertion(h, key)
    assert (await token(h, a)).status == 200
    assert (await token(h, a)).status == 401


@pytest.mark.parametrize(
    "over",
    [
        {"iss": "other"},
        {"sub": "other"},
        {"aud": "https://elsewhere.example/token"},
        # audience injection (RFC 7523bis): only the issuer identifier itself
        {"aud": ISSUER + "/token"},
        {"aud": ISSUER + "/"},
        {"aud": [ISSUER, "https://elsewhere.example"]},
        {"aud": ["https://elsewhere.example", ISSUER]},
        {"aud": [ISSUER, ISSUER]},
        {"aud": []},
        {"aud": None},
        # not yet valid / issued in the future (beyond 60 s of clock skew)
        {"nbf": 1_700_000_000 + 120},
        {"iat": 1_700_000_000 + 120},
        {"nbf": "0"},
        {"iat": True},
        {"exp": 1_700_000_000 - 1},
        {"exp": 1_700_000_000 + 3600},
        {"jti": ""},
        {"jti": None},
        {"exp": None},
    ],
)
async def test_bad_claims_are_invalid_client(over: dict[str, Any]) -> None:
    h, key = await setup()
    claims = {k: v for k, v in over.items() if v is not None}
    a = assertion(h, key, **claims)
    if None in over.values():
        # Drop the claim entirely.
        now = int(h.clock.now())
        base = {"iss": "pkj", "sub": "pkj", "aud": ISSUER, "exp": now + 60, "jti": "x"}
        for k, v in over.items():
            if v is None:
                base.pop(k, None)
        a = jwt.encode({"alg": "ES256", "kid": "c1"}, base, key)
    reply = await token(h, a)
    assert reply.status == 401
    assert body(reply)["error"] == "invalid_client"


async def test_nbf_and_iat_within_the_clock_skew_are_accepted() -> None:
    h, key = await setup()
    now = int(h.clock.now())
    reply = await token(h, assertion(h, key, nbf=now + 30, iat=now + 30))
    assert reply.status == 200, reply.body
    assert (await token(h, assertion(h, key, nbf=now - 300))).status == 200


async def test_an_assertion_signed_by_another_key_fails() -> None:
    h, _ = await setup()
    attacker = ECKey.generate_key("P-256", parameters={"kid": "c1"})
    assert (await token(h, assertion(h, attacker))).status == 401


async def test_wrong_assertion_type_and_oversized_assertions() -> None:
    h, key = await setup()
    reply = await h.post(
        "/token",
        {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:other",
            "client_assertion": assertion(h, key),
        },
    )
    assert (reply.status, body(reply)["error"]) == (400, "invalid_request")
    assert (await token(h, "a." * 4000)).status == 401


async def test_a_secret_client_cannot_authenticate_with_an_assertion() -> None:
    h, key = await setup()
    await h.register("sec")
    a = assertion(h, key, iss="sec", sub="sec")
    assert (await token(h, a)).status == 401
