"""The fixed order of the gateway's layers and the per-route chain built from it.

The order is a security decision (IP rules before CORS, authentication before rate limits
keyed by principal, audit last) and is pinned by ``tests/unit/test_chain_order.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.gateway.layers.base import Layer

#: Request order. Responses pass through the same layers in reverse. ``proxy`` is the terminal
#: step (forwarding) and ``audit`` runs once the response is complete.
LAYER_ORDER: tuple[str, ...] = (
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


@dataclass(frozen=True, slots=True)
class Chain:
    """The layers of one route, in ``LAYER_ORDER`` (proxy and audit handled by the runner)."""

    route_name: str
    layers: tuple[Layer, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)
