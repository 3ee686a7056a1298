"""Clocks are passed in, never read from globals inside decisions, so tests can move time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """``now()`` is wall-clock seconds since the epoch (token times); ``monotonic()`` is for
    intervals (rate limits, cache ages)."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    # The C functions themselves: no Python frame per reading (read several times a request).
    now = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)


class ManualClock:
    """A clock tests move by hand. Both readings advance together."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self._now = now
        self._mono = 1000.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds
