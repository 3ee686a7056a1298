"""The contract every gateway layer follows (an Envoy-style filter).

A layer is built once per route from immutable config and holds no per-request state on
``self``. ``on_request`` runs in chain order and either returns ``None`` (continue) or a
:class:`~bastion.core.exchange.Reply` (answer now; later layers and the upstream are skipped).
``on_response`` runs in reverse order on every response — upstream or Reply — and may edit
its headers (add HSTS, strip ``Server``...). It must not block.
"""

from __future__ import annotations

from typing import ClassVar

from bastion.core.exchange import Exchange, Headers, Reply


class Layer:
    """Base class: both hooks default to doing nothing."""

    name: ClassVar[str] = "layer"

    async def on_request(self, ex: Exchange) -> Reply | None:
        """Inspect the request; return a Reply to answer it, or None to continue."""
        return None

    def on_response(self, ex: Exchange, status: int, headers: Headers) -> None:
        """Edit the response headers in place (called for upstream responses and Replies)."""
        return None

    async def aclose(self) -> None:
        """Release background tasks and connections (called once at shutdown)."""
        return None
