"""GCRA (generic cell rate algorithm): exact rate limiting with one float of state per key.

For a rate of ``n`` per ``period`` with burst ``b``: the emission interval is
``T = period / n`` and the tolerance is ``tau = T * b``. The state is the theoretical arrival
time (TAT). A request at time ``t`` is allowed iff ``max(TAT, t) + T - t <= tau``; when allowed,
``TAT = max(TAT, t) + T``. Pure functions here; storage is the caller's.

Over any interval of length ``d`` GCRA admits at most ``b + floor(d / T)`` requests, so there is
no window-boundary burst (a fixed window would admit ``2b`` across a boundary).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import inf, nan, ulp
from typing import NamedTuple

from mypy_extensions import mypyc_attr

# The float slack never exceeds this fraction of one emission interval.
_MAX_SLACK = 1 / 16


class GcraResult(NamedTuple):
    """Outcome of one check. ``retry_after`` (s) is 0 when allowed; ``remaining`` is how many
    more requests would be allowed right now; ``reset`` (s) is when the bucket is full again.

    An immutable tuple (a frozen dataclass costs ~2 µs to build, several times the whole check).
    Test ``.allowed``, never the result itself: a tuple is always true.
    """

    allowed: bool
    new_tat: float
    retry_after: float
    remaining: int
    reset: float


def gcra_check(
    tat: float | None, now: float, interval: float, burst: int, cost: int = 1
) -> GcraResult:
    """Decide one request of ``cost`` units at ``now`` given the stored ``tat`` (None: new key)."""
    tau = interval * burst
    base = now if tat is None or tat < now else tat
    new_tat = base + interval * cost
    allow_at = new_tat - tau
    # A TAT built by repeated float additions drifts by up to half an ulp per addition, which
    # refused the last request of a burst (1000.0 + 10 x 0.1 admits only 9 of a burst of 10).
    # A slack of one ulp per unit of burst absorbs that; capped far below one interval, it can
    # never admit an extra request.
    if allow_at > now + min((burst + cost) * ulp(new_tat), interval * _MAX_SLACK):
        # Refused: state is unchanged.
        remaining = max(0, int((tau - (base - now)) / interval + 1e-9))
        return GcraResult(False, base, allow_at - now, remaining, base - now)
    remaining = max(0, int((tau - (new_tat - now)) / interval + 1e-9))
    return GcraResult(True, new_tat, 0.0, remaining, new_tat - now)


# Subclassed by plain Python (the freshness guard, tests): allowed in the compiled build.
@mypyc_attr(allow_interpreted_subclasses=True)
class LocalLimiter:
    """In-process GCRA over many keys, bounded in memory.

    Keys whose TAT is in the past carry no information and are pruned, so memory stays
    proportional to the keys active within one burst window. ``max_keys`` bounds it hard: when
    full, expired entries go first, then — fail closed — new keys are refused until the earliest
    live entry expires. That moment is tracked, so a full table of live keys costs one dict
    lookup per new key, not a scan (no CPU amplification by an attacker holding many keys).
    """

    def __init__(self, interval: float, burst: int, max_keys: int = 1_000_000) -> None:
        if interval <= 0 or burst <= 0:
            raise ValueError("interval and burst must be positive")
        if max_keys <= 0:
            raise ValueError("max_keys must be positive")
        self.interval = interval
        self.burst = burst
        # gcra_check's tolerance and slack cap, computed once for admit_all.
        self._tau = interval * burst
        self._slack_cap = interval * _MAX_SLACK
        self._max = max_keys
        self._tats: dict[object, float] = {}
        # No stored TAT is earlier than this: pruning before then cannot free anything.
        self._next_expiry = inf
        # admit_pair's last remaining count and the reset it was computed from (remaining is a
        # function of the reset alone; a bucket that has refilled gives the same reset again).
        self._memo_reset = nan
        self._memo_remaining = 0

    @property
    def tats(self) -> Mapping[object, float]:
        """The live table key -> TAT (read-only for callers; the same object for the limiter's
        lifetime). A key absent while ``len(tats) < max_keys`` would be allowed one request."""
        return self._tats

    @property
    def max_keys(self) -> int:
        return self._max

    def evaluate(self, key: object, now: float, cost: int = 1) -> GcraResult:
        """Decide one request for ``key`` at ``now`` (monotonic s) without recording it.

        Pair with :meth:`record` to commit several limits only when all of them allow.
        """
        tat = self._tats.get(key)
        if tat is None and len(self._tats) >= self._max and not self._make_room(now):
            wait = self._next_expiry - now  # > 0: _make_room found no expired key
            return GcraResult(False, now, wait, 0, wait)
        return gcra_check(tat, now, self.interval, self.burst, cost)

    def record(self, key: object, result: GcraResult) -> None:
        """Store the TAT of an allowed ``result`` from :meth:`evaluate` (refusals change nothing)."""
        if result.allowed:
            if result.new_tat < self._next_expiry and key not in self._tats:
                self._next_expiry = result.new_tat
            self._tats[key] = result.new_tat

    def check(self, key: object, now: float, cost: int = 1) -> GcraResult:
        """Check and, if allowed, record one request for ``key`` at ``now`` (monotonic s)."""
        res = self.evaluate(key, now, cost)
        self.record(key, res)
        return res

    def peek(self, key: object, now: float) -> bool:
        """Would one more request be allowed now? (No state change.)"""
        tat = self._tats.get(key)
        if tat is None or tat <= now:
            # A new or fully refilled bucket always allows one (burst >= 1), table space
            # permitting; this is the per-request fast path of failed-attempt lockouts.
            return tat is not None or len(self._tats) < self._max or self._make_room(now)
        return self.evaluate(key, now).allowed

    def prune(self, now: float) -> int:
        """Drop keys whose bucket is full again; returns how many were dropped."""
        dead: list[object] = []
        earliest = inf
        for k, t in self._tats.items():
            if t <= now:
                dead.append(k)
            elif t < earliest:
                earliest = t
        for k in dead:
            del self._tats[k]
        self._next_expiry = earliest
        return len(dead)

    def _make_room(self, now: float) -> bool:
        if now < self._next_expiry:
            return False
        self.prune(now)
        return len(self._tats) < self._max

    def __len__(self) -> int:
        return len(self._tats)


def admit_all(
    limiters: Sequence[LocalLimiter], keys: Sequence[object], now: float
) -> tuple[int, int, float] | None:
    """One unit from ``limiters[i]`` for ``keys[i]``, for every ``i``, all or nothing.

    Decides exactly as :meth:`LocalLimiter.evaluate` with ``cost=1`` would, without building a
    :class:`GcraResult` per limit (the per-request fast path of the in-memory rate limiter).
    When every limiter allows, records them all and returns ``(i, remaining, reset)`` of the
    limit with the fewest remaining units (ties: the later reset, then the first); when one
    refuses, records nothing and returns None (ask :meth:`LocalLimiter.evaluate` for details).
    ``keys`` has one key per limiter; keys must be distinct per limiter.
    """
    # Written for speed (it runs for every request): no zip/enumerate/min/max calls, one list.
    new_tats: list[float] = []
    worst = -1
    worst_remaining = 0
    worst_reset = 0.0
    i = 0
    for lim in limiters:
        key = keys[i]
        tats = lim._tats
        tat = tats.get(key)
        if tat is None:
            if len(tats) >= lim._max and not lim._make_room(now):
                return None
            base = now
        else:
            base = now if tat < now else tat
        interval = lim.interval
        tau = lim._tau
        new_tat = base + interval
        allow_at = new_tat - tau
        # The same test, slack and arithmetic as gcra_check (cost 1). The slack is >= 0, so it
        # only needs computing when allow_at > now.
        if allow_at > now:
            slack = (lim.burst + 1) * ulp(new_tat)
            cap = lim._slack_cap
            if allow_at > now + (slack if slack < cap else cap):
                return None
        reset = new_tat - now
        remaining = int((tau - reset) / interval + 1e-9)
        if remaining < 0:
            remaining = 0
        if (
            worst < 0
            or remaining < worst_remaining
            or (remaining == worst_remaining and reset > worst_reset)
        ):
            worst, worst_remaining, worst_reset = i, remaining, reset
        new_tats.append(new_tat)
        i += 1
    if i != len(keys):
        raise ValueError("one key per limiter")
    i = 0
    for lim in limiters:  # an index, not zip(): zip costs more than this whole loop body
        key = keys[i]
        new_tat = new_tats[i]
        i += 1  # noqa: SIM113
        tats = lim._tats
        if new_tat < lim._next_expiry and key not in tats:
            lim._next_expiry = new_tat
        tats[key] = new_tat
    return worst, worst_remaining, worst_reset


def admit_pair(
    lim0: LocalLimiter, key0: object, lim1: LocalLimiter, key1: object, now: float
) -> tuple[int, int, float] | None:
    """``admit_all((lim0, lim1), (key0, key1), now)`` unrolled: the same decisions, records and
    result for the commonest route (two limits), without the loops and the list.

    A remaining count is a function of the limiter and the reset alone: each limiter remembers
    the last one (a refilled bucket gives the same reset request after request)."""
    tats0 = lim0._tats
    tat = tats0.get(key0)
    if tat is None:
        if len(tats0) >= lim0._max and not lim0._make_room(now):
            return None
        base = now
    else:
        base = now if tat < now else tat
    interval = lim0.interval
    tau = lim0._tau
    new0 = base + interval
    allow_at = new0 - tau
    if allow_at > now:
        slack = (lim0.burst + 1) * ulp(new0)
        cap = lim0._slack_cap
        if allow_at > now + (slack if slack < cap else cap):
            return None
    reset0 = new0 - now
    if reset0 == lim0._memo_reset:
        remaining0 = lim0._memo_remaining
    else:
        remaining0 = int((tau - reset0) / interval + 1e-9)
        if remaining0 < 0:
            remaining0 = 0
        lim0._memo_reset = reset0
        lim0._memo_remaining = remaining0

    tats1 = lim1._tats
    tat = tats1.get(key1)
    if tat is None:
        if len(tats1) >= lim1._max and not lim1._make_room(now):
            return None
        base = now
    else:
        base = now if tat < now else tat
    interval = lim1.interval
    tau = lim1._tau
    new1 = base + interval
    allow_at = new1 - tau
    if allow_at > now:
        slack = (lim1.burst + 1) * ulp(new1)
        cap = lim1._slack_cap
        if allow_at > now + (slack if slack < cap else cap):
            return None
    reset1 = new1 - now
    if reset1 == lim1._memo_reset:
        remaining1 = lim1._memo_remaining
    else:
        remaining1 = int((tau - reset1) / interval + 1e-9)
        if remaining1 < 0:
            remaining1 = 0
        lim1._memo_reset = reset1
        lim1._memo_remaining = remaining1

    if new0 < lim0._next_expiry and key0 not in tats0:
        lim0._next_expiry = new0
    tats0[key0] = new0
    if new1 < lim1._next_expiry and key1 not in tats1:
        lim1._next_expiry = new1
    tats1[key1] = new1
    if remaining1 < remaining0 or (remaining1 == remaining0 and reset1 > reset0):
        return 1, remaining1, reset1
    return 0, remaining0, reset0
