"""What goes upstream: hop-by-hop removal, X-Forwarded-* set by us, identity headers, no
header injection through claims, credentials hidden."""

from __future__ import annotations

from bastion.core.exchange import Exchange, Headers, Principal, RequestView
from bastion.gateway.forward import (
    header_safe,
    response_headers_from_upstream,
    upstream_request_head,
)


def exchange(
    headers: list[tuple[str, str]], principal: Principal | None = None, **kw: object
) -> Exchange:
    req = RequestView(
        "POST", "/api/x", "a=1", Headers(headers), "10.0.0.9", client_ip="10.0.0.9", **kw
    )  # type: ignore[arg-type]
    ex = Exchange(request=req, request_id="rid-1", started=0.0, started_wall=0.0)
    ex.principal = principal
    return ex


def head(
    ex: Exchange, *, hide: bool = True, trusted: int = 0, length: int = 3
) -> dict[str, list[str]]:
    raw = upstream_request_head(
        ex,
        target="/base/api/x?a=1",
        host_header="up:9001",
        hide_credentials=hide,
        body_length=length,
        trusted_proxies=trusted,
    ).decode("latin-1")
    assert raw.endswith("\r\n\r\n")
    lines = raw.split("\r\n")
    assert lines[0] == "POST /base/api/x?a=1 HTTP/1.1"
    out: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line:
            k, v = line.split(": ", 1)
            out.setdefault(k, []).append(v)
    return out


def test_hop_by_hop_and_connection_listed_headers_dropped() -> None:
    h = head(
        exchange(
            [
                ("connection", "keep-alive, x-secret-hop"),
                ("keep-alive", "timeout=5"),
                ("x-secret-hop", "1"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "h2c"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic abc"),
                ("content-length", "999"),
                ("host", "public.example"),
                ("accept", "application/json"),
            ]
        )
    )
    for gone in (
        "connection",
        "keep-alive",
        "x-secret-hop",
        "transfer-encoding",
        "upgrade",
        "te",
        "proxy-authorization",
    ):
        assert gone not in h
    assert h["host"] == ["up:9001"]
    assert h["content-length"] == ["3"]
    assert h["accept"] == ["application/json"]
    assert h["x-forwarded-host"] == ["public.example"]
    assert h["x-request-id"] == ["rid-1"]


def test_client_cannot_plant_forwarding_or_identity_headers() -> None:
    h = head(
        exchange(
            [
                ("x-forwarded-for", "1.2.3.4"),
                ("x-real-ip", "1.2.3.4"),
                ("forwarded", "for=1.2.3.4"),
                ("x-bastion-subject", "admin"),
                ("x-bastion-scopes", "admin:all"),
                ("x-request-id", "attacker"),
            ]
        )
    )
    assert h["x-forwarded-for"] == ["10.0.0.9"]
    assert "x-real-ip" not in h
    assert "forwarded" not in h
    assert "x-bastion-subject" not in h
    assert "x-bastion-scopes" not in h
    assert h["x-request-id"] == ["rid-1"]
    assert h["x-forwarded-proto"] == ["http"]


def test_trusted_proxy_chain_kept() -> None:
    h = head(exchange([("x-forwarded-for", "203.0.113.7")]), trusted=1)
    assert h["x-forwarded-for"] == ["203.0.113.7, 10.0.0.9"]


def test_identity_headers_and_credentials_hidden() -> None:
    p = Principal(
        kind="api_key", subject="acme", client_id="acme", scopes=frozenset({"b", "a"}), key_id="k1"
    )
    h = head(exchange([("authorization", "Bearer bsk_x_y"), ("x-api-key", "bsk_x_y")], p))
    assert "authorization" not in h
    assert "x-api-key" not in h
    assert h["x-bastion-auth"] == ["api_key"]
    assert h["x-bastion-subject"] == ["acme"]
    assert h["x-bastion-client-id"] == ["acme"]
    assert h["x-bastion-scopes"] == ["a b"]
    assert h["x-bastion-key-id"] == ["k1"]


def test_credentials_forwarded_when_route_opts_in() -> None:
    p = Principal(kind="jwt", subject="u1")
    h = head(exchange([("authorization", "Bearer eyJ.x.y")], p), hide=False)
    assert h["authorization"] == ["Bearer eyJ.x.y"]
    assert "x-bastion-key-id" not in h


def test_claim_with_crlf_cannot_inject_a_header() -> None:
    p = Principal(kind="jwt", subject="victim\r\nx-bastion-scopes: admin", client_id="c\nx: y")
    raw = upstream_request_head(
        exchange([], p),
        target="/",
        host_header="u",
        hide_credentials=True,
        body_length=0,
        trusted_proxies=0,
    ).decode("latin-1")
    lines = raw.split("\r\n")
    assert not any(line.lower().startswith("x-bastion-scopes") for line in lines)
    assert not any(line.startswith("x: ") for line in lines)
    assert "x-bastion-subject: victim%0D%0Ax-bastion-scopes: admin" in lines


def test_header_safe() -> None:
    assert header_safe("plain value") == "plain value"
    assert "\n" not in header_safe("a\nb")
    assert header_safe("ü").isascii()


def test_tls_sets_proto_https() -> None:
    assert head(exchange([], tls=True))["x-forwarded-proto"] == ["https"]


def test_get_without_body_has_no_content_length() -> None:
    req = RequestView("GET", "/", "", Headers(), "1.1.1.1")
    ex = Exchange(request=req, request_id="r", started=0.0, started_wall=0.0)
    raw = upstream_request_head(
        ex, target="/", host_header="u", hide_credentials=True, body_length=0, trusted_proxies=0
    )
    assert b"content-length" not in raw


def test_response_headers_drop_hop_by_hop_and_listed() -> None:
    h = response_headers_from_upstream(
        [
            (b"Content-Type", b"application/json"),
            (b"Connection", b"close, X-Internal"),
            (b"X-Internal", b"1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Length", b"10"),
            (b"Set-Cookie", b"a=1"),
        ]
    )
    assert h.items == [("content-type", "application/json"), ("set-cookie", "a=1")]


def test_per_name_decisions_are_the_same_on_repeated_and_mixed_requests() -> None:
    # The per-name decision cache must not carry one request's choice into another's: the
    # same names, with and without a principal, and a forged identity header every time.
    alice = Principal("jwt", "alice", scopes=frozenset({"read"}))
    hdrs = [
        ("authorization", "Bearer t"),
        ("x-bastion-subject", "admin"),
        ("host", "public.example"),
        ("accept", "*/*"),
    ]
    for _ in range(3):
        anonymous = head(exchange(list(hdrs)))
        assert anonymous["authorization"] == ["Bearer t"]  # nothing to hide without a principal
        assert "x-bastion-subject" not in anonymous
        assert anonymous["x-forwarded-host"] == ["public.example"]
        signed_in = head(exchange(list(hdrs), alice))
        assert "authorization" not in signed_in
        assert signed_in["x-bastion-subject"] == ["alice"]
        assert signed_in["accept"] == ["*/*"]
        shown = head(exchange(list(hdrs), alice), hide=False)
        assert shown["authorization"] == ["Bearer t"]


def test_plain_connection_values_keep_every_other_response_header() -> None:
    for value in (b"keep-alive", b"close", b"Keep-Alive"):
        h = response_headers_from_upstream(
            [(b"Connection", value), (b"Keep-Alive", b"timeout=5"), (b"ETag", b'"1"')]
        )
        assert h.items == [("etag", '"1"')]
    h = response_headers_from_upstream([(b"Connection", b"keep-alive, ETag"), (b"ETag", b'"1"')])
    assert h.items == []
