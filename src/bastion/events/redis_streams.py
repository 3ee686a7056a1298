"""Gateway events to Redis Streams, for the detection engine of every node to consume.

Every record on the local bus topics ``audit`` and ``security`` is appended to the stream
``<prefix>events:<topic>`` (one field ``r``: the record as JSON), bounded by ``MAXLEN ~``. A
consumer group (``detection``) is created on each stream, so detectors on several hosts share
the work and acknowledge what they processed.

These streams are a feed for detection, not the audit log of record: the audit sinks (file,
store, with its spool) are where nothing may be lost. Here, records wait in a bounded buffer
while Redis is unreachable; past ``buffer`` records the oldest are dropped and counted, and the
loss is logged once per outage. The bus handler only appends to that buffer: serialisation and
the ``XADD``s run in a background task, a whole batch in one script call (the records of a topic
joined by newlines, which JSON text never contains): one command's encoding per batch instead
of one per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bastion.events.bus import Event, EventBus

log = logging.getLogger("bastion.events.redis")

TOPICS = ("audit", "security")
# KEYS: the streams; ARGV[1]: MAXLEN (approximate); ARGV[i + 1]: the records for KEYS[i], one
# JSON document per line.
XADD_SCRIPT = """
local maxlen = ARGV[1]
for i = 1, #KEYS do
  local records = ARGV[i + 1]
  local start = 1
  while start <= #records do
    local stop = string.find(records, '\\n', start, true) or (#records + 1)
    if stop > start then
      redis.call('XADD', KEYS[i], 'MAXLEN', '~', maxlen, '*', 'r', string.sub(records, start, stop - 1))
    end
    start = stop + 1
  end
end
return 1
"""
GROUP = "detection"
RETRY_MAX = 2.0  # s between two attempts while Redis is down


class RedisEventStreams:
    """Forwards ``audit`` and ``security`` events from ``bus`` to Redis Streams.

    ``maxlen`` bounds each stream (approximately); ``buffer`` bounds the records held while
    Redis is slow or down; ``batch`` is the most records sent in one round trip.
    """

    def __init__(
        self,
        client: Redis,
        bus: EventBus,
        *,
        prefix: str,
        maxlen: int = 100_000,
        buffer: int = 10_000,
        batch: int = 500,
    ) -> None:
        self._client = client
        self._script = client.register_script(XADD_SCRIPT)
        self._bus = bus
        self._prefix = prefix
        self._maxlen = maxlen
        self._batch = batch
        self._queue: deque[tuple[str, Event]] = deque(maxlen=buffer)
        self._wake = asyncio.Event()
        self._unsubscribe: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._groups_ready = False
        self._failing = False
        self.dropped = 0
        self.sent = 0

    def stream(self, topic: str) -> str:
        """The stream name of ``topic``."""
        return f"{self._prefix}events:{topic}"

    async def start(self) -> None:
        """Subscribe to the bus and start the writer (Redis need not be up yet)."""
        for topic in TOPICS:
            self._unsubscribe.append(self._bus.subscribe(topic, self._handler(topic)))
        self._task = asyncio.create_task(self._run(), name="redis-event-streams")

    def _handler(self, topic: str) -> Callable[[Event], None]:
        queue, wake = self._queue, self._wake

        def on_event(event: Event) -> None:
            if len(queue) == queue.maxlen:
                self.dropped += 1  # the deque drops its oldest entry on append
            queue.append((topic, event))
            if not wake.is_set():
                wake.set()

        return on_event

    async def flush(self, wait: float = 2.0) -> bool:
        """Wait until the buffer is empty (at most ``wait`` s); True if it is."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while self._queue:
                    self._wake.set()
                    await asyncio.sleep(0.01)
        return not self._queue

    async def aclose(self, wait: float = 2.0) -> None:
        """Unsubscribe, send what is buffered (at most ``wait`` s), stop the writer."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self._task is not None:
            await self.flush(wait)
            self._closing = True
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1.0)
            self._task = None

    async def _run(self) -> None:
        delay = 0.05
        while not self._closing:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue[i] for i in range(min(self._batch, len(self._queue)))]
            dropped_before = self.dropped
            try:
                await self._ensure_groups()
                await self._send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "Redis event streams unavailable (%s): buffering up to %d records",
                        type(exc).__name__,
                        self._queue.maxlen or 0,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = 0.05
            if self._failing:
                self._failing = False
                log.warning("Redis event streams available again (%d dropped)", self.dropped)
            # Remove what was sent. A full deque dropped its oldest entries while we waited:
            # those were the front of this batch, already gone.
            for _ in range(max(0, len(batch) - (self.dropped - dropped_before))):
                self._queue.popleft()
            self.sent += len(batch)

    async def _send(self, batch: list[tuple[str, Event]]) -> None:
        by_topic: dict[str, list[bytes]] = {}
        for topic, event in batch:
            by_topic.setdefault(topic, []).append(orjson.dumps(event))
        keys = [self.stream(topic) for topic in by_topic]
        args: list[bytes | int] = [self._maxlen, *(b"\n".join(r) for r in by_topic.values())]
        await self._script(keys=keys, args=args)

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for topic in TOPICS:
            try:
                await self._client.xgroup_create(self.stream(topic), GROUP, id="$", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True
