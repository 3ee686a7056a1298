"""Refresh-token rotation: the idempotent retry, races, reuse detection, lifetimes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion.authserver.oauth.refresh import open_response, seal_response
from tests.unit.authserver.oauth.harness import Harness, body, make_harness

CB = "https://app.example/cb"


async def login(**cfg: Any) -> tuple[Harness, str, dict[str, Any]]:
    h = await make_harness(**cfg)
    secret = await h.register(
        "web",
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=(CB,),
        scopes=("openid", "read", "write"),
        introspect=True,
    )
    h.users.sign_in("u1", at=h.clock.now())
    code, verifier = await h.code_flow("web", CB, scope="read write")
    reply = await h.redeem_code("web", secret, CB, code, verifier)
    assert reply.status == 200
    return h, secret, body(reply)


async def refresh(h: Harness, secret: str, token: str, client: str = "web", **form: str) -> Any:
    reply = await h.post(
        "/token",
        {"grant_type": "refresh_token", "refresh_token": token, **form},
        basic=(client, secret),
    )
    return reply.status, body(reply)


async def test_rotation_gives_a_new_pair_and_the_new_token_works() -> None:
    h, secret, first = await login()
    status, second = await refresh(h, secret, first["refresh_token"])
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == "read write"
    status, third = await refresh(h, secret, second["refresh_token"])
    assert status == 200
    assert third["refresh_token"] not in (first["refresh_token"], second["refresh_token"])


async def test_retry_within_the_grace_window_gets_the_same_response() -> None:
    h, secret, first = await login()
    _, second = await refresh(h, secret, first["refresh_token"])
    h.clock.advance(29)
    status, again = await refresh(h, secret, first["refresh_token"])
    assert status == 200
    assert again == second
    # ... and the family is intact: the new token still rotates.
    status, _ = await refresh(h, secret, second["refresh_token"])
    assert status == 200


async def test_five_concurrent_refreshes_get_one_pair_and_the_family_survives() -> None:
    h, secret, first = await login()
    results = await asyncio.gather(*(refresh(h, secret, first["refresh_token"]) for _ in range(5)))
    assert [s for s, _ in results] == [200] * 5
    pairs = {(d["access_token"], d["refresh_token"]) for _, d in results}
    assert len(pairs) == 1
    ((_, new_refresh),) = pairs
    status, _ = await refresh(h, secret, new_refresh)
    assert status == 200
    assert not [e for topic, e in h.events if topic == "security"]


async def test_reuse_after_the_window_revokes_the_family() -> None:
    h, secret, first = await login()
    _, second = await refresh(h, secret, first["refresh_token"])
    h.clock.advance(31)
    status, doc = await refresh(h, secret, first["refresh_token"])
    assert status == 400
    assert doc["error"] == "invalid_grant"
    # The legitimate holder's newer token is dead too: the whole family went.
    status, _ = await refresh(h, secret, second["refresh_token"])
    assert status == 400
    alerts = [e for topic, e in h.events if topic == "security"]
    assert [a["event.action"] for a in alerts] == ["oauth.refresh_token_reuse"]
    assert alerts[0]["user.id"] == "u1"
    # The last access token of the family is revoked with it.
    seen = await h.post("/introspect", {"token": second["access_token"]}, basic=("web", secret))
    assert body(seen) == {"active": False}


async def test_a_token_two_generations_old_is_reuse_even_inside_the_window() -> None:
    h, secret, first = await login()
    _, second = await refresh(h, secret, first["refresh_token"])
    _, third = await refresh(h, secret, second["refresh_token"])
    status, _ = await refresh(h, secret, first["refresh_token"])
    assert status == 400
    assert (await refresh(h, secret, third["refresh_token"]))[0] == 400


async def test_another_client_presenting_the_token_does_not_kill_the_family() -> None:
    h, secret, first = await login()
    other = await h.register("other", grant_types=("refresh_token",))
    status, doc = await refresh(h, other, first["refresh_token"], client="other")
    assert (status, doc["error"]) == (400, "invalid_grant")
    assert (await refresh(h, secret, first["refresh_token"]))[0] == 200


async def test_unknown_and_malformed_refresh_tokens() -> None:
    h, secret, _ = await login()
    for token in ("brt_" + "A" * 43, "nope", "brt_" + "x" * 500):
        status, doc = await refresh(h, secret, token)
        assert (status, doc["error"]) == (400, "invalid_grant")


async def test_idle_timeout_and_absolute_lifetime() -> None:
    h, secret, first = await login(refresh={"idle_timeout": "1h", "absolute_lifetime": "3h"})
    h.clock.advance(3601)
    assert (await refresh(h, secret, first["refresh_token"]))[0] == 400
    h2, secret2, first2 = await login(refresh={"idle_timeout": "1h", "absolute_lifetime": "3h"})
    token = first2["refresh_token"]
    statuses = []
    for _ in range(4):
        h2.clock.advance(3000)  # never idle for an hour
        status, doc = await refresh(h2, secret2, token)
        statuses.append(status)
        token = doc.get("refresh_token", token)
    assert statuses == [200, 200, 200, 400]  # 12000 s > 3 h: absolute lifetime


async def test_scope_can_be_narrowed_but_not_widened() -> None:
    h, secret, first = await login()
    status, doc = await refresh(h, secret, first["refresh_token"], scope="read")
    assert status == 200
    assert doc["scope"] == "read"
    claims = await h.claims(doc["access_token"])
    assert claims["scope"] == "read"
    status, doc = await refresh(h, secret, doc["refresh_token"], scope="read admin")
    assert (status, doc["error"]) == (400, "invalid_scope")


async def test_revoking_the_refresh_token_ends_the_family() -> None:
    h, secret, first = await login()
    reply = await h.post("/revoke", {"token": first["refresh_token"]}, basic=("web", secret))
    assert reply.status == 200
    assert (await refresh(h, secret, first["refresh_token"]))[0] == 400
    seen = await h.post("/introspect", {"token": first["access_token"]}, basic=("web", secret))
    assert body(seen) == {"active": False}


async def test_disabling_a_user_revokes_their_families() -> None:
    h, secret, first = await login()
    assert len(h.users.on_disable) == 1
    await h.users.on_disable[0]("u1")
    assert (await refresh(h, secret, first["refresh_token"]))[0] == 400


def test_the_stored_retry_response_opens_only_with_the_old_token() -> None:
    sealed = seal_response("brt_old", "fam", 0, b'{"a":1}')
    assert open_response("brt_old", "fam", 0, sealed) == b'{"a":1}'
    assert open_response("brt_other", "fam", 0, sealed) is None
    assert open_response("brt_old", "fam2", 0, sealed) is None
    assert open_response("brt_old", "fam", 1, sealed) is None
    assert open_response("brt_old", "fam", 0, "!!") is None


@pytest.mark.parametrize("grace", ["0s"])
async def test_grace_zero_means_any_second_use_is_reuse(grace: str) -> None:
    h, secret, first = await login(refresh={"grace": grace})
    await refresh(h, secret, first["refresh_token"])
    h.clock.advance(0.5)
    assert (await refresh(h, secret, first["refresh_token"]))[0] == 400


async def test_refresh_tokens_are_introspected_only_for_their_client_and_generation() -> None:
    h, secret, first = await login(refresh={"idle_timeout": "1h", "absolute_lifetime": "3h"})
    reply = await h.post("/introspect", {"token": first["refresh_token"]}, basic=("web", secret))
    doc = body(reply)
    assert doc["active"] is True
    assert doc["token_type"] == "refresh_token"
    assert (doc["client_id"], doc["sub"], doc["scope"]) == ("web", "u1", "read write")
    assert doc["exp"] == int(h.clock.now() + 3600)  # the idle timeout comes first
    other = await h.register("rs", grant_types=(), introspect=True)
    seen = await h.post("/introspect", {"token": first["refresh_token"]}, basic=("rs", other))
    assert body(seen) == {"active": False}
    _, second = await refresh(h, secret, first["refresh_token"])
    old = await h.post("/introspect", {"token": first["refresh_token"]}, basic=("web", secret))
    assert body(old) == {"active": False}  # rotated away (the retry window is not a new life)
    new = await h.post("/introspect", {"token": second["refresh_token"]}, basic=("web", secret))
    assert body(new)["active"] is True


async def test_a_public_client_gets_no_grace_window_a_thief_cannot_take_the_current_pair() -> None:
    """The attack: a thief holding a rotated-out refresh token of a public client (read from
    an SPA's storage) presents it within the grace window after the victim refreshed."""
    h = await make_harness()
    await h.register(
        "spa",
        auth_method="none",
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=(CB,),
        scopes=("openid", "read"),
    )
    h.users.sign_in("u1", at=h.clock.now())
    code, verifier = await h.code_flow("spa", CB, scope="openid read")

    async def post(form: dict[str, str]) -> Any:
        reply = await h.post("/token", {**form, "client_id": "spa"})
        return reply.status, body(reply)

    status, first = await post(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CB,
            "code_verifier": verifier,
        }
    )
    assert status == 200
    stolen = first["refresh_token"]
    status, victim = await post({"grant_type": "refresh_token", "refresh_token": stolen})
    assert status == 200
    h.clock.advance(5)  # well inside auth.refresh.grace (30 s)
    status, thief = await post({"grant_type": "refresh_token", "refresh_token": stolen})
    assert status == 400
    assert thief["error"] == "invalid_grant"
    assert "refresh_token" not in thief
    # reuse detected: the family is revoked, so the victim's current token is dead too ...
    status, _ = await post(
        {"grant_type": "refresh_token", "refresh_token": victim["refresh_token"]}
    )
    assert status == 400
    # ... and the security team heard of it.
    actions = [e["event.action"] for topic, e in h.events if topic == "security"]
    assert actions == ["oauth.refresh_token_reuse"]
