"""The gateway end to end over real sockets: each test sends the request an attacker or a
client would and checks what comes back and what reaches the upstream."""

from __future__ import annotations

import contextlib
import socket
import time

import orjson
import pytest

from tests.support.gateway import GatewayHarness

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def test_allowed_request_forwarded_with_identity_and_without_credential(
    gateway: GatewayHarness,
) -> None:
    r = gateway.request(
        "POST",
        "/api/echo?x=1",
        body=b'{"a":1}',
        key=True,
        headers={"Content-Type": "application/json"},
    )
    assert r.status == 200
    seen = r.json()
    assert seen["path"] == "/echo"
    assert seen["query"] == "x=1"
    assert seen["body"] == '{"a":1}'
    h = seen["headers"]
    assert "authorization" not in h
    assert h["x-bastion-subject"] == "acme"
    assert h["x-bastion-auth"] == "api_key"
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert r.header("x-content-type-options") == "nosniff"
    assert r.header("cache-control") == "no-store"  # authenticated response
    assert r.header("strict-transport-security") is None  # plain HTTP


def test_jwt_accepted(gateway: GatewayHarness) -> None:
    r = gateway.request("GET", "/api/echo", headers={"Authorization": f"Bearer {gateway.token()}"})
    assert r.status == 200
    assert r.json()["headers"]["x-bastion-subject"] == "user-1"


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "Bearer ",
        "Bearer not-a-token",
        "Bearer bsk_aaaaaaaaaaaaaaaa_" + "A" * 43,
        "Basic dXNlcjpwYXNz",
    ],
)
def test_missing_or_bad_credentials_get_the_same_opaque_401(
    gateway: GatewayHarness, auth: str | None
) -> None:
    r = gateway.request("GET", "/api/echo", headers={"Authorization": auth} if auth else {})
    assert r.status == 401
    assert r.header("content-type") == PROBLEM
    assert (
        r.header(
            "www-authenticate",
        )
        is not None
    )
    body = r.json()
    assert body["code"] == "authn.failed"
    assert set(body) == {"type", "title", "status", "code", "instance"}
    assert not gateway.upstream.requests


def test_forged_jwt_rejected(gateway: GatewayHarness) -> None:
    from joserfc import jwt
    from joserfc.jwk import ECKey

    attacker = ECKey.generate_key("P-256", parameters={"kid": "k1"})  # same kid, other key
    now = int(time.time())
    forged = jwt.encode(
        {"alg": "ES256", "kid": "k1"},
        {
            "iss": "https://idp.test",
            "sub": "admin",
            "aud": "https://api.test",
            "exp": now + 60,
            "iat": now,
        },
        attacker,
    )
    r = gateway.request("GET", "/api/echo", headers={"Authorization": f"Bearer {forged}"})
    assert r.status == 401
    assert not gateway.upstream.requests


def test_api_key_in_query_string_refused(gateway: GatewayHarness) -> None:
    r = gateway.request("GET", f"/api/echo?api_key={gateway.api_key}")
    assert r.status == 401
    assert not gateway.upstream.requests


def test_scopes_enforced(gateway: GatewayHarness) -> None:
    assert gateway.request("GET", "/admin/echo", key=True).status == 403
    admin = gateway.create_key("ops", ("admin",))
    assert (
        gateway.request("GET", "/admin/echo", headers={"Authorization": f"Bearer {admin}"}).status
        == 200
    )


def test_burst_gets_429_with_headers(gateway: GatewayHarness) -> None:
    statuses = [gateway.request("GET", "/limited/echo", key=True) for _ in range(8)]
    codes = [r.status for r in statuses]
    assert codes.count(200) == 5, codes
    refused = statuses[-1]
    assert refused.status == 429
    assert int(refused.header("retry-after") or "0") >= 1
    assert refused.header("ratelimit-policy") is not None
    assert refused.header("ratelimit") is not None
    assert statuses[0].header("ratelimit-policy") is not None  # on upstream responses too


def test_oversized_body_413_before_reading(gateway: GatewayHarness) -> None:
    r = gateway.request("POST", "/api/echo", body=b"x" * 5000, key=True)
    assert r.status == 413
    assert r.header("content-type") == PROBLEM
    assert not gateway.upstream.requests


def test_oversized_chunked_body_413(gateway: GatewayHarness) -> None:
    chunk = b"x" * 1000
    body = b"".join(b"%x\r\n%b\r\n" % (len(chunk), chunk) for _ in range(6)) + b"0\r\n\r\n"
    raw = gateway.raw(
        b"POST /api/echo HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + gateway.api_key.encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        + body
    )
    assert raw.startswith(b"HTTP/1.1 413")
    assert not gateway.upstream.requests


def test_hsts_on_https_only(gateway: GatewayHarness) -> None:
    r = gateway.request("GET", "/public/echo", tls=True)
    assert r.status == 200
    hsts = r.header("strict-transport-security") or ""
    assert "max-age=31536000" in hsts
    assert "includeSubDomains" in hsts
    assert r.json()["headers"]["x-forwarded-proto"] == "https"
    # Error replies carry it too.
    assert "max-age" in (
        gateway.request("GET", "/nowhere", tls=True).header("strict-transport-security") or ""
    )


def test_upstream_500_body_replaced(gateway: GatewayHarness) -> None:
    r = gateway.request("GET", "/public/boom")
    assert r.status == 502
    assert r.header("content-type") == PROBLEM
    assert b"Traceback" not in r.body
    assert b"db_password" not in r.body
    assert r.header("server") is None


def test_version_headers_stripped(gateway: GatewayHarness) -> None:
    r = gateway.request("GET", "/public/leaky")
    assert r.status == 200
    for h in ("server", "x-powered-by", "x-aspnet-version"):
        assert r.header(h) is None


def test_streaming_bodies(gateway: GatewayHarness) -> None:
    assert gateway.request("GET", "/public/chunked").body == b"hello world"
    assert gateway.request("GET", "/public/close").body == b"until-eof"
    big = gateway.request("GET", "/public/big?kb=2048")
    assert big.status == 200
    assert len(big.body) == 2048 * 1024


def test_head_request(gateway: GatewayHarness) -> None:
    r = gateway.request("HEAD", "/public/echo")
    assert r.status == 200
    assert r.header("content-length") == "1234"
    assert r.body == b""
    assert gateway.request("GET", "/public/echo").status == 200  # pool still healthy


def test_upstream_down_502_and_slow_504(gateway: GatewayHarness) -> None:
    down = gateway.request("GET", "/down/x", key=True)
    assert down.status == 502
    assert down.json()["code"] == "upstream.unavailable"
    slow = gateway.request("GET", "/public/slow?ms=2500")
    assert slow.status == 504
    assert slow.json()["code"] == "upstream.timeout"


def test_upstream_drop_is_502(gateway: GatewayHarness) -> None:
    r = gateway.request("GET", "/public/drop")
    assert r.status == 502


def test_keep_alive_connections_reused(gateway: GatewayHarness) -> None:
    for _ in range(20):
        assert gateway.request("GET", "/public/echo").status == 200
    assert gateway.upstream.connections == 1


def test_limits_414_431_and_malformed_400(gateway: GatewayHarness) -> None:
    assert gateway.request("GET", "/public/" + "a" * 2000).status == 414
    assert gateway.request("GET", "/public/echo", headers={"X-Big": "b" * 5000}).status == 431
    assert gateway.raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert gateway.raw(b"GET http://evil.example/ HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 400"
    )
    assert not gateway.upstream.requests


def test_path_tricks_refused(gateway: GatewayHarness) -> None:
    for path in (
        "/public/../admin/echo",
        "/public/%2e%2e/admin/echo",
        "/public//echo",
        "/public/a%2fb",
    ):
        assert gateway.raw(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()).startswith(
            b"HTTP/1.1 400"
        ), path
    assert not gateway.upstream.requests


def test_unknown_route_404(gateway: GatewayHarness) -> None:
    r = gateway.request("GET", "/nowhere")
    assert r.status == 404
    assert r.json()["code"] == "route.not_found"


def test_header_injection_refused_by_parser(gateway: GatewayHarness) -> None:
    raw = gateway.raw(b"GET /public/echo HTTP/1.1\r\nHost: t\r\nX-A: a\rX-Injected: 1\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400")
    assert not gateway.upstream.requests


def test_pipelined_requests_answered_in_order(gateway: GatewayHarness) -> None:
    raw = gateway.raw(
        b"GET /public/slow?ms=50 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /public/echo?second=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    first = raw.find(b"slow")
    second = raw.find(b"second=1")
    assert 0 < first < second


def test_cors_preflight(gateway: GatewayHarness) -> None:
    ok = gateway.request(
        "OPTIONS",
        "/api/echo",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert ok.status == 204
    assert ok.header("access-control-allow-origin") == "https://app.example"
    foreign = gateway.request(
        "OPTIONS",
        "/api/echo",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert foreign.status == 403
    assert foreign.header("access-control-allow-origin") is None
    assert not gateway.upstream.requests


def test_every_request_audited_once_with_secrets_redacted(gateway: GatewayHarness) -> None:
    card = "4111 1111 1111 1111"
    n = 0
    for i in range(10):
        gateway.request("GET", f"/api/echo?password=hunter2&i={i}", key=True)
        n += 1
    gateway.request("GET", "/public/echo", headers={"User-Agent": f"card {card} ssn 123-45-6789"})
    gateway.request(
        "GET",
        "/api/echo",
        headers={"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"},
    )
    gateway.raw(b"GARBAGE\r\n\r\n")
    n += 3
    gateway.close()
    records = gateway.audit_records()
    assert len(records) == n
    text = (gateway.tmp / "audit.jsonl").read_text()
    for secret in (
        "hunter2",
        gateway.api_key,
        "4111 1111 1111 1111",
        "123-45-6789",
        "eyJzdWIiOiJ4In0",
    ):
        assert secret not in text
    ids = [r["http"]["request"]["id"] for r in records]
    assert len(set(ids)) == n


def test_body_is_forwarded_intact(gateway: GatewayHarness) -> None:
    body = orjson.dumps({"k": "v" * 3000})
    r = gateway.request("POST", "/api/echo", body=body, key=True)
    assert r.status == 200
    assert r.json()["body"] == body.decode()


def test_413_from_the_front_end_carries_route_headers_and_route_in_audit(
    gateway: GatewayHarness,
) -> None:
    r = gateway.request("POST", "/api/echo", body=b"x" * 5000, key=True, tls=True)
    assert r.status == 413
    assert r.header("x-frame-options") == "DENY"
    assert "max-age" in (r.header("strict-transport-security") or "")
    gateway.close()
    (record,) = gateway.audit_records()
    assert record["http"]["route"] == "api"
    assert record["http"]["response"]["status_code"] == 413


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", "FOO"])
def test_methods_outside_the_allow_list_refused(gateway: GatewayHarness, method: str) -> None:
    target = "127.0.0.1:443" if method == "CONNECT" else "/public/echo"
    raw = gateway.raw(f"{method} {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.1 405") or raw.startswith(b"HTTP/1.1 400"), raw[:40]
    assert not gateway.upstream.requests


def test_head_of_a_replaced_5xx_has_no_body_and_keeps_the_connection_in_sync(
    gateway: GatewayHarness,
) -> None:
    raw = gateway.raw(
        b"HEAD /public/boom HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /public/echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502")
    assert rest.startswith(b"HTTP/1.1 200")  # no problem body was sent after the HEAD answer


def test_a_head_that_never_ends_is_cut_off_across_reads(gateway: GatewayHarness) -> None:
    # Headers trickle in over many reads and the blank line never comes: the bytes read while
    # the head is incomplete are counted, so the client gets 431 and the connection closes
    # instead of the gateway buffering an endless head.
    with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=5) as s:
        s.sendall(b"GET /public/echo HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.05)
        answer = b""
        for i in range(200):
            try:
                s.sendall(b"X-H%d: %b\r\n" % (i, b"v" * 200))
            except OSError:  # the gateway closed the connection
                break
            time.sleep(0.002)
        s.settimeout(5)
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431")
    assert not gateway.upstream.requests
