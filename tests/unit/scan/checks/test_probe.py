"""The checks' shared comparisons: leaves of a JSON document, same-answer, unique bodies, the
not-found likeness that keeps soft-404s from becoming findings, and the retry after a 429."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.scan.auth import parse_auth
from bastion.scan.checks._probe import (
    json_leaves,
    like_not_found,
    same_answer,
    send,
    throttled,
    unique_body,
)
from bastion.scan.client import Reply
from bastion.scan.session import ScanOptions, open_session
from bastion.scan.spec import scan_spec_from_document


def reply(status: int, body: bytes) -> Reply:
    return Reply("GET", "http://t/x", (), b"", status, httpx.Headers(), body, 0.01)


def test_json_leaves_and_same_answer() -> None:
    doc = {"a": {"b": [1, {"c": "x"}]}, "d": None}
    assert json_leaves(doc) == {"a.b[0]": 1, "a.b[1].c": "x", "d": None}
    assert same_answer(reply(200, b'{"a": 1, "b": 2}'), reply(200, b'{"b":2,"a":1}'))
    assert not same_answer(reply(200, b'{"a": 1}'), reply(201, b'{"a": 1}'))
    assert same_answer(reply(200, b"plain"), reply(200, b"plain"))
    assert not same_answer(reply(200, b"plain"), reply(200, b"other"))


def test_unique_body_changes_only_what_must_be_unique() -> None:
    body = {"email": "a@b.c", "name": "n", "amount": 5, "note": "keep"}
    one, two = unique_body(body), unique_body(body)
    assert one["email"] != two["email"]
    assert one["email"].endswith("@example.test")
    assert (one["amount"], one["note"]) == (5, "keep")
    assert unique_body(["not", "a", "dict"]) == ["not", "a", "dict"]


def test_like_not_found() -> None:
    base = reply(200, b'{"ok": true, "path": "/bastion-scan-0123456789ab"}')
    assert like_not_found(reply(404, b"whatever"), None)
    assert like_not_found(reply(429, b""), None)
    assert like_not_found(reply(200, b'{"ok": true, "path": "/debug"}'), base)
    assert not like_not_found(
        reply(
            200,
            b'{"debug": true, "routes": ["/a", "/b", "/c", "/d"], "python": "3.11.7", "users": 10}',
        ),
        base,
    )
    assert not like_not_found(reply(401, b""), reply(404, b""))
    assert not like_not_found(reply(200, b"{}"), None)
    assert throttled(reply(503, b""))
    assert not throttled(reply(500, b""))


async def test_send_retries_once_after_a_429() -> None:
    calls: list[int] = []

    async def limited(request: Request) -> Response:
        calls.append(1)
        if len(calls) == 1:
            return JSONResponse({"error": "slow down"}, 429, headers={"Retry-After": "0"})
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/x", limited)])
    spec = scan_spec_from_document(
        {
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": {"/x": {"get": {"responses": {"200": {"description": "ok"}}}}},
        }
    )
    auth = parse_auth(
        {
            "version": 1,
            "identities": {"user_a": {"headers": {"x": "a"}}, "user_b": {"headers": {"x": "b"}}},
        }
    )
    async with open_session(
        spec,
        "http://testserver",
        auth,
        ScanOptions(canary=False),
        transport=httpx.ASGITransport(app=app),
    ) as ctx:
        got = await send(ctx, "GET", "/x")
    assert (got.status, len(calls)) == (200, 2)
