"""The front end's response-body hook (used by response-filter layers): bodies are held and
filtered whole up to a limit, replaced by a Reply, or streamed unfiltered when too large."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config.model import RouteConfig
from bastion.core.exchange import Exchange, Headers, Reply
from bastion.errors import UpstreamError
from bastion.gateway import runtime
from bastion.gateway.layers.base import Layer
from bastion.gateway.services import GatewayServices
from tests.support.gateway import GatewayHarness

pytestmark = pytest.mark.integration


class BodyTestLayer(Layer):
    """Filters bodies as the request's ``x-filter`` header says."""

    name = "body-test"

    def wants_response_body(self, ex: Exchange, status: int, headers: Headers) -> int:
        return 1024 if ex.request.headers.get("x-filter") else 0

    def on_response_body(
        self, ex: Exchange, status: int, headers: Headers, body: bytes
    ) -> bytes | Reply:
        mode = ex.request.headers.get("x-filter")
        if mode == "block":
            return ex.deny(UpstreamError(diagnosis="body refused by test filter"))
        return body.upper()

    def on_response_body_too_large(
        self, ex: Exchange, status: int, headers: Headers
    ) -> Reply | None:
        if ex.request.headers.get("x-filter") == "strict":
            return ex.deny(UpstreamError(diagnosis="too large to check"))
        return None


@pytest.fixture
def filtered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayHarness]:
    original = runtime.LAYER_BUILDERS["ratelimit"]

    def build(r: RouteConfig, s: GatewayServices) -> Layer | None:
        return BodyTestLayer() if r.name == "public" else original(r, s)

    monkeypatch.setitem(runtime.LAYER_BUILDERS, "ratelimit", build)
    h = GatewayHarness(tmp_path)
    try:
        yield h
    finally:
        h.close()


def test_body_filtered_and_reframed(filtered: GatewayHarness) -> None:
    r = filtered.request("GET", "/public/chunked", headers={"X-Filter": "upper"})
    assert r.status == 200
    assert r.body == b"HELLO WORLD"
    assert r.header("content-length") == "11"
    assert r.header("transfer-encoding") is None
    assert r.header("x-content-type-options") == "nosniff"  # header layers still ran


def test_unfiltered_requests_still_stream(filtered: GatewayHarness) -> None:
    r = filtered.request("GET", "/public/chunked")
    assert r.body == b"hello world"
    assert r.header("transfer-encoding") == "chunked"


def test_filter_reply_replaces_response(filtered: GatewayHarness) -> None:
    r = filtered.request("GET", "/public/echo", headers={"X-Filter": "block"})
    assert r.status == 502
    assert r.json()["code"] == "upstream.error"
    assert b"method" not in r.body  # nothing of the upstream body leaks


def test_too_large_passes_unfiltered_or_is_blocked(filtered: GatewayHarness) -> None:
    r = filtered.request("GET", "/public/big?kb=8", headers={"X-Filter": "upper"})
    assert r.status == 200
    assert r.body == b"x" * 8192  # streamed as is: the filter never saw it
    strict = filtered.request("GET", "/public/big?kb=8", headers={"X-Filter": "strict"})
    assert strict.status == 502
    assert b"xxxx" not in strict.body
    assert filtered.request("GET", "/public/echo").status == 200  # connection pool healthy


def test_head_and_no_content_are_never_held(filtered: GatewayHarness) -> None:
    r = filtered.request("HEAD", "/public/echo", headers={"X-Filter": "block"})
    assert r.status == 200
    assert (
        filtered.request("GET", "/public/status/204", headers={"X-Filter": "block"}).status == 204
    )


async def test_middleware_mode_filters_bodies_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion import protect
    from bastion.config import parse_config

    monkeypatch.setitem(runtime.LAYER_BUILDERS, "ratelimit", lambda r, s: BodyTestLayer())

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
        )  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"world", "more_body": False})  # type: ignore[operator]

    cfg = parse_config(
        {
            "store": "memory://",
            "listeners": [{"bind": "127.0.0.1:0"}],
            "audit": {"sinks": []},
            "routes": [{"name": "r", "authn": {"methods": [], "unsafe_allow_anonymous": True}}],
        },
        {},
    )
    mw = protect(app, cfg)  # type: ignore[arg-type]

    async def run(mode: str) -> list[dict]:  # type: ignore[type-arg]
        sent: list[dict] = []  # type: ignore[type-arg]

        async def receive() -> dict:  # type: ignore[type-arg]
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(m: dict) -> None:  # type: ignore[type-arg]
            sent.append(m)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/x",
            "raw_path": b"/x",
            "query_string": b"",
            "headers": [(b"host", b"t"), (b"x-filter", mode.encode())],
            "client": ("127.0.0.1", 1),
            "scheme": "http",
        }
        await mw(scope, receive, send)
        return sent

    upper = await run("upper")
    assert upper[0]["status"] == 200
    assert (b"content-length", b"10") in upper[0]["headers"]
    assert b"".join(m.get("body", b"") for m in upper[1:]) == b"HELLOWORLD"
    blocked = await run("block")
    assert blocked[0]["status"] == 502
    assert b"hello" not in b"".join(m.get("body", b"") for m in blocked[1:])
    await mw.aclose()
