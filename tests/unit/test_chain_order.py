"""The order of the gateway's layers is a security decision: pinned here, as a table and as
the chain ``build_chain`` actually produces for a route."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bastion.config import parse_config
from bastion.config.model import BastionConfig
from bastion.core.exchange import Exchange, Headers, RequestView
from bastion.gateway.chain import LAYER_ORDER
from bastion.gateway.runtime import LAYER_BUILDERS, RouteRuntime, build_chain
from bastion.gateway.services import GatewayServices
from bastion.store.memory import MemoryStore

PEPPER = "p" * 40
BANK = str(Path(__file__).resolve().parents[1] / "fixtures" / "openapi" / "bank.yaml")
INVOICES = {"name": "invoices", "type": "http", "url": "http://127.0.0.1:9", "path": "/o/{id}"}
UP = "http://127.0.0.1:9"
FULL = {
    "authn": {"methods": ["api_key"]},
    "cors": {"allow_origins": ["https://app.example"]},
    "ratelimit": {"limits": [{"rate": 1, "per": "1h", "key": "ip"}]},
}


def config(*routes: dict[str, Any]) -> BastionConfig:
    return parse_config(
        {
            "store": "memory://",
            "listeners": [{"bind": "127.0.0.1:0"}],
            "api_keys": {"pepper": PEPPER},
            "routes": list(routes),
        },
        {},
    )


def services(cfg: BastionConfig) -> GatewayServices:
    return GatewayServices.create(cfg, store=MemoryStore())


def test_layer_order_is_pinned() -> None:
    assert LAYER_ORDER == (
        "transport",
        "cors",
        "authn",
        "ratelimit",
        "openapi",
        "authz",
        "response_filter",
        "proxy",
        "audit",
    )


def test_every_request_layer_is_registered_in_the_order_table() -> None:
    assert set(LAYER_BUILDERS) <= set(LAYER_ORDER)
    # proxy and audit are run by the front end, after the request-side chain.
    assert set(LAYER_ORDER) - set(LAYER_BUILDERS) == {"proxy", "audit"}


def test_fully_configured_route_gets_every_layer_in_order() -> None:
    cfg = config({"name": "full", "upstream": UP, **FULL})
    chain = build_chain(cfg.routes[0], services(cfg))
    assert chain.route_name == "full"
    assert chain.names == ("transport", "cors", "authn", "ratelimit")
    assert [layer.name for layer in chain.layers] == list(chain.names)


def test_anonymous_route_has_no_authn_layer() -> None:
    anonymous = {**FULL, "authn": {"methods": [], "unsafe_allow_anonymous": True}}
    cfg = config({"name": "open", "upstream": UP, **anonymous})
    assert build_chain(cfg.routes[0], services(cfg)).names == ("transport", "cors", "ratelimit")


def test_route_with_a_spec_gets_openapi_and_authz_in_order() -> None:
    spec = {"openapi": {"spec": BANK}, "authz": {"resolvers": [INVOICES]}}
    cfg = config({"name": "full", "upstream": UP, **FULL, **spec})
    names = build_chain(cfg.routes[0], services(cfg)).names
    assert names == tuple(n for n in LAYER_ORDER if n in names)  # table order
    assert {"transport", "cors", "authn", "ratelimit", "openapi", "authz"} <= set(names)


def test_route_without_a_spec_has_neither_openapi_nor_authz() -> None:
    cfg = config({"name": "plain", "upstream": UP, **FULL})
    names = build_chain(cfg.routes[0], services(cfg)).names
    assert "openapi" not in names
    assert "authz" not in names


def test_routes_share_one_compiled_spec() -> None:
    spec = {"openapi": {"spec": BANK}, "authz": {"resolvers": [INVOICES]}}
    keys = {"authn": {"methods": ["api_key"]}}
    cfg = config(
        {"name": "a", "upstream": UP, **keys, **spec}, {"name": "b", "upstream": UP, **keys, **spec}
    )
    svc = services(cfg)
    build_chain(cfg.routes[0], svc)
    build_chain(cfg.routes[1], svc)
    assert len(svc.openapi_specs) == 1


def test_route_without_limits_has_no_ratelimit_layer() -> None:
    cfg = config({"name": "free", "upstream": UP, "authn": {"methods": ["api_key"]}})
    assert build_chain(cfg.routes[0], services(cfg)).names == ("transport", "cors", "authn")


def exchange(method: str = "GET", headers: list[tuple[str, str]] | None = None) -> Exchange:
    view = RequestView(
        method=method,
        path="/x",
        query="",
        headers=Headers([("host", "api.test"), *(headers or [])]),
        peer_ip="203.0.113.7",
    )
    return Exchange(view, "rid", time.monotonic(), time.time())


async def test_runtime_runs_the_chain_in_order() -> None:
    """Behaviour, not only names: CORS answers a foreign preflight before authn asks for a
    credential, and authn refuses before the rate limit spends the caller's budget."""
    cfg = config({"name": "full", "upstream": UP, **FULL})
    route = RouteRuntime(cfg.routes[0], services(cfg))
    try:
        preflight = exchange(
            "OPTIONS",
            [("origin", "https://evil.example"), ("access-control-request-method", "POST")],
        )
        reply = await route.run_request(preflight)
        assert reply is not None
        assert reply.status == 403
        assert preflight.reason == "cors.origin_denied"
        # The IP limit admits 1 request per hour: were it before authn, the second anonymous
        # request would be answered 429 instead of 401.
        for _ in range(3):
            ex = exchange()
            reply = await route.run_request(ex)
            assert reply is not None
            assert (reply.status, ex.reason) == (401, "authn.failed")
    finally:
        await route.aclose()


async def test_openapi_refuses_before_authz() -> None:
    """An undeclared endpoint is a 404 from openapi even for a caller authz would refuse (401):
    the contract is checked first, then who may use it."""
    anonymous = {"authn": {"methods": [], "unsafe_allow_anonymous": True}}
    spec = {"openapi": {"spec": BANK}, "authz": {"resolvers": [INVOICES]}}
    cfg = config({"name": "bank", "upstream": UP, **anonymous, **spec})
    route = RouteRuntime(cfg.routes[0], services(cfg))
    try:
        ex = exchange()
        ex.request.path = "/v1/accounts/me"
        reply = await route.run_request(ex)
        assert reply is not None
        assert (reply.status, ex.reason) == (401, "authn.failed")  # authz: needs a principal
        ex = exchange()
        ex.request.path = "/v1/undeclared"
        reply = await route.run_request(ex)
        assert reply is not None
        assert (reply.status, ex.reason) == (404, "openapi.operation_unknown")
    finally:
        await route.aclose()
