"""The Redis control bus and event streams against the real Redis on 127.0.0.1:6379: pushed at
once, numbered, replayed after a disconnect, gaps filled from the stream, garbage ignored, and
audit records streamed for detection with a bounded length and buffer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from bastion.core.clock import SystemClock
from bastion.events.bus import EventBus
from bastion.events.redis_bus import RedisControlBus, publish_control, redis_client
from bastion.events.redis_streams import GROUP, RedisEventStreams
from tests.support.cluster import REDIS_URL, new_prefix

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]


class Node:
    """A control bus on its own connection (named, so a test can kill it) and what it got."""

    def __init__(self, prefix: str, resync: Any = None) -> None:
        self.name = f"node-{new_prefix().strip(':')}"
        self.client = redis_client(REDIS_URL, timeout=1.0, name=self.name)
        self.bus = EventBus()
        self.got: list[dict[str, Any]] = []
        self.bus.subscribe("control", self.got.append)
        self.control = RedisControlBus(
            self.client, self.bus, SystemClock(), prefix=prefix, heartbeat=0.05, resync=resync
        )

    async def aclose(self) -> None:
        await self.control.aclose()
        await self.client.aclose()


async def wait_for(predicate: Any, timeout: float = 2.0) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "condition not met in time"
        await asyncio.sleep(0.002)
    return time.monotonic() - start


def revoked(key_id: str) -> dict[str, Any]:
    return {"type": "api_key.revoked", "key_id": key_id, "at": 1.0}


async def test_published_events_reach_every_node_at_once_in_order(
    client: Redis, prefix: str
) -> None:
    nodes = [Node(prefix), Node(prefix)]
    try:
        for n in nodes:
            await n.control.start()
        await wait_for(lambda: all(n.control.confirmed_at is not None for n in nodes))
        seqs = [await publish_control(client, prefix, revoked(f"k{i}")) for i in range(5)]
        assert seqs == sorted(seqs)
        assert seqs[-1] - seqs[0] == 4
        elapsed = await wait_for(lambda: all(len(n.got) == 5 for n in nodes))
        assert elapsed < 0.5
        for n in nodes:
            assert [e["key_id"] for e in n.got] == [f"k{i}" for i in range(5)]
            assert [e["cluster_seq"] for e in n.got] == seqs
            assert n.control.last_seq == seqs[-1]
    finally:
        for n in nodes:
            await n.aclose()


async def test_a_node_replays_what_it_missed_while_disconnected(client: Redis, prefix: str) -> None:
    node = Node(prefix)
    try:
        await node.control.start()
        await wait_for(lambda: node.control.confirmed_at is not None)
        await publish_control(client, prefix, revoked("before"))
        await wait_for(lambda: len(node.got) == 1)
        for entry in await client.client_list():
            if entry.get("name") == node.name:
                await client.client_kill_filter(_id=entry["id"])
        for i in range(3):  # published while the node's subscription is gone
            await publish_control(client, prefix, revoked(f"missed{i}"))
        await wait_for(lambda: len(node.got) == 4)
        await asyncio.sleep(0.1)
        assert [e["key_id"] for e in node.got] == ["before", "missed0", "missed1", "missed2"]
    finally:
        await node.aclose()


async def test_a_gap_in_announcements_is_filled_from_the_stream(client: Redis, prefix: str) -> None:
    node = Node(prefix)
    try:
        await node.control.start()
        await wait_for(lambda: node.control.confirmed_at is not None)
        # Two messages reach the stream without an announcement (a lost pub/sub message).
        for seq, key in ((1, "quiet1"), (2, "quiet2")):
            await client.set(f"{prefix}control:seq", seq)
            event = orjson.dumps(revoked(key))
            await client.xadd(f"{prefix}control", {"e": event}, id=f"{seq}-0")
        await publish_control(client, prefix, revoked("loud"))
        await wait_for(lambda: len(node.got) == 3)
        assert [e["key_id"] for e in node.got] == ["quiet1", "quiet2", "loud"]
    finally:
        await node.aclose()


async def test_a_restarted_empty_stream_makes_the_node_resync_from_the_store(
    client: Redis, prefix: str
) -> None:
    resyncs: list[float] = []

    async def resync() -> None:
        resyncs.append(time.monotonic())

    node = Node(prefix, resync=resync)
    try:
        for i in range(3):
            await publish_control(client, prefix, revoked(f"old{i}"))
        await node.control.start()
        await wait_for(lambda: node.control.confirmed_at is not None)
        assert node.got == []  # history before start is the store's business
        # Redis loses its data while the node is away, and numbering starts over: by the time
        # the node is back, the new stream has as many entries as the old one had.
        for entry in await client.client_list():
            if entry.get("name") == node.name:
                await client.client_kill_filter(_id=entry["id"])
        await client.delete(*(f"{prefix}control{k}" for k in ("", ":seq", ":epoch")))
        for i in range(3):
            await publish_control(client, prefix, revoked(f"after{i}"))
        await wait_for(lambda: len(resyncs) == 1)  # the new epoch gave it away
        await publish_control(client, prefix, revoked("new"))
        await wait_for(lambda: any(e["key_id"] == "new" for e in node.got))
        assert node.control.last_seq == 4
    finally:
        await node.aclose()


async def test_malformed_and_unknown_messages_are_ignored(client: Redis, prefix: str) -> None:
    node = Node(prefix)
    try:
        await node.control.start()
        await wait_for(lambda: node.control.confirmed_at is not None)
        await client.publish(f"{prefix}control", b"not-a-number {}")
        await client.set(f"{prefix}control:seq", 2)
        await client.xadd(f"{prefix}control", {"e": b"[1, 2]"}, id="1-0")
        await client.xadd(f"{prefix}control", {"e": b'{"type": "grant.admin"}'}, id="2-0")
        await publish_control(client, prefix, revoked("good"))
        await wait_for(lambda: node.control.last_seq == 3)
        assert [e["key_id"] for e in node.got] == ["good"]
        with pytest.raises(ValueError, match="unknown control event type"):
            await publish_control(client, prefix, {"type": "grant.admin"})
    finally:
        await node.aclose()


async def test_audit_records_are_streamed_for_detection(client: Redis, prefix: str) -> None:
    bus = EventBus()
    streams = RedisEventStreams(client, bus, prefix=prefix, maxlen=100, batch=50)
    await streams.start()
    try:
        for i in range(400):
            bus.publish("audit", {"n": i, "event": {"outcome": "success"}})
        bus.publish("security", {"kind": "authn.burst"})
        assert await streams.flush()
        length = await client.xlen(streams.stream("audit"))
        assert 100 <= length <= 300  # MAXLEN ~ trims whole nodes, approximately
        last = await client.xrevrange(streams.stream("audit"), count=1)
        assert orjson.loads(last[0][1][b"r"])["n"] == 399
        assert await client.xlen(streams.stream("security")) == 1
        groups = await client.xinfo_groups(streams.stream("audit"))
        assert [g["name"] for g in groups] == [GROUP.encode()]
    finally:
        await streams.aclose()
        await client.delete(streams.stream("audit"), streams.stream("security"))


async def test_event_buffer_is_bounded_while_redis_is_down() -> None:
    dead = redis_client("redis://127.0.0.1:1/0", timeout=0.1)
    bus = EventBus()
    streams = RedisEventStreams(dead, bus, prefix=new_prefix(), buffer=10)
    await streams.start()
    try:
        for i in range(25):
            bus.publish("audit", {"n": i})
        assert streams.dropped == 15
        assert not await streams.flush(0.2)
    finally:
        await streams.aclose(0.1)
        await dead.aclose()
