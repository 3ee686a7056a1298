"""The change feed: every change published once, in order, and a store outage never kills it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bastion.core.clock import ManualClock
from bastion.errors import StoreError
from bastion.events.bus import EventBus
from bastion.events.feed import PAGE_SIZE, ChangeFeed
from bastion.store.base import ApiKeyRecord, Change, ClientRecord, Revocation
from bastion.store.memory import MemoryStore


def control_events(bus: EventBus) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    bus.subscribe("control", events.append)
    return events


async def revoke_jti(store: MemoryStore, jti: str, at: float = 10.0) -> None:
    await store.add_revocation(Revocation("jti", jti, "https://idp", None, 9999.0, at))


async def test_start_skips_history_by_default() -> None:
    store, bus, clock = MemoryStore(), EventBus(), ManualClock()
    events = control_events(bus)
    await revoke_jti(store, "old-1")
    await revoke_jti(store, "old-2")
    feed = ChangeFeed(store, bus, clock, interval=60)
    await feed.start()
    assert feed.last_seq == 2
    assert feed.last_success == clock.monotonic()
    assert await feed.poll_once() == 0
    await revoke_jti(store, "new")
    assert await feed.poll_once() == 1
    assert events == [
        {
            "type": "token.revoked",
            "seq": 3,
            "jti": "new",
            "expires_at": 9999.0,
            "issuer": "https://idp",
        }
    ]
    await feed.aclose()


async def test_publishes_each_kind_in_order_once() -> None:
    store, bus, clock = MemoryStore(), EventBus(), ManualClock()
    events = control_events(bus)
    feed = ChangeFeed(store, bus, clock, interval=60)
    await feed.start(from_seq=0)
    await store.put_client(ClientRecord("acme", "Acme", 1.0))
    await store.put_api_key(ApiKeyRecord("k1", "acme", "ab" * 32, ("r",), 2.0, None))
    await store.revoke_api_key("k1", 3.0)
    await store.add_revocation(Revocation("subject", "alice", None, 4.0, 99.0, 4.0))
    await revoke_jti(store, "t1", at=5.0)
    assert await feed.poll_once() == 4
    assert await feed.poll_once() == 0
    assert [(e["type"], e["seq"]) for e in events] == [
        ("api_key.created", 1),
        ("api_key.revoked", 2),
        ("subject.revoked", 3),
        ("token.revoked", 4),
    ]
    assert events[0] == {"type": "api_key.created", "seq": 1, "key_id": "k1", "client_id": "acme"}
    assert events[1] == {"type": "api_key.revoked", "seq": 2, "key_id": "k1", "at": 3.0}
    assert events[2]["subject"] == "alice"
    assert events[2]["not_before"] == 4.0
    assert feed.last_seq == 4
    await feed.aclose()


async def test_catches_up_across_pages() -> None:
    store, bus, clock = MemoryStore(), EventBus(), ManualClock()
    events = control_events(bus)
    feed = ChangeFeed(store, bus, clock, interval=60)
    await feed.start(from_seq=0)
    for i in range(PAGE_SIZE * 2 + 3):
        await revoke_jti(store, f"t{i}")
    assert await feed.poll_once() == PAGE_SIZE * 2 + 3
    assert [e["seq"] for e in events] == list(range(1, PAGE_SIZE * 2 + 4))
    await feed.aclose()


class ScriptedStore(MemoryStore):
    """Returns the given changes whatever is asked: a buggy or hostile writer's rows."""

    def __init__(self, changes: list[Change]) -> None:
        super().__init__()
        self.script = changes

    async def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        return self.script[:limit]


async def test_payload_cannot_override_type_or_seq_and_seq_never_goes_back() -> None:
    store = ScriptedStore([Change(5, "api_key.revoked", {"type": "x", "seq": 99, "key_id": "k"})])
    bus, clock = EventBus(), ManualClock()
    events = control_events(bus)
    feed = ChangeFeed(store, bus, clock, interval=60)
    await feed.start(from_seq=0)
    assert await feed.poll_once() == 1
    assert events == [{"type": "api_key.revoked", "seq": 5, "key_id": "k"}]
    store.script = [Change(4, "token.revoked", {"jti": "replayed"}), *store.script]
    assert await feed.poll_once() == 0  # seq 4 and 5 are not after 5: nothing republished
    assert feed.last_seq == 5
    await feed.aclose()


async def test_loop_polls_every_interval_and_survives_store_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, bus, clock = MemoryStore(), EventBus(), ManualClock()
    events = control_events(bus)
    feed = ChangeFeed(store, bus, clock, interval=0.01)
    await feed.start()
    assert feed.running
    await revoke_jti(store, "a")
    await asyncio.sleep(0.1)
    assert [e["jti"] for e in events] == ["a"]
    seen = feed.last_success

    store.set_unavailable(True)
    clock.advance(30)
    with caplog.at_level(logging.WARNING, logger="bastion.events.feed"):
        await asyncio.sleep(0.1)
        assert feed.running  # the loop did not die
        assert feed.last_success == seen  # and it does not pretend to be current
        store.set_unavailable(False)
        await revoke_jti(store, "b")
        await asyncio.sleep(0.1)
    assert [e["jti"] for e in events] == ["a", "b"]
    assert feed.last_success == clock.monotonic()
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("cannot read the store" in m for m in warnings) == 1  # logged once, not per poll
    assert any("caught up" in m for m in warnings)
    await feed.aclose()
    assert not feed.running
    await feed.aclose()  # idempotent


async def test_poll_once_raises_store_error_to_a_direct_caller() -> None:
    store, bus, clock = MemoryStore(), EventBus(), ManualClock()
    feed = ChangeFeed(store, bus, clock, interval=60)
    await feed.start(from_seq=0)
    store.set_unavailable(True)
    with pytest.raises(StoreError):
        await feed.poll_once()
    await feed.aclose()


async def test_start_fails_closed_when_the_store_is_down() -> None:
    store, bus, clock = MemoryStore(), EventBus(), ManualClock()
    store.set_unavailable(True)
    feed = ChangeFeed(store, bus, clock, interval=60)
    with pytest.raises(StoreError):
        await feed.start()
    assert not feed.running
    assert feed.last_success is None


async def test_start_twice_and_bad_interval_are_refused() -> None:
    store, bus, clock = MemoryStore(), EventBus(), ManualClock()
    with pytest.raises(ValueError, match="interval"):
        ChangeFeed(store, bus, clock, interval=0)
    feed = ChangeFeed(store, bus, clock, interval=60)
    await feed.start(from_seq=0)
    with pytest.raises(RuntimeError):
        await feed.start()
    await feed.aclose()


class YieldingStore(MemoryStore):
    """Gives the event loop a turn inside every read, as a real backend does."""

    async def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        await asyncio.sleep(0)
        return await super().changes_since(seq, limit)


async def test_concurrent_polls_publish_once() -> None:
    store, bus, clock = YieldingStore(), EventBus(), ManualClock()
    events = control_events(bus)
    feed = ChangeFeed(store, bus, clock, interval=60)
    await feed.start(from_seq=0)
    for i in range(5):
        await revoke_jti(store, f"t{i}")
    await asyncio.gather(*(feed.poll_once() for _ in range(4)))  # and the loop polls too
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    await feed.aclose()
