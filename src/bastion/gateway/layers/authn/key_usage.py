"""Per-node API-key usage counting, written to the store in batches.

A request never waits for, nor causes, a database write of its own: :meth:`KeyUsage.hit`
adds to an in-memory counter (a dict lookup), and a background task hands everything counted
since the last flush to :meth:`~bastion.store.base.Store.record_key_usage` every ``interval``
seconds — one statement per batch — and once more at shutdown. A flush that fails keeps its
counts for the next one, so an outage delays the numbers and loses none (unless the process
dies meanwhile: usage is bookkeeping, not security state).

Only ids of keys that passed verification are counted, so the table holds at most one entry
per real key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bastion.store.base import Store

__all__ = ["KeyUsage"]

log = logging.getLogger("bastion.authn.key_usage")


class KeyUsage:
    """Counts accepted API keys and flushes ``{key_id: (count, last_used_at)}`` batches.

    ``interval`` is in seconds. Use it from the gateway's event loop only.
    """

    __slots__ = ("_counts", "_failing", "_interval", "_store", "_task", "flushes")

    def __init__(self, store: Store, *, interval: float = 5.0) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._store = store
        self._interval = interval
        self._counts: dict[str, list[float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        #: Batches written so far (for tests and metrics).
        self.flushes = 0

    def hit(self, key_id: str, now: float) -> None:
        """Count one accepted request of ``key_id`` at wall-clock ``now``."""
        entry = self._counts.get(key_id)
        if entry is None:
            self._counts[key_id] = [1, now]
        else:
            entry[0] += 1
            if now > entry[1]:
                entry[1] = now

    @property
    def pending(self) -> dict[str, tuple[int, float]]:
        """What the next flush would write (a copy)."""
        return {k: (int(n), last) for k, (n, last) in self._counts.items()}

    async def flush(self) -> int:
        """Write what was counted since the last flush; returns the number of keys written.

        On a store error the batch is merged back into the counters (nothing lost) and 0 is
        returned; the error is logged once per outage, never raised.
        """
        if not self._counts:
            return 0
        batch, self._counts = self._counts, {}
        usage = {k: (int(n), last) for k, (n, last) in batch.items()}
        try:
            await self._store.record_key_usage(usage)
        except Exception as exc:
            for key_id, (n, last) in batch.items():
                entry = self._counts.get(key_id)
                if entry is None:
                    self._counts[key_id] = [n, last]
                else:
                    entry[0] += n
                    entry[1] = max(entry[1], last)
            if not self._failing:
                self._failing = True
                log.warning(
                    "API-key usage not written (%s); kept for the next flush", type(exc).__name__
                )
            return 0
        if self._failing:
            self._failing = False
            log.warning("API-key usage written again")
        self.flushes += 1
        return len(usage)

    async def start(self) -> None:
        """Start the background flush loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="api-key-usage-flush"
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def aclose(self) -> None:
        """Stop the loop and flush what is left (a failure is logged: the counts are lost)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
