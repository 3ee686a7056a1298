"""A small in-process target for the scanner's own tests: users log in and own notes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.scan.auth import parse_auth
from bastion.scan.spec import ScanSpec, scan_spec_from_document

USERS = {"alice": ("1", "alice-pass-123"), "bob": ("2", "bob-pass-456")}


def make_app() -> Starlette:
    state: dict[str, Any] = {
        "notes": {"1": {"id": "1", "owner": "1", "text": "alice secret"}},
        "tokens": {},
        "next": 100,
        "logins": 0,
    }

    async def login(request: Request) -> Response:
        doc = await request.json()
        found = USERS.get(doc.get("username"))
        if found is None or found[1] != doc.get("password"):
            return JSONResponse({"error": "bad credentials"}, 401)
        state["logins"] += 1
        token = f"tok-{found[0]}-{state['logins']:04d}-abcdef"
        state["tokens"][token] = found[0]
        return JSONResponse({"access_token": token, "expires_in": 3600})

    def caller(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return state["tokens"].get(auth.removeprefix("Bearer "))

    async def notes(request: Request) -> Response:
        who = caller(request)
        if who is None:
            return JSONResponse({"error": "unauthenticated"}, 401)
        if request.method == "POST":
            doc = await request.json()
            state["next"] += 1
            nid = str(state["next"])
            state["notes"][nid] = {"id": nid, "owner": who, "text": doc.get("text", "")}
            return JSONResponse(state["notes"][nid], 201)
        return JSONResponse([n for n in state["notes"].values() if n["owner"] == who])

    async def note(request: Request) -> Response:
        who = caller(request)
        if who is None:
            return JSONResponse({"error": "unauthenticated"}, 401)
        nid = request.path_params["note_id"]
        found = state["notes"].get(nid)
        if found is None:
            return JSONResponse({"error": "not found"}, 404)
        if request.method == "DELETE":
            del state["notes"][nid]
            return Response(status_code=204)
        return JSONResponse(found)  # no owner check: BOLA on purpose

    async def revoke_all(request: Request) -> Response:
        state["tokens"].clear()
        return Response(status_code=204)

    async def webhook(request: Request) -> Response:
        """Fetches any URL it is given: an SSRF on purpose (for the canary tests)."""
        doc = await request.json()
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
            try:
                got = await client.get(str(doc.get("url", "")))
            except httpx.HTTPError as exc:
                return JSONResponse({"error": type(exc).__name__}, 502)
        return JSONResponse({"status": got.status_code})

    async def openapi(request: Request) -> Response:
        return JSONResponse(SPEC)

    async def redirect(request: Request) -> Response:
        return Response(status_code=302, headers={"location": request.query_params["to"]})

    app = Starlette(
        routes=[
            Route("/api/login", login, methods=["POST"]),
            Route("/api/notes", notes, methods=["GET", "POST"]),
            Route("/api/notes/{note_id}", note, methods=["GET", "DELETE", "PATCH"]),
            Route("/api/revoke-all", revoke_all, methods=["POST"]),
            Route("/api/redirect", redirect, methods=["GET"]),
            Route("/api/webhook", webhook, methods=["POST"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ]
    )
    app.state.data = state
    return app


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "notes", "version": "1"},
    "servers": [{"url": "http://127.0.0.1/api"}],
    "security": [{"bearer": []}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/login": {
            "post": {
                "operationId": "login",
                "security": [],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "username": {"type": "string"},
                                    "password": {"type": "string"},
                                },
                                "required": ["username", "password"],
                            }
                        }
                    }
                },
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/notes": {
            "get": {"operationId": "listNotes", "responses": {"200": {"description": "ok"}}},
            "post": {
                "operationId": "createNote",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"text": {"type": "string", "example": "hello"}},
                                "required": ["text"],
                            }
                        }
                    }
                },
                "responses": {"201": {"description": "created"}},
            },
        },
        "/notes/{note_id}": {
            "parameters": [
                {
                    "name": "note_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "example": "1"},
                }
            ],
            "get": {"operationId": "getNote", "responses": {"200": {"description": "ok"}}},
            "delete": {"operationId": "deleteNote", "responses": {"204": {"description": "ok"}}},
        },
        "/revoke-all": {
            "post": {
                "operationId": "resetSessions",
                "summary": "Log everyone out",
                "responses": {"204": {"description": "ok"}},
            }
        },
    },
}

AUTH: dict[str, Any] = {
    "version": 1,
    "login": {"path": "/api/login", "token_path": "access_token"},
    "identities": {
        "user_a": {"id": "1", "login": {"username": "alice", "password": "alice-pass-123"}},
        "user_b": {"id": "2", "login": {"username": "bob", "password": "bob-pass-456"}},
    },
}


@pytest.fixture
def app() -> Starlette:
    return make_app()


@pytest.fixture
def transport(app: Starlette) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=app)


@pytest.fixture
def spec() -> ScanSpec:
    return scan_spec_from_document(SPEC)


@pytest.fixture
def auth() -> Any:
    return parse_auth(AUTH)


class LiveServer:
    """The notes app served by uvicorn on 127.0.0.1 in a thread (for the CLI and SSRF tests)."""

    def __init__(self, app: Any) -> None:
        import socket
        import threading

        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="critical", lifespan="off", access_log=False)
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def live(app: Starlette) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server
