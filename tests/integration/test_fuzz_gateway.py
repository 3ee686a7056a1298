"""Bad input against the running gateway, as raw bytes on a socket: generated paths, headers,
query strings and bodies never produce a 5xx or a traceback, and the gateway keeps serving;
hand-written malformed requests (smuggling, bad framing, obs-fold, NUL, HTTP/0.9…) are
refused with 4xx and never reach the upstream."""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import socket
import string

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from tests.support.gateway import GatewayHarness

pytestmark = pytest.mark.integration

EXAMPLE_TIMEOUT = 5.0  # seconds per generated request (the gateway's own timeouts are 2 s)
FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# What a leaked Python error looks like in a response.
LEAK = re.compile(
    r"Traceback|File \"|\b[A-Z]\w*(?:Error|Exception|Warning)\b|StopIteration|KeyboardInterrupt"
    r"|internal\.error"
)
# Upstream test paths with special behaviour (slow, dropping, 5xx…): not fuzz targets.
SPECIAL_UPSTREAM = re.compile(r"^/(?:[a-z]+)/(?:drop|slow|big|boom|status|close|chunked|leaky)")

PREFIXES = ["/public", "/api", "/limited", "/admin", "", "/nowhere"]
TRICKY = [
    ".", "..", "%2e", "%2E%2e", "%2f", "%2F", "%5c", "%00", "%0a", "%0d%0a", "%25", "%", "%z",
    "%ff", "%c0%af", "\\", ";", "?", "#", "//", "~", "*", "@", ":", " ", "\t", "\x00", "\x7f",
    "é", "\u202e", "\ufeff", "😀", "\r\n",
]  # fmt: skip
# Mostly well-formed pieces, so that many requests get past the parser to routing, the layers
# and the upstream; the rest are the tricks a path normaliser must survive.
clean = st.text(alphabet=string.ascii_letters + string.digits + "-_.~!$&'()*+,;=:@", max_size=8)
segment = st.lists(
    st.one_of(
        clean,
        clean,
        clean,
        st.sampled_from(TRICKY),
        st.from_regex(r"%[0-9A-Fa-f]{2}", fullmatch=True),
        st.text(max_size=4),
    ),
    max_size=3,
).map("".join)
paths = st.builds(
    lambda prefix, segs: prefix + "/" + "/".join(segs),
    st.sampled_from(PREFIXES),
    st.lists(segment, max_size=4),
)
query_safe = st.text(
    alphabet=string.ascii_letters + string.digits + "=&%+.-_~;,/?:@!$'()*", max_size=60
)
queries = st.one_of(
    st.just(""),
    query_safe,
    query_safe,
    st.text(alphabet=string.printable, max_size=60),
    st.text(max_size=20),
)
token = st.from_regex(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}", fullmatch=True)
header_names = st.one_of(
    token,
    token,
    st.text(min_size=1, max_size=12),
    st.sampled_from(["Host", "Content-Type", "X-Forwarded-For", "Authorization", "Origin",
                     "X-Bastion-Subject", "Cookie", "X-API-Key", "Transfer-Encoding", "Expect",
                     "Access-Control-Request-Method", "Upgrade", "Connection"]),
)  # fmt: skip
visible_latin1 = st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f")
header_values = st.one_of(
    st.text(alphabet=string.printable.strip() + " ", max_size=40).map(str.encode),
    st.text(alphabet=visible_latin1, max_size=40).map(lambda s: s.encode("latin-1")),
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
# Mostly methods the parser knows (so the request goes on), some it does not, one it must not
# confuse with GET.
methods = st.sampled_from(
    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "get", "XYZ"]
)


def send(gateway: GatewayHarness, data: bytes, method: str = "GET") -> tuple[int, bytes, bytes]:
    """(status, head bytes as text, body) of the first response to ``data``."""
    sock = socket.create_connection(("127.0.0.1", gateway.http_port), timeout=EXAMPLE_TIMEOUT)
    with sock:
        # The gateway may answer (413, 400) and close before it has read everything.
        with contextlib.suppress(OSError):
            sock.sendall(data)
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        body = resp.read()
        head = "".join(f"{k}: {v}\n" for k, v in resp.getheaders()).encode("latin-1", "replace")
        return resp.status, head, body


def assert_sane(status: int, head: bytes, body: bytes, sent: bytes) -> None:
    event(f"status {status}")  # shown by --hypothesis-show-statistics
    assert status < 500, (status, body[:300], sent[:300])
    text = (head + body).decode("latin-1")
    leak = LEAK.search(text)
    assert leak is None, (leak.group(0), status, body[:300], sent[:300])


def request_bytes(
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    framing: str = "length",
) -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: api.test"]
    lines += [name + b": " + value for name, value in headers]
    if framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        size = max(1, len(body) // 3)
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        payload = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    else:
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(b"Content-Length: %d" % len(body))
        payload = body
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


@pytest.fixture
def no_error_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captures the gateway's logs: a swallowed exception shows up as an ERROR record."""
    caplog.set_level(logging.WARNING)
    return caplog


def assert_no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [(r.name, r.getMessage()) for r in errors]


def assert_still_serving(gateway: GatewayHarness) -> None:
    assert gateway.request("GET", "/public/echo").status == 200
    assert gateway.request("GET", "/api/echo", key=True).status == 200


@FUZZ
@given(method=methods, path=paths, query=queries, with_key=st.booleans())
def test_generated_paths_and_queries(
    gateway: GatewayHarness,
    no_error_logs: pytest.LogCaptureFixture,
    method: str,
    path: str,
    query: str,
    with_key: bool,
) -> None:
    assume(not SPECIAL_UPSTREAM.match(path))
    target = path.encode("utf-8", "surrogatepass")
    if query:
        target += b"?" + query.encode("utf-8", "surrogatepass")
    headers = [(b"Authorization", b"Bearer " + gateway.api_key.encode())] if with_key else []
    data = request_bytes(method, target, headers)
    assume(not LEAK.search(data.decode("latin-1")))
    assert_sane(*send(gateway, data, method), data)
    assert_no_error_logged(no_error_logs)


@FUZZ
@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=8),
    with_key=st.booleans(),
    prefix=st.sampled_from(["/public", "/api"]),
)
def test_generated_headers(
    gateway: GatewayHarness,
    no_error_logs: pytest.LogCaptureFixture,
    headers: list[tuple[str, bytes]],
    with_key: bool,
    prefix: str,
) -> None:
    raw = [(n.encode("utf-8", "surrogatepass"), v) for n, v in headers]
    if with_key:
        raw.append((b"Authorization", b"Bearer " + gateway.api_key.encode()))
    data = request_bytes("GET", prefix.encode() + b"/echo", raw)
    assume(not LEAK.search(data.decode("latin-1")))
    assert_sane(*send(gateway, data), data)
    assert_no_error_logged(no_error_logs)


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=600),
        st.text(max_size=300).map(str.encode),
        st.binary(min_size=4000, max_size=6000),
    ),
    framing=st.sampled_from(["length", "chunked"]),
    method=st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET"]),
    content_type=st.sampled_from(
        [
            b"application/json",
            b"application/x-www-form-urlencoded",
            b"text/plain",
            b"text/plain; charset=\xff\xfe",
        ]
    ),
)
def test_generated_bodies(
    gateway: GatewayHarness,
    no_error_logs: pytest.LogCaptureFixture,
    body: bytes,
    framing: str,
    method: str,
    content_type: bytes,
) -> None:
    headers = [
        (b"Authorization", b"Bearer " + gateway.api_key.encode()),
        (b"Content-Type", content_type),
    ]
    data = request_bytes(method, b"/api/echo", headers, body, framing)
    # The upstream echoes the body: a leak-like word in it (also one split across chunks,
    # such as "A" + "Error") comes back as sent, and is not a leak.
    assume(not LEAK.search(data.decode("latin-1")) and not LEAK.search(body.decode("latin-1")))
    status, head, resp_body = send(gateway, data, method)
    assert_sane(status, head, resp_body, data)
    assert status in (200, 400, 413), status
    if len(body) > gateway.config.routes[0].transport.max_body_bytes:
        assert status == 413
    assert_no_error_logged(no_error_logs)


def test_gateway_serves_normally_after_fuzzing(gateway: GatewayHarness) -> None:
    """A short mixed burst of garbage on one gateway, then ordinary requests still work and
    each answered request has its audit record."""
    garbage = [
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET /public/%zz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /api/echo HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",  # a TLS record on the plain-HTTP port
        b"POST /public/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\n\x00\x00\x00",
    ]
    for data in garbage:
        gateway.raw(data, timeout=EXAMPLE_TIMEOUT)
    assert_still_serving(gateway)
    gateway.close()
    assert len(gateway.audit_records()) == len(garbage) + 2


# -- hand-written malformed requests ----------------------------------------------------------
SMUGGLED = b"GET /public/smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
MALFORMED = {
    "chunk-size-not-hex": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk-longer-than-size": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
    "cl-then-te": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-then-cl": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-obfuscated-with-cl": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\nabcd",
    "te-space-before-colon": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "two-content-lengths": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    "negative-content-length": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\nabc",
    "signed-content-length": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
    "overflowing-content-length": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999999\r\n\r\nabc",
    "huge-content-length": b"POST /public/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551615\r\n\r\nabc",
    "obs-fold": b"GET /public/echo HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n",
    "nul-in-header-value": b"GET /public/echo HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "nul-in-header-name": b"GET /public/echo HTTP/1.1\r\nHost: t\r\nX\x00A: a\r\n\r\n",
    "nul-in-path": b"GET /public/e\x00cho HTTP/1.1\r\nHost: t\r\n\r\n",
    "header-without-colon": b"GET /public/echo HTTP/1.1\r\nHost: t\r\nX-A\r\n\r\n",
    "bare-lf-line-endings": b"GET /public/echo HTTP/1.1\nHost: t\n\n",
    "http-0.9": b"GET /public/echo\r\n\r\n",
    "http-0.9-with-headers": b"GET /public/echo\r\nHost: t\r\n\r\n",
    "unknown-http-version": b"GET /public/echo HTTP/9.9\r\nHost: t\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "connect-tunnel": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    "very-many-small-headers": b"GET /public/echo HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X%d: 1\r\n" % i for i in range(300)) + b"\r\n",
}  # fmt: skip
EXPECTED = {"very-many-small-headers": 431, "huge-content-length": 413, "connect-tunnel": 405}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_refused_and_not_forwarded(gateway: GatewayHarness, name: str) -> None:
    reply = gateway.raw(MALFORMED[name], timeout=EXAMPLE_TIMEOUT)
    expected = EXPECTED.get(name, 400)
    assert reply.startswith(b"HTTP/1.1 %d " % expected), reply[:200]
    assert reply.count(b"HTTP/1.1 ") == 1, "a second (smuggled) request was answered"
    assert b"connection: close" in reply.lower()
    assert not LEAK.search(reply.decode("latin-1"))
    assert not gateway.upstream.requests, gateway.upstream.requests
    assert_still_serving(gateway)


def test_many_headers_under_the_count_limit_still_served(gateway: GatewayHarness) -> None:
    """The control for 'very-many-small-headers': the limit is a count, not a refusal of
    headers as such."""
    many = b"".join(b"X%d: 1\r\n" % i for i in range(90))
    reply = gateway.raw(
        b"GET /public/echo HTTP/1.1\r\nHost: t\r\n" + many + b"Connection: close\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 200")


def test_smuggling_attempt_never_forwards_either_request(gateway: GatewayHarness) -> None:
    """CL.TE on a keep-alive connection, followed by a genuine request on a new connection:
    the smuggled prefix must not be glued onto the next client's request."""
    reply = gateway.raw(MALFORMED["cl-then-te"], timeout=EXAMPLE_TIMEOUT)
    assert reply.startswith(b"HTTP/1.1 400")
    follow = gateway.request("GET", "/public/echo?next=1")
    assert follow.status == 200
    assert [(m, p, q) for m, p, q, _, _ in gateway.upstream.requests] == [
        ("GET", "/echo", "next=1")
    ]
