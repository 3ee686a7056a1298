"""The transport layer: client IP, IP rules, body limit and response header hygiene."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from bastion.core.exchange import Exchange, Headers, Principal, RequestView
from bastion.gateway.forward import response_headers_from_upstream
from bastion.gateway.layers.transport.config import HstsConfig, TransportConfig
from bastion.gateway.layers.transport.layer import TransportLayer

ALICE = Principal(kind="jwt", subject="alice", issuer="https://id.example")


def make_exchange(
    *,
    peer: str = "198.51.100.9",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    tls: bool = False,
    principal: Principal | None = None,
) -> Exchange:
    req = RequestView(
        method="POST",
        path="/v1/invoices",
        query="",
        headers=Headers(list(headers or [])),
        peer_ip=peer,
        tls=tls,
        body=body,
        client_ip=peer,
    )
    return Exchange(
        request=req, request_id="r1", started=0.0, started_wall=0.0, principal=principal
    )


def layer(**cfg: Any) -> TransportLayer:
    return TransportLayer(TransportConfig(**cfg))


async def test_client_ip_is_the_peer_by_default_whatever_xff_says() -> None:
    ex = make_exchange(peer="198.51.100.9", headers=[("x-forwarded-for", "1.2.3.4")])
    assert await layer().on_request(ex) is None
    assert ex.request.client_ip == "198.51.100.9"


async def test_xff_spoof_behind_one_proxy_cannot_choose_the_ip() -> None:
    # Client sent "X-Forwarded-For: 1.2.3.4"; our proxy (10.0.0.2) appended the real address.
    ex = make_exchange(peer="10.0.0.2", headers=[("x-forwarded-for", "1.2.3.4, 198.51.100.9")])
    assert await layer(trusted_proxies=1).on_request(ex) is None
    assert ex.request.client_ip == "198.51.100.9"
    assert "xff_invalid" not in ex.annotations


async def test_xff_spoof_cannot_escape_an_allow_list() -> None:
    t = layer(trusted_proxies=1, ip_allow=[ip_network("10.0.0.0/8")])
    ex = make_exchange(peer="10.0.0.2", headers=[("x-forwarded-for", "10.9.9.9, 203.0.113.5")])
    reply = await t.on_request(ex)
    assert reply is not None
    assert reply.status == 403
    assert ex.request.client_ip == "203.0.113.5"


async def test_malformed_trusted_hop_falls_back_to_peer_and_is_annotated() -> None:
    ex = make_exchange(peer="10.0.0.2", headers=[("x-forwarded-for", "not-an-ip")])
    assert await layer(trusted_proxies=1).on_request(ex) is None
    assert ex.request.client_ip == "10.0.0.2"
    assert ex.annotations["xff_invalid"] is True


@pytest.mark.parametrize(
    "rules",
    [{"ip_allow": [ip_network("10.0.0.0/8")]}, {"ip_deny": [ip_network("203.0.113.0/24")]}],
)
async def test_malformed_hop_cannot_borrow_the_proxys_standing(rules: dict[str, Any]) -> None:
    # Two proxies trusted, the outer one bypassed: the client controls hop -2 and makes it
    # garbage, hoping to be judged as the (internal, allowed) inner proxy instead.
    t = layer(trusted_proxies=2, **rules)
    ex = make_exchange(peer="10.0.0.2", headers=[("x-forwarded-for", "garbage, 203.0.113.9")])
    reply = await t.on_request(ex)
    assert reply is not None
    assert reply.status == 403
    assert ex.annotations["xff_invalid"] is True
    assert ex.diagnosis == "client address unknown"


async def test_denied_ip_gets_a_recorded_403_problem() -> None:
    t = layer(ip_deny=[ip_network("203.0.113.0/24")])
    ex = make_exchange(peer="203.0.113.50")
    reply = await t.on_request(ex)
    assert reply is not None
    assert reply.status == 403
    assert ("content-type", "application/problem+json") in reply.headers
    assert orjson.loads(reply.body)["code"] == "transport.ip_denied"
    assert ex.decision == "deny"
    assert ex.reason == "transport.ip_denied"
    assert "203.0.113.0/24" in ex.diagnosis
    assert ex.request.client_ip == "203.0.113.50"  # the audit record still names the caller


async def test_mapped_peer_is_denied_by_an_ipv4_rule() -> None:
    t = layer(ip_deny=[ip_network("10.0.0.0/8")])
    ex = make_exchange(peer="::ffff:10.1.2.3")
    reply = await t.on_request(ex)
    assert reply is not None
    assert reply.status == 403
    assert ex.request.client_ip == "10.1.2.3"


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [("2001:db8:1::5", True), ("2001:db9::5", False), ("192.0.2.1", False), ("::1", False)],
)
async def test_ipv6_allow_list(peer: str, allowed: bool) -> None:
    t = layer(ip_allow=[ip_network("2001:db8::/32")])
    reply = await t.on_request(make_exchange(peer=peer))
    assert (reply is None) is allowed


async def test_deny_is_checked_before_allow() -> None:
    t = layer(ip_allow=[ip_network("10.0.0.0/8")], ip_deny=[ip_network("10.6.0.0/16")])
    assert await t.on_request(make_exchange(peer="10.5.0.1")) is None
    reply = await t.on_request(make_exchange(peer="10.6.0.1"))
    assert reply is not None
    assert reply.status == 403


async def test_unknown_peer_is_refused_when_rules_exist() -> None:
    t = layer(ip_deny=[ip_network("203.0.113.0/24")])
    reply = await t.on_request(make_exchange(peer=""))
    assert reply is not None
    assert reply.status == 403
    assert await layer().on_request(make_exchange(peer="")) is None


async def test_body_at_the_limit_passes_and_one_byte_more_is_413() -> None:
    t = layer(max_body_bytes=1024)
    assert await t.on_request(make_exchange(body=b"x" * 1024)) is None
    ex = make_exchange(body=b"x" * 1025)
    reply = await t.on_request(ex)
    assert reply is not None
    assert reply.status == 413
    assert ex.reason == "transport.body_too_large"


async def test_declared_length_over_the_limit_is_413_before_reading() -> None:
    t = layer(max_body_bytes=1024)
    reply = await t.on_request(make_exchange(headers=[("content-length", "5000000")]))
    assert reply is not None
    assert reply.status == 413
    assert await t.on_request(make_exchange(headers=[("content-length", "1024")])) is None


@pytest.mark.parametrize(("declared", "status"), [("9" * 5000, 413), ("²", None), ("-1", None)])
async def test_odd_declared_lengths_never_crash(declared: str, status: int | None) -> None:
    # Framing errors are the HTTP parser's job; here they must neither raise nor pass a
    # huge declared body.
    reply = await layer().on_request(make_exchange(headers=[("content-length", declared)]))
    assert (reply.status if reply else None) == status


def respond(t: TransportLayer, upstream: list[tuple[str, str]], **kw: Any) -> list[tuple[str, str]]:
    # As the front end hands them over: raw upstream headers, names lower-cased once there.
    headers = response_headers_from_upstream([(k.encode(), v.encode()) for k, v in upstream])
    t.on_response(make_exchange(**kw), 200, headers)
    return headers.items


def names(items: list[tuple[str, str]]) -> list[str]:
    return [k.lower() for k, _ in items]


def test_version_headers_are_stripped_case_insensitively() -> None:
    out = respond(
        layer(),
        [("Server", "nginx/1.22"), ("X-Powered-By", "Express"), ("via", "1.1 x"), ("etag", "1")],
    )
    assert "server" not in names(out)
    assert "x-powered-by" not in names(out)
    assert "via" not in names(out)
    assert ("etag", "1") in out


def test_custom_strip_list() -> None:
    out = respond(layer(strip_response_headers=["X-Internal-Node"]), [("x-internal-node", "n3")])
    assert "x-internal-node" not in names(out)


def test_nosniff_always_once() -> None:
    out = respond(layer(), [("X-Content-Type-Options", "sniff-please")])
    assert [v for k, v in out if k.lower() == "x-content-type-options"] == ["nosniff"]


def test_hsts_only_on_tls() -> None:
    assert "strict-transport-security" not in names(respond(layer(), [], tls=False))
    out = respond(layer(), [], tls=True)
    assert ("strict-transport-security", "max-age=31536000; includeSubDomains") in out


def test_weaker_upstream_hsts_is_replaced() -> None:
    out = respond(layer(), [("Strict-Transport-Security", "max-age=60")], tls=True)
    values = [v for k, v in out if k.lower() == "strict-transport-security"]
    assert values == ["max-age=31536000; includeSubDomains"]


def test_no_store_on_authenticated_responses_replaces_upstream_caching() -> None:
    upstream = [("Cache-Control", "public, max-age=3600"), ("pragma", "cache")]
    out = respond(layer(), upstream, principal=ALICE)
    assert [v for k, v in out if k.lower() == "cache-control"] == ["no-store"]
    assert [v for k, v in out if k.lower() == "pragma"] == ["no-cache"]


def test_anonymous_responses_keep_upstream_caching() -> None:
    out = respond(layer(), [("cache-control", "public, max-age=60")])
    assert ("cache-control", "public, max-age=60") in out
    assert "pragma" not in names(out)


def test_frame_and_referrer_defaults_only_when_upstream_chose_none() -> None:
    out = respond(layer(), [])
    assert ("x-frame-options", "DENY") in out
    assert ("referrer-policy", "no-referrer") in out
    out = respond(layer(), [("X-Frame-Options", "SAMEORIGIN"), ("Referrer-Policy", "same-origin")])
    assert [v for k, v in out if k.lower() == "x-frame-options"] == ["SAMEORIGIN"]
    assert [v for k, v in out if k.lower() == "referrer-policy"] == ["same-origin"]


def test_no_header_appears_twice_after_two_passes() -> None:
    # A Reply built from headers that already passed through (or a retried response).
    t = layer()
    first = respond(t, [("server", "x")], tls=True, principal=ALICE)
    second = respond(t, first, tls=True, principal=ALICE)
    assert sorted(names(second)) == sorted(set(names(second)))


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "connection"])
def test_framing_headers_cannot_be_configured_for_stripping(name: str) -> None:
    with pytest.raises(ValidationError, match="frames the response"):
        TransportConfig(strip_response_headers=[name])


def test_strip_list_entries_must_be_header_names() -> None:
    with pytest.raises(ValidationError, match="not a header name"):
        TransportConfig(strip_response_headers=["x-a: b"])


def test_hsts_preload_requires_subdomains_and_a_year() -> None:
    with pytest.raises(ValidationError, match="include_subdomains"):
        HstsConfig(preload=True, include_subdomains=False)
    with pytest.raises(ValidationError, match="greater than or equal"):
        HstsConfig(max_age=86400)
    assert HstsConfig(preload=True).header_value() == (
        "max-age=31536000; includeSubDomains; preload"
    )


def test_cidrs_with_host_bits_are_config_errors() -> None:
    with pytest.raises(ValidationError):
        TransportConfig(ip_deny=["10.0.0.1/8"])  # type: ignore[list-item]
