"""The cors layer: preflights answered at the gateway, exact origins on actual responses.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) never reaches
authentication or the upstream: it gets a 204 with the route's policy, or a 403 problem without
any CORS header. On other requests the gateway owns CORS: upstream ``Access-Control-*`` headers
are removed (an upstream that reflects origins cannot widen the policy) and, when the request's
``Origin`` is on the allow-list, ``Access-Control-Allow-Origin`` names that configured origin.
Origins are compared for exact equality after normalisation (lower case, default port dropped):
never by prefix, suffix, substring or pattern, and ``null`` never matches. A request from a
foreign origin still continues: browsers enforce CORS, and same-origin or server-to-server calls
are legitimate; it just gets no CORS headers.
"""

from __future__ import annotations

from bastion.core.exchange import Exchange, Header, Headers, Reply
from bastion.errors import CorsRejected
from bastion.gateway.layers.base import Layer
from bastion.gateway.layers.cors.config import CorsConfig, normalize_origin

PREFLIGHT = "preflight"
PREFLIGHT_VARY: Header = (
    "vary",
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
)
_ACAO = "access-control-allow-origin"


class CorsLayer(Layer):
    """Per-route CORS from a :class:`CorsConfig` (compiled once).

    Marks preflights with ``ex.annotations["cors"] = "preflight"`` (allowed or not) so that
    ``on_response`` leaves their replies alone.
    """

    name = "cors"

    def __init__(self, config: CorsConfig) -> None:
        self._any = "*" in config.allow_origins
        self._origins = frozenset(normalize_origin(o) for o in config.allow_origins if o != "*")
        self._methods = frozenset(m.upper() for m in config.allow_methods)
        self._headers = frozenset(h.lower() for h in config.allow_headers)
        # Responses differ by Origin only when the answer names a specific origin.
        self._vary_origin = bool(self._origins) and not self._any
        credentials: list[Header] = []
        if config.allow_credentials:
            credentials.append(("access-control-allow-credentials", "true"))
        self._preflight_headers: tuple[Header, ...] = (
            ("access-control-allow-methods", ", ".join(m.upper() for m in config.allow_methods)),
            ("access-control-allow-headers", ", ".join(h.lower() for h in config.allow_headers)),
            ("access-control-max-age", str(int(config.max_age))),
            *credentials,
            PREFLIGHT_VARY,
        )
        actual = list(credentials)
        if config.expose_headers:
            actual.append(("access-control-expose-headers", ", ".join(config.expose_headers)))
        self._actual_headers = tuple(actual)

    def allowed_origin(self, origin_values: list[str]) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for these ``Origin`` header values, or None.

        Exactly one ``Origin`` is required. The answer is the configured origin (or ``*``),
        never the client's string, so nothing a client sends is ever reflected.
        """
        if len(origin_values) != 1:
            return None
        if self._any:
            return "*"
        origin = origin_values[0]
        if origin in self._origins:  # browsers send the canonical form: no work needed
            return origin
        origin = normalize_origin(origin.strip())
        return origin if origin in self._origins else None

    def check(self, ex: Exchange) -> Reply | None:
        """Answer preflights (204 or 403); every other request continues."""
        req = ex.request
        if req.method != "OPTIONS":
            return None
        method = req.headers.get("access-control-request-method")
        origins = req.headers.get_all("origin")
        if method is None or not origins:
            return None
        ex.annotations["cors"] = PREFLIGHT
        acao = self.allowed_origin(origins)
        if acao is None:
            return ex.deny(CorsRejected(diagnosis="cors preflight: origin not allowed"))
        if method.strip() not in self._methods:
            return ex.deny(CorsRejected(diagnosis="cors preflight: method not allowed"))
        for value in req.headers.get_all("access-control-request-headers"):
            for name in value.split(","):
                name = name.strip().lower()
                if name and name not in self._headers:
                    return ex.deny(CorsRejected(diagnosis="cors preflight: header not allowed"))
        return Reply(204, [(_ACAO, acao), *self._preflight_headers])

    def on_response(self, ex: Exchange, status: int, headers: Headers) -> None:
        """Replace upstream CORS headers by the route's own for an allowed ``Origin``."""
        if ex.annotations.get("cors") == PREFLIGHT:
            return  # the preflight reply (or its refusal) is already complete
        origins = ex.request.headers.get_all("origin")
        if not origins and not self._vary_origin:
            # The common case (no Origin, no Vary to add): only upstream CORS headers to drop.
            items = headers.items
            for name, _ in items:
                if name.startswith("access-control-"):  # Headers names are lower case
                    headers.items = [h for h in items if not h[0].startswith("access-control-")]
                    return
            return
        kept: list[Header] = []
        vary_at = -1
        vary_has_origin = False
        for item in headers.items:
            name = item[0]  # Headers names are lower case
            if name.startswith("access-control-"):
                continue
            if name == "vary":
                tokens = {t.strip().lower() for t in item[1].split(",")}
                vary_has_origin = vary_has_origin or "origin" in tokens or "*" in tokens
                if vary_at < 0:
                    vary_at = len(kept)
            kept.append(item)
        acao = self.allowed_origin(origins) if origins else None
        if acao is not None:
            kept.append((_ACAO, acao))
            kept.extend(self._actual_headers)
        if self._vary_origin and not vary_has_origin:
            if vary_at < 0:
                kept.append(("vary", "Origin"))
            else:
                name, value = kept[vary_at]
                kept[vary_at] = (name, f"{value}, Origin" if value.strip() else "Origin")
        headers.items = kept
