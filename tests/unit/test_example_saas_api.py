"""The example upstream behaves as the demo and the gateway tests expect (driven over ASGI), in
its secure mode and in its vulnerable mode, which plants exactly the flaws of
``examples/ground_truth.yaml``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from examples import saas_api
from examples.saas_api import (
    PUBLIC_USER_FIELDS,
    SECRET_USER_FIELDS,
    TEST_CARDS,
    SaasStore,
    create_app,
)
from starlette.types import ASGIApp, Message

from bastion.openapi.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BACKTRACKING_PATTERN = saas_api.BACKTRACKING_WORDS.pattern
GROUND_TRUTH = yaml.safe_load((EXAMPLES / "ground_truth.yaml").read_text(encoding="utf-8"))

ALICE = [(b"x-bastion-subject", b"1")]  # the administrator
BOB = [(b"x-bastion-subject", b"2")]
SERVICE = [(b"x-bastion-auth", b"api_key"), (b"x-bastion-subject", b"billing")]


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
        "headers": [(b"host", b"upstream.test"), *(headers or [])],
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


@pytest.fixture
def vulnerable() -> ASGIApp:
    return create_app(SaasStore(), vulnerable=True)


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


async def test_user_records_carry_secrets_only_in_vulnerable_mode(
    app: ASGIApp, vulnerable: ASGIApp
) -> None:
    status, headers, body = await _call(app, "GET", "/api/users/2", headers=BOB)
    user = json.loads(body)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["x-powered-by"] == "saas-api"
    assert tuple(user) == PUBLIC_USER_FIELDS
    assert (user["id"], user["name"], user["is_admin"]) == (2, "Bob", False)
    status, _, body = await _call(vulnerable, "GET", "/api/users/2", headers=BOB)
    leaked = json.loads(body)
    assert tuple(leaked) == PUBLIC_USER_FIELDS + SECRET_USER_FIELDS
    assert leaked["card_number"] == "5555555555554444"
    assert leaked["password_hash"].startswith("$2b$12$")
    status, _, body = await _call(
        app, "GET", "/api/users", query=b"limit=3&offset=1", headers=ALICE
    )
    page = json.loads(body)
    assert [u["id"] for u in page["items"]] == [2, 3, 4]
    assert page["total"] == 10
    assert "ssn" not in page["items"][0]


@pytest.mark.parametrize("mode", ["secure", "vulnerable"])
async def test_callers_are_named_by_the_gateway_headers(mode: str) -> None:
    app = create_app(SaasStore(), vulnerable=mode == "vulnerable")
    for headers in ([], [(b"x-bastion-subject", b"99")], [(b"x-bastion-subject", b"bob")]):
        status, _, body = await _call(app, "GET", "/api/users/2", headers=headers)
        assert (status, json.loads(body)["error"]) == (401, "unauthenticated")
    assert (await _call(app, "GET", "/api/users/3", headers=BOB))[0] == 404  # not Bob's
    assert (await _call(app, "GET", "/api/users/3", headers=ALICE))[0] == 200  # the admin
    assert (await _call(app, "GET", "/api/users", headers=BOB))[0] == 403
    assert (await _call(app, "GET", "/api/users/2", headers=SERVICE))[0] == 403
    status, _, body = await _call(app, "GET", "/api/invoices", headers=BOB)
    assert {i["user_id"] for i in json.loads(body)["items"]} == {2}
    assert (await _call(app, "GET", "/api/invoices", query=b"user_id=3", headers=BOB))[0] == 403
    assert (await _call(app, "GET", "/api/invoices/1", headers=SERVICE))[0] == 403  # no scope
    reader = [*SERVICE, (b"x-bastion-scopes", b"read")]
    status, _, body = await _call(app, "GET", "/api/invoices", query=b"user_id=3", headers=reader)
    assert [i["id"] for i in json.loads(body)["items"]] == [7, 8, 9]


async def test_bola_on_invoices_only_in_vulnerable_mode(app: ASGIApp, vulnerable: ASGIApp) -> None:
    # Invoice 7 belongs to user 3 (Carol); Bob is user 2.
    assert (await _call(app, "GET", "/api/invoices/4", headers=BOB))[0] == 200  # his own
    status, _, body = await _call(app, "GET", "/api/invoices/7", headers=BOB)
    assert (status, json.loads(body)["error"]) == (404, "not_found")
    status, _, body = await _call(vulnerable, "GET", "/api/invoices/7", headers=BOB)
    assert status == 200
    assert json.loads(body)["user_id"] == 3


@pytest.mark.parametrize("method", ["PATCH", "POST"])
async def test_mass_assignment_of_is_admin_only_in_vulnerable_mode(
    app: ASGIApp, vulnerable: ASGIApp, method: str
) -> None:
    path = "/api/users/2" if method == "PATCH" else "/api/users"
    doc = {"name": "Mallory", "email": "m@example.test", "is_admin": True, "role": "admin"}
    for target, admin in ((app, False), (vulnerable, True)):
        status, _, body = await _call(target, method, path, json.dumps(doc).encode(), BOB)
        user = json.loads(body)
        assert status == (200 if method == "PATCH" else 201)
        assert (user["name"], user["is_admin"], user["role"]) == (
            "Mallory",
            admin,
            "admin" if admin else "user",
        )


async def test_user_deletion_needs_the_admin_role_only_in_secure_mode(
    app: ASGIApp, vulnerable: ASGIApp
) -> None:
    status, _, body = await _call(app, "DELETE", "/api/users/3", headers=BOB)
    assert (status, json.loads(body)["error"]) == (403, "forbidden")
    assert (await _call(app, "GET", "/api/users/3", headers=ALICE))[0] == 200
    assert (await _call(vulnerable, "DELETE", "/api/users/3", headers=BOB))[0] == 204
    assert (await _call(vulnerable, "GET", "/api/users/3", headers=ALICE))[0] == 404
    assert (await _call(app, "DELETE", "/api/users/3", headers=ALICE))[0] == 204
    assert (await _call(app, "DELETE", "/api/users/3", headers=ALICE))[0] == 404
    # The user's invoices went with them; ids are not reused.
    status, _, body = await _call(app, "GET", "/api/invoices/7", headers=ALICE)
    assert status == 404
    status, _, body = await _call(app, "POST", "/api/users", b'{"name": "N", "email": "n@x"}')
    assert json.loads(body)["id"] == 11


async def test_internal_owner_endpoint_answers_the_resolver(app: ASGIApp) -> None:
    status, _, body = await _call(app, "GET", "/internal/invoices/7/owner")
    assert (status, json.loads(body)) == (200, {"owner": "3"})
    assert (await _call(app, "GET", "/internal/invoices/999/owner"))[0] == 404


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
    got, _, body = await _call(app, "GET", path, query=query, headers=ALICE)
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
    _, _, body = await _call(app, "GET", "/api/users/11", headers=[(b"x-bastion-subject", b"11")])
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
    status, _, body = await _call(app, "POST", "/api/invoices", json.dumps(doc).encode(), ALICE)
    assert status == 201
    assert json.loads(body)["id"] == 31
    _, _, body = await _call(app, "GET", "/api/invoices", query=b"user_id=3", headers=ALICE)
    items = json.loads(body)["items"]
    assert [i["user_id"] for i in items] == [3, 3, 3, 3]
    assert items[-1]["amount_cents"] == 4200
    for bad in (
        {"user_id": 999, "amount_cents": 1},
        {"user_id": 1, "amount_cents": 0},
        {"user_id": 1, "amount_cents": True},
        {"user_id": 1, "amount_cents": 1, "currency": "euro"},
    ):
        status, _, _ = await _call(app, "POST", "/api/invoices", json.dumps(bad).encode(), ALICE)
        assert status == 422
    assert (await _call(app, "POST", "/api/invoices", json.dumps(doc).encode(), BOB))[0] == 403
    writer = [*SERVICE, (b"x-bastion-scopes", b"read write")]
    assert (await _call(app, "POST", "/api/invoices", json.dumps(doc).encode(), writer))[0] == 201


async def test_echo_returns_headers_in_order_and_body(app: ASGIApp) -> None:
    headers = [
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


# What each flaw's answer shows beyond its status (in vulnerable mode only): a predicate on the
# JSON body (None when there is none) and the response headers.
Evidence = Callable[[Any, dict[str, str]], bool]
EVIDENCE: dict[str, Evidence] = {
    "bola-invoice-read": lambda doc, _h: doc.get("user_id") == 3,
    "mass-assignment-is-admin": lambda doc, _h: doc.get("is_admin") is True,
    "user-sensitive-exposure": lambda doc, _h: {"ssn", "card_number", "password_hash"} <= set(doc),
    "bfla-delete-user": lambda doc, _h: doc is None,  # 204, no body
    "bfla-create-invoice": lambda doc, _h: doc["user_id"] == 3,
    "jwt-weak-hmac-key": lambda doc, _h: doc["id"] == 2,
    "jwt-alg-none": lambda doc, _h: doc["id"] == 2,
    "jwt-claims-not-validated": lambda doc, _h: doc["id"] == 2,
    "login-user-enumeration": lambda doc, _h: doc["error"] == "unknown_user",
    "login-no-lockout": lambda doc, _h: doc["error"] == "wrong_password",
    "default-admin-credentials": lambda doc, _h: doc["access_token"].count(".") == 2,
    "no-rate-limit": lambda doc, _h: len(doc["items"]) == 3,
    "unbounded-page-size": lambda doc, _h: "items" in doc,
    "no-body-size-limit": lambda doc, _h: doc["file"] == "big.pdf",
    "redos-invoice-search": lambda doc, _h: doc["error"] == "invalid_parameter",
    "ssrf-webhook-test": lambda doc, _h: doc["error"] == "delivery_failed",
    "cors-reflects-origin": lambda _d, h: (
        h.get("access-control-allow-origin") == "https://evil.example"
    ),
    "stack-trace-disclosure": lambda doc, _h: doc is None,  # text/plain traceback
    "version-header-disclosure": lambda _d, h: h.get("x-runtime", "").startswith("CPython/"),
    "undocumented-invoice-delete": lambda doc, _h: doc["status"] == "void",
    "debug-endpoint-exposed": lambda doc, _h: doc["debug"] is True,
    "legacy-api-version": lambda doc, _h: doc["id"] == 3 and "ssn" in doc,
    "sqli-invoice-status": lambda doc, _h: len(doc["items"]) == 30,
    "nosql-login-operator": lambda doc, _h: "access_token" in doc,
    "command-injection-export": lambda doc, _h: doc["file"] == "x;sleep 0.pdf",
}


def test_ground_truth_lists_exactly_the_planted_flaws() -> None:
    assert [f["id"] for f in GROUND_TRUTH["flaws"]] == list(EVIDENCE)
    source = (EXAMPLES / "saas_api.py").read_text(encoding="utf-8")
    for flaw in GROUND_TRUTH["flaws"]:
        assert f"FLAW {flaw['id']}" in source  # each one is marked where it is planted
        assert flaw["owasp"].startswith(("API", "INJECTION"))
        assert flaw["cwe"].startswith("CWE-")
        assert flaw["scan"], flaw["id"]  # which scanner findings report it
        assert {"check", "key"} <= set(flaw["scan"][0])


def _trigger_request(
    trigger: dict[str, Any],
) -> tuple[str, str, bytes, list[tuple[bytes, bytes]], bytes]:
    req = trigger["request"]
    if "raw_body" in req:
        body = req["raw_body"].encode()
    elif "body" in req:
        doc = dict(req["body"])
        if "pad_bytes" in trigger:
            doc["padding"] = "x" * trigger["pad_bytes"]
        body = json.dumps(doc).encode()
    else:
        body = b""
    who = [(b"x-bastion-subject", trigger["as"].encode())] if trigger["as"] else []
    who += [(k.encode(), str(v).encode()) for k, v in req.get("headers", {}).items()]
    query = "&".join(f"{k}={quote(str(v))}" for k, v in req.get("query", {}).items())
    return req["method"], req["path"], body, who, query.encode()


@pytest.mark.parametrize("flaw", GROUND_TRUTH["flaws"], ids=lambda f: str(f["id"]))
async def test_ground_truth_triggers_answer_as_listed(flaw: dict[str, Any]) -> None:
    trigger = flaw["trigger"]
    method, path, body, who, query = _trigger_request(trigger)
    for mode in ("secure", "vulnerable"):
        app = create_app(SaasStore(), vulnerable=mode == "vulnerable")
        for _ in range(trigger.get("repeat", 1)):
            status, headers, out = await _call(app, method, path, body, who, query)
        assert status == trigger[mode]["status"], mode
        try:
            doc = json.loads(out) if out else None
        except ValueError:
            doc = None
        try:
            shown = EVIDENCE[flaw["id"]](doc, headers)
        except (KeyError, TypeError):  # an error answer has none of the flaw's fields
            shown = False
        if flaw["id"] == "stack-trace-disclosure":
            shown = b"Traceback (most recent call last)" in out
        if flaw["id"] == "redos-invoice-search":
            continue  # the same answer in both modes; the difference is time (see below)
        assert shown is (mode == "vulnerable"), mode


@pytest.mark.parametrize("mode", ["secure", "vulnerable"])
async def test_only_the_vulnerable_search_backtracks(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    class Recorder:
        def fullmatch(self, text: str) -> None:
            calls.append(text)

    monkeypatch.setattr(saas_api, "BACKTRACKING_WORDS", Recorder())
    app = create_app(SaasStore(), vulnerable=mode == "vulnerable")
    status, _, _ = await _call(app, "GET", "/api/invoices", headers=BOB, query=b"q=aaaa%21")
    assert status == 400
    assert calls == (["aaaa!"] if mode == "vulnerable" else [])
    assert saas_api.BACKTRACKING_WORDS is not None


def test_the_planted_regex_has_nested_quantifiers() -> None:
    import re

    assert re.search(r"\(.*\+.*\)\*", BACKTRACKING_PATTERN)


def test_ground_truth_operations_are_the_contract_s() -> None:
    spec = load_spec(str(EXAMPLES / "openapi.yaml"))
    declared = {(op.method, op.path_template): op.operation_id for op in spec.operations}
    for flaw in GROUND_TRUTH["flaws"]:
        for op in flaw["operations"]:
            if op["operation_id"] is None:  # an endpoint or method the contract leaves out
                assert (op["method"], op["path"]) not in declared
            else:
                assert declared[(op["method"], op["path"])] == op["operation_id"]
