"""The cors layer: exact origins, preflights at the gateway, no reflection tricks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from bastion.core.exchange import Exchange, Headers, RequestView
from bastion.gateway.forward import response_headers_from_upstream
from bastion.gateway.layers.cors.config import CorsConfig, normalize_origin
from bastion.gateway.layers.cors.layer import CorsLayer

ALLOWED = "https://allowed.example"
VARY_PREFLIGHT = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"

# Origins an attacker controls or can produce, none of which is ALLOWED.
TRICKS = [
    "https://evil-allowed.example",
    "https://allowed.example.evil.com",
    "https://allowed.examplex",
    "https://xallowed.example",
    "https://sub.allowed.example",
    "http://allowed.example",
    "https://allowed.example:8443",
    "https://allowed.example.",
    "https://allowed.example/",
    "https://allowed.example@evil.com",
    "null",
    "",
    "*",
    "https://allowed.example, https://evil.com",
]


def make_exchange(method: str = "GET", headers: list[tuple[str, str]] | None = None) -> Exchange:
    req = RequestView(
        method=method,
        path="/v1/invoices",
        query="",
        headers=Headers(list(headers or [])),
        peer_ip="198.51.100.9",
        client_ip="198.51.100.9",
    )
    return Exchange(request=req, request_id="r1", started=0.0, started_wall=0.0)


def cors(**cfg: Any) -> CorsLayer:
    cfg.setdefault("allow_origins", [ALLOWED])
    return CorsLayer(CorsConfig(**cfg))


def preflight(
    origin: str | None = ALLOWED, method: str = "POST", req_headers: str | None = None
) -> Exchange:
    headers = [("access-control-request-method", method)]
    if origin is not None:
        headers.append(("origin", origin))
    if req_headers is not None:
        headers.append(("access-control-request-headers", req_headers))
    return make_exchange("OPTIONS", headers)


def lower(items: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in items:
        out.setdefault(k.lower(), []).append(v)
    return out


def respond(
    layer: CorsLayer, ex: Exchange, upstream: list[tuple[str, str]] | None = None
) -> dict[str, list[str]]:
    # As the front end hands them over: raw upstream headers, names lower-cased once there.
    headers = response_headers_from_upstream([(k.encode(), v.encode()) for k, v in upstream or []])
    layer.on_response(ex, 200, headers)
    return lower(headers.items)


# --- config -------------------------------------------------------------------------------


def test_null_origin_is_refused_with_its_own_message() -> None:
    with pytest.raises(ValidationError, match="origin 'null' cannot be allowed"):
        CorsConfig(allow_origins=["null"])
    with pytest.raises(ValidationError, match="origin 'null' cannot be allowed"):
        CorsConfig(allow_origins=["NULL"])


def test_wildcard_with_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="allow_credentials"):
        CorsConfig(allow_origins=["*"], allow_credentials=True)


@pytest.mark.parametrize(
    "origin",
    [
        "https://allowed.example/",
        "https://allowed.example/app",
        "allowed.example",
        "https://*.allowed.example",
        "https://user@allowed.example",
        " https://allowed.example",
        "https://allowed.example:",
    ],
)
def test_malformed_origins_are_refused(origin: str) -> None:
    with pytest.raises(ValidationError, match=r"scheme://host\[:port\]"):
        CorsConfig(allow_origins=[origin])


@pytest.mark.parametrize("field", ["allow_methods", "allow_headers", "expose_headers"])
def test_wildcard_names_are_refused(field: str) -> None:
    with pytest.raises(ValidationError, match="not supported"):
        CorsConfig.model_validate({field: ["*"]})


def test_normalize_origin() -> None:
    assert normalize_origin("HTTPS://Allowed.Example:443") == "https://allowed.example"
    assert normalize_origin("http://a.example:80") == "http://a.example"
    assert normalize_origin("https://a.example:80") == "https://a.example:80"


# --- preflight ----------------------------------------------------------------------------


async def test_allowed_preflight_is_answered_with_the_policy() -> None:
    ex = preflight(req_headers="Authorization, Content-Type")
    reply = await cors(max_age=300).on_request(ex)
    assert reply is not None
    assert reply.status == 204
    h = lower(reply.headers)
    assert h["access-control-allow-origin"] == [ALLOWED]
    assert h["access-control-allow-methods"] == ["GET, HEAD, POST, PUT, PATCH, DELETE"]
    assert h["access-control-allow-headers"] == [
        "authorization, content-type, x-api-key, x-request-id"
    ]
    assert h["access-control-max-age"] == ["300"]
    assert h["vary"] == [VARY_PREFLIGHT]
    assert "access-control-allow-credentials" not in h
    assert ex.decision == "allow"
    # The preflight reply goes through on_response unchanged.
    assert respond(cors(), ex, reply.headers) == h


async def test_credentials_header_only_when_configured() -> None:
    reply = await cors(allow_credentials=True).on_request(preflight())
    assert reply is not None
    assert lower(reply.headers)["access-control-allow-credentials"] == ["true"]


async def test_wildcard_preflight_answers_star() -> None:
    reply = await cors(allow_origins=["*"]).on_request(preflight("https://anyone.example"))
    assert reply is not None
    assert reply.status == 204
    assert lower(reply.headers)["access-control-allow-origin"] == ["*"]


async def test_default_port_and_case_variants_match_the_configured_origin() -> None:
    for origin in ("https://allowed.example:443", "https://ALLOWED.example"):
        reply = await cors().on_request(preflight(origin))
        assert reply is not None
        assert lower(reply.headers)["access-control-allow-origin"] == [ALLOWED]


async def assert_rejected(layer: CorsLayer, ex: Exchange) -> None:
    reply = await layer.on_request(ex)
    assert reply is not None
    assert reply.status == 403
    assert orjson.loads(reply.body)["code"] == "cors.origin_denied"
    assert not any(k.startswith("access-control-") for k, _ in reply.headers)
    assert ex.decision == "deny"
    assert ex.reason == "cors.origin_denied"
    # on_response does not decorate the refusal either.
    assert not any(k.startswith("access-control-") for k in respond(layer, ex, reply.headers))


@pytest.mark.parametrize("origin", TRICKS)
async def test_preflight_from_a_foreign_origin_is_403(origin: str) -> None:
    await assert_rejected(cors(allow_credentials=True), preflight(origin))


async def test_preflight_with_no_cross_origin_config_is_403() -> None:
    await assert_rejected(cors(allow_origins=[]), preflight())


async def test_preflight_for_a_method_not_allowed_is_403() -> None:
    await assert_rejected(cors(allow_methods=["GET"]), preflight(method="DELETE"))


async def test_preflight_methods_are_case_sensitive() -> None:
    await assert_rejected(cors(), preflight(method="patch"))


@pytest.mark.parametrize("req_headers", ["x-admin", "authorization, x-admin", "Cookie"])
async def test_preflight_for_a_header_not_allowed_is_403(req_headers: str) -> None:
    await assert_rejected(cors(), preflight(req_headers=req_headers))


async def test_preflight_with_two_origin_headers_is_403() -> None:
    ex = preflight()
    ex.request.headers.add("origin", "https://evil.example")
    await assert_rejected(cors(), ex)


async def test_options_without_preflight_headers_continues() -> None:
    layer = cors()
    assert await layer.on_request(make_exchange("OPTIONS", [("origin", ALLOWED)])) is None
    assert await layer.on_request(preflight(origin=None)) is None


# --- actual requests ----------------------------------------------------------------------


async def test_allowed_origin_gets_exact_cors_headers() -> None:
    layer = cors(allow_credentials=True, expose_headers=["x-request-id", "ratelimit"])
    ex = make_exchange("GET", [("origin", ALLOWED)])
    assert await layer.on_request(ex) is None
    h = respond(layer, ex)
    assert h["access-control-allow-origin"] == [ALLOWED]
    assert h["access-control-allow-credentials"] == ["true"]
    assert h["access-control-expose-headers"] == ["x-request-id, ratelimit"]
    assert h["vary"] == ["Origin"]


@pytest.mark.parametrize("origin", TRICKS)
async def test_foreign_origin_continues_without_cors_headers(origin: str) -> None:
    layer = cors(allow_credentials=True)
    ex = make_exchange("GET", [("origin", origin)])
    assert await layer.on_request(ex) is None  # browsers enforce; the request itself is legit
    # An upstream that reflects origins (or says '*') cannot widen the policy.
    upstream = [
        ("Access-Control-Allow-Origin", origin),
        ("access-control-allow-credentials", "true"),
    ]
    h = respond(layer, ex, upstream)
    assert not any(k.startswith("access-control-") for k in h)


async def test_upstream_cors_headers_are_replaced_by_the_policy() -> None:
    ex = make_exchange("GET", [("origin", ALLOWED)])
    upstream = [
        ("access-control-allow-origin", "*"),
        ("Access-Control-Expose-Headers", "x-secret"),
    ]
    h = respond(cors(), ex, upstream)
    assert h["access-control-allow-origin"] == [ALLOWED]
    assert "access-control-expose-headers" not in h


async def test_wildcard_route_answers_star_without_vary() -> None:
    ex = make_exchange("GET", [("origin", "https://anyone.example")])
    h = respond(cors(allow_origins=["*"]), ex)
    assert h["access-control-allow-origin"] == ["*"]
    assert "vary" not in h


def test_vary_is_merged_not_duplicated() -> None:
    layer = cors()
    ex = make_exchange("GET", [("origin", ALLOWED)])
    assert respond(layer, ex, [("Vary", "Accept-Encoding")])["vary"] == ["Accept-Encoding, Origin"]
    assert respond(layer, ex, [("vary", "origin")])["vary"] == ["origin"]
    assert respond(layer, ex, [("vary", "*")])["vary"] == ["*"]


def test_responses_without_origin_still_vary_on_origin() -> None:
    # A shared cache must not serve a response made for no Origin to an allowed origin.
    h = respond(cors(), make_exchange("GET"))
    assert h["vary"] == ["Origin"]
    assert not any(k.startswith("access-control-") for k in h)


def test_route_without_cors_strips_upstream_cors_and_adds_nothing() -> None:
    ex = make_exchange("GET", [("origin", "https://evil.example")])
    h = respond(cors(allow_origins=[]), ex, [("access-control-allow-origin", "*")])
    assert h == {}
