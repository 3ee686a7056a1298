"""Connection deadlines checked by one sweeper per event loop instead of a timer per event.

Arming a timer (``loop.call_later``) and cancelling it costs about a microsecond each, and a
proxied request needs five or six of them (idle, head, body, upstream read…). Here arming a
deadline is one float assignment; a single task wakes every ``RESOLUTION`` seconds and fires
the deadlines that passed. Timeouts are therefore late by at most ``RESOLUTION``, which is far
below any timeout a gateway configures (seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import Protocol

log = logging.getLogger("bastion.gateway")

RESOLUTION = 0.1  # seconds


class HasDeadline(Protocol):
    """Something with a monotonic ``deadline`` (0: none) and what to do when it passes."""

    deadline: float

    def on_deadline(self) -> None: ...


class DeadlineSweeper:
    """Fires expired deadlines of registered objects. One per event loop: :func:`sweeper`."""

    def __init__(self, resolution: float = RESOLUTION) -> None:
        self.resolution = resolution
        self._items: set[HasDeadline] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, item: HasDeadline) -> None:
        self._items.add(item)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, item: HasDeadline) -> None:
        self._items.discard(item)

    def sweep(self, now: float | None = None) -> int:
        """Fire every passed deadline once; returns how many fired."""
        now = time.monotonic() if now is None else now
        fired = 0
        for item in [i for i in self._items if 0 < i.deadline <= now]:
            item.deadline = 0.0
            fired += 1
            try:
                item.on_deadline()
            except Exception:  # one broken connection must not stop the others' timeouts
                log.exception("deadline handler failed")
        return fired

    async def _run(self) -> None:
        while self._items:
            await asyncio.sleep(self.resolution)
            self.sweep()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


_SWEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DeadlineSweeper] = (
    weakref.WeakKeyDictionary()
)


def sweeper() -> DeadlineSweeper:
    """The sweeper of the running event loop."""
    loop = asyncio.get_running_loop()
    s = _SWEEPERS.get(loop)
    if s is None:
        s = _SWEEPERS[loop] = DeadlineSweeper()
    return s
