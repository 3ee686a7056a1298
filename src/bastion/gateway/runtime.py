"""The gateway at run time: routes with their chains, built once from validated config.

Front ends (our HTTP server, the ASGI adapter) call :meth:`Gateway.match`, then
:meth:`RouteRuntime.run_request`, forward or answer, then :meth:`RouteRuntime.response_headers`
and :meth:`RouteRuntime.finish`. Nothing here parses HTTP or touches sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import ssl
import time
from collections.abc import Callable

from bastion.config.model import BastionConfig, RouteConfig
from bastion.core.exchange import Exchange, Headers, Reply, RequestView
from bastion.core.paths import route_matches
from bastion.errors import BastionError
from bastion.gateway.chain import LAYER_ORDER, Chain
from bastion.gateway.forward import upstream_request_head
from bastion.gateway.layers.audit.layer import AuditLayer
from bastion.gateway.layers.authn.layer import AuthnLayer
from bastion.gateway.layers.authz.layer import AuthzLayer
from bastion.gateway.layers.base import NEEDS_IO, Layer
from bastion.gateway.layers.cors.layer import CorsLayer
from bastion.gateway.layers.openapi.layer import OpenApiLayer
from bastion.gateway.layers.ratelimit.layer import RateLimitLayer
from bastion.gateway.layers.response_filter.layer import ResponseFilterLayer
from bastion.gateway.layers.transport.config import HstsConfig
from bastion.gateway.layers.transport.layer import TransportLayer
from bastion.gateway.services import GatewayServices
from bastion.gateway.upstream import UpstreamPool
from bastion.openapi.spec import OpenApiSpec, load_spec

LayerBuilder = Callable[[RouteConfig, GatewayServices], Layer | None]


def _authn(r: RouteConfig, s: GatewayServices) -> Layer | None:
    if not r.authn.methods:
        return None  # anonymous route (config required unsafe_allow_anonymous)
    return AuthnLayer(
        r.authn,
        jwt=s.jwt,
        api_keys=s.api_keys,
        clock=s.clock,
        failed_attempts=s.shared_limiter("failed_authn", r.authn.failed_attempts_limit),
        verify_budget=s.shared_limiter("verify", r.authn.verify_limit),
    )


def _ratelimit(r: RouteConfig, s: GatewayServices) -> Layer | None:
    if not r.ratelimit.limits:
        return None
    return RateLimitLayer(r.name, r.ratelimit, s.ratelimit_backend, s.clock)


def route_spec(r: RouteConfig, s: GatewayServices) -> OpenApiSpec | None:
    """The route's compiled OpenAPI document (None without ``openapi.spec``), compiled once per
    distinct source and options for the whole gateway. Raises ConfigError."""
    source = r.openapi.spec
    if source is None:
        return None
    key = (source, r.openapi.spec_options())
    spec = s.openapi_specs.get(key)
    if spec is None:
        spec = s.openapi_specs[key] = load_spec(source, key[1])
    return spec


def _openapi(r: RouteConfig, s: GatewayServices) -> Layer | None:
    spec = route_spec(r, s)
    if spec is None:
        return None
    return OpenApiLayer(r.openapi, spec, route_prefix=r.path_prefix, strip_prefix=r.strip_prefix)


def _authz(r: RouteConfig, s: GatewayServices) -> Layer | None:
    spec = route_spec(r, s)
    if spec is None:
        return None
    return AuthzLayer(r.authz, spec, bus=s.bus, clock=s.clock)


def _response_filter(r: RouteConfig, s: GatewayServices) -> Layer | None:
    """On where the route has an OpenAPI document (allow-list and detectors); on a route
    without one only with ``response_filter.enabled: true`` (detectors alone)."""
    cfg = r.response_filter
    spec = route_spec(r, s)
    if cfg.enabled is False or (cfg.enabled is None and spec is None):
        return None
    return ResponseFilterLayer(cfg, spec.operations if spec is not None else ())


#: The request-side layers by name. A new layer registers here and in ``LAYER_ORDER``.
LAYER_BUILDERS: dict[str, LayerBuilder] = {
    "transport": lambda r, s: TransportLayer(r.transport, s.ip_blocks),
    "cors": lambda r, s: CorsLayer(r.cors),
    "authn": _authn,
    "ratelimit": _ratelimit,
    "openapi": _openapi,
    "authz": _authz,
    "response_filter": _response_filter,
}


def build_chain(route: RouteConfig, services: GatewayServices) -> Chain:
    """The route's request-side layers in ``LAYER_ORDER`` (skipping ones with nothing to do)."""
    layers: list[Layer] = []
    for name in LAYER_ORDER:
        builder = LAYER_BUILDERS.get(name)
        if builder is None:
            continue  # proxy and audit are run by the front end
        layer = builder(route, services)
        if layer is not None:
            layers.append(layer)
    return Chain(route.name, tuple(layers))


class RouteRuntime:
    """One route: its chain, its upstream pool and what the proxy step needs."""

    def __init__(self, cfg: RouteConfig, services: GatewayServices) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.host = cfg.host
        self.prefix = cfg.path_prefix
        self.chain = build_chain(cfg, services)
        self._layers = self.chain.layers
        self._checks = tuple(layer.check for layer in self._layers)  # bound once
        response_order = tuple(reversed(self._layers))
        # Only the layers that override a response hook are called for it.
        self._response_layers = tuple(
            layer for layer in response_order if type(layer).on_response is not Layer.on_response
        )
        self._body_layers = tuple(
            layer
            for layer in response_order
            if type(layer).wants_response_body is not Layer.wants_response_body
        )
        self.audit = AuditLayer(services.auditor)
        self.max_body_bytes = cfg.transport.max_body_bytes
        self.trusted_proxies = cfg.transport.trusted_proxies
        proxy = cfg.proxy
        self.hide_credentials = proxy.hide_credentials
        self.expose_upstream_errors = proxy.unsafe_expose_upstream_errors
        self.pool: UpstreamPool | None = None
        up = cfg.upstream
        if up is None:
            # Middleware mode: the wrapped app is the upstream; nothing to connect to.
            self.upstream_tls = False
            self.upstream_host_header = ""
            self.preserve_host = True
            self.base_path = ""
            return
        self.upstream_tls = up.scheme == "https"
        port = up.port or (443 if self.upstream_tls else 80)
        host = up.host or "127.0.0.1"
        default_port = port == (443 if self.upstream_tls else 80)
        self.upstream_host_header = host if default_port else f"{host}:{port}"
        self.preserve_host = proxy.preserve_host
        self.base_path = (up.path or "/").rstrip("/")
        self.pool = UpstreamPool(
            host.strip("[]"),
            port,
            tls=ssl.create_default_context() if self.upstream_tls else None,
            server_hostname=host if self.upstream_tls else None,
            connect_timeout=proxy.connect_timeout,
            read_timeout=proxy.read_timeout,
            max_connections=proxy.max_connections,
            idle_timeout=proxy.idle_timeout,
            max_response_header_bytes=proxy.max_response_header_bytes,
        )

    async def run_request(self, ex: Exchange) -> Reply | None:
        """Run the request-side layers; a Reply answers the exchange, None forwards it."""
        ex.route_name = self.name
        result = self.run_sync(ex)
        if type(result) is int:
            return await self.run_from(ex, result)
        return result  # type: ignore[return-value]

    def run_sync(self, ex: Exchange) -> Reply | int | None:
        """Run the layers' :meth:`~Layer.check` in order: a Reply answers, None forwards, and
        an int is the index of the first layer that needs I/O (resume with :meth:`run_from`)."""
        for check in self._checks:
            result = check(ex)
            if result is not None:
                if result is NEEDS_IO:
                    return self._checks.index(check)
                return result  # type: ignore[return-value]
        return None

    async def run_from(self, ex: Exchange, start: int) -> Reply | None:
        """Await layer ``start``'s ``on_request``, then run the rest (sync where they can)."""
        layers = self._layers
        reply = await layers[start].on_request(ex)
        if reply is not None:
            return reply
        for layer in layers[start + 1 :]:
            result = layer.check(ex)
            if result is NEEDS_IO:
                result = await layer.on_request(ex)
            if result is not None:
                return result  # type: ignore[return-value]
        return None

    def response_headers(self, ex: Exchange, status: int, headers: Headers) -> None:
        """Let every layer edit the response headers (reverse order), then add the
        exchange's own response headers (RateLimit, CORS …)."""
        for layer in self._response_layers:
            layer.on_response(ex, status, headers)
        if ex.response_headers:
            headers.items.extend(ex.response_headers)

    def body_filters(
        self, ex: Exchange, status: int, headers: Headers
    ) -> tuple[tuple[Layer, ...], int]:
        """The layers that must see this response's body whole, and the byte limit for it."""
        layers = self._body_layers
        if not layers or ex.request.method == "HEAD" or status in (204, 304):
            return (), 0
        if len(layers) == 1:  # the usual case: no list to build
            n = layers[0].wants_response_body(ex, status, headers)
            return (layers, n) if n > 0 else ((), 0)
        wanted: list[Layer] = []
        limit = 0
        for layer in self._body_layers:
            n = layer.wants_response_body(ex, status, headers)
            if n > 0:
                wanted.append(layer)
                limit = n if not limit else min(limit, n)
        return tuple(wanted), limit

    @staticmethod
    def filter_body(
        layers: tuple[Layer, ...], ex: Exchange, status: int, headers: Headers, body: bytes
    ) -> bytes | Reply:
        """Run the body filters in response order; the first Reply wins."""
        for layer in layers:
            result = layer.on_response_body(ex, status, headers, body)
            if isinstance(result, Reply):
                return result
            body = result
        return body

    @staticmethod
    def body_too_large(
        layers: tuple[Layer, ...], ex: Exchange, status: int, headers: Headers
    ) -> Reply | None:
        """Ask each body filter what to do with a body over its limit; the first Reply wins."""
        for layer in layers:
            reply = layer.on_response_body_too_large(ex, status, headers)
            if reply is not None:
                return reply
        return None

    def request_head(self, ex: Exchange) -> bytes:
        """The request line and headers to send upstream for ``ex`` (see
        :func:`~bastion.gateway.forward.upstream_request_head`)."""
        req = ex.request
        path = req.path
        if self.cfg.strip_prefix and path.startswith(self.prefix):
            path = path[len(self.prefix) :]
            if not path.startswith("/"):
                path = "/" + path
        target = self.base_path + path
        if req.query:
            target = f"{target}?{req.query}"
        host = self.upstream_host_header
        if self.preserve_host:
            host = req.headers.get("host") or host
        return upstream_request_head(
            ex, target, host, self.hide_credentials, len(req.body), self.trusted_proxies
        )

    async def finish(self, ex: Exchange) -> None:
        """Hand the completed exchange to the audit log (exactly once per request)."""
        await self.audit.finish(ex)

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
        for layer in self._layers:
            await layer.aclose()


#: Sections of the config read once at start: a reload that changes them needs a restart.
RESTART_SECTIONS = (
    "listeners",
    "server",
    "store",
    "cache",
    "cluster",
    "issuers",
    "api_keys",
    "audit",
    "change_poll_interval",
    "auth",
)
#: Seconds a replaced route stays open for the requests still running on it.
RETIRE_AFTER = 120.0


class Gateway:
    """All routes of one config, matched by host then longest path prefix."""

    def __init__(self, config: BastionConfig, services: GatewayServices) -> None:
        self.config = config
        self.services = services
        routes = [RouteRuntime(r, services) for r in config.routes]
        # Host-specific routes first, then longer prefixes first; config order breaks ties.
        self.routes = sorted(routes, key=lambda r: (r.host is None, -len(r.prefix)))
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self._default_hsts = HstsConfig().header_value()
        # Body limit for requests that match no route (they are refused anyway).
        self.default_max_body = 65536
        self._retiring: list[asyncio.Task[None]] = []

    def swap_routes(self, config: BastionConfig) -> list[str]:
        """Serve ``config``'s routes from the next request on (config reload).

        Only routes change at run time. The sections a node reads once at start (listeners,
        server limits, store, cache, cluster, issuers, API-key pepper, audit, feed interval)
        keep their running values; their names are returned when ``config`` changes them, so
        the caller can say that a restart is needed. Raises (and changes nothing) when a route
        cannot be built, e.g. an OpenAPI document that does not compile. Routes being replaced
        are closed after :data:`RETIRE_AFTER` seconds, so requests in flight on them finish.
        """
        restart = [
            name for name in RESTART_SECTIONS if getattr(config, name) != getattr(self.config, name)
        ]
        # Re-read OpenAPI documents: a reload is how an edited document is picked up.
        saved = dict(self.services.openapi_specs)
        self.services.openapi_specs.clear()
        try:
            built = [RouteRuntime(r, self.services) for r in config.routes]
        except BaseException:
            self.services.openapi_specs.update(saved)
            raise
        old = self.routes
        self.routes = sorted(built, key=lambda r: (r.host is None, -len(r.prefix)))
        self.config = self.config.model_copy(update={"routes": list(config.routes)})
        self._retiring.append(asyncio.get_running_loop().create_task(self._retire(old)))
        return restart

    async def _retire(self, routes: list[RouteRuntime]) -> None:
        await asyncio.sleep(RETIRE_AFTER)
        for r in routes:
            with contextlib.suppress(Exception):
                await r.aclose()

    def match(self, host: str, path: str) -> RouteRuntime | None:
        for r in self.routes:
            if (r.host is None or r.host == host) and route_matches(r.prefix, path):
                return r
        return None

    def new_exchange(self, request: RequestView, started: float | None = None) -> Exchange:
        """A fresh exchange with a process-unique request id."""
        now = time.monotonic() if started is None else started
        return Exchange(
            request=request,
            request_id=f"{self._id_prefix}-{next(self._ids):x}",
            started=now,
            started_wall=time.time(),
        )

    def reject(self, ex: Exchange, err: BastionError) -> Reply:
        """A Reply for an exchange refused before any route matched (404, 400 …), with
        the baseline security headers."""
        reply = ex.deny(err)
        headers = Headers(reply.headers)
        headers.set("x-content-type-options", "nosniff")
        if ex.request.tls:
            headers.set("strict-transport-security", self._default_hsts)
        reply.headers = headers.items
        return reply

    async def audit_unrouted(self, ex: Exchange) -> None:
        """Audit an exchange that never reached a route."""
        await self.services.auditor_layer.finish(ex)

    async def start(self) -> None:
        await self.services.start()

    async def aclose(self) -> None:
        for task in self._retiring:
            task.cancel()
        for r in self.routes:
            await r.aclose()
        await self.services.aclose()
