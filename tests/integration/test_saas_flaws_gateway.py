"""The example SaaS API in vulnerable mode behind the real gateway: the planted flaws of
``examples/ground_truth.yaml`` work against the upstream directly and are refused or cleaned
through Bastion — above all, the SSN, card number and password hash never reach a client — and
each flaw's trigger gets through the gateway exactly the answer its ``gateway`` entry says
(including the two the gateway cannot stop)."""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import uvicorn
import yaml
from examples.saas_api import SaasStore, create_app

from tests.support.gateway import GatewayHarness, Response

pytestmark = pytest.mark.integration

SPEC = Path(__file__).resolve().parents[2] / "examples" / "openapi.yaml"


class SaasServer:
    """The example API (vulnerable mode) on a loopback port, served by uvicorn in the
    harness's event loop once :meth:`start` is called."""

    def __init__(self) -> None:
        self.store = SaasStore()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        app = create_app(self.store, vulnerable=True)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.server.serve([self.sock]))
        while not self.server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task

    def direct(self, method: str, path: str, subject: str, body: Any = None) -> tuple[int, Any]:
        """A request straight to the upstream, as user ``subject``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            raw = orjson.dumps(body) if body is not None else None
            conn.request(method, path, body=raw, headers={"x-bastion-subject": subject})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, orjson.loads(data) if data else None
        finally:
            conn.close()


@pytest.fixture
def saas(tmp_path: Path) -> Iterator[tuple[GatewayHarness, SaasServer]]:
    server = SaasServer()
    up = f"http://127.0.0.1:{server.port}"
    resolver = {
        "name": "invoices",
        "type": "http",
        "url": up,
        "path": "/internal/invoices/{id}/owner",
    }
    routes = [
        {  # the API with its contract: request and response side
            "name": "saas",
            "host": "saas.test",
            "upstream": up,
            "openapi": {"spec": str(SPEC)},
            "authz": {"resolvers": [resolver]},
        },
        {  # the same upstream without a contract: the detectors alone
            "name": "detect",
            "host": "detect.test",
            "upstream": up,
            "response_filter": {"enabled": True},
        },
    ]
    h = GatewayHarness(tmp_path, extra_routes=routes)
    try:
        h.thread.call(server.start())
        yield h, server
    finally:
        finish(h, server)


def finish(h: GatewayHarness, server: SaasServer) -> None:
    """Stop the upstream, then the gateway (which flushes its audit log)."""
    if not h.closed:
        h.thread.call(server.stop())
        h.close()
    server.sock.close()


def call(
    h: GatewayHarness,
    method: str,
    path: str,
    token: str,
    *,
    host: str = "saas.test",
    body: Any = None,
) -> Response:
    headers = {"Host": host, "Authorization": f"Bearer {token}"}
    raw = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        raw = orjson.dumps(body)
    return h.request(method, path, headers=headers, body=raw)


def bob(h: GatewayHarness) -> str:
    return h.token(sub="2", scope="read write")


def assert_no_secret_of(user: dict[str, Any], raw: bytes) -> None:
    """None of the user's secret values, in any spelling, is in ``raw``."""
    card = user["card_number"]
    for secret in (user["ssn"], user["password_hash"], card, card[:4] + " " + card[4:8]):
        assert secret.encode() not in raw


def test_user_secrets_never_reach_the_client(saas: tuple[GatewayHarness, SaasServer]) -> None:
    h, server = saas
    status, leaked = server.direct("GET", "/api/users/2", "2")
    assert status == 200
    assert {"ssn", "card_number", "password_hash"} <= set(leaked)  # the flaw, directly

    r = call(h, "GET", "/api/users/2", bob(h))
    assert r.status == 200
    user = r.json()
    assert set(user) == {"id", "name", "email", "role", "is_admin", "phone", "created_at"}
    assert user["phone"] == "[REDACTED]"  # x-bastion-sensitive, for admins only
    assert_no_secret_of(leaked, r.body)
    assert r.header("content-length") == str(len(r.body))

    admin = h.token(sub="1", scope="read", roles=["admin"])
    r = call(h, "GET", "/api/users?limit=100", admin)
    assert r.status == 200
    items = r.json()["items"]
    assert len(items) == 10
    assert all("ssn" not in u and "password_hash" not in u for u in items)
    assert items[1]["phone"] == "+1-555-0102"  # an admin may see it
    for i in range(1, 11):
        assert_no_secret_of(server.store.users[i].__dict__, r.body)

    finish(h, server)
    text = (h.tmp / "audit.jsonl").read_text()
    assert_no_secret_of(leaked, text.encode())


def test_the_detectors_alone_mask_what_a_route_without_a_contract_returns(
    saas: tuple[GatewayHarness, SaasServer],
) -> None:
    h, server = saas
    r = call(h, "GET", "/api/users/2", bob(h), host="detect.test")
    assert r.status == 200
    user = r.json()
    assert user["ssn"] == "[REDACTED]"
    assert user["password_hash"] == "[REDACTED]"
    assert user["card_number"] == "****4444"
    assert user["name"] == "Bob"  # nothing else changes
    assert_no_secret_of(server.direct("GET", "/api/users/2", "2")[1], r.body)


def test_bola_on_invoices_is_refused(saas: tuple[GatewayHarness, SaasServer]) -> None:
    h, server = saas
    status, invoice = server.direct("GET", "/api/invoices/7", "2")
    assert (status, invoice["user_id"]) == (200, 3)  # Bob reads Carol's invoice directly
    assert call(h, "GET", "/api/invoices/4", bob(h)).status == 200  # his own
    r = call(h, "GET", "/api/invoices/7", bob(h))
    assert r.status == 403
    assert r.json()["code"] == "access.forbidden"
    assert b"amount_cents" not in r.body


def test_mass_assignment_of_is_admin_is_refused(saas: tuple[GatewayHarness, SaasServer]) -> None:
    h, server = saas
    status, user = server.direct("PATCH", "/api/users/4", "4", {"is_admin": True})
    assert (status, user["is_admin"]) == (200, True)  # Dave made himself an admin directly
    r = call(h, "PATCH", "/api/users/2", bob(h), body={"name": "Bob", "is_admin": True})
    assert r.status == 400
    assert r.json()["code"] == "openapi.invalid_request"
    assert server.store.users[2].role == "user"
    r = call(h, "PATCH", "/api/users/2", bob(h), body={"name": "Robert"})
    assert (r.status, r.json()["name"]) == (200, "Robert")  # the declared fields still work


def test_admin_operation_needs_the_admin_role(saas: tuple[GatewayHarness, SaasServer]) -> None:
    h, server = saas
    assert server.direct("DELETE", "/api/users/9", "2")[0] == 204  # Bob deletes Ivan directly
    r = call(h, "DELETE", "/api/users/10", bob(h))
    assert r.status == 403
    assert r.json()["code"] == "access.forbidden"
    assert 10 in server.store.users
    admin = h.token(sub="1", scope="read write", roles=["admin"])
    assert call(h, "DELETE", "/api/users/10", admin).status == 204


GROUND_TRUTH = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "examples" / "ground_truth.yaml").read_text("utf-8")
)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[GatewayHarness, SaasServer]]:
    """The vulnerable API behind a route like examples/bastion.yaml's ``api`` route: /api only,
    the contract, the owner resolver, 10 requests per second per caller."""
    server = SaasServer()
    up = f"http://127.0.0.1:{server.port}"
    route = {
        "name": "demo",
        "host": "demo.test",
        "path_prefix": "/api",
        "upstream": up,
        "openapi": {"spec": str(SPEC)},
        "authz": {
            "resolvers": [
                {
                    "name": "invoices",
                    "type": "http",
                    "url": up,
                    "path": "/internal/invoices/{id}/owner",
                }
            ]
        },
        "ratelimit": {"limits": [{"rate": 10, "per": "1s"}]},
    }
    h = GatewayHarness(tmp_path, extra_routes=[route])
    try:
        h.thread.call(server.start())
        yield h, server
    finally:
        finish(h, server)


def oversized(h: GatewayHarness, path: str, token: str, size: int) -> int:
    """The status a body of ``size`` bytes gets, announced by Content-Length (the gateway may
    answer before reading it, so only the head is sent)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: demo.test\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    answer = h.raw(head + b'{"filename": "big", "padding": "xxxx', timeout=3.0)
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("flaw", GROUND_TRUTH["flaws"], ids=lambda f: str(f["id"]))
def test_the_gateway_answers_each_trigger_as_ground_truth_says(
    demo: tuple[GatewayHarness, SaasServer], flaw: dict[str, Any]
) -> None:
    h, _server = demo
    trigger, expected = flaw["trigger"], flaw["gateway"]
    req = trigger["request"]
    token = h.token(sub=trigger["as"] or "2", scope="read write")
    if "pad_bytes" in trigger:
        assert oversized(h, req["path"], token, trigger["pad_bytes"]) == expected["status"]
        return
    headers = {"Host": "demo.test", **req.get("headers", {})}
    if trigger["as"]:
        headers["Authorization"] = f"Bearer {token}"
    body = None
    if "raw_body" in req:
        body = req["raw_body"].encode()
    elif "body" in req:
        body = orjson.dumps(req["body"])
    if body is not None:
        headers["Content-Type"] = "application/json"
    query = "&".join(f"{k}={quote(str(v))}" for k, v in req.get("query", {}).items())
    path = req["path"] + (f"?{query}" if query else "")
    for _ in range(trigger.get("repeat", 1)):
        r = h.request(req["method"], path, headers=headers, body=body)
    assert r.status == expected["status"]
    code = r.json().get("code") if r.body.startswith(b"{") else None
    assert code == expected["code"]
    assert r.header("access-control-allow-origin") != "https://evil.example"
    assert r.header("x-runtime") is None
    assert b"Traceback" not in r.body


def test_a_body_that_repeats_a_key_is_refused(saas: tuple[GatewayHarness, SaasServer]) -> None:
    """The gateway's parser keeps a repeated key's last value; an upstream's may keep the
    first. Such a body is refused before any check reads it."""
    h, server = saas
    headers = {"Host": "saas.test", "Authorization": f"Bearer {bob(h)}"}
    headers["Content-Type"] = "application/json"
    before = server.store.users[2].name
    for raw in (b'{"name":"Mallory","name":"Robert"}', b'{"name":"Mallory","n\\u0061me":"R"}'):
        r = h.request("PATCH", "/api/users/2", headers=headers, body=raw)
        assert r.status == 400
        assert r.json()["code"] == "openapi.invalid_request"
        assert r.json()["detail"] == "body: an object repeats a key"
    assert server.store.users[2].name == before
