"""The error tree: stable codes, RFC 9457 problem objects, no internals to clients."""

from __future__ import annotations

import orjson

from bastion.core.exchange import Exchange, Headers, Reply, RequestView
from bastion.errors import (
    PROBLEM_CONTENT_TYPE,
    AuthenticationFailed,
    BastionError,
    RateLimited,
    all_error_classes,
)

# Codes are public API: changing one breaks clients' error handling and SIEM rules.
STABLE_CODES = {
    "bastion.error", "config.invalid", "store.unavailable", "request.malformed", "route.not_found",
    "access.forbidden", "transport.ip_denied", "transport.body_too_large", "transport.uri_too_long",
    "transport.headers_too_large", "request.method_not_allowed", "authn.failed", "ratelimit.exceeded", "cors.origin_denied",
    "upstream.unavailable", "upstream.timeout", "upstream.error", "internal.error",
    "response.blocked", "response.too_large",
    "openapi.invalid_request", "openapi.operation_unknown", "openapi.method_not_allowed",
    "openapi.unsupported_media_type", "authz.resolver_unavailable",
}  # fmt: skip


def test_codes_are_stable_and_unique() -> None:
    classes = [c for c in all_error_classes() if c.__module__ == "bastion.errors"]
    codes = [c.code for c in classes if c.__name__ != "RequestRejected"]
    assert len(codes) == len(set(codes))
    assert set(codes) >= STABLE_CODES


def test_problem_has_rfc9457_members_and_hides_diagnosis() -> None:
    err = AuthenticationFailed(diagnosis="jwt: bad signature for kid abc")
    body = err.problem("urn:x")
    assert body == {
        "type": "https://bastion.dev/problems/authn.failed",
        "title": "Unauthorized",
        "status": 401,
        "code": "authn.failed",
        "instance": "urn:x",
    }
    assert b"signature" not in err.problem_bytes()


def test_reply_problem_sets_content_type_and_headers() -> None:
    reply = Reply.problem(RateLimited(headers=[("retry-after", "3")]))
    assert reply.status == 429
    assert ("content-type", PROBLEM_CONTENT_TYPE) in reply.headers
    assert ("retry-after", "3") in reply.headers
    assert orjson.loads(reply.body)["code"] == "ratelimit.exceeded"


def test_exchange_deny_records_decision_without_leaking() -> None:
    ex = Exchange(
        request=RequestView("GET", "/x\n", "", Headers(), "127.0.0.1"),
        request_id="r1",
        started=0.0,
        started_wall=0.0,
    )
    reply = ex.deny(AuthenticationFailed(diagnosis="api_key: wrong secret"))
    assert (ex.decision, ex.reason, ex.diagnosis) == (
        "deny",
        "authn.failed",
        "api_key: wrong secret",
    )
    body = orjson.loads(reply.body)
    assert body["instance"] == "urn:bastion:request:r1"  # the raw path is not reflected
    assert "wrong secret" not in reply.body.decode()


def test_base_error_defaults() -> None:
    e = BastionError()
    assert e.status == 500
    assert str(e) == "Error"


def test_headers_repr_hides_values() -> None:
    h = Headers([("authorization", "Bearer secret-token")])
    assert "secret-token" not in repr(h)
    h.set("x", "1")
    h.add("x", "2")
    assert h.get_all("x") == ["1", "2"]
    h.remove("x")
    assert "x" not in h
    assert len(h) == 1
