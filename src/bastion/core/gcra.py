"""GCRA (generic cell rate algorithm): exact rate limiting with one float of state per key.

For a rate of ``n`` per ``period`` with burst ``b``: the emission interval is
``T = period / n`` and the tolerance is ``tau = T * b``. The state is the theoretical arrival
time (TAT). A request at time ``t`` is allowed iff ``max(TAT, t) + T - t <= tau``; when allowed,
``TAT = max(TAT, t) + T``. Pure functions here; storage is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GcraResult:
    """Outcome of one check. ``retry_after`` (s) is 0 when allowed; ``remaining`` is how many
    more requests would be allowed right now; ``reset`` (s) is when the bucket is full again."""

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
    if allow_at > now:
        # Refused: state is unchanged.
        remaining = max(0, int((tau - (base - now)) / interval + 1e-9))
        return GcraResult(False, base, allow_at - now, remaining, base - now)
    remaining = max(0, int((tau - (new_tat - now)) / interval + 1e-9))
    return GcraResult(True, new_tat, 0.0, remaining, new_tat - now)


class LocalLimiter:
    """In-process GCRA over many keys, bounded in memory.

    Keys whose TAT is in the past carry no information and are pruned, so memory stays
    proportional to the keys active within one burst window. ``max_keys`` bounds it hard: when
    full, the oldest expired entries go first, then — fail closed — new keys are refused.
    """

    __slots__ = ("_max", "_tats", "burst", "interval")

    def __init__(self, interval: float, burst: int, max_keys: int = 1_000_000) -> None:
        if interval <= 0 or burst <= 0:
            raise ValueError("interval and burst must be positive")
        self.interval = interval
        self.burst = burst
        self._max = max_keys
        self._tats: dict[object, float] = {}

    def check(self, key: object, now: float, cost: int = 1) -> GcraResult:
        """Check and, if allowed, record one request for ``key`` at ``now`` (monotonic s)."""
        tats = self._tats
        tat = tats.get(key)
        if tat is None and len(tats) >= self._max:
            self.prune(now)
            if len(tats) >= self._max:
                return GcraResult(False, now, self.interval, 0, self.interval)
        res = gcra_check(tat, now, self.interval, self.burst, cost)
        if res.allowed:
            tats[key] = res.new_tat
        return res

    def peek(self, key: object, now: float) -> bool:
        """Would one more request be allowed now? (No state change.)"""
        tat = self._tats.get(key)
        if tat is None:
            return True
        base = max(tat, now)
        return base + self.interval - self.interval * self.burst <= now

    def prune(self, now: float) -> int:
        """Drop keys whose bucket is full again; returns how many were dropped."""
        dead = [k for k, t in self._tats.items() if t <= now]
        for k in dead:
            del self._tats[k]
        return len(dead)

    def __len__(self) -> int:
        return len(self._tats)
