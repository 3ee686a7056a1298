"""Shared services of one gateway process, built from config and started once.

Everything a layer needs that is not its own config lives here: the store, the event bus, the
clock, revocation state, the API-key index, the JWT verifier, the rate-limit backend and the
audit writer. Control events (revocations) reach every consumer through the bus, whether they
come from this process or from the store's change feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from bastion.audit.redact import Redactor
from bastion.audit.writer import Auditor
from bastion.config.model import BastionConfig
from bastion.config.types import RateSpec
from bastion.core.clock import Clock, SystemClock
from bastion.core.gcra import LocalLimiter
from bastion.core.revocation import RevocationState
from bastion.events.bus import Event, EventBus
from bastion.events.feed import ChangeFeed
from bastion.gateway.layers.audit.layer import AuditLayer
from bastion.gateway.layers.authn.apikeys import ApiKeyIndex
from bastion.gateway.layers.authn.jwt import JwtVerifier
from bastion.gateway.layers.ratelimit.backend import MemoryRateLimitBackend, RateLimitBackend
from bastion.store import open_store
from bastion.store.base import Store

log = logging.getLogger("bastion.gateway")

# Verified-token cache entries per worker: ~800 B each, so 20k stay well under the 150 MB
# per-worker memory goal even when full.
JWT_CACHE_SIZE = 20_000


@dataclass
class GatewayServices:
    """The process-wide collaborators of the layers. Create with :meth:`create`."""

    config: BastionConfig
    clock: Clock
    store: Store
    bus: EventBus
    revocations: RevocationState
    api_keys: ApiKeyIndex | None
    jwt: JwtVerifier | None
    ratelimit_backend: RateLimitBackend
    auditor: Auditor
    auditor_layer: AuditLayer
    feed: ChangeFeed
    _unsubscribe: list[object] = field(default_factory=list)
    _limiters: dict[tuple[str, float, int], LocalLimiter] = field(default_factory=dict)
    _maintenance: asyncio.Task[None] | None = None
    _started: bool = False

    def shared_limiter(self, purpose: str, spec: RateSpec) -> LocalLimiter:
        """One limiter per purpose and rate, shared by every route that uses it: a lockout on
        failed authentications then covers the whole gateway, not one route."""
        key = (purpose, spec.emission_interval, spec.effective_burst)
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = LocalLimiter(key[1], key[2])
        return limiter

    async def _maintain(self, every: float = 30.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.revocations.prune()
            mono = self.clock.monotonic()
            for limiter in self._limiters.values():
                limiter.prune(mono)

    @classmethod
    def create(
        cls,
        config: BastionConfig,
        *,
        clock: Clock | None = None,
        store: Store | None = None,
        bus: EventBus | None = None,
    ) -> GatewayServices:
        """Wire the services for ``config``; nothing is opened until :meth:`start`."""
        clock = clock or SystemClock()
        store = store or open_store(config.store)
        bus = bus or EventBus()
        revocations = RevocationState(clock)
        pepper = config.api_keys.pepper
        api_keys = ApiKeyIndex(store, pepper.get_secret_value().encode(), clock) if pepper else None
        jwt = (
            JwtVerifier(list(config.issuers), clock, revocations, cache_size=JWT_CACHE_SIZE)
            if config.issuers
            else None
        )
        auditor = Auditor(config.audit, store, bus, Redactor(list(config.audit.redact_fields)))
        return cls(
            config=config,
            clock=clock,
            store=store,
            bus=bus,
            revocations=revocations,
            api_keys=api_keys,
            jwt=jwt,
            ratelimit_backend=MemoryRateLimitBackend(),
            auditor=auditor,
            auditor_layer=AuditLayer(auditor),
            feed=ChangeFeed(store, bus, clock, config.change_poll_interval),
        )

    def _on_control(self, event: Event) -> None:
        self.revocations.apply(event)
        if self.api_keys is not None:
            self.api_keys.apply(event)

    async def start(self) -> None:
        """Open the store, load current state, start background tasks. Idempotent."""
        if self._started:
            return
        await self.store.open()
        # Subscribe before loading so nothing published in between is missed; applying an
        # event twice is harmless (revocations are idempotent).
        self._unsubscribe.append(self.bus.subscribe("control", self._on_control))
        seq = await self.store.last_change_seq()
        self.revocations.load(await self.store.active_revocations(self.clock.now()))
        if self.api_keys is not None:
            await self.api_keys.load()
        if self.jwt is not None:
            await self.jwt.start()
        await self.auditor.start()
        await self.feed.start(from_seq=seq)
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())
        self._started = True

    async def aclose(self) -> None:
        """Stop background tasks, flush the audit log, close the store."""
        if not self._started:
            return
        self._started = False
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        await self.feed.aclose()
        if self.jwt is not None:
            await self.jwt.aclose()
        await self.auditor.aclose()
        for unsubscribe in self._unsubscribe:
            if callable(unsubscribe):
                unsubscribe()
        await self.store.close()
