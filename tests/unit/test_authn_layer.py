"""AuthnLayer: opaque 401s, credential placement, failed-attempt lockout, scopes, verify budget."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import OctKey

from bastion.core.apikeys import hash_secret, new_api_key
from bastion.core.clock import ManualClock
from bastion.core.exchange import Exchange, Headers, Principal, Reply, RequestView
from bastion.core.gcra import LocalLimiter
from bastion.core.revocation import RevocationState
from bastion.errors import ConfigError, StoreError
from bastion.gateway.layers.authn import layer as layer_module
from bastion.gateway.layers.authn.apikeys import ApiKeyIndex
from bastion.gateway.layers.authn.config import AuthnConfig
from bastion.gateway.layers.authn.jwt import JwtVerifier
from bastion.gateway.layers.authn.layer import AuthnLayer, credential_in_query
from bastion.gateway.layers.base import NEEDS_IO
from bastion.store.base import ApiKeyRecord
from tests.unit.jwt_factory import HMAC_SECRET, NOW, issuer_config, sign

PEPPER = b"k" * 32
HS_KEY = OctKey.import_key(HMAC_SECRET.encode())


class FakeStore:
    def __init__(self, records: list[ApiKeyRecord]) -> None:
        self.records = {r.id: r for r in records}

    async def list_api_keys(self, client_id: str | None = None) -> list[ApiKeyRecord]:
        return list(self.records.values())

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        return self.records.get(key_id)


class Env:
    """A clock, a JWT verifier (HMAC issuer), an API-key index with one key, and layer builder."""

    def __init__(self) -> None:
        self.clock = ManualClock(NOW)
        cfg = issuer_config(hmac_secret=HMAC_SECRET, algorithms=["HS256"])
        self.jwt = JwtVerifier([cfg], self.clock, RevocationState(self.clock))
        key_id, secret, self.api_key = new_api_key()
        self.record = ApiKeyRecord(
            id=key_id,
            client_id="client-9",
            secret_hash=hash_secret(PEPPER, secret),
            scopes=("read",),
            created_at=NOW,
            expires_at=NOW + 86400,
        )
        self.keys = ApiKeyIndex(FakeStore([self.record]), PEPPER, self.clock)  # type: ignore[arg-type]

    async def start(self) -> Env:
        await self.jwt.start()
        await self.keys.load()
        return self

    def layer(self, **config: Any) -> AuthnLayer:
        return AuthnLayer(
            AuthnConfig.model_validate(config), jwt=self.jwt, api_keys=self.keys, clock=self.clock
        )

    def token(self, **claims: Any) -> str:
        return sign(HS_KEY, "HS256", **claims)


@pytest.fixture
async def env() -> Env:
    return await Env().start()


def exchange(
    headers: list[tuple[str, str]] | None = None, query: str = "", ip: str = "203.0.113.7"
) -> Exchange:
    req = RequestView("GET", "/v1/things", query, Headers(headers or []), peer_ip="10.0.0.1")
    req.client_ip = ip
    return Exchange(req, request_id="req-1", started=0.0, started_wall=NOW)


def bearer(value: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {value}")]


async def run(layer: AuthnLayer, ex: Exchange) -> Reply | None:
    return await layer.on_request(ex)


# --- success ---------------------------------------------------------------------------------


async def test_bearer_jwt_sets_the_principal(env: Env) -> None:
    ex = exchange(bearer(env.token()))
    assert await run(env.layer(), ex) is None
    assert ex.principal is not None
    assert ex.principal.kind == "jwt"
    assert ex.principal.subject == "user-1"


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
async def test_api_key_in_either_header(env: Env, header: str) -> None:
    value = f"Bearer {env.api_key}" if header == "authorization" else env.api_key
    ex = exchange([(header, value)])
    assert await run(env.layer(), ex) is None
    assert ex.principal is not None
    assert ex.principal.kind == "api_key"
    assert ex.principal.key_id == env.record.id


async def test_bearer_scheme_is_case_insensitive(env: Env) -> None:
    ex = exchange([("authorization", f"bearer   {env.api_key}")])
    assert await run(env.layer(), ex) is None


async def test_anonymous_route_continues_without_principal(env: Env) -> None:
    ex = exchange()
    assert await run(env.layer(methods=[], unsafe_allow_anonymous=True), ex) is None
    assert ex.principal is None


# --- failures are opaque ---------------------------------------------------------------------


async def test_every_failure_gives_the_same_401(env: Env) -> None:
    layer = env.layer(failed_attempts_limit={"rate": 1000, "per": 1})
    wrong_secret = env.api_key[:-1] + ("A" if env.api_key[-1] != "A" else "B")
    cases = {
        "missing": exchange(),
        "garbage bearer": exchange(bearer("garbage")),
        "basic scheme": exchange([("authorization", "Basic dXNlcjpwYXNz")]),
        "expired jwt": exchange(bearer(env.token(exp=int(NOW) - 3600))),
        "forged jwt": exchange(bearer(env.token()[:-3] + "AAA")),
        "wrong audience": exchange(bearer(env.token(aud="elsewhere"))),
        "wrong secret": exchange(bearer(wrong_secret)),
        "unknown key": exchange([("x-api-key", new_api_key()[2])]),
        "malformed key": exchange([("x-api-key", "bsk_nope")]),
        "query": exchange(query=f"api_key={env.api_key}"),
        "both headers": exchange([*bearer(env.token()), ("x-api-key", env.api_key)]),
    }
    bodies, diagnoses = set(), set()
    for name, ex in cases.items():
        reply = await run(layer, ex)
        assert reply is not None, name
        assert reply.status == 401, name
        assert ("www-authenticate", 'Bearer realm="bastion"') in reply.headers, name
        assert ex.principal is None, name
        assert ex.reason == "authn.failed", name
        assert ex.diagnosis, name
        assert env.api_key not in ex.diagnosis
        bodies.add(reply.body)
        diagnoses.add(ex.diagnosis)
    assert len(bodies) == 1
    assert len(diagnoses) == len(cases)  # the audit record can tell them apart
    body = orjson.loads(bodies.pop())
    assert body["code"] == "authn.failed"
    assert "detail" not in body


async def test_several_authorization_headers_are_refused(env: Env) -> None:
    ex = exchange([*bearer(env.token()), *bearer(env.token(jti="2"))])
    reply = await run(env.layer(), ex)
    assert reply is not None
    assert reply.status == 401
    assert ex.diagnosis == "several credentials"


async def test_both_headers_are_refused_even_when_both_are_valid(env: Env) -> None:
    ex = exchange([*bearer(env.token()), ("x-api-key", env.api_key)])
    reply = await run(env.layer(), ex)
    assert reply is not None
    assert reply.status == 401
    assert ex.principal is None


async def test_method_not_allowed_on_route(env: Env) -> None:
    ex = exchange(bearer(env.token()))
    reply = await run(env.layer(methods=["api_key"]), ex)
    assert reply is not None
    assert ex.diagnosis == "jwt: not accepted on route"
    ex = exchange([("x-api-key", env.api_key)])
    reply = await run(env.layer(methods=["jwt"]), ex)
    assert reply is not None
    assert ex.diagnosis == "api_key: not accepted on route"
    ex = exchange(bearer(env.api_key))
    assert await run(env.layer(methods=["jwt"]), ex) is not None


# --- credentials in the query string ---------------------------------------------------------


async def test_api_key_in_query_string_is_rejected(env: Env) -> None:
    ex = exchange([("x-api-key", env.api_key)], query=f"key={env.api_key}")
    reply = await run(env.layer(), ex)
    assert reply is not None
    assert reply.status == 401
    assert ex.diagnosis == "credential in query string"


@pytest.mark.parametrize(
    "query",
    [
        "access_token=abc",
        "api_key=abc",
        "APIKEY=abc",
        "page=2&api-key=abc",
        "x-api-key=",
        "q=bsk_abc",
        "q=%62sk_abc",
        "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
    ],
)
def test_query_credentials_are_detected(query: str) -> None:
    assert credential_in_query(query)


@pytest.mark.parametrize("query", ["", "page=2", "token_type=bearer&q=bsk", "q=eyJ", "a=%zz"])
def test_ordinary_queries_pass(query: str) -> None:
    assert not credential_in_query(query)


def test_absurd_number_of_query_fields_counts_as_suspicious() -> None:
    assert credential_in_query("&".join(f"a{i}=1" for i in range(2000)))


# --- scopes ----------------------------------------------------------------------------------


async def test_missing_required_scope_is_403(env: Env) -> None:
    layer = env.layer(required_scopes=["invoices:write"])
    ex = exchange(bearer(env.token(scope="read")))
    reply = await run(layer, ex)
    assert reply is not None
    assert reply.status == 403
    assert ex.reason == "access.forbidden"
    assert ex.diagnosis == "missing scopes: invoices:write"
    assert ex.principal is not None  # who was refused goes into the audit record
    ok = exchange(bearer(env.token(scope="read invoices:write", jti="j2")))
    assert await run(layer, ok) is None


# --- failed-attempt lockout ------------------------------------------------------------------


async def test_failed_attempts_lock_the_ip_out_then_recover(env: Env) -> None:
    layer = env.layer(failed_attempts_limit={"rate": 3, "per": 60})  # one every 20 s, burst 3
    for _ in range(3):
        reply = await run(layer, exchange(bearer("wrong")))
        assert reply is not None
        assert reply.status == 401
    good = exchange([("x-api-key", env.api_key)])
    reply = await run(layer, good)
    assert reply is not None
    assert reply.status == 429
    assert good.diagnosis == "too many failed authentications"
    retry = dict(reply.headers)["retry-after"]
    assert 1 <= int(retry) <= 20
    assert good.principal is None
    other_ip = exchange([("x-api-key", env.api_key)], ip="198.51.100.1")
    assert await run(layer, other_ip) is None  # only the attacking IP is locked out
    env.clock.advance(20)
    recovered = exchange([("x-api-key", env.api_key)])
    assert await run(layer, recovered) is None
    assert recovered.principal is not None


async def test_successes_do_not_count_as_failures(env: Env) -> None:
    layer = env.layer(failed_attempts_limit={"rate": 1, "per": 60})
    for _ in range(10):
        assert await run(layer, exchange([("x-api-key", env.api_key)])) is None


# --- verify budget ---------------------------------------------------------------------------


async def test_verify_budget_caps_signature_checks_per_ip(env: Env) -> None:
    layer = env.layer(verify_limit={"rate": 1, "per": 60, "burst": 1})
    first = env.token(jti="a")
    assert await run(layer, exchange(bearer(first))) is None
    ex = exchange(bearer(env.token(jti="b")))
    reply = await run(layer, ex)
    assert reply is not None
    assert reply.status == 401
    assert ex.diagnosis == "jwt: verify budget exceeded"
    assert await run(layer, exchange(bearer(first))) is None  # cache hit: no budget needed
    assert await run(layer, exchange(bearer(env.token(jti="c")), ip="198.51.100.1")) is None


# --- construction ----------------------------------------------------------------------------


def test_route_accepting_a_method_needs_its_verifier() -> None:
    clock = ManualClock()
    with pytest.raises(ConfigError):
        AuthnLayer(AuthnConfig(methods=["jwt"]), jwt=None, api_keys=None, clock=clock)
    with pytest.raises(ConfigError):
        AuthnLayer(AuthnConfig(methods=["api_key"]), jwt=None, api_keys=None, clock=clock)


async def test_peer_ip_is_used_when_client_ip_is_unset(env: Env) -> None:
    layer = env.layer(failed_attempts_limit={"rate": 1, "per": 60})
    ex = exchange(bearer("wrong"), ip="")
    await run(layer, ex)
    blocked = exchange([("x-api-key", env.api_key)], ip="")
    reply = await run(layer, blocked)
    assert reply is not None
    assert reply.status == 429


async def test_limiters_can_be_shared_between_routes(env: Env) -> None:
    shared = LocalLimiter(60.0, 1)
    a = AuthnLayer(
        AuthnConfig(), jwt=env.jwt, api_keys=env.keys, clock=env.clock, failed_attempts=shared
    )
    b = AuthnLayer(
        AuthnConfig(), jwt=env.jwt, api_keys=env.keys, clock=env.clock, failed_attempts=shared
    )
    await run(a, exchange(bearer("wrong")))
    reply = await run(b, exchange([("x-api-key", env.api_key)]))
    assert reply is not None
    assert reply.status == 429


class _NotCurrent(RevocationState):
    """Revocation state of a node that lost contact with the store and Redis."""

    def current(self) -> bool:
        return False


class _DownStore(FakeStore):
    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        raise StoreError(diagnosis="connection refused")


async def test_node_side_failures_refuse_but_never_lock_the_client_out(env: Env) -> None:
    jwt_down = JwtVerifier(
        [issuer_config(hmac_secret=HMAC_SECRET, algorithms=["HS256"])],
        env.clock,
        _NotCurrent(env.clock),
    )
    await jwt_down.start()
    unknown_id_key = new_api_key()[2]  # not cached: the index must ask the (down) store
    keys_down = ApiKeyIndex(_DownStore([]), PEPPER, env.clock)  # type: ignore[arg-type]
    layer = AuthnLayer(
        AuthnConfig.model_validate({"failed_attempts_limit": {"rate": 2, "per": 60}}),
        jwt=jwt_down,
        api_keys=keys_down,
        clock=env.clock,
    )
    for _ in range(5):
        ex = exchange(bearer(env.token()))
        reply = await run(layer, ex)
        assert reply is not None
        assert reply.status == 401  # still fail closed
        assert ex.diagnosis == "jwt: revocation state not current"
        ex = exchange([("x-api-key", unknown_id_key)])
        reply = await run(layer, ex)
        assert reply is not None
        assert reply.status == 401
        assert ex.diagnosis == "api_key: store unavailable"
    # Ten refusals later the client is not locked out: a real failure still counts.
    for expected in (401, 401, 429):
        reply = await run(layer, exchange(bearer("wrong")))
        assert reply is not None
        assert reply.status == expected


# --- the synchronous contract (Layer.check) --------------------------------------------------


def decide(layer: AuthnLayer, ex: Exchange) -> Reply | None:
    """check() alone; fails the test if it wanted I/O."""
    result = layer.check(ex)
    assert result is not NEEDS_IO
    return result  # type: ignore[return-value]


async def run_like_the_runner(layer: AuthnLayer, ex: Exchange) -> tuple[bool, Reply | None]:
    """(whether check() needed I/O, the decision) — check, then on_request only on NEEDS_IO."""
    result = layer.check(ex)
    if result is NEEDS_IO:
        return True, await layer.on_request(ex)
    return False, result  # type: ignore[return-value]


async def test_check_decides_a_jwt_cache_hit_without_the_budget(env: Env) -> None:
    layer = env.layer(verify_limit={"rate": 1, "per": 60, "burst": 1})
    token = env.token()
    first = exchange(bearer(token))
    assert decide(layer, first) is None  # verified on the spot: its key is known
    assert first.principal is not None
    for _ in range(5):  # cache hits: the budget of one signature check is never touched again
        ex = exchange(bearer(token))
        assert decide(layer, ex) is None
        assert ex.principal is first.principal
    ex = exchange(bearer(env.token(jti="other")))
    assert decide(layer, ex) is not None
    assert ex.diagnosis == "jwt: verify budget exceeded"


async def test_check_still_checks_revocation_and_expiry_on_a_cache_hit(env: Env) -> None:
    layer = env.layer()
    token = env.token()
    assert decide(layer, exchange(bearer(token))) is None
    env.jwt._revocations.raise_not_before("user-1", None, NOW + 1)
    ex = exchange(bearer(token))
    reply = decide(layer, ex)
    assert reply is not None
    assert reply.status == 401
    assert ex.diagnosis == "jwt: revoked"


async def test_a_remembered_bearer_value_is_still_checked_on_every_request(env: Env) -> None:
    layer = env.layer()
    token = env.token(exp=int(NOW) + 100)
    value = f"Bearer {token}"
    assert decide(layer, exchange([("authorization", value)])) is None
    assert layer._bearer_jwts == {value: token}
    for _ in range(3):  # a copy of the value, as each request brings
        ex = exchange([("authorization", "".join(list(value)))])
        assert decide(layer, ex) is None
        assert ex.principal is not None
    # Every refusal of a cache hit still applies to a remembered value.
    env.clock.advance(100 + 61)  # past exp + the issuer's leeway
    ex = exchange([("authorization", value)])
    assert decide(layer, ex) is not None
    assert ex.diagnosis == "jwt: expired"
    token2 = env.token(jti="jti-2")
    assert decide(layer, exchange(bearer(token2))) is None
    env.jwt._revocations.revoke_jti("jti-2", NOW + 3600)
    ex = exchange(bearer(token2))
    assert decide(layer, ex) is not None
    assert ex.diagnosis == "jwt: revoked"
    # Checked on its own route: a route with another audience refuses it.
    other = env.layer(audience="someone-else")
    ex = exchange(bearer(env.token(jti="jti-3")))
    assert decide(other, ex) is not None
    assert ex.diagnosis == "jwt: wrong audience"


async def test_a_remembered_value_beside_another_credential_is_refused(env: Env) -> None:
    layer = env.layer()
    value = f"Bearer {env.token()}"
    assert decide(layer, exchange([("authorization", value)])) is None
    for headers in (
        [("authorization", value), ("authorization", value)],
        [("authorization", value), ("x-api-key", env.api_key)],
        [("x-api-key", env.api_key), ("authorization", value)],
    ):
        ex = exchange(headers)
        assert decide(layer, ex) is not None
        assert ex.diagnosis == "several credentials"


async def test_only_accepted_tokens_are_remembered_and_the_memo_is_bounded(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_module, "BEARER_MEMO_SIZE", 4)
    layer = env.layer()
    for value in ("Bearer wrong", f"Bearer {env.token(aud='nope')}", f"Bearer {env.api_key}"):
        decide(layer, exchange([("authorization", value)]))
    assert layer._bearer_jwts == {}
    for i in range(10):
        assert decide(layer, exchange(bearer(env.token(jti=f"j{i}")))) is None
        assert 1 <= len(layer._bearer_jwts) <= 4
    # The other spellings _credential accepts are remembered as it reads them.
    token = env.token(jti="spelled")
    value = f"bearer   {token} "
    assert decide(layer, exchange([("authorization", value)])) is None
    assert layer._bearer_jwts[value] == token


async def test_a_full_failed_attempts_table_still_fails_closed(env: Env) -> None:
    shared = LocalLimiter(20.0, 3, max_keys=1)
    layer = AuthnLayer(
        AuthnConfig(), jwt=env.jwt, api_keys=env.keys, clock=env.clock, failed_attempts=shared
    )
    assert (await run(layer, exchange(bearer("wrong"), ip="192.0.2.1"))) is not None
    ex = exchange(bearer(env.token()), ip="192.0.2.2")  # a new IP, no room for it
    reply = await run(layer, ex)
    assert reply is not None
    assert reply.status == 429


async def test_check_decides_an_api_key_held_in_memory(env: Env) -> None:
    for headers in ([("x-api-key", env.api_key)], bearer(env.api_key)):
        ex = exchange(headers)
        assert decide(env.layer(), ex) is None
        assert ex.principal is not None
        assert ex.principal.key_id == env.record.id


async def test_check_needs_io_only_when_the_store_must_be_asked(env: Env) -> None:
    layer = env.layer()
    unknown = new_api_key()[2]
    ex = exchange([("x-api-key", unknown)])
    assert layer.check(ex) is NEEDS_IO
    assert ex.decision == "allow"  # nothing decided yet
    reply = await layer.on_request(ex)
    assert reply is not None
    assert ex.diagnosis == "api_key: unknown id"
    # The store said no: the negative cache answers the next attempt synchronously.
    again = exchange([("x-api-key", unknown)])
    reply = decide(layer, again)
    assert reply is not None
    assert again.diagnosis == "api_key: unknown id"


class _Guarded(ApiKeyIndex):
    """Like the gateway's GuardedApiKeyIndex: verify() adds a check, verify_now does not."""

    __slots__ = ("stale",)

    async def verify(self, presented: str) -> tuple[Principal | None, str]:
        if self.stale:
            return None, "api_key: revocation state not current"
        return await super().verify(presented)


async def test_a_subclass_guarding_only_verify_is_always_awaited(env: Env) -> None:
    keys = _Guarded(FakeStore([env.record]), PEPPER, env.clock)  # type: ignore[arg-type]
    await keys.load()
    keys.stale = True
    layer = AuthnLayer(AuthnConfig(methods=["api_key"]), jwt=None, api_keys=keys, clock=env.clock)
    ex = exchange([("x-api-key", env.api_key)])
    needed_io, reply = await run_like_the_runner(layer, ex)
    assert needed_io  # the synchronous twin would skip the guard
    assert reply is not None
    assert ex.diagnosis == "api_key: revocation state not current"
    keys.stale = False
    needed_io, reply = await run_like_the_runner(layer, exchange([("x-api-key", env.api_key)]))
    assert needed_io
    assert reply is None


async def test_check_and_on_request_decide_alike(env: Env) -> None:
    wrong_secret = env.api_key[:-1] + ("A" if env.api_key[-1] != "A" else "B")
    valid = env.token()
    cases: dict[str, tuple[list[tuple[str, str]], str]] = {
        "jwt": (bearer(valid), ""),
        "jwt again (cache hit)": (bearer(valid), ""),
        "api key": ([("x-api-key", env.api_key)], ""),
        "api key as bearer": ([("authorization", f"Bearer  {env.api_key} ")], ""),
        "lower-case scheme": ([("authorization", f"bearer {valid}")], ""),
        "missing": ([], ""),
        "garbage bearer": (bearer("garbage"), ""),
        "tab after scheme": ([("authorization", f"Bearer\t{valid}")], ""),
        "space inside": (bearer("abc def"), ""),
        "empty bearer": ([("authorization", "Bearer   ")], ""),
        "basic scheme": ([("authorization", "Basic dXNlcjpwYXNz")], ""),
        "expired jwt": (bearer(env.token(exp=int(NOW) - 3600)), ""),
        "forged jwt": (bearer(valid[:-3] + "AAA"), ""),
        "wrong audience": (bearer(env.token(aud="elsewhere")), ""),
        "wrong secret": ([("x-api-key", wrong_secret)], ""),
        "unknown key": ([("x-api-key", new_api_key()[2])], ""),
        "malformed key": ([("x-api-key", "bsk_nope")], ""),
        "both headers": ([*bearer(valid), ("x-api-key", env.api_key)], ""),
        "query": ([("x-api-key", env.api_key)], f"api_key={env.api_key}"),
        "encoded query": ([("x-api-key", env.api_key)], "q=%62sk_x"),
        "innocent query": ([("x-api-key", env.api_key)], "page=2&sort=asc"),
    }
    sync_layer = env.layer(failed_attempts_limit={"rate": 1000, "per": 1})
    other = await Env().start()  # the same credentials must work there: share the key index
    other.keys = env.keys
    other.jwt = env.jwt
    awaited_layer = other.layer(failed_attempts_limit={"rate": 1000, "per": 1})
    for name, (headers, query) in cases.items():
        a, b = exchange(headers, query=query), exchange(headers, query=query)
        _, got = await run_like_the_runner(sync_layer, a)
        want = await awaited_layer.on_request(b)
        assert (got is None) == (want is None), name
        if got is not None and want is not None:
            assert (got.status, got.body) == (want.status, want.body), name
        assert (a.diagnosis, a.principal) == (b.diagnosis, b.principal), name


@pytest.mark.parametrize(
    "query",
    [
        "page=2",
        "a&b",
        "api_key",
        "API%5FKEY=1",
        "x=1&ApiKey=2",
        "access_token",
        "q=bsk_1",
        "q=+bsk_1",
        "t=eyJhbGciOi.x.",
        "t=+eyJa.b.",
        "&&&",
        "=",
        "sort=name&order=asc&limit=10",
    ],
)
def test_credential_in_query_fast_path_agrees_with_parsing_every_field(query: str) -> None:
    assert credential_in_query(query) == _credential_in_query_by_parsing(query)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "a",
                "p",
                "i",
                "A",
                "P",
                "I",
                "_",
                "-",
                "=",
                "&",
                "+",
                "%",
                "5F",
                "bsk_",
                "eyJ",
                "x",
                ".",
                "key",
                "access",
                "token",
                " ",
                "\u212a",
                "1",
            ]
        ),
        max_size=30,
    ).map("".join)
)
def test_credential_in_query_agrees_with_parsing_every_field_on_any_query(query: str) -> None:
    assert credential_in_query(query) == _credential_in_query_by_parsing(query)


def _credential_in_query_by_parsing(query: str) -> bool:
    """The reference: every field parsed, as before the fast path existed."""
    if not query:
        return False
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=1000)
    except ValueError:
        return True
    for name, value in pairs:
        if name.strip().lower() in {"access_token", "api_key", "apikey", "api-key", "x-api-key"}:
            return True
        v = value.strip()
        if v.startswith("bsk_") or re.match(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.", v, re.ASCII):
            return True
    return False


def test_a_long_bare_query_still_counts_as_suspicious() -> None:
    assert credential_in_query("&" * 1000)
    assert not credential_in_query("&" * 998)
