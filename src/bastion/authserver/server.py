"""The authorization server: one route table over the framework-free endpoints.

:func:`open_auth_server` wires everything from an :class:`AuthConfig` and an opened store —
the OAuth repository, the key manager (KEYS), the user service (USERS), the revocation state
kept current by the store's change feed — and returns an :class:`AuthServer`, whose
:meth:`AuthServer.handle` turns a :class:`Request` into a :class:`Response`. The ASGI adapter
(:mod:`bastion.authserver.asgi`) is the only thing between it and a socket.

Every route answers; nothing raises out of :meth:`AuthServer.handle`. Protocol errors are RFC
6749 §5.2 bodies; a store outage is ``temporarily_unavailable`` (503); any other failure is a
bare ``server_error`` (500) with the detail in the log only. ``/token``, ``/introspect`` and
``/revoke`` are throttled per client IP (GCRA).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bastion.authserver.config import AuthConfig
from bastion.authserver.http import BASE_HEADERS, NO_STORE, Request, Response, json_response
from bastion.authserver.oauth.authorize import authorize
from bastion.authserver.oauth.client_auth import ClientAuthenticator
from bastion.authserver.oauth.context import OAuthContext, Push, no_push
from bastion.authserver.oauth.errors import OAuthError
from bastion.authserver.oauth.oidc import userinfo
from bastion.authserver.oauth.ports import Signer, Users
from bastion.authserver.oauth.records import RefreshFamily
from bastion.authserver.oauth.refresh import RefreshService
from bastion.authserver.oauth.repo import OAuthRepo, open_oauth_repo
from bastion.authserver.oauth.rfc7009 import revoke
from bastion.authserver.oauth.rfc7662 import introspect
from bastion.authserver.oauth.rfc8414 import jwks, metadata_response
from bastion.authserver.oauth.rfc9068 import AccessTokenIssuer, AccessTokenVerifier
from bastion.authserver.oauth.token import token_endpoint
from bastion.core.clientip import client_address
from bastion.core.clock import Clock, SystemClock
from bastion.core.gcra import LocalLimiter
from bastion.core.revocation import RevocationState
from bastion.errors import BastionError, StoreError
from bastion.events.bus import EventBus
from bastion.events.feed import ChangeFeed
from bastion.store.base import Store

log = logging.getLogger("bastion.authserver")

Handler = Callable[[Request], Awaitable[Response]]
THROTTLED = frozenset({"/token", "/introspect", "/revoke"})
#: How often the background loop advances the key lifecycle and purges expired rows.
MAINTENANCE_INTERVAL = 30.0


class AuthServer:
    """Routes requests to the endpoints; see the module docstring."""

    def __init__(
        self,
        ctx: OAuthContext,
        *,
        feed: ChangeFeed | None = None,
        owns_signer: bool = False,
    ) -> None:
        self.ctx = ctx
        self._owns_signer = owns_signer
        self._trusted_proxies = ctx.config.trusted_proxies
        rate = ctx.config.token_rate_limit
        self._limiter = LocalLimiter(rate.emission_interval, rate.effective_burst)
        self._feed = feed
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        meta = metadata_response(ctx)

        async def well_known(_request: Request) -> Response:
            return meta

        async def keys(_request: Request) -> Response:
            return await jwks(ctx)

        def bind(fn: Callable[[OAuthContext, Request], Awaitable[Response]]) -> Handler:
            async def handler(request: Request) -> Response:
                return await fn(ctx, request)

            return handler

        routes: dict[tuple[str, str], Handler] = {
            ("GET", "/.well-known/oauth-authorization-server"): well_known,
            ("GET", "/.well-known/openid-configuration"): well_known,
            ("GET", "/jwks"): keys,
            ("POST", "/token"): bind(token_endpoint),
            ("POST", "/introspect"): bind(introspect),
            ("POST", "/revoke"): bind(revoke),
            ("GET", "/authorize"): bind(authorize),
            ("POST", "/authorize"): bind(authorize),
            ("GET", "/userinfo"): bind(userinfo),
            ("POST", "/userinfo"): bind(userinfo),
        }
        if ctx.users is not None:
            for key, handler in ctx.users.routes.items():
                routes.setdefault(key, handler)
            ctx.users.on_disable.append(self.user_disabled)
            # Login security events (failures, lockouts, resets) go on the bus like ours.
            events = getattr(ctx.users, "on_security_event", None)
            if events is not None:
                events.append(lambda action, fields: ctx.security_event(action, **fields))
        self.routes = routes
        self._paths: dict[str, list[str]] = {}
        for method, path in routes:
            self._paths.setdefault(path, []).append(method)

    async def handle(self, request: Request) -> Response:
        """Answer one request; never raises."""
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return self._no_route(request)
        if self._trusted_proxies:
            request = self._forwarded(request)
        if request.path in THROTTLED:
            now = self.ctx.clock.monotonic()
            result = self._limiter.check(request.client_ip, now)
            if not result.allowed:
                wait = str(max(1, int(result.retry_after + 0.999)))
                return OAuthError(
                    "temporarily_unavailable",
                    "too many requests",
                    status=429,
                    headers=(("retry-after", wait),),
                ).response()
        try:
            return await handler(request)
        except OAuthError as exc:
            return exc.response()
        except StoreError as exc:
            log.warning("%s %s: store unavailable: %s", request.method, request.path, exc)
            return OAuthError("temporarily_unavailable", status=503).response()
        except BastionError as exc:
            log.warning("%s %s: %s (%s)", request.method, request.path, exc.code, exc)
            return OAuthError("temporarily_unavailable", status=503).response()
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return OAuthError("server_error").response()

    def _no_route(self, request: Request) -> Response:
        methods = self._paths.get(request.path)
        if methods is None:
            return json_response(404, {"error": "not_found"})
        allow = ", ".join(sorted(methods))
        return Response(
            405,
            b'{"error":"method_not_allowed"}',
            [("content-type", "application/json"), ("allow", allow), *BASE_HEADERS, *NO_STORE],
        )

    def _forwarded(self, request: Request) -> Request:
        """The request with ``client_ip`` from the hop our nearest trusted proxy appended to
        ``X-Forwarded-For`` (``auth.trusted_proxies``); the hops a client writes itself are
        never chosen. Without the header (a direct caller) the peer stays the client."""
        xff = request.headers.get("x-forwarded-for")
        if xff is None:
            return request
        found = client_address(request.client_ip, [xff], self._trusted_proxies)
        return replace(request, client_ip=found.ip)

    async def user_disabled(self, user_id: str) -> None:
        """A user was locked or disabled: end every refresh family and its last access token."""
        now = self.ctx.clock.now()
        for family in await self.ctx.repo.revoke_subject_families(user_id, now, "user"):
            if family.access_jti and family.access_exp:
                await self.ctx.revoke_access_token(family.access_jti, family.access_exp)

    async def start(self) -> None:
        """Load the revocation state, follow the change feed, start maintenance. Idempotent."""
        if self._started:
            return
        self._started = True
        store = self.ctx.store
        seq = await store.last_change_seq()
        self.ctx.revocations.load(await store.active_revocations(self.ctx.clock.now()))
        if self._feed is not None:
            await self._feed.start(from_seq=seq)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._maintain(), name="authserver-maintenance"))

    async def maintain_once(self) -> None:
        """One round of upkeep: key lifecycle, expired rows, expired revocations."""
        await self.ctx.signer.tick()
        await self.ctx.repo.purge(self.ctx.clock.now())
        self.ctx.revocations.prune()
        self._limiter.prune(self.ctx.clock.monotonic())

    async def _maintain(self) -> None:
        while True:
            try:
                await self.maintain_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("authorization server maintenance failed; retrying")
            await asyncio.sleep(MAINTENANCE_INTERVAL)

    async def aclose(self) -> None:
        """Stop background work and release the signer this server opened (its PKCS#11
        session); the caller closes the store and anything it passed in."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._feed is not None:
            await self._feed.aclose()
        self._started = False
        if self._owns_signer:
            self._owns_signer = False  # once: a second aclose has nothing left to release
            close = getattr(self.ctx.signer, "close", None)
            if callable(close):
                close()


def build_context(
    config: AuthConfig,
    store: Store,
    repo: OAuthRepo,
    signer: Signer,
    users: Users | None,
    *,
    clock: Clock,
    bus: EventBus,
    push: Push = no_push,
) -> OAuthContext:
    """The endpoints' shared context (also what tests build around fakes)."""
    revocations = RevocationState(clock)

    def is_revoked(subject: str, jti: str, issued_at: float | None) -> bool:
        return revocations.is_token_revoked(config.issuer, subject, jti, issued_at)

    clients = ClientAuthenticator(
        repo,
        config.client_secret_pepper.get_secret_value().encode(),
        clock,
        issuer=config.issuer,
        cache_ttl=config.client_cache_ttl,
    )

    async def on_reuse(family: RefreshFamily) -> None:
        await ctx.refresh_reused(family)  # `ctx` is bound below, before any request

    ctx = OAuthContext(
        config=config,
        clock=clock,
        store=store,
        repo=repo,
        signer=signer,
        users=users,
        clients=clients,
        access=AccessTokenIssuer(signer, clock, issuer=config.issuer, ttl=config.access_token_ttl),
        verifier=AccessTokenVerifier(
            signer,
            clock,
            issuer=config.issuer,
            is_revoked=is_revoked,
            is_client_revoked=revocations.is_client_revoked,
        ),
        refresh=RefreshService(repo, clock, config.refresh, on_reuse),
        bus=bus,
        revocations=revocations,
        push=push,
    )
    return ctx


async def open_auth_server(
    config: AuthConfig,
    store: Store,
    *,
    clock: Clock | None = None,
    bus: EventBus | None = None,
    push: Push = no_push,
    poll_interval: float = 1.0,
    signer: Signer | None = None,
    users: Users | None = None,
    follow_feed: bool = True,
) -> AuthServer:
    """The server for an opened ``store``; call :meth:`AuthServer.start` in the serving loop.

    ``signer`` and ``users`` default to the real key manager and user service.
    ``follow_feed=False`` when ``bus`` is shared with a gateway that follows the feed.
    """
    clock = clock or SystemClock()
    bus = bus or EventBus()
    owns_signer = signer is None
    if signer is None:
        from bastion.authserver.keys import open_key_manager

        signer = await open_key_manager(
            config.keys, store, token_max_lifetime=max(config.access_token_ttl, config.id_token_ttl)
        )
    if users is None:
        from bastion.authserver.users import open_user_service

        users = await open_user_service(config.users, store, issuer=config.issuer)
    ctx = build_context(
        config, store, open_oauth_repo(store), signer, users, clock=clock, bus=bus, push=push
    )
    # Revocations made by other processes reach this one through the change feed (or, with a
    # bus shared with a gateway, through that gateway's feed).
    feed = ChangeFeed(store, bus, clock, poll_interval) if follow_feed else None
    bus.subscribe("control", ctx.revocations.apply)
    return AuthServer(ctx, feed=feed, owns_signer=owns_signer)
