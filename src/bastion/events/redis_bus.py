"""The Redis control bus: revocations and other control messages pushed to every node.

A writer (``bastion keys revoke``, later the control plane) first commits the change to the
store, then :func:`publish_control` runs one Lua script that, atomically, numbers the message
(``INCR``), appends it to the stream ``<prefix>control`` with the number as its id
(``XADD <seq>-0``, ``MAXLEN ~``) and announces ``"<seq> <epoch> <json>"`` on the pub/sub channel
``<prefix>control``. An *epoch*, set once per Redis lifetime, tells a reconnecting node that a
Redis restarted empty numbers from 1 again.

Each node's :class:`RedisControlBus` subscribes to the channel and applies a message at once
when its number follows the last one applied; a jump makes it read the missing numbers from the
stream (``XRANGE``) first. On every (re)connect it subscribes, then replays the stream after its
last number, so nothing published while it was away is lost. Where continuity cannot be proven
(first connection after starting without Redis, a stream trimmed past the node's position, a
new epoch) it asks for a resync from the store's change feed, the durable
source, before counting Redis confirmations again.

Every ``heartbeat`` seconds a PING travels the subscription; its PONG proves that everything
published before it was delivered, so :attr:`RedisControlBus.confirmed_at` feeds
:class:`~bastion.events.freshness.Freshness`. Messages from Redis are trusted to be well-formed
only as far as :func:`parse_event` checks: a control message can revoke, never grant access.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bastion.core.clock import Clock
from bastion.events.bus import Event, EventBus

log = logging.getLogger("bastion.events.redis")

#: Control messages a node applies; anything else on the stream is ignored.
CONTROL_TYPES = frozenset(
    {
        "api_key.created",
        "api_key.revoked",
        "token.revoked",
        "subject.revoked",
        "client.revoked",
        "ip.blocked",
        "ip.unblocked",
        "config.changed",
    }
)

CONTROL_MAXLEN = 100_000

# KEYS: stream, channel, counter, epoch. ARGV: maxlen, event JSON, a fresh epoch candidate.
# Returns the sequence number. The epoch is set once per Redis lifetime (NX): a Redis that
# restarted empty gets a new one, which tells a reconnecting node that numbers started over.
_PUBLISH = """
redis.call('SET', KEYS[4], ARGV[3], 'NX')
local epoch = redis.call('GET', KEYS[4])
local seq = redis.call('INCR', KEYS[3])
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then
  local topseq = tonumber(string.match(top[1][1], '^(%d+)'))
  if topseq >= seq then
    seq = topseq + 1
    redis.call('SET', KEYS[3], seq)
  end
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], seq .. '-0', 'e', ARGV[2], 'p', epoch)
redis.call('PUBLISH', KEYS[2], seq .. ' ' .. epoch .. ' ' .. ARGV[2])
return seq
"""


def redis_client(url: str, *, timeout: float, name: str | None = None) -> Redis:
    """A client for ``url`` that fails fast: ``timeout`` (s) to connect and per reply, no
    retries (the callers have their own fallbacks, and the control bus must see every lost
    connection to replay what it missed). ``name`` is shown by ``CLIENT LIST``. Nothing
    connects until the first call."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        client_name=name,
    )


def describe_redis(url: str) -> str:
    """``host:port/db`` of a Redis URL, without user or password (safe for logs)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or 'localhost'}:{port}{parts.path or '/0'}"


def parse_event(raw: bytes) -> Event | None:
    """A control event from its JSON, or None unless it is an object with a known ``type``."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("type") not in CONTROL_TYPES:
        return None
    return event


async def publish_control(
    client: Redis, prefix: str, event: Event, *, maxlen: int = CONTROL_MAXLEN
) -> int:
    """Publish one control event to every node; returns its sequence number.

    Call it *after* the change is committed to the store. Raises ValueError for an unknown
    event type, and the client's errors (RedisError, OSError) when Redis cannot be reached;
    nodes then still learn the change from the store's change feed.
    """
    if event.get("type") not in CONTROL_TYPES:
        raise ValueError(f"unknown control event type {event.get('type')!r}")
    keys = [f"{prefix}control", f"{prefix}control", f"{prefix}control:seq", _epoch_key(prefix)]
    epoch = secrets.token_hex(8)
    seq = await client.eval(_PUBLISH, 4, *keys, maxlen, orjson.dumps(event), epoch)
    return int(seq)


def _epoch_key(prefix: str) -> str:
    return f"{prefix}control:epoch"


class RedisControlBus:
    """Applies control messages from Redis to the local ``bus`` (topic ``control``).

    ``client`` must not retry on its own (:func:`redis_client`): a connection the client
    re-established silently would skip the replay of what was published meanwhile.
    ``resync`` is awaited when continuity with Redis cannot be proven (see the module
    docstring); until it succeeds, heartbeats do not count as confirmations. ``heartbeat``
    (s) is the PING interval; a PING unanswered for three intervals drops the connection.
    """

    def __init__(
        self,
        client: Redis,
        bus: EventBus,
        clock: Clock,
        *,
        prefix: str,
        heartbeat: float = 1.0,
        resync: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._client = client
        self._bus = bus
        self._clock = clock
        self._stream = f"{prefix}control"
        self._channel = f"{prefix}control"
        self._epoch_key = _epoch_key(prefix)
        self._epoch: bytes | None = None
        self._heartbeat = heartbeat
        self._resync_fn = resync
        self._last_seq: int | None = None
        self._synced = False
        self._confirmed_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failing = False
        self.applied = 0

    @property
    def last_seq(self) -> int | None:
        """Number of the last message applied (None before the first connection)."""
        return self._last_seq

    @property
    def confirmed_at(self) -> float | None:
        """``clock.monotonic()`` when a heartbeat last proved nothing was missed."""
        return self._confirmed_at

    async def start(self) -> None:
        """Note the stream's newest number, then listen in the background.

        Call it *before* loading state from the store: what is published after this call is
        applied, what came before is in the store. If Redis cannot be reached now, the node
        starts anyway and the background task keeps trying (the store feed covers the gap).
        """
        if self._task is not None:
            raise RuntimeError("RedisControlBus already started")
        try:
            self._epoch, self._last_seq = await self._position()
            self._synced = True
        except Exception as exc:  # Redis down at start-up: not fatal, see above
            self._report_failure(exc)
        self._task = asyncio.create_task(self._run(), name="redis-control-bus")

    async def aclose(self) -> None:
        """Stop listening (idempotent); never waits more than a second for the listener."""
        self._closing = True  # a cancellation swallowed by a library still ends the loops
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    # -- the listener -------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._report_failure(exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0) if self._failing else 0.05

    async def _session(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            await self._catch_up()
            if self._failing:
                self._failing = False
                log.warning("Redis control bus connected again at seq %s", self._last_seq)
            pings: dict[bytes, float] = {}
            count = 0
            next_ping = self._clock.monotonic()
            while not self._closing:
                now = self._clock.monotonic()
                if now >= next_ping:
                    if pings and now - min(pings.values()) > 3 * self._heartbeat:
                        raise ConnectionError("no heartbeat answer from Redis")
                    if not self._synced:
                        await self._resync()
                    count += 1
                    token = str(count).encode()
                    pings[token] = now
                    await pubsub.ping(token)
                    next_ping = now + self._heartbeat
                msg = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=max(0.0, next_ping - now)
                )
                if msg is None:
                    continue
                if msg["type"] == "pong":
                    sent = pings.pop(msg["data"], None)
                    if sent is not None and self._synced:
                        self._confirm(sent)
                elif msg["type"] == "message":
                    await self._on_announce(msg["data"])
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _catch_up(self) -> None:
        """After (re)subscribing: replay what was missed, or resync when that is unknowable."""
        epoch, top = await self._position()
        last = self._last_seq
        # A node that has applied nothing yet (last 0) replays the whole stream anyway.
        new_epoch = epoch != self._epoch and (self._epoch is not None or bool(last))
        if last is None or top < last or new_epoch:
            if last is not None:
                log.warning(
                    "Redis control stream started over (seq %d, was %d): resyncing", top, last
                )
            self._epoch, self._last_seq = epoch, top
            await self._resync()
            return
        if top > last:
            await self._replay(top)

    async def _on_announce(self, data: bytes) -> None:
        head, _, rest = data.partition(b" ")
        epoch, _, body = rest.partition(b" ")
        try:
            seq = int(head)
        except ValueError:
            log.warning("ignored a malformed control announcement")
            return
        last = self._last_seq
        if last is None or seq <= last:
            return  # applied already (or replayed)
        if seq == last + 1:
            self._apply(seq, body, epoch)
        else:
            await self._replay(seq)

    async def _replay(self, upto: int) -> None:
        """Apply the stream's messages after the last one applied, up to ``upto``."""
        last = self._last_seq or 0
        entries: list[Any] = (
            await self._client.xrange(self._stream, f"({last}-0", f"{upto}-0") or []
        )
        expected = last + 1
        for entry_id, fields in entries:
            seq = _seq_of(entry_id)
            if seq != expected:
                log.warning("Redis control stream trimmed past seq %d: resyncing", expected)
                self._synced = False
            fields = fields if isinstance(fields, dict) else {}
            body, epoch = fields.get(b"e"), fields.get(b"p")
            self._apply(
                seq,
                body if isinstance(body, bytes) else b"",
                epoch if isinstance(epoch, bytes) else None,
            )
            expected = seq + 1
        if expected <= upto:  # the newest ones are gone too
            self._synced = False
            self._last_seq = upto
        if not self._synced:
            await self._resync()

    def _apply(self, seq: int, body: bytes, epoch: bytes | None) -> None:
        self._last_seq = seq
        if self._epoch is None:
            self._epoch = epoch  # the first message this node sees names the epoch
        event = parse_event(body)
        if event is None:
            log.warning("ignored a malformed control message (seq %d)", seq)
            return
        self.applied += 1
        self._bus.publish("control", {**event, "cluster_seq": seq})

    async def _resync(self) -> None:
        """Catch up from the store; heartbeats count again only once that succeeded. A failure
        (store down too) leaves the bus unsynced; the heartbeat loop tries again."""
        self._synced = False
        if self._resync_fn is not None:
            try:
                await self._resync_fn()
            except Exception as exc:
                log.debug("control bus resync failed: %s", type(exc).__name__)
                return
        self._synced = True

    async def _position(self) -> tuple[bytes | None, int]:
        """The stream's epoch and newest sequence number (0: empty)."""
        pipe = self._client.pipeline(transaction=True)
        pipe.get(self._epoch_key)
        pipe.xrevrange(self._stream, "+", "-", count=1)
        epoch, top = await pipe.execute()
        return (epoch if isinstance(epoch, bytes) else None), (_seq_of(top[0][0]) if top else 0)

    def _confirm(self, at: float) -> None:
        if self._confirmed_at is None or at > self._confirmed_at:
            self._confirmed_at = at

    def _report_failure(self, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "Redis control bus unavailable (%s); reconnecting, the store feed stays on",
                type(exc).__name__,
            )


def _seq_of(entry_id: object) -> int:
    """The sequence number of a stream id ``<seq>-0`` (ValueError if it is not one)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.split("-", 1)[0])
