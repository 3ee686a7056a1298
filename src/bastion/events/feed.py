"""The change feed: how a node learns what other nodes wrote to the store.

Every write that all nodes must apply (a revoked API key or token, a new key) appends a row to
the store's ``changes`` table in the same transaction. A :class:`ChangeFeed` polls that table
every ``interval`` seconds and publishes each new change on the bus topic ``control`` as
``{"type": change.kind, "seq": change.seq, **change.payload}``, oldest first, so the
consumers (revocation state, API-key index) stay current.

``last_success`` (the clock's monotonic time of the last poll that reached the store) tells the
gateway how current it is: a node that cannot reach the store can decide to fail closed once
that is too long ago. A store error never stops the loop; it is logged once when the feed
falls behind and once when it catches up, and the poll is retried every interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bastion.core.clock import Clock
from bastion.errors import BastionError
from bastion.events.bus import EventBus
from bastion.store.base import Store

log = logging.getLogger("bastion.events.feed")

#: Changes read per store call; a poll reads pages until it has caught up.
PAGE_SIZE = 500


class ChangeFeed:
    """Polls ``store.changes_since`` and republishes the changes on ``bus`` topic ``control``.

    ``interval`` is in seconds. Not thread-safe: use it from the event loop that owns ``bus``.
    """

    def __init__(self, store: Store, bus: EventBus, clock: Clock, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._store = store
        self._bus = bus
        self._clock = clock
        self._interval = interval
        self._last_seq = 0
        self._last_success: float | None = None
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last change published (or the starting point)."""
        return self._last_seq

    @property
    def last_success(self) -> float | None:
        """``clock.monotonic()`` of the last poll that reached the store; None before any."""
        return self._last_success

    @property
    def running(self) -> bool:
        """True while the background loop runs."""
        return self._task is not None and not self._task.done()

    async def start(self, from_seq: int | None = None) -> None:
        """Start polling after ``from_seq`` (default: the store's newest change).

        A new node loads the current state itself and must not replay history, so the default
        skips what is already there. To leave no gap, read ``store.last_change_seq()`` *before*
        loading the state and pass it here. StoreError (from reading the default) propagates:
        a node that cannot reach its store at start-up must not start.
        """
        if self._task is not None:
            raise RuntimeError("ChangeFeed already started")
        if from_seq is None:
            from_seq = await self._store.last_change_seq()
            self._last_success = self._clock.monotonic()
        self._last_seq = from_seq
        self._task = asyncio.create_task(self._run(), name="change-feed")

    async def poll_once(self) -> int:
        """Publish every change after :attr:`last_seq`; return how many. Raises StoreError.

        Changes published before an error stay published (``last_seq`` advanced past them).
        """
        async with self._lock:  # the loop and a direct caller must not publish twice
            published = 0
            while True:
                page = await self._store.changes_since(self._last_seq, PAGE_SIZE)
                for change in page:
                    if change.seq <= self._last_seq:
                        continue  # a store must not go backwards; never republish
                    self._bus.publish(
                        "control", {**change.payload, "type": change.kind, "seq": change.seq}
                    )
                    self._last_seq = change.seq
                    published += 1
                if len(page) < PAGE_SIZE:
                    break
            self._last_success = self._clock.monotonic()
            return published

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except BastionError as exc:
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "change feed cannot read the store (%s); retrying every %.1fs",
                        exc.code,
                        self._interval,
                    )
            except Exception:
                if not self._failing:
                    self._failing = True
                    log.exception("change feed poll failed; retrying every %.1fs", self._interval)
            else:
                if self._failing:
                    self._failing = False
                    log.warning("change feed caught up again at seq %d", self._last_seq)
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        """Stop the background loop (idempotent)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
