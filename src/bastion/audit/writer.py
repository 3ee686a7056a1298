"""The audit writer: one record per request, off the request path, nothing dropped.

``submit`` (on the request path) only snapshots the exchange into a list. Once per event-loop
iteration the pending snapshots are rendered, redacted, serialised and published on the bus
topic ``audit``; then every sink gets them through its own *lane*, a queue and a task that
writes batches of ``batch_size`` at least every ``flush_interval``. A sink that fails keeps its
batch and retries with exponential backoff (the failure is logged without record contents);
the other sinks go on.

The buffer is bounded by ``queue_size``: records waiting for the slowest sink plus those not yet
rendered. When it is full, :meth:`Auditor.wait_for_space` blocks the caller (backpressure on the
requests) until a sink catches up; records are never dropped. At shutdown :meth:`Auditor.aclose`
writes everything, waiting at most ``shutdown_timeout`` for a sink that is down.

Subscribers of ``audit`` receive the very dict the store sink writes: they must not modify it.
When no sink needs the dicts (file and stdout sinks only) and nobody subscribes to ``audit``,
records are rendered straight to their lines (:class:`~bastion.audit.record.LineRenderer`,
the same bytes) and not published.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque

from bastion.audit.record import (
    AuditEntry,
    LineRenderer,
    Snapshot,
    entry,
    minimal_entry,
    snapshot,
)
from bastion.audit.redact import Redactor
from bastion.audit.sinks import AuditSink, FileSink, StdoutSink, build_sinks
from bastion.core.exchange import Exchange
from bastion.errors import BastionError
from bastion.events.bus import EventBus
from bastion.gateway.layers.audit.config import AuditConfig
from bastion.store.base import Store

log = logging.getLogger("bastion.audit")

RETRY_MIN = 0.05  # s, first wait after a failed write
RETRY_MAX = 5.0  # s, longest wait between two attempts


def describe_error(exc: BaseException) -> str:
    """A log-safe description: the error's type and code, never its message (it may quote
    record contents)."""
    if isinstance(exc, BastionError):
        return f"{type(exc).__name__} ({exc.code})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__} ({exc.strerror})"
    return type(exc).__name__


class _Lane:
    """One sink's queue and writer task."""

    def __init__(self, sink: AuditSink, auditor: Auditor, batch_size: int, interval: float):
        self.sink = sink
        self.queue: deque[AuditEntry] = deque()
        self.auditor = auditor
        self.batch_size = batch_size
        self.interval = interval
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.urgent = False  # a flush is waiting: write without waiting for a full batch
        self.failures = 0
        self.task: asyncio.Task[None] | None = None

    def extend(self, entries: list[AuditEntry]) -> None:
        was_empty = not self.queue
        self.queue.extend(entries)
        if was_empty:
            self.idle.clear()
        # Waking the writer task costs a task step and a future: do it only when it has
        # something to do now (it sleeps up to ``interval`` for a batch to fill), not per call.
        if was_empty or len(self.queue) >= self.batch_size:
            self.wake.set()

    async def run(self) -> None:
        delay = RETRY_MIN
        while True:
            if not self.queue:
                self.urgent = False
                self.idle.set()
                self.wake.clear()
                await self.wake.wait()
                continue
            if len(self.queue) < self.batch_size and not self.urgent:
                await self._gather()
            batch = list(itertools.islice(self.queue, self.batch_size))
            try:
                await self.sink.write(batch)
            except Exception as exc:
                self.failures += 1
                log.warning(
                    "audit sink %s failed (attempt %d, %d records kept, retry in %.2fs): %s",
                    self.sink.name,
                    self.failures,
                    len(self.queue),
                    delay,
                    describe_error(exc),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if self.failures:
                log.warning(
                    "audit sink %s recovered after %d failed attempts",
                    self.sink.name,
                    self.failures,
                )
                self.failures = 0
            delay = RETRY_MIN
            for _ in range(len(batch)):
                self.queue.popleft()
            self.auditor._on_progress()

    async def _gather(self) -> None:
        """Wait until a full batch, a flush request or ``interval`` seconds, whichever first."""
        self.wake.clear()
        try:
            async with asyncio.timeout(self.interval):
                while len(self.queue) < self.batch_size and not self.urgent:
                    await self.wake.wait()
                    self.wake.clear()
        except TimeoutError:
            pass


class Auditor:
    """Writes one audit record per exchange to every configured sink and the ``audit`` topic.

    ``store`` is needed only for a ``store`` sink (ConfigError at construction otherwise);
    ``bus`` may be None. Call ``await start()`` once (opens the sinks: ConfigError if a file
    cannot be opened), then per request ``await wait_for_space()`` when :attr:`full` and
    ``submit(ex)``; at shutdown ``await aclose()``.
    """

    def __init__(
        self,
        config: AuditConfig,
        store: Store | None,
        bus: EventBus | None,
        redactor: Redactor,
    ) -> None:
        self._config = config
        self._bus = bus
        self._redactor = redactor
        self._queue_size = config.queue_size
        self._lanes = [
            _Lane(sink, self, config.batch_size, config.flush_interval)
            for sink in build_sinks(config.sinks, store)
        ]
        # File and stdout sinks only need the lines; any other sink needs the records.
        self._sinks_need_records = not all(
            isinstance(lane.sink, FileSink | StdoutSink) for lane in self._lanes
        )
        self._lines = LineRenderer(redactor)
        self._pending: list[Snapshot] = []
        self._inflight = 0  # records the slowest lane still holds
        self._space = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._render_scheduled = False
        self._started = False
        self._closed = False

    @property
    def sinks(self) -> list[AuditSink]:
        """The sinks, in config order."""
        return [lane.sink for lane in self._lanes]

    @property
    def buffered(self) -> int:
        """Records submitted but not yet written by every sink."""
        return len(self._pending) + self._inflight

    @property
    def full(self) -> bool:
        """True when a caller must ``await wait_for_space()`` before submitting."""
        return len(self._pending) + self._inflight >= self._queue_size

    async def start(self) -> None:
        """Open the sinks and start the writer tasks (once)."""
        if self._started:
            return
        opened: list[AuditSink] = []
        try:
            for lane in self._lanes:
                await lane.sink.open()
                opened.append(lane.sink)
        except BaseException:
            for sink in opened:
                await self._close_sink(sink)
            raise
        self._loop = asyncio.get_running_loop()
        for lane in self._lanes:
            lane.task = asyncio.create_task(lane.run(), name=f"audit-{lane.sink.name}")
        self._started = True
        if self._pending:
            self._schedule_render()

    def submit(self, ex: Exchange) -> None:
        """Queue the record of a completed exchange (sync, about a microsecond; call it from
        the event loop's thread).

        Never drops: past ``queue_size`` the buffer still grows, so callers should honour
        :attr:`full`. RuntimeError after :meth:`aclose` has finished.
        """
        if self._closed:
            raise RuntimeError("audit writer is closed")
        self._pending.append(snapshot(ex, time.monotonic()))
        if not self._render_scheduled and self._loop is not None:
            self._schedule_render()

    def _schedule_render(self) -> None:
        self._render_scheduled = True
        loop = self._loop
        if loop is not None:
            loop.call_soon(self._render_pending)

    def _render_pending(self) -> None:
        """Render, publish and hand to the lanes everything pending (once per loop iteration)."""
        self._render_scheduled = False
        snaps, self._pending = self._pending, []
        if not snaps:
            return
        bus = self._bus
        if self._sinks_need_records or (bus is not None and bus.has_subscribers("audit")):
            entries = [self._render_one(s) for s in snaps]
            if bus is not None:
                for e in entries:
                    bus.publish("audit", e.record)  # type: ignore[arg-type]
        else:
            entries = self._lines.entries(snaps, self._render_failed)
        for lane in self._lanes:
            lane.extend(entries)
        self._on_progress()

    def _render_one(self, snap: Snapshot) -> AuditEntry:
        try:
            return entry(snap, self._redactor)
        except Exception as exc:  # a bug here must cost the record's detail, not the record
            return self._render_failed(snap, exc)

    @staticmethod
    def _render_failed(snap: Snapshot, exc: Exception) -> AuditEntry:
        log.error("audit record could not be rendered: %s", describe_error(exc))
        return minimal_entry(snap)

    def _on_progress(self) -> None:
        self._inflight = max((len(lane.queue) for lane in self._lanes), default=0)
        if not self.full:
            self._space.set()

    async def wait_for_space(self) -> None:
        """Return once the buffer has room for one more record (at once if it has)."""
        while self.full:
            if self._closed:
                raise RuntimeError("audit writer is closed")
            self._space.clear()
            await self._space.wait()

    async def flush(self) -> None:
        """Write everything submitted so far to every sink (waits while a sink is down)."""
        if not self._started:
            raise RuntimeError("Auditor.start() was not called")
        self._render_pending()
        for lane in self._lanes:
            if lane.queue:
                lane.urgent = True
                lane.wake.set()
        await asyncio.gather(*(lane.idle.wait() for lane in self._lanes))

    async def aclose(self) -> None:
        """Flush (at most ``shutdown_timeout`` seconds), stop the tasks, close the sinks."""
        if self._closed:
            return
        if self._started:
            try:
                async with asyncio.timeout(self._config.shutdown_timeout):
                    await self.flush()
            except TimeoutError:
                for lane in self._lanes:
                    if lane.queue:
                        log.error(
                            "audit sink %s still down at shutdown: %d records not written",
                            lane.sink.name,
                            len(lane.queue),
                        )
            for lane in self._lanes:
                if lane.task is not None:
                    lane.task.cancel()
            await asyncio.gather(
                *(lane.task for lane in self._lanes if lane.task), return_exceptions=True
            )
            for lane in self._lanes:
                await self._close_sink(lane.sink)
        elif self._pending:
            log.error(
                "audit writer closed before start: %d records not written", len(self._pending)
            )
        self._closed = True
        self._space.set()

    @staticmethod
    async def _close_sink(sink: AuditSink) -> None:
        try:
            await sink.aclose()
        except Exception as exc:
            log.warning("audit sink %s did not close cleanly: %s", sink.name, describe_error(exc))
