"""Admin token checks: every forged, foreign, expired or MFA-less token is refused, and
destructive operations need a login at most 10 minutes old."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from bastion.control.admin.auth import AdminPrincipal, require_recent_login
from bastion.control.admin.errors import StepUpRequired
from tests.unit.control.harness import AUDIENCE, NOW, Harness, make_harness
from tests.unit.jwt_factory import raw_token


@pytest.fixture
async def h() -> Harness:
    harness = make_harness()
    await harness.store.open()
    return harness


async def _me(h: Harness, headers: dict[str, str]) -> Any:
    async with h.client() as c:
        return await c.get("/admin/v1/me", headers=headers)


async def test_valid_mfa_token_is_accepted(h: Harness) -> None:
    r = await _me(h, h.auth(h.token(roles=("auditor", "gateway-user"))))
    assert r.status_code == 200
    assert r.json()["roles"] == ["auditor"]  # other roles do not count here
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.test"},
        {"aud": "https://api.test"},  # a token minted for another API
        {"aud": None},
        {"exp": int(NOW) - 1},
        {"exp": None},
        {"iat": int(NOW) + 3600},
        {"nbf": int(NOW) + 3600},
        {"sub": None},
        {"sub": 42},
        {"roles": "owner " * 100},
        {"amr": [1, 2]},
    ],
)
async def test_bad_claims_are_refused_opaquely(h: Harness, claims: dict[str, Any]) -> None:
    r = await _me(h, h.auth(h.token(**claims)))
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "authn.failed"
    assert "detail" not in r.json()  # the reason stays in the logs


async def test_forged_signature_is_refused(h: Harness) -> None:
    other = ECKey.generate_key("P-256", parameters={"kid": h.key.kid})  # same kid, other key
    header = {"alg": "ES256", "typ": "at+jwt", "kid": h.key.kid}
    payload = jwt.decode(h.token(), h.key).claims
    forged = jwt.encode(header, payload, other, algorithms=["ES256"])
    assert (await _me(h, h.auth(forged))).status_code == 401


async def test_alg_none_and_hmac_confusion_are_refused(h: Harness) -> None:
    payload = jwt.decode(h.token(), h.key).claims
    none = raw_token({"alg": "none", "typ": "at+jwt", "kid": h.key.kid}, payload)
    assert (await _me(h, h.auth(none))).status_code == 401
    secret = OctKey.import_key(b"k" * 32, parameters={"kid": h.key.kid})
    hs = jwt.encode({"alg": "HS256", "typ": "at+jwt", "kid": h.key.kid}, payload, secret)
    assert (await _me(h, h.auth(hs))).status_code == 401


async def test_wrong_typ_unknown_kid_and_garbage_are_refused(h: Harness) -> None:
    payload = jwt.decode(h.token(), h.key).claims
    id_token = jwt.encode({"alg": "ES256", "typ": "JWT", "kid": h.key.kid}, payload, h.key)
    unknown = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "nope"}, payload, h.key)
    for header in (
        h.auth(id_token),
        h.auth(unknown),
        {"authorization": "Basic YTpi"},
        {"authorization": "Bearer"},
        {"authorization": "Bearer a.b"},
        {"authorization": "Bearer " + "a" * 9000 + ".b.c"},
        {"authorization": "Bearer !!!.???.###"},
        {},
    ):
        r = await _me(h, header)
        assert r.status_code == 401, header
        assert r.headers["www-authenticate"].startswith("Bearer")


async def test_token_without_mfa_is_refused(h: Harness) -> None:
    for amr in (["pwd"], [], None):
        r = await _me(h, h.auth(h.token(amr=amr)))
        assert r.status_code == 401
        assert r.json()["code"] == "admin.mfa_required"
        assert "insufficient_user_authentication" in r.headers["www-authenticate"]


async def test_token_without_admin_role_is_forbidden(h: Harness) -> None:
    for roles in ((), ("gateway-user",)):
        r = await _me(h, h.auth(h.token(roles=roles)))
        assert r.status_code == 403
        assert r.json()["code"] == "access.forbidden"


async def test_revoked_token_is_refused() -> None:
    h = make_harness()

    async def revoked(claims: dict[str, Any]) -> bool:
        return bool(claims["jti"] == "stolen")

    h.api.verifier._is_revoked = revoked
    assert (await _me(h, h.auth(h.token(jti="stolen")))).status_code == 401
    assert (await _me(h, h.auth(h.token(jti="fine")))).status_code == 200


def _principal(auth_time: float | None) -> AdminPrincipal:
    return AdminPrincipal(
        "a", frozenset({"owner"}), frozenset({"a"}), ("otp",), auth_time, None, None
    )


def test_step_up_window() -> None:
    require_recent_login(_principal(NOW - 600), NOW)  # exactly 10 minutes: still fine
    require_recent_login(_principal(NOW + 10), NOW)  # small clock skew
    for stale in (NOW - 601, None, NOW + 3600):
        with pytest.raises(StepUpRequired) as info:
            require_recent_login(_principal(stale), NOW)
        assert 'max_age="600"' in dict(info.value.headers)["www-authenticate"]


def test_audience_is_required() -> None:
    from bastion.control.admin.auth import AdminTokenVerifier
    from bastion.core.clock import ManualClock

    async def keys() -> Any:
        raise AssertionError

    with pytest.raises(ValueError, match="audience"):
        AdminTokenVerifier(issuer="https://a", audience="", keys=keys, clock=ManualClock())
    assert AUDIENCE


async def test_only_allowed_clients_tokens_are_accepted(h: Harness) -> None:
    h.api.verifier._allowed_clients = frozenset({"bastion-cli"})
    assert (await _me(h, h.auth(h.token()))).status_code == 200  # client_id bastion-cli
    assert (await _me(h, h.auth(h.token(client_id="some-app")))).status_code == 401
    assert (await _me(h, h.auth(h.token(client_id=None)))).status_code == 401
