"""The ASGI adapter: body limits, duplicate credentials, lifespan, a whole request."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson

from bastion.authserver.asgi import AuthAsgiApp
from tests.unit.authserver.oauth.harness import make_harness


async def client_for(app: AuthAsgiApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://auth.test")


async def test_a_token_request_through_asgi() -> None:
    h = await make_harness()
    secret = await h.register()
    app = AuthAsgiApp(h.server)
    async with await client_for(app) as c:
        reply = await c.post(
            "/token", data={"grant_type": "client_credentials"}, auth=("svc", secret)
        )
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "no-store"
    assert reply.json()["token_type"] == "Bearer"


async def test_oversized_bodies_are_413() -> None:
    h = await make_harness(max_body_bytes=1024)
    app = AuthAsgiApp(h.server)
    async with await client_for(app) as c:
        reply = await c.post(
            "/token",
            content=b"a=" + b"x" * 2000,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert reply.status_code == 413


async def test_a_chunked_body_over_the_limit_is_413() -> None:
    h = await make_harness(max_body_bytes=1024)
    app = AuthAsgiApp(h.server)
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": b"x" * 700, "more_body": True}] * 3

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/token",
        "headers": [],
        "client": ("1.2.3.4", 1),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 413


async def test_two_authorization_headers_are_refused() -> None:
    h = await make_harness()
    secret = await h.register()
    app = AuthAsgiApp(h.server)
    good = "Basic " + base64.b64encode(f"svc:{secret}".encode()).decode()
    sent: list[dict[str, Any]] = []
    body = b"grant_type=client_credentials"

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/token",
        "headers": [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"authorization", good.encode()),
            (b"authorization", b"Basic eDp5"),
        ],
        "client": ("1.2.3.4", 1),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert orjson.loads(sent[1]["body"]) == {"error": "invalid_request"}


async def test_lifespan_starts_and_stops_the_server() -> None:
    h = await make_harness()
    app = AuthAsgiApp(h.server)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
