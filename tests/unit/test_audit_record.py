"""The audit record: ECS shape, redaction, one line per record whatever the input."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
import pytest

from bastion.audit.record import (
    MAX_FIELD_CHARS,
    AuditEntry,
    build_record,
    entry,
    iso_timestamp,
    minimal_entry,
    snapshot,
    to_line,
)
from bastion.audit.redact import Redactor
from bastion.core.exchange import Exchange, Headers, Principal, RequestView
from bastion.errors import AuthenticationFailed

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
API_KEY = "bsk_0a1b2c3d4e5f6a7b_Qx9vLm2Zp8Rt4Yk6Wn0Jc3Hb7Fd5Gs1Ue9Io2Kq4Mab"


def make_exchange(
    *,
    path: str = "/v1/invoices/42",
    query: str = "page=2",
    user_agent: str | None = "curl/8.4.0",
    principal: Principal | None = None,
    status: int = 200,
    decision: str = "allow",
    extra_headers: list[tuple[str, str]] | None = None,
) -> Exchange:
    headers = Headers([("host", "api.example")])
    if user_agent is not None:
        headers.add("user-agent", user_agent)
    for name, value in extra_headers or []:
        headers.add(name, value)
    req = RequestView("POST", path, query, headers, peer_ip="10.0.0.9", tls=True)
    req.client_ip = "203.0.113.7"
    ex = Exchange(req, "req-1", started=100.0, started_wall=1_700_000_000.123, route_name="api")
    ex.principal = principal
    ex.status = status
    ex.decision = decision
    ex.bytes_out = 512
    ex.upstream_status = status
    ex.upstream_ms = 3.14159
    return ex


def test_ecs_fields() -> None:
    p = Principal("api_key", "client-a", client_id="client-a", key_id="0a1b2c3d4e5f6a7b")
    rec = build_record(make_exchange(principal=p), Redactor(), finished=100.25)
    assert rec["@timestamp"] == "2023-11-14T22:13:20.123Z"
    assert rec["event"] == {"action": "http_request", "outcome": "success", "duration": 250_000_000}
    assert rec["http"]["request"] == {"method": "POST", "id": "req-1"}
    assert rec["http"]["response"] == {"status_code": 200, "bytes": 512}
    assert rec["http"]["route"] == "api"
    assert rec["url"] == {"path": "/v1/invoices/42", "query": "page=2"}
    assert rec["source"] == {"ip": "203.0.113.7"}
    assert rec["user"] == {"id": "client-a"}
    assert rec["client"] == {"id": "client-a"}
    assert rec["api_key"] == {"id": "0a1b2c3d4e5f6a7b"}
    assert rec["user_agent"] == {"original": "curl/8.4.0"}
    assert rec["bastion"] == {
        "route": "api",
        "decision": "allow",
        "tls": True,
        "upstream_status": 200,
        "upstream_ms": 3.142,
    }


def test_jwt_principal_has_no_api_key_field() -> None:
    p = Principal("jwt", "alice", client_id="web", key_id="jti-9", issuer="https://idp")
    rec = build_record(make_exchange(principal=p), Redactor(), finished=101.0)
    assert rec["user"] == {"id": "alice"}
    assert rec["client"] == {"id": "web"}
    assert "api_key" not in rec
    assert rec["bastion"]["token_id"] == "jti-9"


def test_anonymous_denied_request() -> None:
    ex = make_exchange(user_agent=None, query="", status=0)
    ex.upstream_status = None
    ex.upstream_ms = None
    ex.request.client_ip = ""
    ex.deny(AuthenticationFailed(diagnosis="api_key: unknown key id"))
    ex.status = 401
    rec = build_record(ex, Redactor(), finished=100.0)
    assert rec["event"]["outcome"] == "failure"
    assert rec["event"]["reason"] == "authn.failed"
    assert rec["bastion"]["decision"] == "deny"
    assert rec["bastion"]["diagnosis"] == "api_key: unknown key id"
    assert rec["source"] == {"ip": "10.0.0.9"}
    for absent in ("user", "client", "api_key", "user_agent"):
        assert absent not in rec
    assert "query" not in rec["url"]
    assert "upstream_status" not in rec["bastion"]


@pytest.mark.parametrize(
    ("status", "decision", "outcome"),
    [
        (200, "allow", "success"),
        (302, "allow", "success"),
        (404, "allow", "failure"),
        (502, "error", "failure"),
        (0, "allow", "failure"),
        (429, "deny", "failure"),
    ],
)
def test_outcome(status: int, decision: str, outcome: str) -> None:
    rec = build_record(make_exchange(status=status, decision=decision), Redactor(), finished=100)
    assert rec["event"]["outcome"] == outcome


def test_client_values_are_redacted_and_headers_never_recorded() -> None:
    ex = make_exchange(
        path="/v1/cards/4111111111111111/ssn/123-45-6789",
        query=f"access_token={JWT}&password=hunter2&page=1",
        user_agent=f"bot Bearer {JWT}",
        extra_headers=[("authorization", f"Bearer {JWT}"), ("cookie", "session=s3cr3t")],
    )
    ex.diagnosis = f"api_key: wrong secret for {API_KEY}"
    line = to_line(build_record(ex, Redactor(), finished=100.0)).decode()
    for secret in (JWT, "hunter2", "4111111111111111", "123-45-6789", "Qx9vLm2", "s3cr3t"):
        assert secret not in line
    rec = orjson.loads(line)
    assert rec["url"]["path"] == "/v1/cards/****1111/ssn/***-**-****"
    assert rec["url"]["query"] == "access_token=[REDACTED]&password=[REDACTED]&page=1"
    assert rec["bastion"]["diagnosis"] == "api_key: wrong secret for bsk_0a1b2c3d4e5f6a7b_***"


@pytest.mark.parametrize(
    "user_agent",
    [
        'x\n{"fake": "record"}',
        'x\r\n{"fake": "record"}',
        'x\r{"fake": "record"}',
        'x\u2028{"fake": "record"}',
        'x\u2029{"fake": "record"}',
        'x\x85{"fake": "record"}',
        'x\x0b\x0c\x1c\x1d\x1e{"fake": "record"}',
    ],
)
def test_line_breaks_in_input_cannot_forge_a_record(user_agent: str) -> None:
    ex = make_exchange(user_agent=user_agent, path='/a\n{"fake": "path"}')
    line = to_line(build_record(ex, Redactor(), finished=100.0))
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b"\r" not in line
    text = line.decode()
    assert len(text.splitlines()) == 1  # str.splitlines also splits on U+2028, U+0085 ...
    rec = orjson.loads(text)
    assert isinstance(rec, dict)
    assert rec["user_agent"]["original"] == user_agent
    assert "fake" not in rec


def test_surrogates_do_not_lose_the_record() -> None:
    ex = make_exchange(path="/bad/\udcff/x")
    e = entry(snapshot(ex, 100.0), Redactor())
    rec = orjson.loads(e.line)
    assert rec["url"]["path"] == "/bad/\\udcff/x"
    assert e.record["url"]["path"] == "/bad/\\udcff/x"  # the record a store receives is safe too
    orjson.dumps(e.record)


def test_long_values_are_capped_after_redaction() -> None:
    ua = "A" * (MAX_FIELD_CHARS * 3)
    rec = build_record(make_exchange(user_agent=ua), Redactor(), finished=100.0)
    original = rec["user_agent"]["original"]
    assert len(original) == MAX_FIELD_CHARS
    assert original.endswith("[truncated]")
    card_at_cut = "x" * (MAX_FIELD_CHARS - 8) + " 4111111111111111"
    rec = build_record(make_exchange(user_agent=card_at_cut), Redactor(), finished=100.0)
    assert "41111111" not in rec["user_agent"]["original"]


def test_snapshot_is_independent_of_later_changes() -> None:
    ex = make_exchange()
    snap = snapshot(ex, 100.0)
    ex.status = 500
    ex.request.headers.set("user-agent", "changed")
    rec = entry(snap, Redactor()).record
    assert rec["http"]["response"]["status_code"] == 200
    assert rec["user_agent"]["original"] == "curl/8.4.0"


def test_iso_timestamp() -> None:
    assert iso_timestamp(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_timestamp(1_700_000_000.999) == "2023-11-14T22:13:20.999Z"
    assert iso_timestamp(1_700_000_001.5) == "2023-11-14T22:13:21.500Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", iso_timestamp(1e9 + 0.0004))


def test_minimal_entry_keeps_only_own_values() -> None:
    snap = snapshot(make_exchange(user_agent="secret-agent"), 100.0)
    e = minimal_entry(snap)
    assert e.record["bastion"]["render_error"] is True
    assert b"secret-agent" not in e.line
    assert e.line.count(b"\n") == 1


def test_entry_is_an_immutable_pair_of_record_and_line() -> None:
    e = entry(snapshot(make_exchange(), 100.5), Redactor())
    assert isinstance(e, AuditEntry)
    record, line = e
    assert (record, line) == (e.record, e.line)
    assert orjson.loads(line) == record
    with pytest.raises(AttributeError):
        e.line = b""  # type: ignore[misc]


def test_record_keys_keep_their_order() -> None:
    p = Principal("jwt", "alice", client_id="app", key_id="jti-9", issuer="https://id")
    ex = make_exchange(principal=p)
    ex.reason, ex.diagnosis = "x.y", "jwt: nope"
    rec = entry(snapshot(ex, 100.5), Redactor()).record
    assert list(rec) == [
        "@timestamp",
        "event",
        "http",
        "url",
        "source",
        "user",
        "client",
        "user_agent",
        "bastion",
    ]
    assert list(rec["event"]) == ["action", "outcome", "duration", "reason"]
    assert list(rec["bastion"]) == [
        "route",
        "decision",
        "tls",
        "diagnosis",
        "upstream_status",
        "upstream_ms",
        "token_id",
    ]


@pytest.mark.parametrize("wall", [0.0, 1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0005])
def test_iso_timestamp_millis(wall: float) -> None:
    seconds, ms = divmod(int(wall * 1000), 1000)
    assert iso_timestamp(wall).endswith(f".{ms:03d}Z")
    assert iso_timestamp(wall).startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))


def test_findings_are_written_redacted_and_bounded() -> None:
    from bastion.audit.record import FINDING_DEPTH, FINDING_ITEMS, TRUNCATED, LineRenderer

    ex = make_exchange()
    assert "findings" not in build_record(ex, Redactor(), finished=100.0)["bastion"]
    ex.record_finding("openapi_shadow", "openapi.invalid_request: body/card: 4111111111111111")
    ex.record_finding("bola_denied", {"param": "path.id", "object_id": "Bearer eyJhbGciOi.x.y"})
    ex.record_finding("authz_shadow", {"object_id": "token: 5f8a9c0d1e2f3a4b"})  # client text
    note: dict[str, Any] = {}
    ex.record_finding("response_filter", note)
    note["undeclared"] = [f"/items/{i}/cost" for i in range(FINDING_ITEMS + 10)]  # filled later
    deep: Any = "leaf"
    for _ in range(FINDING_DEPTH + 3):
        deep = {"d": deep}
    ex.record_finding("deep", deep)
    ex.record_finding("shadow_endpoint", True)
    assert ex.annotations["shadow_endpoint"] is True  # annotated for the layers as well
    snap = snapshot(ex, 100.0)
    rec = entry(snap, Redactor()).record
    assert rec is not None
    found = rec["bastion"]["findings"]
    assert "4111111111111111" not in found["openapi_shadow"]
    assert found["openapi_shadow"].startswith("openapi.invalid_request: body/card: ****1111")
    assert "eyJhbGciOi" not in found["bola_denied"]["object_id"]
    assert "5f8a9c0d1e2f3a4b" not in found["authz_shadow"]["object_id"]
    assert len(found["response_filter"]["undeclared"]) == FINDING_ITEMS
    assert found["shadow_endpoint"] is True
    node = found["deep"]
    for _ in range(FINDING_DEPTH - 1):
        node = node["d"]
    assert node == {"d": TRUNCATED}
    # A line renderer writes the same line as the full rendering.
    line = LineRenderer(Redactor()).entries([snap], lambda s, e: entry(s, Redactor()))[0].line
    assert line == entry(snap, Redactor()).line
