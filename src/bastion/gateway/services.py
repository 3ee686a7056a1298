"""Shared services of one gateway process, built from config and started once.

Everything a layer needs that is not its own config lives here: the store, the event bus, the
clock, revocation state, the API-key index, the JWT verifier, the rate-limit backend and the
audit writer. Control events (revocations) reach every consumer through the bus, whether they
come from this process, from the store's change feed or, in distributed mode, from Redis.

Distributed mode (``cache: redis://…``) adds a Redis client shared by the rate-limit backend
(GCRA in Redis, local fallback), the control bus (revocations pushed to every node) and the
event streams (audit and security events for detection). Whatever the mode, revocation state
is guarded by :class:`~bastion.events.freshness.Freshness`: a node that cannot confirm it is
current within ``cluster.revocation_max_staleness`` refuses API keys and tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bastion.audit.redact import Redactor
from bastion.audit.writer import Auditor
from bastion.config.model import BastionConfig
from bastion.config.types import RateSpec
from bastion.core.clock import Clock, SystemClock
from bastion.core.exchange import Principal
from bastion.core.gcra import LocalLimiter
from bastion.core.ipblocks import IpBlocklist
from bastion.core.revocation import RevocationState
from bastion.events.bus import Event, EventBus
from bastion.events.feed import ChangeFeed
from bastion.events.freshness import Freshness, GuardedRevocationState
from bastion.gateway.layers.audit.layer import AuditLayer
from bastion.gateway.layers.authn.apikeys import STATE_NOT_CURRENT, ApiKeyIndex
from bastion.gateway.layers.authn.jwt import JwtVerifier
from bastion.gateway.layers.authn.key_usage import KeyUsage
from bastion.gateway.layers.ratelimit.backend import MemoryRateLimitBackend, RateLimitBackend
from bastion.openapi.spec import OpenApiSpec, SpecOptions
from bastion.store import open_store
from bastion.store.base import Store

if TYPE_CHECKING:  # distributed mode only: imported when `cache` is set
    from redis.asyncio import Redis

    from bastion.events.redis_bus import RedisControlBus
    from bastion.events.redis_streams import RedisEventStreams
    from bastion.gateway.layers.ratelimit.redis_backend import RedisRateLimitBackend

log = logging.getLogger("bastion.gateway")

# Verified-token cache entries per worker: ~800 B each, so 20k stay well under the 150 MB
# per-worker memory goal even when full.
JWT_CACHE_SIZE = 20_000

#: Diagnosis of an API key refused because this node cannot confirm it is current.
STALE = STATE_NOT_CURRENT


class GuardedApiKeyIndex(ApiKeyIndex):
    """An :class:`ApiKeyIndex` that refuses every key while ``freshness`` is stale, or once
    the store has been unreachable for longer than its grace: keys are answered from this
    node's cache only while the node can vouch for that cache."""

    def __init__(
        self,
        store: Store,
        pepper: bytes,
        clock: Clock,
        freshness: Freshness,
        *,
        max_age: float | None = None,
        usage: KeyUsage | None = None,
    ) -> None:
        super().__init__(store, pepper, clock, max_age=max_age, usage=usage)
        self._freshness = freshness

    async def verify(self, presented: str) -> tuple[Principal | None, str]:
        """See :meth:`ApiKeyIndex.verify`; ``(None, STALE)`` while the cache cannot be vouched
        for."""
        fresh = self._freshness
        if fresh.stale() or fresh.store_outage_exceeded():
            return None, STALE
        return await super().verify(presented)

    def verify_now(self, presented: str) -> tuple[Principal | None, str] | None:
        """:meth:`verify` without I/O (same guard); None when only the store can answer."""
        fresh = self._freshness
        if fresh.stale() or fresh.store_outage_exceeded():
            return None, STALE
        return super().verify_now(presented)


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
    freshness: Freshness
    redis: Redis | None = None
    redis_limiter: RedisRateLimitBackend | None = None
    control_bus: RedisControlBus | None = None
    event_streams: RedisEventStreams | None = None
    #: Run-time IP blocks (``ip.blocked`` events), checked by the transport layer.
    ip_blocks: IpBlocklist = field(default_factory=IpBlocklist)
    _unsubscribe: list[object] = field(default_factory=list)
    _limiters: dict[tuple[str, float, int], LocalLimiter] = field(default_factory=dict)
    #: Compiled OpenAPI documents by (source, options): each distinct spec compiled once.
    openapi_specs: dict[tuple[str, SpecOptions], OpenApiSpec] = field(default_factory=dict)
    _maintenance: asyncio.Task[None] | None = None
    _store_check: asyncio.Task[None] | None = None
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
        cluster = config.cluster
        clock = clock or SystemClock()
        store = store or open_store(config.store, spool_dir=cluster.audit_spool_dir)
        bus = bus or EventBus()
        feed = ChangeFeed(store, bus, clock, config.change_poll_interval)
        freshness = Freshness(
            clock, cluster.revocation_max_staleness, store_grace=cluster.store_outage_grace
        )
        freshness.add_source(lambda: feed.last_success, store=True)
        revocations = GuardedRevocationState(clock, freshness)
        keys_cfg = config.api_keys
        pepper = keys_cfg.pepper
        api_keys = (
            GuardedApiKeyIndex(
                store,
                pepper.get_secret_value().encode(),
                clock,
                freshness,
                max_age=keys_cfg.max_age,
                usage=KeyUsage(store, interval=keys_cfg.usage_flush_interval),
            )
            if pepper
            else None
        )
        jwt = (
            JwtVerifier(list(config.issuers), clock, revocations, cache_size=JWT_CACHE_SIZE)
            if config.issuers
            else None
        )
        auditor = Auditor(config.audit, store, bus, Redactor(list(config.audit.redact_fields)))
        services = cls(
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
            feed=feed,
            freshness=freshness,
            ip_blocks=IpBlocklist(clock.now),
        )
        freshness.set_on_stale(services._check_store_now)
        if config.cache is not None:
            services._wire_redis(config.cache)
        return services

    def _wire_redis(self, url: str) -> None:
        from bastion.events.redis_bus import RedisControlBus, redis_client
        from bastion.events.redis_streams import RedisEventStreams
        from bastion.gateway.layers.ratelimit.redis_backend import RedisRateLimitBackend

        cluster = self.config.cluster
        name = f"bastion-gateway-{socket.gethostname()}-{os.getpid()}"
        self.redis = client = redis_client(url, timeout=cluster.redis_timeout, name=name)
        self.redis_limiter = self.ratelimit_backend = RedisRateLimitBackend(
            client,
            prefix=cluster.key_prefix,
            nodes=cluster.nodes,
            retry_after=cluster.redis_retry,
            monotonic=self.clock.monotonic,
        )
        # Heartbeats well inside the staleness bound, so one lost PONG does not trip it.
        heartbeat = min(1.0, cluster.revocation_max_staleness / 4)
        self.control_bus = control = RedisControlBus(
            client,
            self.bus,
            self.clock,
            prefix=cluster.key_prefix,
            heartbeat=heartbeat,
            resync=self.feed.poll_once,
        )
        self.freshness.add_source(lambda: control.confirmed_at)
        self.event_streams = RedisEventStreams(
            client, self.bus, prefix=cluster.key_prefix, maxlen=cluster.event_stream_maxlen
        )

    def _check_store_now(self) -> None:
        """Ask the change feed for an immediate poll (a refusal found the state stale)."""
        if self._started and (self._store_check is None or self._store_check.done()):
            self._store_check = asyncio.get_running_loop().create_task(self._poll_feed())

    async def _poll_feed(self) -> None:
        with contextlib.suppress(Exception):  # the feed logs its own failures
            await self.feed.poll_once()

    async def publish_control(self, event: Event) -> None:
        """Apply a control event here and push it to every node (Redis, when configured).

        The change must already be committed to the store: nodes that miss the push still
        learn it from the change feed. Redis errors are logged, not raised, for that reason.
        """
        self.bus.publish("control", event)
        if self.redis is None:
            return
        from bastion.events.redis_bus import publish_control

        try:
            await publish_control(self.redis, self.config.cluster.key_prefix, event)
        except Exception as exc:
            log.warning("control event not pushed to Redis (%s)", type(exc).__name__)

    def _on_control(self, event: Event) -> None:
        self.revocations.apply(event)
        self.ip_blocks.apply(event)
        if self.api_keys is not None:
            self.api_keys.apply(event)

    async def start(self) -> None:
        """Open the store, load current state, start background tasks. Idempotent."""
        if self._started:
            return
        await self.store.open()
        # Subscribe before loading so nothing published in between is missed; applying an
        # event twice is harmless (revocations are idempotent). The Redis bus notes its
        # position before the load for the same reason.
        self._unsubscribe.append(self.bus.subscribe("control", self._on_control))
        if self.control_bus is not None:
            await self.control_bus.start()
        loaded_at = self.clock.monotonic()
        seq = await self.store.last_change_seq()
        self.revocations.load(await self.store.active_revocations(self.clock.now()))
        self.ip_blocks.load(await self.store.active_ip_blocks(self.clock.now()))
        if self.api_keys is not None:
            await self.api_keys.load()
            if self.api_keys.usage is not None:
                await self.api_keys.usage.start()
        if self.jwt is not None:
            await self.jwt.start()
        await self.auditor.start()
        await self.feed.start(from_seq=seq)
        self.freshness.confirm(loaded_at)
        if self.event_streams is not None:
            await self.event_streams.start()
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
        if self._store_check is not None:
            await asyncio.gather(self._store_check, return_exceptions=True)
        await self.feed.aclose()
        if self.control_bus is not None:
            await self.control_bus.aclose()
        if self.jwt is not None:
            await self.jwt.aclose()
        await self.auditor.aclose()
        if self.api_keys is not None and self.api_keys.usage is not None:
            await self.api_keys.usage.aclose()  # the last batch, before the store closes
        if self.event_streams is not None:
            await self.event_streams.aclose()  # after the auditor: its last records too
        if self.redis_limiter is not None:
            await self.redis_limiter.aclose()
        for unsubscribe in self._unsubscribe:
            if callable(unsubscribe):
                unsubscribe()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        await self.store.close()
