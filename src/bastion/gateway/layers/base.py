"""The contract every gateway layer follows (an Envoy-style filter).

A layer is built once per route from immutable config and holds no per-request state on
``self``. ``on_request`` runs in chain order and either returns ``None`` (continue) or a
:class:`~bastion.core.exchange.Reply` (answer now; later layers and the upstream are skipped).

The per-request path is synchronous wherever it can be (a coroutine and a task step per layer
cost microseconds the gateway does not have, ``../shared/PERFORMANCE.md``): the runner first
calls :meth:`Layer.check`, which decides without I/O, and awaits :meth:`Layer.on_request` only
when ``check`` returns :data:`NEEDS_IO` (e.g. a JWT cache miss that may fetch a JWKS). A layer
that never needs I/O overrides ``check`` only; ``on_request`` then calls it. A layer that may
need I/O overrides ``on_request`` and, for its common case, ``check``; both must decide alike.
``on_response`` runs in reverse order on every response — upstream or Reply — and may edit
its headers (add HSTS, strip ``Server``...). It must not block.
"""

from __future__ import annotations

from typing import ClassVar

from bastion.core.exchange import Exchange, Headers, Reply


class NeedsIo:
    """The type of :data:`NEEDS_IO`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEEDS_IO"


#: Returned by :meth:`Layer.check` when the layer cannot decide without I/O.
NEEDS_IO = NeedsIo()


class Layer:
    """Base class: every hook defaults to doing nothing."""

    name: ClassVar[str] = "layer"

    def check(self, ex: Exchange) -> Reply | NeedsIo | None:
        """Decide without I/O: a Reply to answer, None to continue, or :data:`NEEDS_IO` to
        have the runner await :meth:`on_request` instead. The default defers to
        ``on_request`` when a subclass overrides it, and continues otherwise."""
        if type(self).on_request is not Layer.on_request:
            return NEEDS_IO
        return None

    async def on_request(self, ex: Exchange) -> Reply | None:
        """Inspect the request (may await I/O); return a Reply to answer it, or None to
        continue. The default runs :meth:`check`."""
        result = self.check(ex)
        if isinstance(result, NeedsIo):  # a subclass broke the contract: fail closed
            raise RuntimeError(f"layer {self.name} needs I/O but has no on_request")
        return result

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
