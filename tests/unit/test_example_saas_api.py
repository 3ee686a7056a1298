"""The example upstream behaves as the demo and the gateway tests expect (driven over ASGI)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from examples.saas_api import TEST_CARDS, SaasStore, create_app
from starlette.types import ASGIApp, Message


def _luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


async def _call(
    app: ASGIApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    sent: list[Message] = []
    chunks = [body]

    async def receive() -> Message:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers or [(b"host", b"upstream.test")],
        "client": ("127.0.0.9", 50123),
        "server": ("127.0.0.1", 9001),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    hdrs = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], hdrs, out


@pytest.fixture
def app() -> ASGIApp:
    return create_app(SaasStore())


def test_seed_is_deterministic_and_holds_luhn_valid_cards() -> None:
    a, b = SaasStore(), SaasStore()
    assert a.users == b.users
    assert a.invoices == b.invoices
    assert len(a.users) == 10
    assert len(a.invoices) == 30
    assert all(_luhn_ok(u.card_number) for u in a.users.values())
    assert all(_luhn_ok(c) for c in TEST_CARDS)
    assert a.users[1].role == "admin"
    assert {u.role for u in list(a.users.values())[1:]} == {"user"}
    assert all(u.password_hash.startswith("$2b$12$") for u in a.users.values())
    assert len({u.ssn for u in a.users.values()}) == 10


async def test_user_records_carry_sensitive_fields(app: ASGIApp) -> None:
    status, headers, body = await _call(app, "GET", "/api/users/2")
    user = json.loads(body)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["x-powered-by"] == "saas-api"
    assert user["card_number"] == "5555555555554444"
    assert set(user) >= {"ssn", "password_hash", "email", "role"}
    status, _, body = await _call(app, "GET", "/api/users", query=b"limit=3&offset=1")
    page = json.loads(body)
    assert [u["id"] for u in page["items"]] == [2, 3, 4]
    assert page["total"] == 10


@pytest.mark.parametrize(
    ("path", "query", "status"),
    [
        ("/api/users/999", b"", 404),
        ("/api/users/abc", b"", 404),
        ("/api/invoices/999", b"", 404),
        ("/api/users", b"limit=0", 400),
        ("/api/users", b"limit=101", 400),
        ("/api/slow", b"ms=-1", 400),
        ("/api/big", b"kb=x", 400),
    ],
)
async def test_bad_lookups_and_parameters(
    app: ASGIApp, path: str, query: bytes, status: int
) -> None:
    got, _, body = await _call(app, "GET", path, query=query)
    assert got == status
    if status == 400:
        assert json.loads(body)["error"] == "invalid_parameter"


async def test_create_user_copies_only_known_fields(app: ASGIApp) -> None:
    doc = {"name": "Mallory", "email": "m@example.test", "role": "admin", "id": 1}
    status, headers, body = await _call(app, "POST", "/api/users", json.dumps(doc).encode())
    user = json.loads(body)
    assert status == 201
    assert user["id"] == 11
    assert user["role"] == "user"
    assert headers["location"] == "/api/users/11"
    _, _, body = await _call(app, "GET", "/api/users/11")
    assert json.loads(body)["name"] == "Mallory"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"name": "x"}', 422, "invalid_field"),
        (b'{"name": "", "email": "a@b"}', 422, "invalid_field"),
        (b'{"name": "x", "email": "no-at-sign"}', 422, "invalid_field"),
    ],
)
async def test_create_user_refuses_bad_bodies(
    app: ASGIApp, body: bytes, status: int, error: str
) -> None:
    got, headers, out = await _call(app, "POST", "/api/users", body)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert json.loads(out)["error"] == error


async def test_invoices_create_list_and_filter_by_owner(app: ASGIApp) -> None:
    doc = {"user_id": 3, "amount_cents": 4200, "currency": "USD", "description": "extra"}
    status, _, body = await _call(app, "POST", "/api/invoices", json.dumps(doc).encode())
    assert status == 201
    assert json.loads(body)["id"] == 31
    _, _, body = await _call(app, "GET", "/api/invoices", query=b"user_id=3")
    items = json.loads(body)["items"]
    assert [i["user_id"] for i in items] == [3, 3, 3, 3]
    assert items[-1]["amount_cents"] == 4200
    for bad in (
        {"user_id": 999, "amount_cents": 1},
        {"user_id": 1, "amount_cents": 0},
        {"user_id": 1, "amount_cents": True},
        {"user_id": 1, "amount_cents": 1, "currency": "euro"},
    ):
        status, _, _ = await _call(app, "POST", "/api/invoices", json.dumps(bad).encode())
        assert status == 422


async def test_echo_returns_headers_in_order_and_body(app: ASGIApp) -> None:
    headers = [
        (b"host", b"upstream.test"),
        (b"x-forwarded-for", b"203.0.113.7"),
        (b"x-multi", b"1"),
        (b"x-multi", b"2"),
    ]
    status, _, body = await _call(app, "POST", "/api/echo", b'{"a": 1}', headers)
    seen = json.loads(body)
    assert status == 200
    assert seen["method"] == "POST"
    assert seen["headers"]["host"] == "upstream.test"
    assert seen["headers"]["x-forwarded-for"] == "203.0.113.7"
    assert seen["headers"]["x-multi"] == "1, 2"
    assert seen["raw_headers"][2:] == [["x-multi", "1"], ["x-multi", "2"]]
    assert seen["body"] == '{"a": 1}'
    assert seen["client"] == {"host": "127.0.0.9", "port": 50123}
    _, _, body = await _call(app, "PUT", "/api/echo", b"\xff\x00")
    assert json.loads(body)["body_base64"] == "/wA="


async def test_boom_leaks_a_traceback(app: ASGIApp) -> None:
    status, headers, body = await _call(app, "GET", "/api/boom")
    assert status == 500
    assert headers["content-type"].startswith("text/plain")
    assert body.startswith(b"Traceback (most recent call last):")
    assert b"RuntimeError: payment backend refused invoice 42" in body


async def test_slow_and_big(app: ASGIApp) -> None:
    status, _, body = await _call(app, "GET", "/api/slow", query=b"ms=5")
    assert (status, json.loads(body)) == (200, {"slept_ms": 5})
    status, headers, body = await _call(app, "GET", "/api/big", query=b"kb=130")
    assert status == 200
    assert len(body) == 130 * 1024
    assert headers["content-length"] == str(130 * 1024)
    assert len(json.loads(body)["data"]) == 130 * 1024 - 11
    status, _, body = await _call(app, "GET", "/api/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
