"""LineRenderer: lines without records, byte for byte those of the full render."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from bastion.audit import record as record_module
from bastion.audit.record import (
    MAX_FIELD_CHARS,
    AuditEntry,
    LineRenderer,
    Snapshot,
    entry,
    minimal_entry,
    snapshot,
)
from bastion.audit.redact import Redactor
from bastion.core.exchange import Exchange, Headers, Principal, RequestView

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
API_KEY = "bsk_0a1b2c3d4e5f6a7b_Qx9vLm2Zp8Rt4Yk6Wn0Jc3Hb7Fd5Gs1Ue9Io2Kq4Mab"

PRINCIPALS = [
    None,
    Principal("jwt", "alice", client_id="app", key_id="jti-9", issuer="https://id"),
    Principal("jwt", "bob"),
    Principal("api_key", "client-a", client_id="client-a", key_id="0a1b2c3d4e5f6a7b"),
    Principal("api_key", "zoë\u2028x", client_id="", key_id="k%d"),
]


def make(
    *,
    path: str = "/v1/invoices/42",
    query: str = "",
    user_agent: str | None = "curl/8.4.0",
    principal: Principal | None = None,
    status: int = 200,
    decision: str = "allow",
    reason: str = "",
    diagnosis: str = "",
    request_id: str = "071beb9b-1",
    upstream: bool = True,
    wall: float = 1_700_000_000.123,
    method: str = "POST",
    bytes_out: int = 512,
) -> Exchange:
    headers = Headers([("host", "api.example")])
    if user_agent is not None:
        headers.add("user-agent", user_agent)
    req = RequestView(method, path, query, headers, peer_ip="10.0.0.9", tls=True)
    ex = Exchange(req, request_id, started=100.0, started_wall=wall, route_name="api")
    ex.principal = principal
    ex.status = status
    ex.decision = decision
    ex.reason = reason
    ex.diagnosis = diagnosis
    ex.bytes_out = bytes_out
    if upstream:
        ex.upstream_status = status
        ex.upstream_ms = 3.14159
    return ex


def _fail(snap: Snapshot, exc: Exception) -> AuditEntry:
    raise AssertionError(f"render failed: {exc!r}")


VARIANTS: list[dict[str, Any]] = [
    {},
    {"path": f"/x/{JWT}/y", "query": f"token={JWT}&page=2&q=%25s"},
    {"path": "/100%/%s/%d/%b", "user_agent": "100% %s %(x)s"},
    {"user_agent": None},
    {"user_agent": ""},
    {"user_agent": "A" * (MAX_FIELD_CHARS * 2)},
    {"user_agent": "Mozilla \u2028 \u2029 \x85 \n\r\t\x00 é 東京"},
    {"user_agent": f"agent {API_KEY} 4111 1111 1111 1111"},
    {"path": "/caf\u00e9/\u2028", "query": "a=\u2029&password=hunter2"},
    {"status": 404, "decision": "deny", "reason": "route.not_found", "upstream": False},
    {"status": 401, "decision": "deny", "reason": "authn.failed", "diagnosis": "jwt: expired"},
    {"status": 502, "decision": "error", "diagnosis": "api_key: unknown key id bsk_a_b%"},
    {"status": 0, "upstream": False},
    {"status": 399},
    {"status": 400},
    {"request_id": "4111-1111-1111-1111"},
    {"request_id": "123-45-6789"},
    {"request_id": "r" * (MAX_FIELD_CHARS + 10)},
    {"request_id": "id-\u2028-é-%s"},
    {"request_id": f"id {JWT}"},
    {"method": "M" * (MAX_FIELD_CHARS + 1)},
    {"wall": 0.0},
    {"wall": 0.5},
    {"wall": -1.5},
    {"wall": 1e-9},
    {"wall": 1_700_000_000.999},
    {"wall": 1_700_000_001.0005},
    {"bytes_out": 0},
    {"path": "/" + "p" * (MAX_FIELD_CHARS * 2)},
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("principal", PRINCIPALS)
def test_lines_are_those_of_the_full_render(variant: dict[str, Any], principal: Any) -> None:
    redactor = Redactor(["x-custom"])
    renderer = LineRenderer(redactor)
    snaps = [
        snapshot(make(principal=principal, **variant), finished)
        for finished in (100.25, 99.0, 100.0000001, 101.5)  # 99.0: a negative duration
    ]
    # Twice over: the second pass runs on cached templates and principals.
    got = renderer.entries(snaps + snaps, _fail)
    expected = [entry(s, redactor).line for s in snaps + snaps]
    assert [e.line for e in got] == expected
    assert all(e.record is None for e in got)


def test_templates_are_shared_and_only_variable_fields_change() -> None:
    redactor = Redactor()
    renderer = LineRenderer(redactor)
    p = PRINCIPALS[1]
    snaps = [
        snapshot(
            make(principal=p, request_id=f"abc-{i:x}", wall=1_700_000_000 + i * 0.37, bytes_out=i),
            100.0 + i / 7,
        )
        for i in range(3000)
    ]
    got = renderer.entries(snaps, _fail)
    assert [e.line for e in got] == [entry(s, redactor).line for s in snaps]
    assert len(renderer._templates) == 1
    assert len(renderer._principals) == 1


def test_upstream_time_present_or_not_under_one_template() -> None:
    redactor = Redactor()
    renderer = LineRenderer(redactor)
    with_time = make()
    without = make()
    without.upstream_ms = None
    snaps = [snapshot(with_time, 100.5), snapshot(without, 100.5)] * 2
    got = renderer.entries(snaps, _fail)
    assert [e.line for e in got] == [entry(s, redactor).line for s in snaps]
    assert b"upstream_ms" in got[0].line
    assert b"upstream_ms" not in got[1].line


def test_equal_principals_that_are_other_objects() -> None:
    redactor = Redactor()
    renderer = LineRenderer(redactor)
    lines = []
    for i in range(50):
        p = Principal("jwt", f"user-{i % 3}", key_id=f"jti-{i}")  # freed and reallocated
        lines.append(renderer.entries([snapshot(make(principal=p), 100.5)], _fail)[0].line)
        assert lines[-1] == entry(snapshot(make(principal=p), 100.5), redactor).line
    assert len(set(lines)) == 50


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record_module, "TEMPLATES_MAX", 4)
    monkeypatch.setattr(record_module, "PRINCIPALS_MAX", 3)
    redactor = Redactor()
    renderer = LineRenderer(redactor)
    principals = [Principal("jwt", f"u{i}", key_id=f"j{i}") for i in range(7)]
    snaps = [
        snapshot(make(path=f"/p/{i % 9}", principal=principals[i % 7]), 100.5) for i in range(100)
    ]
    got = renderer.entries(snaps, _fail)
    assert [e.line for e in got] == [entry(s, redactor).line for s in snaps]
    assert len(renderer._templates) <= 4
    assert len(renderer._principals) <= 3


def test_invalid_utf8_takes_the_full_way() -> None:
    redactor = Redactor()
    renderer = LineRenderer(redactor)
    cases = [
        make(path="/bad/\udcff/x"),
        make(request_id="id-\udcff"),
        make(principal=Principal("jwt", "s\udcff", key_id="j")),
        make(user_agent="ua \ud800"),
    ]
    snaps = [snapshot(ex, 100.5) for ex in cases]
    got = renderer.entries(snaps + snaps, _fail)
    assert [e.line for e in got] == [entry(s, redactor).line for s in snaps + snaps]
    for e in got:
        orjson.loads(e.line)


class BrokenRedactor(Redactor):
    __slots__ = ()

    def redact_text(self, s: str) -> str:
        raise ValueError(f"boom on {s}")


def test_a_render_error_goes_to_on_error() -> None:
    renderer = LineRenderer(BrokenRedactor())
    seen: list[Exception] = []

    def on_error(snap: Snapshot, exc: Exception) -> AuditEntry:
        seen.append(exc)
        return minimal_entry(snap)

    snaps = [snapshot(make(), 100.5), snapshot(make(path="/bad/\udcff"), 100.5)]
    got = renderer.entries(snaps, on_error)
    assert [e.line for e in got] == [minimal_entry(s).line for s in snaps]
    assert len(seen) == 2
    assert all(isinstance(e, ValueError) for e in seen)


def test_many_combinations() -> None:
    redactor = Redactor()
    renderer = LineRenderer(redactor)
    snaps = []
    for i, (p, v) in enumerate(itertools.product(PRINCIPALS, VARIANTS)):
        ex = make(principal=p, **v)
        ex.started_wall += i * 0.001
        snaps.append(snapshot(ex, 100.0 + i * 1e-4))
    got = renderer.entries(snaps * 2, _fail)
    assert [e.line for e in got] == [entry(s, redactor).line for s in snaps * 2]


@pytest.mark.parametrize(
    "upstream_ms",
    [
        *(0.0, 0.0004, 0.0005, 0.0015, 0.001, 0.0625, 0.9995, 2.14075, 100.0, 30000.0001),
        *(999999999.9994, 1e9, 1e17, 5e-324, -0.0, -3.5, float("inf")),
    ],
)
def test_upstream_time_is_written_as_orjson_writes_it(upstream_ms: float) -> None:
    redactor = Redactor()
    ex = make()
    ex.upstream_ms = upstream_ms
    snap = snapshot(ex, 100.5)
    [got] = LineRenderer(redactor).entries([snap], _fail)
    assert got.line == entry(snap, redactor).line


def test_upstream_times_sampled() -> None:
    import random

    rnd = random.Random(7)
    redactor = Redactor()
    renderer = LineRenderer(redactor)
    snaps = []
    for i in range(3000):
        ex = make()
        ex.upstream_ms = 10 ** rnd.uniform(-4, 9) if i % 2 else rnd.randint(0, 10**8) / 1000
        snaps.append(snapshot(ex, 100.5))
    got = renderer.entries(snaps, _fail)
    assert [e.line for e in got] == [entry(s, redactor).line for s in snaps]
