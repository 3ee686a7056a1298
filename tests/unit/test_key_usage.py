"""Batched API-key usage (KeyUsage) and how the gateway's key index feeds it and applies
rotation events: never a store write per request, nothing lost on a failed flush."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from bastion.core.apikeys import hash_secret, new_api_key
from bastion.core.clock import ManualClock
from bastion.errors import StoreError
from bastion.gateway.layers.authn.apikeys import ApiKeyIndex
from bastion.gateway.layers.authn.key_usage import KeyUsage
from bastion.store import MemoryStore
from bastion.store.base import ApiKeyRecord, ClientRecord

PEPPER = b"u" * 32


class CountingStore(MemoryStore):
    """A memory store that records every usage batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[dict[str, tuple[int, float]]] = []

    async def record_key_usage(self, usage: Mapping[str, tuple[int, float]]) -> None:
        self.batches.append(dict(usage))
        await super().record_key_usage(usage)


async def _setup(clock: ManualClock, **rec: Any) -> tuple[CountingStore, str, str]:
    store = CountingStore()
    await store.put_client(ClientRecord("app", "App", 0.0))
    key_id, secret, full = new_api_key()
    fields: dict[str, Any] = {
        "id": key_id,
        "client_id": "app",
        "secret_hash": hash_secret(PEPPER, secret),
        "scopes": (),
        "created_at": clock.now(),
        "expires_at": clock.now() + 86400,
    }
    fields.update(rec)
    await store.put_api_key(ApiKeyRecord(**fields))
    return store, key_id, full


async def test_requests_are_counted_in_memory_and_written_in_one_batch() -> None:
    clock = ManualClock()
    store, key_id, full = await _setup(clock)
    usage = KeyUsage(store, interval=60)
    index = ApiKeyIndex(store, PEPPER, clock, usage=usage)
    await index.load()
    for _ in range(500):
        principal, _reason = await index.verify(full)
        assert principal is not None
        clock.advance(0.5)
    assert store.batches == []  # no write per request
    assert usage.pending == {key_id: (500, clock.now() - 0.5)}
    assert await usage.flush() == 1
    assert store.batches == [{key_id: (500, clock.now() - 0.5)}]
    rec = await store.get_api_key(key_id)
    assert rec is not None
    assert rec.usage_count == 500
    assert rec.last_used_at == clock.now() - 0.5
    assert usage.pending == {}
    assert await usage.flush() == 0  # nothing new: no statement at all
    assert len(store.batches) == 1


async def test_refused_keys_are_not_counted() -> None:
    clock = ManualClock()
    store, key_id, full = await _setup(clock)
    usage = KeyUsage(store)
    index = ApiKeyIndex(store, PEPPER, clock, usage=usage)
    await index.load()
    wrong = full[:-1] + ("A" if full[-1] != "A" else "B")
    assert (await index.verify(wrong))[0] is None
    assert (await index.verify("bsk_" + "x" * 16 + "_" + "y" * 43))[0] is None
    index.apply({"type": "api_key.revoked", "key_id": key_id, "at": clock.now()})
    assert (await index.verify(full))[0] is None
    assert usage.pending == {}


async def test_a_failed_flush_keeps_the_counts_for_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    store, key_id, _full = await _setup(clock)
    usage = KeyUsage(store)
    usage.hit(key_id, 10.0)
    usage.hit(key_id, 12.0)
    store.set_unavailable(True)
    assert await usage.flush() == 0
    usage.hit(key_id, 11.0)  # counted during the outage; an older time does not win
    assert await usage.flush() == 0
    assert usage.pending == {key_id: (3, 12.0)}
    assert sum("not written" in r.message for r in caplog.records) == 1  # once per outage
    store.set_unavailable(False)
    assert await usage.flush() == 1
    rec = await store.get_api_key(key_id)
    assert rec is not None
    assert (rec.usage_count, rec.last_used_at) == (3, 12.0)
    assert any("written again" in r.message for r in caplog.records)


async def test_the_loop_flushes_by_itself_and_close_flushes_the_rest() -> None:
    clock = ManualClock()
    store, key_id, _full = await _setup(clock)
    usage = KeyUsage(store, interval=0.01)
    await usage.start()
    await usage.start()  # idempotent
    usage.hit(key_id, 1.0)
    for _ in range(500):
        if usage.flushes:
            break
        await asyncio.sleep(0.01)
    assert usage.flushes >= 1
    usage.hit(key_id, 2.0)
    await usage.aclose()
    rec = await store.get_api_key(key_id)
    assert rec is not None
    assert rec.usage_count == 2
    await usage.aclose()  # idempotent


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        KeyUsage(MemoryStore(), interval=0)


async def test_close_after_the_store_closed_loses_only_the_counts() -> None:
    clock = ManualClock()
    store, key_id, _full = await _setup(clock)
    usage = KeyUsage(store)
    usage.hit(key_id, 1.0)
    await store.close()
    await usage.aclose()  # logged, not raised
    with pytest.raises(StoreError):
        await store.get_api_key(key_id)


# -- the index and rotation events ------------------------------------------------------------


async def test_max_age_refuses_a_key_without_expiry() -> None:
    clock = ManualClock()
    store, _key_id, full = await _setup(clock, expires_at=None)
    index = ApiKeyIndex(store, PEPPER, clock, max_age=100.0)
    await index.load()
    assert (await index.verify(full))[0] is not None
    clock.advance(100)
    assert await index.verify(full) == (None, "api_key: expired")


async def test_a_rotation_event_shortens_a_key_never_lengthens_it() -> None:
    clock = ManualClock()
    store, key_id, full = await _setup(clock)
    index = ApiKeyIndex(store, PEPPER, clock)
    await index.load()
    now = clock.now()
    index.apply(
        {
            "type": "api_key.created",
            "key_id": "n" * 16,
            "replaces": key_id,
            "replaces_until": now + 50,
        }
    )
    index.apply(  # a later, longer one (e.g. replayed out of order) does not lengthen it
        {
            "type": "api_key.created",
            "key_id": "m" * 16,
            "replaces": key_id,
            "replaces_until": now + 500,
        }
    )
    clock.advance(49)
    assert (await index.verify(full))[0] is not None
    clock.advance(1)
    assert await index.verify(full) == (None, "api_key: expired")


async def test_a_rotation_event_for_a_key_not_loaded_yet_still_applies() -> None:
    clock = ManualClock()
    store, key_id, full = await _setup(clock)
    index = ApiKeyIndex(store, PEPPER, clock)  # not loaded: the key is looked up on use
    index.apply(
        {
            "type": "api_key.created",
            "key_id": "n" * 16,
            "replaces": key_id,
            "replaces_until": clock.now(),
        }
    )
    assert await index.verify(full) == (None, "api_key: expired")


@pytest.mark.parametrize(
    "extra",
    [
        {"replaces": 5, "replaces_until": 1.0},
        {"replaces": "", "replaces_until": 1.0},
        {"replaces": "k", "replaces_until": "soon"},
        {"replaces": "k", "replaces_until": True},
        {"replaces": "k", "replaces_until": float("nan")},
        {"replaces": "k"},
    ],
)
async def test_malformed_rotation_events_are_ignored(
    extra: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    store, key_id, full = await _setup(clock)
    index = ApiKeyIndex(store, PEPPER, clock)
    await index.load()
    if extra.get("replaces") == "k":
        extra = {**extra, "replaces": key_id}
    index.apply({"type": "api_key.created", "key_id": "n" * 16, **extra})
    assert (await index.verify(full))[0] is not None
    assert any("malformed rotation" in r.message for r in caplog.records)
