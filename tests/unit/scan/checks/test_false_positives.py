"""A target built to fool naive checks: a catch-all 200 for unknown paths, answers that change on
every request, a 200 for another user's id that carries only the caller's own data, an
anonymous 200 that is a different page, ``*`` CORS without credentials, a version-less Server
header. None of it is a flaw, and no check may report it."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.scan.auth import parse_auth
from bastion.scan.checks.authn import Authn
from bastion.scan.checks.bola import Bola
from bastion.scan.checks.injection import Injection
from bastion.scan.checks.inventory import Inventory
from bastion.scan.checks.misconfig import Misconfig
from bastion.scan.checks.properties import Properties
from bastion.scan.session import ScanOptions, open_session
from bastion.scan.spec import scan_spec_from_document
from tests.unit.scan.checks.conftest import run_check

OWN = {"alice": "1", "bob": "2"}


def tricky_app(*, hsts: bool = True) -> Starlette:
    def who(request: Request) -> str | None:
        return request.headers.get("x-user")

    async def things(request: Request) -> Response:
        user = who(request)
        if user is None:
            return JSONResponse({"items": [], "hint": "log in to see your things"})
        return JSONResponse({"items": [{"id": OWN[user], "viewer": user}]})

    async def thing(request: Request) -> Response:
        user = who(request) or "nobody"
        # Whatever id is asked, the answer is about the caller: nothing of another user's.
        return JSONResponse({"id": request.path_params["thing_id"], "viewer": user})

    async def search(request: Request) -> Response:
        q = request.query_params.get("q", "")
        return JSONResponse({"q": q, "nonce": secrets.token_hex(8), "hits": len(q) % 3})

    async def catch_all(request: Request) -> Response:
        return JSONResponse({"ok": True, "path": request.url.path})

    app = Starlette(
        routes=[
            Route("/api/things", things),
            Route("/api/things/{thing_id}", thing),
            Route("/api/search", search),
            Route("/{rest:path}", catch_all),
        ]
    )

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def send_more(message: Any) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"server", b"nginx"), (b"access-control-allow-origin", b"*")]
                if hsts:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await app(scope, receive, send_more)

    return wrapped  # type: ignore[return-value]


SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "tricky", "version": "1"},
    "servers": [{"url": "https://api.example"}],
    "security": [{"h": []}],
    "components": {"securitySchemes": {"h": {"type": "apiKey", "in": "header", "name": "x-user"}}},
    "paths": {
        "/api/things": {"get": {"responses": {"200": {"description": "ok"}}}},
        "/api/things/{thing_id}": {
            "get": {
                "parameters": [
                    {
                        "name": "thing_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/api/search": {
            "get": {
                "parameters": [
                    {"name": "q", "in": "query", "schema": {"type": "string", "example": "open"}}
                ],
                "responses": {"200": {"description": "ok"}},
            }
        },
    },
}
AUTH = {
    "version": 1,
    "identities": {
        "user_a": {"id": "1", "headers": {"x-user": "alice"}},
        "user_b": {"id": "2", "headers": {"x-user": "bob"}},
    },
}


async def scan_tricky(check: Any, *, hsts: bool = True) -> list[Any]:
    transport = httpx.ASGITransport(app=tricky_app(hsts=hsts))
    spec = scan_spec_from_document(SPEC)
    async with open_session(
        spec,
        "https://testserver",
        parse_auth(AUTH),
        ScanOptions(rate=1000.0, canary=False),
        transport=transport,
    ) as ctx:
        return await run_check(check, ctx)


async def test_nothing_here_is_a_flaw() -> None:
    for check in (Bola(), Authn(), Injection(), Inventory(), Properties()):
        assert await scan_tricky(check) == [], check.id


async def test_misconfig_reports_only_the_missing_hsts() -> None:
    assert await scan_tricky(Misconfig()) == []
    found = await scan_tricky(Misconfig(), hsts=False)
    assert [f.key for f in found] == ["hsts"]
