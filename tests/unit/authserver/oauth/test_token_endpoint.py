"""/token with client_credentials, client authentication and RFC 6749 §5.2 errors."""

from __future__ import annotations

import base64

import pytest
from joserfc import jws

from bastion.authserver.oauth.client_auth import new_client_secret, rotate_secrets, secret_record
from tests.unit.authserver.oauth.harness import API, ISSUER, PEPPER, Harness, body, make_harness


async def test_client_credentials_issues_an_rfc9068_token() -> None:
    h = await make_harness()
    secret = await h.register()
    reply = await h.token("svc", secret, scope="read")
    assert reply.status == 200
    assert reply.header("cache-control") == "no-store"
    doc = body(reply)
    assert doc["token_type"] == "Bearer"
    assert doc["expires_in"] == 300
    assert doc["scope"] == "read"
    assert "refresh_token" not in doc
    header = jws.extract_compact(doc["access_token"].encode()).protected
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    claims = await h.claims(doc["access_token"])
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "svc"
    assert claims["client_id"] == "svc"
    assert claims["aud"] == API
    assert claims["scope"] == "read"
    assert claims["exp"] - claims["iat"] == 300
    assert len(claims["jti"]) >= 16


async def test_default_scope_is_everything_the_client_holds() -> None:
    h = await make_harness()
    secret = await h.register()
    doc = body(await h.token("svc", secret))
    assert doc["scope"] == "read write"


async def test_lifetime_follows_config_and_is_capped_at_one_hour() -> None:
    h = await make_harness(access_token_ttl="10m")
    secret = await h.register()
    assert body(await h.token("svc", secret))["expires_in"] == 600
    with pytest.raises(ValueError, match="less than or equal to 3600"):
        await make_harness(access_token_ttl="2h")


@pytest.mark.parametrize(
    ("scope", "error"),
    [("admin", "invalid_scope"), ("read admin", "invalid_scope"), ("", "invalid_scope")],
)
async def test_scope_outside_the_registration_is_refused(scope: str, error: str) -> None:
    h = await make_harness()
    secret = await h.register()
    reply = await h.token("svc", secret, scope=scope)
    assert reply.status == 400
    assert body(reply)["error"] == error


async def test_resource_selects_an_audience_and_others_are_invalid_target() -> None:
    h = await make_harness()
    secret = await h.register(audiences=(API, "https://other.example"))
    doc = body(await h.token("svc", secret, resource="https://other.example"))
    assert (await h.claims(doc["access_token"]))["aud"] == "https://other.example"
    both = body(await h.token("svc", secret))
    assert (await h.claims(both["access_token"]))["aud"] == [API, "https://other.example"]
    reply = await h.token("svc", secret, resource="https://evil.example")
    assert reply.status == 400
    assert body(reply)["error"] == "invalid_target"


async def test_wrong_secret_is_invalid_client_with_a_basic_challenge() -> None:
    h = await make_harness()
    await h.register()
    reply = await h.token("svc", new_client_secret())
    assert reply.status == 401
    assert body(reply) == {
        "error": "invalid_client",
        "error_description": "client authentication failed",
    }
    assert reply.header("www-authenticate") == 'Basic realm="bastion", charset="UTF-8"'
    assert reply.header("cache-control") == "no-store"


async def test_unknown_client_looks_like_a_wrong_secret() -> None:
    h = await make_harness()
    await h.register()
    wrong = await h.token("svc", "x")
    unknown = await h.token("nobody", "x")
    assert (unknown.status, unknown.body) == (wrong.status, wrong.body)


async def test_a_client_must_use_its_registered_method() -> None:
    h = await make_harness()
    secret = await h.register()  # client_secret_basic
    reply = await h.post(
        "/token",
        {"grant_type": "client_credentials", "client_id": "svc", "client_secret": secret},
    )
    assert reply.status == 401
    post_secret = await h.register("poster", auth_method="client_secret_post")
    ok = await h.post(
        "/token",
        {"grant_type": "client_credentials", "client_id": "poster", "client_secret": post_secret},
    )
    assert ok.status == 200


async def test_two_authentication_methods_at_once_are_refused() -> None:
    h = await make_harness()
    secret = await h.register()
    reply = await h.post(
        "/token",
        {"grant_type": "client_credentials", "client_secret": secret},
        basic=("svc", secret),
    )
    assert reply.status == 400
    assert body(reply)["error"] == "invalid_request"


@pytest.mark.parametrize("header", ["Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()])
async def test_malformed_basic_header_is_invalid_client(header: str) -> None:
    h = await make_harness()
    await h.register()
    reply = await h.post(
        "/token", {"grant_type": "client_credentials"}, headers={"authorization": header}
    )
    assert reply.status == 401
    assert body(reply)["error"] == "invalid_client"


async def test_no_credentials_at_all_is_invalid_client() -> None:
    h = await make_harness()
    await h.register()
    reply = await h.post("/token", {"grant_type": "client_credentials"})
    assert reply.status == 401
    reply = await h.post("/token", {"grant_type": "client_credentials", "client_id": "svc"})
    assert reply.status == 401


@pytest.mark.parametrize("grant", ["password", "implicit", "token", "urn:x", ""])
async def test_grants_outside_oauth21_are_unsupported(grant: str) -> None:
    h = await make_harness()
    secret = await h.register()
    reply = await h.post(
        "/token", {"grant_type": grant, "username": "a", "password": "b"}, basic=("svc", secret)
    )
    assert reply.status == 400
    assert body(reply)["error"] in ("unsupported_grant_type", "invalid_request")


async def test_a_grant_the_client_was_not_given_is_unauthorized_client() -> None:
    h = await make_harness()
    secret = await h.register(
        grant_types=("authorization_code",), redirect_uris=("https://app/cb",)
    )
    reply = await h.token("svc", secret)
    assert reply.status == 400
    assert body(reply)["error"] == "unauthorized_client"


async def test_public_client_cannot_use_client_credentials() -> None:
    h = await make_harness()
    await h.register("spa", auth_method="none", grant_types=("client_credentials",))
    reply = await h.post("/token", {"grant_type": "client_credentials", "client_id": "spa"})
    assert reply.status == 400
    assert body(reply)["error"] == "unauthorized_client"


async def test_body_must_be_a_form() -> None:
    h = await make_harness()
    secret = await h.register()
    reply = await h.post(
        "/token",
        {"grant_type": "client_credentials"},
        basic=("svc", secret),
        headers={"content-type": "application/json"},
    )
    assert reply.status == 400
    assert body(reply)["error"] == "invalid_request"


async def test_a_repeated_parameter_is_invalid_request() -> None:
    h = await make_harness()
    secret = await h.register()
    reply = await h.post(
        "/token",
        [("grant_type", "client_credentials"), ("scope", "read"), ("scope", "write")],
        basic=("svc", secret),
    )
    assert reply.status == 400
    assert body(reply)["error"] == "invalid_request"


async def test_get_on_token_is_405_and_unknown_paths_404() -> None:
    h = await make_harness()
    reply = await h.get("/token")
    assert reply.status == 405
    assert reply.header("allow") == "POST"
    assert (await h.get("/nope")).status == 404


async def test_token_endpoint_is_throttled_per_ip() -> None:
    h = await make_harness(token_rate_limit={"rate": 2, "per": "1s", "burst": 2})
    secret = await h.register()
    statuses = [(await h.token("svc", secret)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    other_ip = await h.post(
        "/token", {"grant_type": "client_credentials"}, basic=("svc", secret), ip="192.0.2.9"
    )
    assert other_ip.status == 200
    limited = await h.token("svc", secret)
    assert limited.header("retry-after") == "1"
    assert body(limited)["error"] == "temporarily_unavailable"
    h.clock.advance(1.0)
    assert (await h.token("svc", secret)).status == 200


PROXY = "10.0.0.5"
RATE = {"rate": 2, "per": "1s", "burst": 2}


async def token_via_proxy(h: Harness, secret: str, xff: str | None) -> int:
    headers = {} if xff is None else {"x-forwarded-for": xff}
    reply = await h.post(
        "/token",
        {"grant_type": "client_credentials"},
        basic=("svc", secret),
        ip=PROXY,
        headers=headers,
    )
    return reply.status


async def test_behind_a_trusted_proxy_each_client_ip_has_its_own_throttle() -> None:
    """Without auth.trusted_proxies every request behind a proxy had the proxy's address: one
    noisy client throttled everybody (and login lockout/throttle events named the proxy)."""
    h = await make_harness(token_rate_limit=RATE, trusted_proxies=1)
    secret = await h.register()
    assert [await token_via_proxy(h, secret, "198.51.100.1") for _ in range(3)] == [200, 200, 429]
    assert await token_via_proxy(h, secret, "198.51.100.2") == 200  # another client, own bucket


async def test_a_client_cannot_pick_its_address_by_writing_x_forwarded_for() -> None:
    """The attack: rotate a forged left-most X-Forwarded-For hop to dodge the throttle. Only
    the hop our own proxy appended (the right-most with one trusted proxy) counts."""
    h = await make_harness(token_rate_limit=RATE, trusted_proxies=1)
    secret = await h.register()
    statuses = [await token_via_proxy(h, secret, f"203.0.113.{n}, 198.51.100.1") for n in range(3)]
    assert statuses == [200, 200, 429]


async def test_without_trusted_proxies_x_forwarded_for_is_ignored() -> None:
    h = await make_harness(token_rate_limit=RATE)
    secret = await h.register()
    statuses = [await token_via_proxy(h, secret, f"198.51.100.{n}") for n in range(3)]
    assert statuses == [200, 200, 429]  # all the peer's


async def test_the_forwarded_address_reaches_the_login_pages() -> None:
    from bastion.authserver.http import Request, Response

    seen: list[str] = []

    async def page(request: Request) -> Response:
        seen.append(request.client_ip)
        return Response(200, b"")

    h = await make_harness(trusted_proxies=2)
    h.server.routes[("POST", "/login")] = page
    await h.post(
        "/login", {}, ip=PROXY, headers={"x-forwarded-for": "1.2.3.4, 192.0.2.7, 10.0.0.9"}
    )
    await h.post("/login", {}, ip=PROXY, headers={"x-forwarded-for": "garbage, 10.0.0.9"})
    await h.post("/login", {}, ip=PROXY)
    assert seen == ["192.0.2.7", PROXY, PROXY]


async def test_secret_rotation_overlap() -> None:
    h = await make_harness(client_cache_ttl=0)
    old = await h.register()
    client = await h.repo.get_client("svc")
    assert client is not None
    now = h.clock.now()
    new = new_client_secret()
    rotated = rotate_secrets(client.secrets, secret_record(PEPPER.encode(), new, now), 3600, now)
    assert len(rotated) == 2
    await h.repo.set_client_secrets("svc", rotated, now)
    assert (await h.token("svc", old)).status == 200
    assert (await h.token("svc", new)).status == 200
    h.clock.advance(3601)
    assert (await h.token("svc", old)).status == 401
    assert (await h.token("svc", new)).status == 200
    # A second rotation keeps at most two secrets: the oldest is gone at once.
    newer = new_client_secret()
    now = h.clock.now()
    client = await h.repo.get_client("svc")
    assert client is not None
    again = rotate_secrets(client.secrets, secret_record(PEPPER.encode(), newer, now), 60, now)
    await h.repo.set_client_secrets("svc", again, now)
    assert len(again) == 2
    assert (await h.token("svc", newer)).status == 200
    assert (await h.token("svc", new)).status == 200
    assert (await h.token("svc", old)).status == 401


async def test_rotation_without_overlap_drops_the_old_secret() -> None:
    h = await make_harness(client_cache_ttl=0)
    old = await h.register()
    client = await h.repo.get_client("svc")
    assert client is not None
    new = new_client_secret()
    now = h.clock.now()
    await h.repo.set_client_secrets(
        "svc", rotate_secrets(client.secrets, secret_record(PEPPER.encode(), new, now), 0, now), now
    )
    assert (await h.token("svc", old)).status == 401
    assert (await h.token("svc", new)).status == 200


async def test_a_failing_signer_is_503_not_a_trace() -> None:
    h = await make_harness()
    secret = await h.register()

    async def broken(claims: object, *, typ: str) -> str:
        raise RuntimeError("token store exploded at /secret/path")

    h.signer.sign = broken  # type: ignore[method-assign]
    reply = await h.token("svc", secret)
    assert reply.status == 500
    assert body(reply) == {"error": "server_error"}
    assert b"exploded" not in reply.body


async def test_store_outage_is_temporarily_unavailable() -> None:
    h = await make_harness()
    await h.store.close()
    h.repo.get_client = _raise_store  # type: ignore[method-assign]
    reply = await h.token("svc", "x")
    assert reply.status == 503
    assert body(reply) == {"error": "temporarily_unavailable"}


async def _raise_store(client_id: str) -> None:
    from bastion.errors import StoreError

    raise StoreError(diagnosis="down")
