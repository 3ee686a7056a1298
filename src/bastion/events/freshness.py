"""How current a node's revocation state is, and failing closed when it cannot know.

A node learns about revocations from two sources: the store's change feed (durable, polled)
and, in distributed mode, the Redis control bus (pushed). Each source reports when it last
*confirmed* that nothing was missed: a feed poll that reached the store, a Redis heartbeat
answered on a subscription with no gap. :class:`Freshness` keeps the newest of those times.

When it is older than ``max_staleness`` the node cannot tell whether a key or token was revoked
in the meantime, so :class:`GuardedRevocationState` reports every token as revoked and the
API-key index refuses keys (``gateway/services.py``) until a source confirms again. The first
refusal asks for a store check at once (``on_stale``, e.g. an immediate feed poll), so a store
that is reachable ends the refusals within one round trip; if the store is unreachable too,
refusals go on. That is the fail-closed half of distributed mode's failure behaviour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bastion.core.clock import Clock
from bastion.core.revocation import RevocationState

log = logging.getLogger("bastion.revocation")

Source = Callable[[], float | None]
"""Returns the ``clock.monotonic()`` time of the source's last confirmation, or None."""

#: Shortest gap between two store checks requested by refusals.
KICK_INTERVAL = 0.5


class Freshness:
    """The newest confirmation over every source, checked in about a microsecond.

    ``max_staleness`` (s) is the bound; ``store_grace`` (s) separately bounds how long the
    *store* sources alone may be silent (API keys authenticate from cache no longer than
    that). Use it from the event loop that owns the sources.
    """

    __slots__ = (
        "_baseline",
        "_clock",
        "_fresh_until",
        "_max",
        "_next_kick",
        "_on_stale",
        "_sources",
        "_stale_logged",
        "_store_grace",
        "_store_sources",
    )

    def __init__(
        self,
        clock: Clock,
        max_staleness: float,
        *,
        store_grace: float | None = None,
        on_stale: Callable[[], None] | None = None,
    ) -> None:
        if max_staleness <= 0:
            raise ValueError("max_staleness must be positive")
        self._clock = clock
        self._max = max_staleness
        self._store_grace = store_grace
        self._sources: list[Source] = []
        self._store_sources: list[Source] = []
        self._baseline: float | None = None
        self._fresh_until = float("-inf")
        self._on_stale = on_stale
        self._next_kick = float("-inf")
        self._stale_logged = False

    def add_source(self, source: Source, *, store: bool = False) -> None:
        """Count ``source``'s confirmations; ``store=True`` for sources that read the store."""
        self._sources.append(source)
        if store:
            self._store_sources.append(source)

    def set_on_stale(self, callback: Callable[[], None] | None) -> None:
        """Called (at most every :data:`KICK_INTERVAL` s) when a check finds the state stale."""
        self._on_stale = callback

    def confirm(self, at: float | None = None) -> None:
        """Record a confirmation made outside the sources (the state load at start-up)."""
        at = self._clock.monotonic() if at is None else at
        if self._baseline is None or at > self._baseline:
            self._baseline = at

    def confirmed_at(self, *, store_only: bool = False) -> float | None:
        """The newest confirmation (monotonic s), or None if there was none."""
        best = self._baseline
        for source in self._store_sources if store_only else self._sources:
            t = source()
            if t is not None and (best is None or t > best):
                best = t
        return best

    def stale(self) -> bool:
        """Whether the last confirmation is older than ``max_staleness`` (fail closed)."""
        now = self._clock.monotonic()
        if now < self._fresh_until:
            return False
        confirmed = self.confirmed_at()
        if confirmed is not None:
            self._fresh_until = confirmed + self._max
            if now < self._fresh_until:
                if self._stale_logged:
                    self._stale_logged = False
                    log.warning("revocation state confirmed current again")
                return False
        if not self._stale_logged:
            self._stale_logged = True
            log.warning(
                "revocation state not confirmed for over %.1fs (store and Redis silent): "
                "refusing API keys and tokens until one answers",
                self._max,
            )
        if self._on_stale is not None and now >= self._next_kick:
            self._next_kick = now + KICK_INTERVAL
            self._on_stale()
        return True

    def store_outage_exceeded(self) -> bool:
        """Whether the store has been silent for longer than ``store_grace``."""
        if self._store_grace is None:
            return False
        confirmed = self.confirmed_at(store_only=True)
        return confirmed is None or self._clock.monotonic() - confirmed > self._store_grace


class GuardedRevocationState(RevocationState):
    """A :class:`RevocationState` that reports every token as revoked while ``freshness`` is
    stale: a node that cannot confirm its lists are current must not accept any token."""

    __slots__ = ("_freshness",)

    def __init__(self, clock: Clock, freshness: Freshness) -> None:
        super().__init__(clock)
        self._freshness = freshness

    def current(self) -> bool:
        """False while ``freshness`` is stale."""
        return not self._freshness.stale()

    def is_token_revoked(
        self, issuer: str | None, subject: str, jti: str | None, issued_at: float | None
    ) -> bool:
        """See :meth:`RevocationState.is_token_revoked`; True whenever the state is stale."""
        if self._freshness.stale():
            return True
        return super().is_token_revoked(issuer, subject, jti, issued_at)
