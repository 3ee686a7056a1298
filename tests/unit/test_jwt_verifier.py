"""JwtVerifier: every test performs the attack (or the failure) it names and checks the reason,
and, where it matters, that no signature check ran."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, OctKey

from bastion.core.clock import ManualClock
from bastion.core.revocation import RevocationState
from bastion.events.freshness import Freshness, GuardedRevocationState
from bastion.gateway.layers.authn.jwt import JwtVerifier, TokenRejected
from tests.unit.jwt_factory import (
    AUDIENCE,
    HMAC_SECRET,
    ISSUER,
    NOW,
    JwksServer,
    b64,
    claims,
    ec_key,
    issuer_config,
    jwks,
    raw_token,
    rsa_key,
    sign,
)


class Crypto:
    """Counts signature checks (calls of joserfc.jwt.decode) and before_crypto calls."""

    def __init__(self) -> None:
        self.decodes = 0
        self.budget_calls = 0
        self.budget_ok = True

    def before_crypto(self) -> bool:
        self.budget_calls += 1
        return self.budget_ok


@pytest.fixture
def crypto(monkeypatch: pytest.MonkeyPatch) -> Crypto:
    counter = Crypto()
    real = jose_jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        counter.decodes += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(jose_jwt, "decode", counting)
    return counter


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def key() -> ECKey:
    return ec_key("k1")


Make = Callable[..., Any]


@pytest.fixture
def make(tmp_path: Path, clock: ManualClock, key: ECKey) -> Make:
    """Build and start a verifier whose one issuer reads a JWKS file holding ``key``."""

    async def build(*extra_keys: Any, issuers: list[Any] | None = None, **kw: Any) -> JwtVerifier:
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps(jwks(key, *extra_keys)))
        cfgs = issuers or [issuer_config(jwks_file=str(path), **kw)]
        verifier = JwtVerifier(cfgs, clock, RevocationState(clock))
        await verifier.start()
        return verifier

    return build


async def check(
    v: JwtVerifier,
    token: str,
    crypto: Crypto,
    *,
    audience: str | None = None,
    issuers: frozenset[str] | None = None,
) -> Any:
    return await v.verify(
        token, audience=audience, allowed_issuers=issuers, before_crypto=crypto.before_crypto
    )


async def rejected(v: JwtVerifier, token: str, crypto: Crypto, **kw: Any) -> str:
    with pytest.raises(TokenRejected) as info:
        await check(v, token, crypto, **kw)
    return info.value.reason


# --- the happy path --------------------------------------------------------------------------


async def test_valid_token_gives_principal(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    p = await check(v, sign(key, roles=["admin", "ops"]), crypto)
    assert p.kind == "jwt"
    assert p.subject == "user-1"
    assert p.client_id == "client-1"
    assert p.scopes == frozenset({"read", "write"})
    assert p.roles == frozenset({"admin", "ops"})
    assert p.issuer == ISSUER
    assert p.key_id == "jti-1"
    assert p.claims["aud"] == AUDIENCE
    assert crypto.decodes == 1


async def test_scp_list_azp_and_odd_roles(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    tok = sign(key, scope=None, scp=["a", "b"], client_id=None, azp="app-7", roles="admin")
    p = await check(v, tok, crypto)
    assert p.scopes == frozenset({"a", "b"})
    assert p.client_id == "app-7"
    assert p.roles == frozenset()  # only a list of strings counts


# --- time claims -----------------------------------------------------------------------------


async def test_expired_token(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    assert await rejected(v, sign(key, exp=int(NOW) - 61), crypto) == "jwt: expired"


async def test_leeway_on_exp_nbf_iat(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()  # leeway 60 s by default
    await check(v, sign(key, exp=int(NOW) - 30, jti="a"), crypto)
    await check(v, sign(key, nbf=int(NOW) + 30, jti="b"), crypto)
    await check(v, sign(key, iat=int(NOW) + 30, jti="c"), crypto)
    strict = await make(leeway=0)
    assert await rejected(strict, sign(key, exp=int(NOW) - 1), crypto) == "jwt: expired"
    assert await rejected(strict, sign(key, nbf=int(NOW) + 1), crypto) == "jwt: not yet valid"


async def test_nbf_in_the_future(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    assert await rejected(v, sign(key, nbf=int(NOW) + 120), crypto) == "jwt: not yet valid"


async def test_iat_in_the_future(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    assert await rejected(v, sign(key, iat=int(NOW) + 120), crypto) == "jwt: issued in the future"


@pytest.mark.parametrize("claim", ["aud", "exp", "sub", "iss"])
async def test_missing_required_claim(make: Make, key: ECKey, crypto: Crypto, claim: str) -> None:
    v = await make()
    reason = await rejected(v, sign(key, **{claim: None}), crypto)
    assert reason == ("jwt: unknown issuer" if claim == "iss" else f"jwt: missing claim {claim}")


async def test_non_numeric_exp(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    assert await rejected(v, sign(key, exp="tomorrow"), crypto) == "jwt: bad exp"


# --- issuer and audience ---------------------------------------------------------------------


async def test_unknown_issuer_rejected_before_crypto(
    make: Make, key: ECKey, crypto: Crypto
) -> None:
    v = await make()
    assert await rejected(v, sign(key, iss="https://evil.test"), crypto) == "jwt: unknown issuer"
    assert crypto.decodes == 0
    assert crypto.budget_calls == 0


async def test_issuer_not_allowed_on_route(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    reason = await rejected(v, sign(key), crypto, issuers=frozenset({"https://other"}))
    assert reason == "jwt: issuer not allowed on route"
    assert crypto.decodes == 0


async def test_wrong_audience(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    tok = sign(key, aud="https://other-api.test")
    assert await rejected(v, tok, crypto) == "jwt: wrong audience"


async def test_route_audience_overrides_issuer_list(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    tok = sign(key, aud=[AUDIENCE, "billing"])
    assert (await check(v, tok, crypto, audience="billing")).subject == "user-1"
    assert await rejected(v, sign(key, jti="j2"), crypto, audience="billing") == (
        "jwt: wrong audience"
    )


async def test_cache_hit_still_checks_route_audience_and_issuer(
    make: Make, key: ECKey, crypto: Crypto
) -> None:
    v = await make()
    tok = sign(key)
    await check(v, tok, crypto)
    assert await rejected(v, tok, crypto, audience="billing") == "jwt: wrong audience"
    reason = await rejected(v, tok, crypto, issuers=frozenset({"https://other"}))
    assert reason == "jwt: issuer not allowed on route"
    assert crypto.decodes == 1


# --- forged tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", [b"", b"x"])
async def test_alg_none(make: Make, crypto: Crypto, alg: str, signature: bytes) -> None:
    v = await make()
    tok = raw_token({"alg": alg, "typ": "JWT", "kid": "k1"}, claims(sub="admin"), signature)
    assert await rejected(v, tok, crypto) in {"jwt: malformed", "jwt: alg not allowed"}
    assert crypto.decodes == 0
    assert crypto.budget_calls == 0


async def test_hs256_signed_with_the_rsa_public_key_is_rejected(
    tmp_path: Path, clock: ManualClock, crypto: Crypto
) -> None:
    rsa = rsa_key("r1")
    path = tmp_path / "rsa.json"
    path.write_text(json.dumps(jwks(rsa)))
    cfg = issuer_config(jwks_file=str(path), algorithms=["RS256"])
    v = JwtVerifier([cfg], clock, RevocationState(clock))
    await v.start()
    assert (await check(v, sign(rsa, "RS256"), crypto)).subject == "user-1"
    # The attack: HMAC the signing input with the public key's PEM as the shared secret.
    pem = rsa.as_pem(private=False)
    header, payload = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "r1"}).encode()),
        b64(json.dumps(claims(sub="admin", jti="forged")).encode()),
    )
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64(mac)}"
    assert await rejected(v, forged, crypto) == "jwt: alg not allowed"
    assert crypto.decodes == 1  # only the genuine token was checked


async def test_alg_and_key_type_must_match(
    tmp_path: Path, clock: ManualClock, crypto: Crypto
) -> None:
    ec = ec_key("e1")
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(jwks(ec, rsa_key("r1"))))
    cfg = issuer_config(jwks_file=str(path), algorithms=["RS256", "ES256"])
    v = JwtVerifier([cfg], clock, RevocationState(clock))
    await v.start()
    # An RS256 header naming the EC key's kid: refused before any crypto.
    tok = raw_token({"alg": "RS256", "kid": "e1"}, claims(), b"sig")
    assert await rejected(v, tok, crypto) == "jwt: key type does not match alg"
    assert crypto.decodes == 0


async def test_hmac_issuer_only_accepts_its_own_secret(clock: ManualClock, crypto: Crypto) -> None:
    cfg = issuer_config(hmac_secret=HMAC_SECRET, algorithms=["HS256"])
    v = JwtVerifier([cfg], clock, RevocationState(clock))
    await v.start()
    good = OctKey.import_key(HMAC_SECRET.encode())
    assert (await check(v, sign(good, "HS256"), crypto)).subject == "user-1"
    other = OctKey.import_key(b"another-secret-of-at-least-32-bytes!!")
    assert await rejected(v, sign(other, "HS256", jti="x"), crypto) == "jwt: bad signature"
    assert await rejected(v, sign(ec_key("k1"), "ES256", jti="y"), crypto) == (
        "jwt: alg not allowed"
    )


async def test_tampered_payload(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    header, _, signature = sign(key).split(".")
    evil = b64(json.dumps(claims(sub="admin", scope="admin")).encode())
    assert await rejected(v, f"{header}.{evil}.{signature}", crypto) == "jwt: bad signature"
    assert crypto.decodes == 1


async def test_tampered_signature(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    tok = sign(key)
    flipped = tok[:-2] + ("AA" if tok[-2:] != "AA" else "BB")
    assert await rejected(v, flipped, crypto) == "jwt: bad signature"


async def test_token_signed_by_an_unlisted_key_with_a_listed_kid(
    make: Make, crypto: Crypto
) -> None:
    v = await make()
    impostor = ec_key("k1")  # same kid, different key
    assert await rejected(v, sign(impostor), crypto) == "jwt: bad signature"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "é.é.é",
        "a b.c.d",
        b64(b"not json") + "." + b64(b"{}") + ".c2ln",
        b64(b'{"alg":"ES256"}') + "." + b64(b"[1,2]") + ".c2ln",
        b64(b'{"alg":"ES256"}') + "." + b64(b"not json") + ".c2ln",
        b64(b'{"alg":"ES256","b64":false}') + "." + b64(b"{}") + ".c2ln",
        b64(b'{"alg":7}') + "." + b64(b"{}") + ".c2ln",
    ],
)
async def test_malformed_tokens(make: Make, crypto: Crypto, token: str) -> None:
    v = await make()
    assert await rejected(v, token, crypto) in {"jwt: malformed", "jwt: alg not allowed"}
    assert crypto.decodes == 0


async def test_typ_must_be_an_access_token_type(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    await check(v, sign(key, header={"typ": "application/at+jwt"}, jti="a"), crypto)
    await check(v, sign(key, header={"typ": None}, jti="b"), crypto)
    reason = await rejected(v, sign(key, header={"typ": "dpop+jwt"}, jti="c"), crypto)
    assert reason == "jwt: wrong typ"


@pytest.mark.parametrize("typ", ["JWT", "jwt", None, "id_token+jwt"])
async def test_require_at_jwt_refuses_id_tokens_and_untyped_jwts(
    make: Make, key: ECKey, crypto: Crypto, typ: object
) -> None:
    """An issuer's ID tokens are signed with its access-token keys (RFC 9068 §4): with
    require_at_jwt only typ at+jwt passes, and the refusal comes before any signature check."""
    v = await make(require_at_jwt=True)
    reason = await rejected(v, sign(key, header={"typ": typ}, jti="id"), crypto)
    assert reason in {"jwt: not an access token (typ)", "jwt: wrong typ"}
    assert crypto.decodes == 0
    await check(v, sign(key, header={"typ": "at+jwt"}, jti="ok1"), crypto)
    await check(v, sign(key, header={"typ": "Application/AT+JWT"}, jti="ok2"), crypto)


def test_bastion_up_trusts_its_own_issuer_for_access_tokens_only() -> None:
    from bastion.config import parse_config
    from bastion.gateway.serve import with_local_issuer

    cfg = parse_config(
        {
            "listeners": [{"bind": "127.0.0.1:0"}],
            "routes": [
                {"name": "r", "upstream": "http://127.0.0.1:9", "authn": {"methods": ["jwt"]}}
            ],
            "auth": {
                "issuer": "https://auth.example",
                "bind": "127.0.0.1:9001",
                "client_secret_pepper": "p" * 32,
            },
        },
        {},
    )
    [local] = [i for i in with_local_issuer(cfg).issuers if i.issuer == "https://auth.example"]
    assert local.require_at_jwt is True


async def test_unknown_crit_header_is_rejected(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    tok = raw_token({"alg": "ES256", "kid": "k1", "crit": ["exp-x"], "exp-x": 1}, claims(), b"s")
    assert await rejected(v, tok, crypto) == "jwt: unsupported header"
    assert crypto.decodes == 0


async def test_oversized_token_rejected_before_any_parsing(
    make: Make, key: ECKey, crypto: Crypto
) -> None:
    v = await make()
    huge = sign(key, pad="x" * 9000)
    assert await rejected(v, huge, crypto) == "jwt: too large"
    small_limit = await make(max_token_bytes=256)
    assert await rejected(small_limit, sign(key), crypto) == "jwt: too large"
    assert crypto.decodes == 0
    assert crypto.budget_calls == 0


async def test_verify_budget_exhausted_rejects_before_crypto(
    make: Make, key: ECKey, crypto: Crypto
) -> None:
    v = await make()
    crypto.budget_ok = False
    assert await rejected(v, sign(key), crypto) == "jwt: verify budget exceeded"
    assert crypto.budget_calls == 1
    assert crypto.decodes == 0


# --- revocation and the verified-token cache -------------------------------------------------


async def test_revoked_jti_and_subject_not_before(
    make: Make, key: ECKey, crypto: Crypto, clock: ManualClock
) -> None:
    v = await make()
    v._revocations.revoke_jti("jti-1", NOW + 600)
    assert await rejected(v, sign(key), crypto) == "jwt: revoked"
    v._revocations.raise_not_before("user-1", ISSUER, NOW)
    assert await rejected(v, sign(key, jti="other"), crypto) == "jwt: revoked"
    assert (await check(v, sign(key, jti="new", iat=int(NOW)), crypto)).key_id == "new"


async def test_cache_hit_skips_crypto(make: Make, key: ECKey, crypto: Crypto) -> None:
    v = await make()
    tok = sign(key)
    first = await check(v, tok, crypto)
    for _ in range(5):
        assert await check(v, tok, crypto) is first
    assert crypto.decodes == 1
    assert crypto.budget_calls == 1


async def test_cache_hit_still_rejects_after_exp(
    make: Make, key: ECKey, crypto: Crypto, clock: ManualClock
) -> None:
    v = await make(leeway=0)
    tok = sign(key, exp=int(NOW) + 100)
    await check(v, tok, crypto)
    clock.advance(99)
    await check(v, tok, crypto)
    clock.advance(1)
    assert await rejected(v, tok, crypto) == "jwt: expired"
    assert crypto.decodes == 1


async def test_cache_hit_still_rejects_after_revocation(
    make: Make, key: ECKey, crypto: Crypto
) -> None:
    v = await make()
    tok = sign(key)
    await check(v, tok, crypto)
    v._revocations.apply({"type": "token.revoked", "jti": "jti-1", "expires_at": NOW + 600})
    assert await rejected(v, tok, crypto) == "jwt: revoked"
    assert crypto.decodes == 1


@pytest.mark.parametrize(
    "revoke",
    [
        lambda r: r.revoke_jti("jti-1", NOW + 600),
        lambda r: r.raise_not_before("user-1", ISSUER, NOW),
        lambda r: r.raise_not_before("user-1", None, NOW),
        lambda r: r.revoke_client("client-1", NOW, NOW + 600),
    ],
)
async def test_cache_hit_skips_the_lookups_until_something_is_revoked(
    make: Make,
    key: ECKey,
    crypto: Crypto,
    monkeypatch: pytest.MonkeyPatch,
    revoke: Callable[[RevocationState], None],
) -> None:
    v = await make()
    tok, other = sign(key), sign(key, sub="user-2", jti="jti-2", client_id="client-2")
    await check(v, tok, crypto)
    await check(v, other, crypto)
    lookups: list[str] = []
    real = RevocationState.is_token_revoked

    def counting(self: RevocationState, *args: Any) -> bool:
        lookups.append("token")
        return real(self, *args)

    monkeypatch.setattr(RevocationState, "is_token_revoked", counting)
    for _ in range(3):
        await check(v, tok, crypto)
    assert lookups == []  # nothing revoked since the token was checked: version unchanged
    v._revocations.revoke_jti("unrelated", NOW + 600)
    await check(v, tok, crypto)
    await check(v, tok, crypto)
    assert lookups == ["token"]  # looked up once after the change, then skipped again
    revoke(v._revocations)
    assert await rejected(v, tok, crypto) == "jwt: revoked"
    assert await rejected(v, tok, crypto) == "jwt: revoked"
    assert (await check(v, other, crypto)).subject == "user-2"
    assert crypto.decodes == 2


class _AlsoRevoked(RevocationState):
    """A state whose per-token answer is not the lists' alone: never skipped."""

    revoked = False

    def is_token_revoked(
        self, issuer: str | None, subject: str, jti: str | None, issued_at: float | None
    ) -> bool:
        return self.revoked or super().is_token_revoked(issuer, subject, jti, issued_at)


async def test_cache_hit_asks_a_state_with_its_own_lookups_every_time(
    tmp_path: Path, key: ECKey, clock: ManualClock, crypto: Crypto
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(key)))
    state = _AlsoRevoked(clock)
    v = JwtVerifier([issuer_config(jwks_file=str(path))], clock, state)
    await v.start()
    tok = sign(key)
    await check(v, tok, crypto)
    await check(v, tok, crypto)
    state.revoked = True  # no version change
    assert await rejected(v, tok, crypto) == "jwt: revoked"


async def test_guarded_state_refuses_cached_tokens_while_stale(
    tmp_path: Path, key: ECKey, clock: ManualClock, crypto: Crypto
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(key)))
    freshness = Freshness(clock, 5.0)
    freshness.confirm()
    state = GuardedRevocationState(clock, freshness)
    v = JwtVerifier([issuer_config(jwks_file=str(path))], clock, state)
    await v.start()
    tok = sign(key)
    await check(v, tok, crypto)
    await check(v, tok, crypto)
    clock.advance(6)
    assert await rejected(v, tok, crypto) == "jwt: revocation state not current"
    freshness.confirm()
    await check(v, tok, crypto)
    state.revoke_jti("jti-1", NOW + 600)
    assert await rejected(v, tok, crypto) == "jwt: revoked"
    assert crypto.decodes == 1


async def test_cache_entries_live_at_most_cache_ttl(
    tmp_path: Path, key: ECKey, clock: ManualClock, crypto: Crypto
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(key)))
    v = JwtVerifier(
        [issuer_config(jwks_file=str(path))], clock, RevocationState(clock), cache_ttl=10
    )
    await v.start()
    tok = sign(key)
    await check(v, tok, crypto)
    clock.advance(11)
    await check(v, tok, crypto)
    assert crypto.decodes == 2


async def test_cache_is_bounded(
    tmp_path: Path, key: ECKey, clock: ManualClock, crypto: Crypto
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(key)))
    v = JwtVerifier(
        [issuer_config(jwks_file=str(path))], clock, RevocationState(clock), cache_size=4
    )
    await v.start()
    for i in range(20):
        await check(v, sign(key, jti=f"j{i}"), crypto)
        assert v.cache_len <= 4


# --- keys from a JWKS endpoint ---------------------------------------------------------------


@pytest.fixture
def server(key: ECKey) -> Iterator[JwksServer]:
    srv = JwksServer(jwks(key)).start()
    yield srv
    srv.stop()


async def url_verifier(server: JwksServer, clock: ManualClock) -> JwtVerifier:
    cfg = issuer_config(
        jwks_url=server.url,
        unsafe_allow_http_jwks=True,
        jwks_refresh=300,
        jwks_stale_max=600,
        unknown_kid_cooldown=30,
        jwks_timeout=2,
    )
    v = JwtVerifier([cfg], clock, RevocationState(clock))
    await v.start()
    return v


async def test_unknown_kid_one_refetch_then_cooldown(
    server: JwksServer, clock: ManualClock, crypto: Crypto
) -> None:
    v = await url_verifier(server, clock)
    try:
        assert server.hits == 1
        assert await rejected(v, sign(ec_key("forged-1")), crypto) == "jwt: unknown kid"
        assert server.hits == 2
        assert await rejected(v, sign(ec_key("forged-2")), crypto) == "jwt: unknown kid"
        assert server.hits == 2  # inside the cooldown: no refetch
        assert crypto.decodes == 0
        # A real rotation: the new kid is found by the first refetch after the cooldown.
        new = ec_key("k2")
        server.document = jwks(new)
        clock.advance(30)
        assert (await check(v, sign(new), crypto)).subject == "user-1"
        assert server.hits == 3
    finally:
        await v.aclose()


async def test_rotation_clears_the_cache(
    server: JwksServer, key: ECKey, clock: ManualClock, crypto: Crypto
) -> None:
    v = await url_verifier(server, clock)
    try:
        await check(v, sign(key), crypto)
        assert v.cache_len == 1
        server.document = jwks(ec_key("k2"))
        assert await v.keys(ISSUER).refresh()
        assert v.cache_len == 0
        assert await rejected(v, sign(key, jti="again"), crypto) == "jwt: unknown kid"
    finally:
        await v.aclose()


async def test_jwks_down_stale_keys_then_fail_closed(
    server: JwksServer, key: ECKey, clock: ManualClock, crypto: Crypto
) -> None:
    v = await url_verifier(server, clock)
    try:
        cached = sign(key, exp=int(NOW) + 3600, jti="cached")
        await check(v, cached, crypto)
        server.status = 503
        clock.advance(300)
        assert await v.keys(ISSUER).refresh() is False
        fresh = sign(key, iat=int(clock.now()), exp=int(clock.now()) + 3600, jti="fresh")
        assert (await check(v, fresh, crypto)).key_id == "fresh"  # stale keys still work
        clock.advance(601)  # past jwks_refresh + jwks_stale_max since the last good fetch
        late = sign(key, iat=int(clock.now()), exp=int(clock.now()) + 3600, jti="late")
        assert await rejected(v, late, crypto) == "jwt: keys unavailable"
        assert await rejected(v, cached, crypto) == "jwt: keys unavailable"
        server.status = 200
        assert await v.keys(ISSUER).refresh() is True
        assert (await check(v, late, crypto)).key_id == "late"
    finally:
        await v.aclose()


def test_duplicate_issuers_are_refused(clock: ManualClock) -> None:
    cfg = issuer_config(hmac_secret=HMAC_SECRET, algorithms=["HS256"])
    with pytest.raises(Exception, match="configured twice"):
        JwtVerifier([cfg, cfg], clock, RevocationState(clock))


async def test_key_whose_curve_does_not_fit_the_alg_is_refused(
    tmp_path: Path, clock: ManualClock, crypto: Crypto
) -> None:
    p384 = ECKey.generate_key("P-384", parameters={"kid": "p384"})
    path = tmp_path / "p384.json"
    path.write_text(json.dumps(jwks(p384)))
    v = JwtVerifier([issuer_config(jwks_file=str(path))], clock, RevocationState(clock))
    await v.start()
    header, payload = b64(b'{"alg":"ES256","kid":"p384"}'), b64(json.dumps(claims()).encode())
    assert await rejected(v, f"{header}.{payload}.{b64(b'x' * 64)}", crypto) == (
        "jwt: key rejected for alg"
    )


# --- verify_now: the same decisions without awaiting -----------------------------------------


def now_or_rejected(v: JwtVerifier, token: str, crypto: Crypto | None, **kw: Any) -> Any:
    """verify_now's principal, None, or the reason it raised."""
    try:
        return v.verify_now(
            token,
            kw.get("audience"),
            kw.get("issuers"),
            crypto.before_crypto if crypto is not None else None,
        )
    except TokenRejected as exc:
        return exc.reason


async def test_verify_now_answers_a_cache_hit_without_the_budget(
    make: Make, key: ECKey, crypto: Crypto, clock: ManualClock
) -> None:
    v = await make()
    token = sign(key)
    assert now_or_rejected(v, token, None) is None  # not cached, and no budget given: not verified
    assert crypto.decodes == 0
    first = await check(v, token, crypto)
    assert crypto.decodes == 1
    assert now_or_rejected(v, token, None) is first  # the very same Principal object
    assert crypto.decodes == crypto.budget_calls == 1
    assert now_or_rejected(v, token, None, audience="other") == "jwt: wrong audience"
    assert now_or_rejected(v, token, None, issuers=frozenset({"x"})) == (
        "jwt: issuer not allowed on route"
    )
    v._revocations.revoke_jti("jti-1", NOW + 3600)
    assert now_or_rejected(v, token, None) == "jwt: revoked"
    clock.advance(600 + 61)
    assert now_or_rejected(v, token, None) == "jwt: expired"


async def test_verify_now_verifies_a_new_token_whose_key_is_known(
    make: Make, key: ECKey, crypto: Crypto
) -> None:
    v = await make()
    principal = now_or_rejected(v, sign(key), crypto)
    assert principal.subject == "user-1"
    assert crypto.decodes == crypto.budget_calls == 1
    assert v.cache_len == 1
    crypto.budget_ok = False
    assert now_or_rejected(v, sign(key, jti="2"), crypto) == "jwt: verify budget exceeded"
    assert crypto.decodes == 1


@pytest.mark.parametrize(
    ("token_of", "reason"),
    [
        (lambda k: "not-a-jwt", "jwt: malformed"),
        (lambda k: sign(k, iss="https://unknown.test"), "jwt: unknown issuer"),
        (lambda k: sign(k, exp=int(NOW) - 3600), "jwt: expired"),
        (lambda k: sign(k)[:-4] + "AAAA", "jwt: bad signature"),
        (lambda k: "x" * 9000, "jwt: too large"),
    ],
)
async def test_verify_now_and_verify_refuse_alike(
    make: Make, key: ECKey, crypto: Crypto, token_of: Callable[[ECKey], str], reason: str
) -> None:
    v = await make()
    token = token_of(key)
    assert now_or_rejected(v, token, crypto) == reason
    assert await rejected(v, token, crypto) == reason


async def test_verify_now_needs_io_only_for_a_kid_a_refetch_may_bring(
    server: JwksServer, clock: ManualClock, crypto: Crypto
) -> None:
    v = await url_verifier(server, clock)
    try:
        forged = sign(ec_key("forged-1"))
        assert now_or_rejected(v, forged, crypto) is None  # a refetch may know the kid
        assert server.hits == 1  # ... but verify_now never fetched
        assert await rejected(v, forged, crypto) == "jwt: unknown kid"
        assert server.hits == 2
        # Inside the cooldown no refetch would happen: refused at once, synchronously.
        assert now_or_rejected(v, sign(ec_key("forged-2")), crypto) == "jwt: unknown kid"
        assert crypto.decodes == 0
        clock.advance(30)
        assert now_or_rejected(v, sign(ec_key("forged-3")), crypto) is None
    finally:
        await v.aclose()
