"""/authorize and the authorization_code grant: exact redirect URIs, PKCE S256, RFC 9207 iss,
single-use codes, ID tokens and /userinfo."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
from joserfc import jws

from bastion.authserver.oauth import rfc7636
from tests.unit.authserver.oauth.harness import (
    ISSUER,
    Harness,
    body,
    location_params,
    make_harness,
)

CB = "https://app.example/callback"
CODE_GRANTS = ("authorization_code", "refresh_token")


# -- RFC 7636 ---------------------------------------------------------------------------------
def test_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert rfc7636.s256_challenge(verifier) == challenge
    assert rfc7636.verify(verifier, challenge)
    assert rfc7636.valid_challenge(challenge)


@pytest.mark.parametrize(
    "verifier",
    [
        None,
        "",
        "short",
        "a" * 129,
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk ",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",  # one letter's case
        "\uff44BjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",  # a full-width letter
    ],
)
def test_wrong_or_malformed_verifiers_fail(verifier: str | None) -> None:
    assert not rfc7636.verify(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")


# -- helpers ------------------------------------------------------------------------------------
async def setup(confidential: bool = True) -> tuple[Harness, str]:
    h = await make_harness()
    if confidential:
        secret = await h.register(
            "web",
            grant_types=CODE_GRANTS,
            redirect_uris=(CB, "https://app.example/other"),
            scopes=("openid", "profile", "email", "read"),
            introspect=True,
        )
    else:
        secret = await h.register(
            "spa",
            auth_method="none",
            grant_types=CODE_GRANTS,
            redirect_uris=(CB,),
            scopes=("openid", "read"),
        )
    h.users.sign_in("u1", at=h.clock.now() - 5)
    return h, secret


def authorize_query(client_id: str = "web", **over: str) -> dict[str, str]:
    q = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CB,
        "scope": "openid profile",
        "state": "st-42",
        "code_challenge": rfc7636.s256_challenge("v" * 43),
        "code_challenge_method": "S256",
    }
    q.update(over)
    return q


async def redeem(h: Harness, secret: str, code: str, verifier: str | None, **over: str):  # type: ignore[no-untyped-def]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CB}
    if verifier is not None:
        form["code_verifier"] = verifier
    form.update(over)
    return await h.post("/token", form, basic=("web", secret))


# -- /authorize ---------------------------------------------------------------------------------
async def test_code_comes_back_with_state_and_iss() -> None:
    h, _ = await setup()
    reply = await h.get("/authorize", authorize_query())
    assert reply.status == 303
    location = reply.header("location")
    assert location is not None
    assert location.startswith(CB + "?")
    params = location_params(reply)
    assert params["state"] == "st-42"
    assert params["iss"] == ISSUER
    assert len(params["code"]) >= 43


async def test_no_session_goes_to_login_and_comes_back_here() -> None:
    h, _ = await setup()
    h.users.signed_in = None
    reply = await h.get("/authorize", authorize_query())
    assert reply.status == 303
    location = reply.header("location")
    assert location is not None
    assert location.startswith("/login?")
    return_to = parse_qs(urlsplit(location).query)["return_to"][0]
    assert return_to.startswith("/authorize?")
    assert "client_id=web" in return_to


async def test_prompt_none_without_session_is_login_required() -> None:
    h, _ = await setup()
    h.users.signed_in = None
    params = location_params(await h.get("/authorize", authorize_query(prompt="none")))
    assert params["error"] == "login_required"
    assert params["iss"] == ISSUER


def login_return(reply: object) -> dict[str, str] | None:
    """The /authorize query the login page would return to, or None if not sent to login."""
    location = reply.header("location")  # type: ignore[attr-defined]
    assert location is not None
    if not location.startswith("/login?"):
        return None
    return_to = parse_qs(urlsplit(location).query)["return_to"][0]
    return dict(parse_qsl(urlsplit(return_to).query))


async def test_prompt_login_asks_for_a_new_login_even_with_a_session() -> None:
    """prompt=login was silently ignored: the old session answered."""
    h, _ = await setup()  # signed in 5 s ago
    again = login_return(await h.get("/authorize", authorize_query(prompt="login")))
    assert again is not None
    assert "prompt" not in again
    assert again["auth_after"] == str(int(h.clock.now()))
    # Back from the login page without a new login (the old session): the login page again.
    assert login_return(await h.get("/authorize", again)) is not None
    # After a new login: a code, not another round.
    h.clock.advance(30)
    h.users.sign_in("u1", at=h.clock.now())
    params = location_params(await h.get("/authorize", again))
    assert "code" in params


@pytest.mark.parametrize(("max_age", "relogin"), [("3", True), ("0", True), ("10", False)])
async def test_max_age_older_than_the_login_asks_for_a_new_one(max_age: str, relogin: bool) -> None:
    h, _ = await setup()  # signed in 5 s ago
    reply = await h.get("/authorize", authorize_query(max_age=max_age))
    again = login_return(reply)
    assert (again is not None) == relogin
    if again is None:
        return
    assert again["max_age"] == max_age
    h.clock.advance(2)
    h.users.sign_in("u1", at=h.clock.now())
    h.clock.advance(1)  # even max_age=0 is satisfied by the login it asked for: no loop
    assert "code" in location_params(await h.get("/authorize", again))


async def test_prompt_none_with_a_login_too_old_for_max_age_is_login_required() -> None:
    h, _ = await setup()
    params = location_params(await h.get("/authorize", authorize_query(prompt="none", max_age="1")))
    assert params["error"] == "login_required"
    params = location_params(await h.get("/authorize", authorize_query(prompt="none login")))
    assert params["error"] == "invalid_request"


@pytest.mark.parametrize("auth_after", ["0", "1", str(10**11)])
async def test_a_forged_auth_after_does_not_skip_the_new_login(auth_after: str) -> None:
    h, _ = await setup()
    query = authorize_query(prompt="login", auth_after=auth_after)
    assert login_return(await h.get("/authorize", query)) is not None
    query = authorize_query(max_age="1", auth_after=auth_after)
    assert login_return(await h.get("/authorize", query)) is not None


@pytest.mark.parametrize("bad", ["-1", "1.5", "abc", "9" * 13])
async def test_malformed_max_age_is_invalid_request(bad: str) -> None:
    h, _ = await setup()
    params = location_params(await h.get("/authorize", authorize_query(max_age=bad)))
    assert params["error"] == "invalid_request"


@pytest.mark.parametrize(
    "uri",
    [
        CB + "/",
        CB[:-1],
        CB.replace("https", "http"),
        CB + "?x=1",
        CB.replace("app.example", "app.example.evil.com"),
        CB.upper(),
        CB + "#",
    ],
)
async def test_redirect_uri_off_by_one_character_never_redirects(uri: str) -> None:
    h, _ = await setup()
    reply = await h.get("/authorize", authorize_query(redirect_uri=uri))
    assert reply.status == 400
    assert reply.header("location") is None
    assert b"not registered" in reply.body
    assert reply.header(
        "content-type",
    ).startswith("text/html")  # type: ignore[union-attr]


async def test_unknown_client_gets_a_page_not_a_redirect() -> None:
    h, _ = await setup()
    reply = await h.get("/authorize", authorize_query(client_id="ghost"))
    assert reply.status == 400
    assert reply.header("location") is None


async def test_redirect_uri_may_be_omitted_only_with_one_registered() -> None:
    h, _ = await setup()  # "web" has two
    query = authorize_query()
    del query["redirect_uri"]
    assert (await h.get("/authorize", query)).status == 400
    h2, _ = await setup(confidential=False)  # "spa" has one
    q2 = authorize_query("spa", scope="openid")
    del q2["redirect_uri"]
    reply = await h2.get("/authorize", q2)
    assert reply.status == 303
    assert (reply.header("location") or "").startswith(CB + "?code=")


@pytest.mark.parametrize(
    ("over", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"scope": "openid admin"}, "invalid_scope"),
    ],
)
async def test_errors_after_the_redirect_uri_is_verified_go_back_with_iss(
    over: dict[str, str], error: str
) -> None:
    h, _ = await setup()
    reply = await h.get("/authorize", authorize_query(**over))
    assert reply.status == 303
    params = location_params(reply)
    assert params["error"] == error
    assert params["state"] == "st-42"
    assert params["iss"] == ISSUER
    assert "code" not in params


async def test_missing_pkce_is_refused() -> None:
    h, _ = await setup()
    query = authorize_query()
    del query["code_challenge"]
    del query["code_challenge_method"]
    params = location_params(await h.get("/authorize", query))
    assert params["error"] == "invalid_request"


async def test_duplicate_parameters_get_a_page() -> None:
    h, _ = await setup()
    from bastion.authserver.http import Request

    qs = b"client_id=web&client_id=evil&response_type=code"
    reply = await h.server.handle(Request("GET", "/authorize", {}, query_string=qs))
    assert reply.status == 400
    assert reply.header("location") is None


# -- the code grant ---------------------------------------------------------------------------
async def test_code_exchange_issues_access_refresh_and_id_token() -> None:
    h, secret = await setup()
    code, verifier = await h.code_flow("web", CB, nonce="n-7")
    reply = await redeem(h, secret, code, verifier)
    assert reply.status == 200, reply.body
    doc = body(reply)
    assert doc["scope"] == "openid profile"
    assert doc["refresh_token"].startswith("brt_")
    access = await h.claims(doc["access_token"])
    assert access["sub"] == "u1"
    assert access["client_id"] == "web"
    id_header = jws.extract_compact(doc["id_token"].encode()).protected
    assert id_header["typ"] == "JWT"
    idt = await h.claims(doc["id_token"])
    assert idt["iss"] == ISSUER
    assert idt["aud"] == "web"
    assert idt["azp"] == "web"
    assert idt["sub"] == "u1"
    assert idt["nonce"] == "n-7"
    assert idt["amr"] == ["pwd", "otp"]
    assert idt["acr"] == "urn:bastion:acr:mfa"
    assert idt["auth_time"] == int(h.clock.now() - 5)


async def test_without_openid_there_is_no_id_token() -> None:
    h, secret = await setup()
    code, verifier = await h.code_flow("web", CB, scope="read")
    doc = body(await redeem(h, secret, code, verifier))
    assert "id_token" not in doc


async def test_missing_verifier_is_invalid_grant() -> None:
    h, secret = await setup()
    code, _ = await h.code_flow("web", CB)
    reply = await redeem(h, secret, code, None)
    assert reply.status == 400
    assert body(reply)["error"] == "invalid_grant"


async def test_wrong_verifier_is_invalid_grant() -> None:
    h, secret = await setup()
    code, verifier = await h.code_flow("web", CB)
    reply = await redeem(h, secret, code, verifier[:-1] + ("A" if verifier[-1] != "A" else "B"))
    assert reply.status == 400
    assert body(reply)["error"] == "invalid_grant"


async def test_redirect_uri_mismatch_at_the_token_endpoint() -> None:
    h, secret = await setup()
    code, verifier = await h.code_flow("web", CB)
    reply = await redeem(h, secret, code, verifier, redirect_uri=CB + "x")
    assert body(reply)["error"] == "invalid_grant"


async def test_expired_code_is_invalid_grant() -> None:
    h, secret = await setup()
    code, verifier = await h.code_flow("web", CB)
    h.clock.advance(61)
    assert body(await redeem(h, secret, code, verifier))["error"] == "invalid_grant"


async def test_another_client_cannot_redeem_the_code() -> None:
    h, _ = await setup()
    other = await h.register("other", grant_types=CODE_GRANTS, redirect_uris=(CB,))
    code, verifier = await h.code_flow("web", CB)
    reply = await h.post(
        "/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CB,
            "code_verifier": verifier,
        },
        basic=("other", other),
    )
    assert body(reply)["error"] == "invalid_grant"


async def test_unknown_code_is_invalid_grant() -> None:
    h, secret = await setup()
    reply = await redeem(h, secret, secrets.token_urlsafe(32), "v" * 43)
    assert body(reply)["error"] == "invalid_grant"


async def test_code_replay_fails_and_revokes_what_the_first_use_issued() -> None:
    h, secret = await setup()
    code, verifier = await h.code_flow("web", CB)
    first = body(await redeem(h, secret, code, verifier))
    replay = await redeem(h, secret, code, verifier)
    assert replay.status == 400
    assert body(replay)["error"] == "invalid_grant"
    # The refresh token from the first use is dead ...
    refreshed = await h.post(
        "/token",
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        basic=("web", secret),
    )
    assert body(refreshed)["error"] == "invalid_grant"
    # ... and so is the access token: introspection says so, gateways were told.
    seen = body(
        await h.post("/introspect", {"token": first["access_token"]}, basic=("web", secret))
    )
    assert seen == {"active": False}
    jti = (await h.claims(first["access_token"]))["jti"]
    revocations = await h.store.active_revocations(h.clock.now())
    assert [(r.kind, r.value) for r in revocations] == [("jti", jti)]
    assert (
        "control",
        {
            "type": "token.revoked",
            "jti": jti,
            "expires_at": pytest.approx(revocations[0].expires_at),
            "issuer": ISSUER,
        },
    ) in h.events
    alerts = [e for topic, e in h.events if topic == "security"]
    assert alerts[0]["event.action"] == "oauth.code_replay"
    assert alerts[0]["client.id"] == "web"


async def register_evil(h: Harness) -> None:
    await h.register(
        "evil",
        auth_method="none",
        grant_types=("authorization_code",),
        redirect_uris=("https://evil.example/cb",),
        scopes=("read",),
    )


def security_actions(h: Harness) -> list[object]:
    return [e["event.action"] for topic, e in h.events if topic == "security"]


@pytest.mark.parametrize("as_client", ["evil", "spa"])
async def test_a_party_that_only_saw_the_code_cannot_burn_it(as_client: str) -> None:
    """The attack: present a stolen code with a junk verifier, authenticated as any public
    client (or as the victim public client, which needs only its id)."""
    h, _ = await setup(confidential=False)
    await register_evil(h)
    code, verifier = await h.code_flow("spa", CB, scope="openid")
    for junk in ({"code_verifier": "x" * 43}, {}):
        burn = await h.post(
            "/token",
            {"grant_type": "authorization_code", "code": code, "client_id": as_client, **junk},
        )
        assert burn.status == 400
        assert body(burn)["error"] == "invalid_grant"
    wrong_uri = await h.post(
        "/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": "spa",
            "redirect_uri": CB + "x",
            "code_verifier": verifier,
        },
    )
    assert body(wrong_uri)["error"] == "invalid_grant"
    legit = await h.post(
        "/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": "spa",
            "redirect_uri": CB,
            "code_verifier": verifier,
        },
    )
    assert legit.status == 200, legit.body
    assert "oauth.code_replay" not in security_actions(h)


async def test_another_clients_replay_does_not_revoke_the_victims_tokens() -> None:
    h, secret = await setup()
    await register_evil(h)
    code, verifier = await h.code_flow("web", CB)
    first = body(await redeem(h, secret, code, verifier))
    replay = await h.post(
        "/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": "evil",
            "redirect_uri": CB,
            "code_verifier": verifier,
        },
    )
    assert body(replay)["error"] == "invalid_grant"
    refreshed = await h.post(
        "/token",
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        basic=("web", secret),
    )
    assert refreshed.status == 200, refreshed.body
    assert "oauth.code_replay" not in security_actions(h)
    assert await h.store.active_revocations(h.clock.now()) == []


async def test_a_replay_with_a_wrong_verifier_is_refused_without_revoking() -> None:
    """Only a replay that proves possession of the verifier is the theft signal."""
    h, secret = await setup()
    code, verifier = await h.code_flow("web", CB)
    first = body(await redeem(h, secret, code, verifier))
    assert body(await redeem(h, secret, code, "w" * 43))["error"] == "invalid_grant"
    refreshed = await h.post(
        "/token",
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        basic=("web", secret),
    )
    assert refreshed.status == 200


async def test_public_client_redeems_with_pkce_alone() -> None:
    h, _ = await setup(confidential=False)
    code, verifier = await h.code_flow("spa", CB, scope="openid")
    reply = await h.post(
        "/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CB,
            "code_verifier": verifier,
            "client_id": "spa",
        },
    )
    assert reply.status == 200
    assert "refresh_token" in body(reply)


# -- /userinfo ---------------------------------------------------------------------------------
async def test_userinfo_answers_what_the_scopes_allow() -> None:
    h, secret = await setup()
    code, verifier = await h.code_flow("web", CB, scope="openid profile")
    doc = body(await redeem(h, secret, code, verifier))
    reply = await h.get("/userinfo", headers={"authorization": "Bearer " + doc["access_token"]})
    assert reply.status == 200
    assert body(reply) == {"sub": "u1", "preferred_username": "alice", "name": "Alice"}


async def test_userinfo_refuses_missing_forged_and_non_openid_tokens() -> None:
    h, secret = await setup()
    assert (await h.get("/userinfo")).status == 401
    bad = await h.get("/userinfo", headers={"authorization": "Bearer a.b.c"})
    assert bad.status == 401
    assert 'error="invalid_token"' in (bad.header("www-authenticate") or "")
    code, verifier = await h.code_flow("web", CB, scope="read")
    doc = body(await redeem(h, secret, code, verifier))
    reply = await h.get("/userinfo", headers={"authorization": "Bearer " + doc["access_token"]})
    assert reply.status == 403


async def test_a_replay_during_the_first_redemption_still_revokes_everything() -> None:
    """The replay finds no family yet (the first use is still issuing); the first use sees the
    replay mark after issuing and revokes what it issued itself."""
    h, secret = await setup()
    code, verifier = await h.code_flow("web", CB)
    real_create = h.repo.create_family
    replies = []

    async def create_after_a_replay(family, token_hash):  # type: ignore[no-untyped-def]
        replies.append(await redeem(h, secret, code, verifier))
        await real_create(family, token_hash)

    h.repo.create_family = create_after_a_replay  # type: ignore[method-assign]
    first = await redeem(h, secret, code, verifier)
    assert replies[0].status == 400
    assert first.status == 400
    assert body(first)["error"] == "invalid_grant"
    families = list(h.repo.families.values())  # type: ignore[attr-defined]
    assert [f.revoked_reason for f in families] == ["code_replay"]


async def test_authorize_by_post_form_works_like_get() -> None:
    h, _ = await setup()
    reply = await h.post("/authorize", authorize_query())
    assert reply.status == 303
    params = location_params(reply)
    assert params["state"] == "st-42"
    assert "code" in params
    h.users.signed_in = None
    login = await h.post("/authorize", authorize_query())
    return_to = parse_qs(urlsplit(login.header("location") or "").query)["return_to"][0]
    assert return_to.startswith("/authorize?")
    assert "code_challenge_method=S256" in return_to
