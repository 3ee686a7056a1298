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

    def wants_response_body(self, ex: Exchange, status: int, headers: Headers) -> int:
        """How many bytes of this response's body the layer must see whole (0: none).

        Layers that filter bodies (schema allow-lists, data masking) override this and
        :meth:`on_response_body`. The front end then buffers the body up to the smallest limit
        asked for; streaming is kept for every other response.
        """
        return 0

    def on_response_body(
        self, ex: Exchange, status: int, headers: Headers, body: bytes
    ) -> bytes | Reply:
        """The body to send instead of ``body``, or a Reply that replaces the response."""
        return body

    def on_response_body_too_large(
        self, ex: Exchange, status: int, headers: Headers
    ) -> Reply | None:
        """The body outgrew the limit from :meth:`wants_response_body`: a Reply replaces the
        response (e.g. 502 when the route blocks what it cannot check); None lets it through
        unfiltered."""
        return None

    async def aclose(self) -> None:
        """Release background tasks and connections (called once at shutdown)."""
        return None
