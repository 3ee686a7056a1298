"""Where rate-limit state lives: a small protocol and the in-memory backend.

The layer asks for several limits at once through :meth:`RateLimitBackend.check_many`, which is
all-or-nothing: a request refused by one limit consumes nothing from the others. The method is
``async`` so that a shared backend (Redis, distributed mode) can answer with one pipelined round
trip; :class:`MemoryRateLimitBackend` answers without ever suspending, so awaiting it costs no
event-loop turn, and also synchronously: :meth:`MemoryRateLimitBackend.check_many_now`, and for
the layer's per-request path :meth:`MemoryRateLimitBackend.prepare`, whose
:meth:`PreparedLimits.admit` decides one request without building a result per limit.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from math import inf
from typing import NamedTuple, Protocol

from bastion.core.gcra import GcraResult, LocalLimiter, admit_all, admit_pair

Key = tuple[Hashable, ...]
"""Whose budget: e.g. ``(route, limit_index, "ip", "192.0.2.1")``."""


class LimitSpec(NamedTuple):
    """GCRA parameters of one limit: ``interval`` = seconds per unit, ``burst`` = units at once.
    Build it once per configured limit, not per request."""

    interval: float
    burst: int


class RateLimitBackend(Protocol):
    """Rate-limit state store. ``now`` is monotonic seconds from the caller's clock; a shared
    backend may use its own server time instead, as long as it is consistent across nodes."""

    async def check_many(
        self, limits: Sequence[LimitSpec], keys: Sequence[Key], now: float, cost: int = 1
    ) -> list[GcraResult]:
        """Decide ``cost`` units for each ``(limits[i], keys[i])``; commit all of them only if
        all are allowed.

        Returns one result per limit, in order. When any is refused nothing is recorded, and
        the allowed results describe what would have happened. Keys must be distinct.
        """
        ...

    async def check(self, limit: LimitSpec, key: Key, now: float, cost: int = 1) -> GcraResult:
        """Check and, if allowed, record a single limit."""
        ...


class MemoryRateLimitBackend:
    """In-process GCRA state: one :class:`LocalLimiter` per distinct :class:`LimitSpec`.

    Per worker process, so with N workers a client gets up to N times each limit (use the
    Redis backend for exact shared limits). Memory is bounded: every ``prune_every`` seconds
    keys whose bucket is full again are dropped, and each limiter holds at most
    ``max_keys_per_limit`` live keys (beyond that new keys are refused: fail closed).
    """

    def __init__(self, *, max_keys_per_limit: int = 1_000_000, prune_every: float = 30.0) -> None:
        if max_keys_per_limit <= 0 or prune_every <= 0:
            raise ValueError("max_keys_per_limit and prune_every must be positive")
        self._limiters: dict[LimitSpec, LocalLimiter] = {}
        self._max_keys = max_keys_per_limit
        self._prune_every = prune_every
        #: When :meth:`tick` must next be called (-inf: the first call schedules the first
        #: prune). Deciding callers test ``now >= next_prune`` before calling it.
        self.next_prune = -inf

    def tick(self, now: float) -> None:
        """Prune when it is time (the first call only schedules the first prune)."""
        if self.next_prune == -inf:
            self.next_prune = now + self._prune_every
        elif now >= self.next_prune:
            self.prune(now)

    def limiter(self, spec: LimitSpec) -> LocalLimiter:
        """The limiter holding every key of ``spec`` (created on first use, kept for good)."""
        lim = self._limiters.get(spec)
        if lim is None:
            lim = self._limiters[spec] = LocalLimiter(spec.interval, spec.burst, self._max_keys)
        return lim

    def prepare(self, limits: Sequence[LimitSpec]) -> PreparedLimits:
        """``limits`` resolved once to their limiters, for :meth:`PreparedLimits.admit`."""
        return PreparedLimits(self, limits)

    def check_many_now(
        self, limits: Sequence[LimitSpec], keys: Sequence[Hashable], now: float, cost: int = 1
    ) -> list[GcraResult]:
        """Synchronous :meth:`check_many` (the backend never needs I/O)."""
        if now >= self.next_prune:
            self.tick(now)
        table = self._limiters
        used: list[LocalLimiter] = []
        results: list[GcraResult] = []
        all_allowed = True
        for spec, key in zip(limits, keys, strict=True):
            lim = table.get(spec)
            if lim is None:
                lim = self.limiter(spec)
            res = lim.evaluate(key, now, cost)
            all_allowed = all_allowed and res.allowed
            used.append(lim)
            results.append(res)
        if all_allowed:
            for i, lim in enumerate(used):
                lim.record(keys[i], results[i])
        return results

    async def check_many(
        self, limits: Sequence[LimitSpec], keys: Sequence[Key], now: float, cost: int = 1
    ) -> list[GcraResult]:
        """See :meth:`RateLimitBackend.check_many`; never suspends."""
        return self.check_many_now(limits, keys, now, cost)

    async def check(self, limit: LimitSpec, key: Key, now: float, cost: int = 1) -> GcraResult:
        """See :meth:`RateLimitBackend.check`; never suspends."""
        return self.check_many_now((limit,), (key,), now, cost)[0]

    def prune(self, now: float) -> int:
        """Drop every key whose bucket is full again; returns how many were dropped."""
        self.next_prune = now + self._prune_every
        return sum(lim.prune(now) for lim in self._limiters.values())

    def __len__(self) -> int:
        """Live keys over all limits."""
        return sum(len(lim) for lim in self._limiters.values())


class PreparedLimits:
    """A fixed list of limits of one :class:`MemoryRateLimitBackend`, resolved to their
    limiters once (a route's limits): the rate limiter's per-request fast path."""

    def __init__(self, backend: MemoryRateLimitBackend, limits: Sequence[LimitSpec]) -> None:
        self.backend = backend
        self.limits = tuple(limits)
        self._limiters = tuple(backend.limiter(spec) for spec in self.limits)
        #: The two limiters of a two-limit list (the usual route), else None. A caller may
        #: inline :meth:`admit` for them: ``backend.tick(now)`` when ``now >= backend.next_prune``,
        #: then :func:`~bastion.core.gcra.admit_pair`.
        self.pair: tuple[LocalLimiter, LocalLimiter] | None = (
            (self._limiters[0], self._limiters[1]) if len(self._limiters) == 2 else None
        )

    def admit(self, keys: Sequence[Hashable], now: float) -> tuple[int, int, float] | None:
        """One request (cost 1) for ``keys[i]`` under every limit, all or nothing.

        Decides as :meth:`MemoryRateLimitBackend.check_many_now` does. Allowed: recorded, and
        ``(i, remaining, reset)`` of the limit with the fewest remaining units (ties: the later
        reset) is returned. Refused by any limit: nothing is recorded and None is returned;
        ``check_many_now`` with the same arguments then gives every limit's result.
        """
        backend = self.backend
        if now >= backend.next_prune:
            backend.tick(now)
        pair = self.pair
        if pair is not None:
            key0, key1 = keys
            return admit_pair(pair[0], key0, pair[1], key1, now)
        return admit_all(self._limiters, keys, now)

    def details(self, keys: Sequence[Hashable], now: float) -> list[GcraResult]:
        """Every limit's result for ``keys`` (recorded only if all allow), as
        :meth:`MemoryRateLimitBackend.check_many_now` gives them: after :meth:`admit` refused,
        the same refusal, with the waits and remaining counts to report."""
        return self.backend.check_many_now(self.limits, keys, now)
