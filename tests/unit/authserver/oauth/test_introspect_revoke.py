"""/introspect (RFC 7662) and /revoke (RFC 7009), with forged tokens."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from tests.unit.authserver.oauth.harness import API, ISSUER, Harness, body, make_harness

OTHER_API = "https://other.example"


async def setup() -> tuple[Harness, dict[str, str]]:
    h = await make_harness()
    secrets = {
        "svc": await h.register("svc", introspect=True),
        "rs": await h.register("rs", grant_types=(), audiences=(API,), introspect=True),
        "rs2": await h.register("rs2", grant_types=(), audiences=(OTHER_API,), introspect=True),
        "svc2": await h.register("svc2", audiences=(OTHER_API,), introspect=True),
        "plain": await h.register("plain", audiences=(API,)),
    }
    return h, secrets


async def introspect(h: Harness, secrets: dict[str, str], token: str, who: str = "rs") -> Any:
    reply = await h.post("/introspect", {"token": token}, basic=(who, secrets[who]))
    assert reply.status == 200
    assert reply.header("cache-control") == "no-store"
    return body(reply)


async def access_token(h: Harness, secrets: dict[str, str], who: str = "svc") -> str:
    return str(body(await h.token(who, secrets[who]))["access_token"])


async def test_an_active_access_token_is_described() -> None:
    h, s = await setup()
    token = await access_token(h, s)
    doc = await introspect(h, s, token)
    claims = await h.claims(token)
    assert doc == {
        "active": True,
        "token_type": "Bearer",
        "scope": "read write",
        "client_id": "svc",
        "sub": "svc",
        "aud": API,
        "iss": ISSUER,
        "exp": claims["exp"],
        "iat": claims["iat"],
        "jti": claims["jti"],
    }


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()


def _claims(**over: Any) -> dict[str, Any]:
    now = 1_700_000_000
    c = {"iss": ISSUER, "sub": "svc", "aud": API, "iat": now, "exp": now + 300, "jti": "j1"}
    c["client_id"] = "svc"
    c.update(over)
    return c


async def test_forged_tokens_are_inactive() -> None:
    h, s = await setup()
    kid = h.signer.keys[0].kid
    attacker = ECKey.generate_key("P-256", parameters={"kid": kid})
    forged = jwt.encode({"alg": "ES256", "kid": kid, "typ": "at+jwt"}, _claims(), attacker)
    alg_none = _b64({"alg": "none", "typ": "at+jwt", "kid": kid}) + "." + _b64(_claims()) + "."
    # Algorithm confusion: HMAC keyed with our public key's JSON.
    public = orjson.dumps(h.signer.keys[0].as_dict(private=False))
    hs = jwt.encode(
        {"alg": "HS256", "kid": kid, "typ": "at+jwt"}, _claims(), OctKey.import_key(public)
    )
    tampered_payload = (await access_token(h, s)).split(".")
    tampered_payload[1] = _b64({**_claims(), "scope": "admin"})
    for token in (forged, alg_none, hs, ".".join(tampered_payload), "a.b.c", "x" * 8000):
        assert await introspect(h, s, token) == {"active": False}


async def test_our_own_signature_with_wrong_claims_is_inactive() -> None:
    h, s = await setup()
    wrong_iss = await h.signer.sign(_claims(iss="https://evil.example"), typ="at+jwt")
    id_token_typ = await h.signer.sign(_claims(), typ="JWT")
    expired = await h.signer.sign(_claims(exp=1_699_999_999), typ="at+jwt")
    no_jti = await h.signer.sign({k: v for k, v in _claims().items() if k != "jti"}, typ="at+jwt")
    for token in (wrong_iss, id_token_typ, expired, no_jti):
        assert await introspect(h, s, token) == {"active": False}
    good = await h.signer.sign(_claims(), typ="at+jwt")
    assert (await introspect(h, s, good))["active"] is True


async def test_wrong_audience_is_inactive_to_a_resource_server() -> None:
    h, s = await setup()
    token = await access_token(h, s, "svc2")  # aud = OTHER_API
    assert await introspect(h, s, token, "rs") == {"active": False}
    assert (await introspect(h, s, token, "rs2"))["active"] is True
    assert (await introspect(h, s, token, "svc2"))["active"] is True  # its own client


async def test_expiry_is_checked_against_the_clock() -> None:
    h, s = await setup()
    token = await access_token(h, s)
    h.clock.advance(301)
    assert await introspect(h, s, token) == {"active": False}


async def test_introspection_needs_an_authenticated_confidential_client() -> None:
    h, s = await setup()
    token = await access_token(h, s)
    reply = await h.post("/introspect", {"token": token})
    assert reply.status == 401
    assert body(reply)["error"] == "invalid_client"
    await h.register("spa", auth_method="none", grant_types=())
    reply = await h.post("/introspect", {"token": token, "client_id": "spa"})
    assert reply.status == 401
    reply = await h.post("/introspect", {}, basic=("rs", s["rs"]))
    assert (reply.status, body(reply)["error"]) == (400, "invalid_request")


async def test_only_clients_with_the_introspect_permission_may_introspect() -> None:
    """The attack: any confidential client (not a resource server) introspects a token it got
    hold of and learns its subject, scope and audience — even a token of its own audience."""
    h, s = await setup()
    token = await access_token(h, s)
    reply = await h.post("/introspect", {"token": token}, basic=("plain", s["plain"]))
    assert reply.status == 403
    assert body(reply) == {
        "error": "unauthorized_client",
        "error_description": "this client may not introspect",
    }
    own = await access_token(h, s, "plain")
    reply = await h.post("/introspect", {"token": own}, basic=("plain", s["plain"]))
    assert reply.status == 403
    assert await h.repo.set_client_introspect("plain", True, h.clock.now())
    h.clock.advance(6)  # past the client cache
    assert (await introspect(h, s, token, "plain"))["active"] is True
    assert await h.repo.set_client_introspect("plain", False, h.clock.now())
    h.clock.advance(6)
    reply = await h.post("/introspect", {"token": token}, basic=("plain", s["plain"]))
    assert reply.status == 403
    assert not await h.repo.set_client_introspect("ghost", True, h.clock.now())


async def test_keys_published_after_start_are_found() -> None:
    h, s = await setup()
    await introspect(h, s, await access_token(h, s))  # caches the key set
    h.signer.rotate()
    h.clock.advance(2)
    token = await access_token(h, s)
    assert (await introspect(h, s, token))["active"] is True


async def test_revoking_an_access_token_denies_it_everywhere() -> None:
    h, s = await setup()
    token = await access_token(h, s)
    claims = await h.claims(token)
    reply = await h.post("/revoke", {"token": token}, basic=("svc", s["svc"]))
    assert reply.status == 200
    assert reply.body == b""
    assert await introspect(h, s, token) == {"active": False}
    stored = await h.store.active_revocations(h.clock.now())
    assert [(r.kind, r.value, r.issuer, r.expires_at) for r in stored] == [
        ("jti", claims["jti"], ISSUER, claims["exp"])
    ]
    changes = await h.store.changes_since(0)
    assert changes[-1].kind == "token.revoked"
    assert changes[-1].payload["jti"] == claims["jti"]
    control = [e for topic, e in h.events if topic == "control"]
    assert control == [
        {
            "type": "token.revoked",
            "jti": claims["jti"],
            "expires_at": claims["exp"],
            "issuer": ISSUER,
        }
    ]


async def test_a_client_cannot_revoke_another_clients_token() -> None:
    h, s = await setup()
    token = await access_token(h, s, "svc")
    reply = await h.post("/revoke", {"token": token}, basic=("svc2", s["svc2"]))
    assert (reply.status, body(reply)["error"]) == (400, "unauthorized_client")
    assert (await introspect(h, s, token))["active"] is True


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "brt_" + "A" * 43])
async def test_revoking_unknown_tokens_is_200(token: str) -> None:
    h, s = await setup()
    reply = await h.post("/revoke", {"token": token}, basic=("svc", s["svc"]))
    assert reply.status == 200


async def test_revoke_checks_the_hint_and_the_client() -> None:
    h, s = await setup()
    reply = await h.post(
        "/revoke", {"token": "x", "token_type_hint": "id_token"}, basic=("svc", s["svc"])
    )
    assert (reply.status, body(reply)["error"]) == (400, "unsupported_token_type")
    assert (await h.post("/revoke", {"token": "x"})).status == 401


async def test_metadata_documents_agree_and_name_what_exists() -> None:
    h, _ = await setup()
    a = await h.get("/.well-known/oauth-authorization-server")
    b = await h.get("/.well-known/openid-configuration")
    assert a.status == b.status == 200
    doc = body(a)
    assert doc == body(b)
    assert doc["issuer"] == ISSUER
    assert doc["token_endpoint"] == ISSUER + "/token"
    assert doc["jwks_uri"] == ISSUER + "/jwks"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert set(doc["grant_types_supported"]) == {
        "client_credentials",
        "authorization_code",
        "refresh_token",
    }
    assert doc["authorization_response_iss_parameter_supported"] is True
    for path in ("/token", "/introspect", "/revoke", "/jwks", "/authorize", "/userinfo"):
        assert any(k == ("GET", path) or k == ("POST", path) for k in h.server.routes)


async def test_jwks_is_public_and_cacheable() -> None:
    h, _ = await setup()
    reply = await h.get("/jwks")
    assert reply.status == 200
    assert reply.header("cache-control") == "public, max-age=300"
    assert reply.header("content-type") == "application/jwk-set+json"
    keys = body(reply)["keys"]
    assert [k["kid"] for k in keys] == [h.signer.keys[0].kid]
    assert all("d" not in k for k in keys)


async def test_a_withdrawn_key_stops_vouching_for_cached_tokens() -> None:
    h, s = await setup()
    token = await access_token(h, s)
    assert (await introspect(h, s, token))["active"] is True  # now cached
    h.signer.rotate()
    del h.signer.keys[0]  # emergency: the old key is withdrawn from the set
    h.signer.active = 0
    h.clock.advance(6)  # past the key-set cache
    assert await introspect(h, s, token) == {"active": False}


async def other_algorithm_token(alg: str) -> tuple[Harness, dict[str, str], str]:
    """An access token signed with ``alg``; signing goes through the same warning-free registry
    as verifying (no process-wide warning filter involved)."""
    from joserfc.jwk import OKPKey, RSAKey

    from bastion.authserver.oauth.rfc9068 import quiet_registry

    h, s = await setup()
    key: Any = (
        OKPKey.generate_key("Ed25519", parameters={"kid": "okp"})
        if alg == "EdDSA"
        else RSAKey.generate_key(2048, parameters={"kid": "rsa"})
    )
    registry = quiet_registry((alg,))

    async def sign(claims: dict[str, Any], *, typ: str) -> str:
        header = {"alg": alg, "kid": key.kid, "typ": typ}
        return jwt.encode(header, claims, key, registry=registry)

    h.signer.sign = sign  # type: ignore[method-assign]
    h.signer.keys.append(key)
    return h, s, await access_token(h, s)


@pytest.mark.parametrize("alg", ["EdDSA", "PS256"])
async def test_tokens_signed_with_the_other_algorithms_verify(alg: str) -> None:
    h, s, token = await other_algorithm_token(alg)
    assert (await introspect(h, s, token))["active"] is True


async def test_eddsa_verification_does_not_depend_on_the_process_wide_warning_filters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The intermittent ``KeyError: 'access_token'`` of the EdDSA case: joserfc warns on every
    EdDSA use and the warning was silenced with ``warnings.catch_warnings``, whose filter list
    is process-wide — another thread leaving its own block drops our "ignore" and, under
    ``-W error``, the warning becomes an exception inside the request. Simulate that thread
    (every filter change is lost) and check EdDSA still signs and verifies."""
    import warnings

    h, s, token = await other_algorithm_token("EdDSA")
    monkeypatch.setattr(warnings, "simplefilter", lambda *args, **kwargs: None)
    monkeypatch.setattr(warnings, "filterwarnings", lambda *args, **kwargs: None)
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.filters.insert(0, ("error", None, Warning, None, 0))
        assert (await introspect(h, s, token))["active"] is True
        assert (await introspect(h, s, await access_token(h, s)))["active"] is True


async def test_a_client_bar_makes_earlier_tokens_of_that_client_inactive() -> None:
    """The incident action "revoke an application" bars every token issued to the client
    before it: introspection agrees with the gateways."""
    h, s = await setup()
    before = await access_token(h, s, "svc")
    other = await access_token(h, s, "svc2")
    assert (await introspect(h, s, before))["active"] is True
    assert (await introspect(h, s, other, who="rs2"))["active"] is True
    h.clock.advance(5)
    h.ctx.revocations.apply(  # what the server's bus subscription does with the event
        {
            "type": "client.revoked",
            "client_id": "svc",
            "not_before": h.clock.now(),
            "expires_at": h.clock.now() + 3600,
        }
    )
    assert await introspect(h, s, before) == {"active": False}
    assert (await introspect(h, s, other, who="rs2"))["active"] is True
    h.clock.advance(1)
    after = await access_token(h, s, "svc")
    assert (await introspect(h, s, after))["active"] is True
