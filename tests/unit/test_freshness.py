"""Failing closed on stale revocation state: a node that cannot confirm it is current refuses
API keys and tokens, asks the store at once, and accepts again when a source confirms."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bastion.config import parse_config
from bastion.core.apikeys import hash_secret, new_api_key
from bastion.core.clock import ManualClock
from bastion.errors import ConfigError
from bastion.events.freshness import KICK_INTERVAL, Freshness, GuardedRevocationState
from bastion.gateway.services import STALE, GatewayServices, GuardedApiKeyIndex
from bastion.store.base import ApiKeyRecord, ClientRecord
from bastion.store.memory import MemoryStore

PEPPER = b"p" * 40


def test_fresh_until_the_bound_then_stale() -> None:
    clock = ManualClock()
    fresh = Freshness(clock, 5.0)
    assert fresh.stale()  # never confirmed: nothing to vouch for
    fresh.confirm()
    clock.advance(4.9)
    assert not fresh.stale()
    clock.advance(0.2)
    assert fresh.stale()


def test_newest_source_wins_and_sources_are_read_live() -> None:
    clock = ManualClock()
    fresh = Freshness(clock, 5.0)
    seen: dict[str, float | None] = {"feed": None, "redis": None}
    fresh.add_source(lambda: seen["feed"], store=True)
    fresh.add_source(lambda: seen["redis"])
    assert fresh.stale()
    seen["redis"] = clock.monotonic()
    assert not fresh.stale()
    clock.advance(6)
    assert fresh.stale()
    seen["feed"] = clock.monotonic()  # the feed polled the store meanwhile
    assert not fresh.stale()
    assert fresh.confirmed_at(store_only=True) == seen["feed"]


def test_stale_checks_ask_for_a_store_check_at_a_bounded_rate() -> None:
    clock = ManualClock()
    kicks: list[float] = []
    fresh = Freshness(clock, 1.0, on_stale=lambda: kicks.append(clock.monotonic()))
    for _ in range(100):
        assert fresh.stale()
    assert len(kicks) == 1
    clock.advance(KICK_INTERVAL)
    assert fresh.stale()
    assert len(kicks) == 2


def test_store_grace_bounds_the_store_sources_only() -> None:
    clock = ManualClock()
    fresh = Freshness(clock, 5.0, store_grace=60.0)
    feed: list[float] = [clock.monotonic()]
    redis: list[float] = [clock.monotonic()]
    fresh.add_source(lambda: feed[0], store=True)
    fresh.add_source(lambda: redis[0])
    clock.advance(59)
    redis[0] = clock.monotonic()  # Redis keeps the node current
    assert not fresh.stale()
    assert not fresh.store_outage_exceeded()
    clock.advance(2)
    redis[0] = clock.monotonic()
    assert not fresh.stale()
    assert fresh.store_outage_exceeded()


def test_guarded_revocation_state_refuses_every_token_while_stale() -> None:
    clock = ManualClock()
    fresh = Freshness(clock, 5.0)
    state = GuardedRevocationState(clock, fresh)
    fresh.confirm()
    assert not state.is_token_revoked("iss", "alice", "jti-1", clock.now())
    state.revoke_jti("jti-2", clock.now() + 60)
    assert state.is_token_revoked("iss", "alice", "jti-2", clock.now())
    clock.advance(6)
    assert state.is_token_revoked("iss", "alice", "jti-1", clock.now())
    fresh.confirm()
    assert not state.is_token_revoked("iss", "alice", "jti-1", clock.now())


async def _key(store: MemoryStore, clock: ManualClock) -> str:
    key_id, secret, full = new_api_key()
    await store.put_client(ClientRecord("acme", "Acme", clock.now()))
    await store.put_api_key(
        ApiKeyRecord(key_id, "acme", hash_secret(PEPPER, secret), ("read",), clock.now(), None)
    )
    return full


async def test_guarded_key_index_refuses_cached_keys_while_stale() -> None:
    clock = ManualClock()
    store = MemoryStore()
    fresh = Freshness(clock, 5.0, store_grace=30.0)
    index = GuardedApiKeyIndex(store, PEPPER, clock, fresh)
    full = await _key(store, clock)
    await index.load()
    fresh.confirm()
    principal, reason = await index.verify(full)
    assert principal is not None, reason
    clock.advance(6)
    assert await index.verify(full) == (None, STALE)
    fresh.confirm()
    principal, _ = await index.verify(full)
    assert principal is not None
    # Confirmed by a non-store source only: the cache serves keys for the grace, no longer.
    redis = [clock.monotonic()]
    fresh.add_source(lambda: redis[0])
    clock.advance(31)
    redis[0] = clock.monotonic()
    assert await index.verify(full) == (None, STALE)


async def test_guarded_key_index_sync_path_refuses_alike_while_stale() -> None:
    # The authn layer answers from verify_now when it can: the guard must hold there too.
    clock = ManualClock()
    store = MemoryStore()
    fresh = Freshness(clock, 5.0, store_grace=30.0)
    index = GuardedApiKeyIndex(store, PEPPER, clock, fresh)
    full = await _key(store, clock)
    await index.load()
    fresh.confirm()
    now = index.verify_now(full)
    assert now is not None
    assert now[0] is not None
    clock.advance(6)
    assert index.verify_now(full) == (None, STALE)
    fresh.confirm()
    now = index.verify_now(full)
    assert now is not None
    assert now[0] is not None


def _config(tmp_path: Path) -> dict[str, object]:
    return {
        "store": "memory://",
        "listeners": [{"bind": "127.0.0.1:0"}],
        "api_keys": {"pepper": PEPPER.decode()},
        "audit": {"sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]},
        "change_poll_interval": 1,
        "cluster": {"revocation_max_staleness": 2},
        "routes": [
            {"name": "api", "upstream": "http://127.0.0.1:9", "authn": {"methods": ["api_key"]}}
        ],
    }


async def test_a_stale_node_checks_the_store_at_once_and_fails_closed_while_it_is_down(
    tmp_path: Path,
) -> None:
    clock = ManualClock(now=time.time())
    store = MemoryStore()
    services = GatewayServices.create(parse_config(_config(tmp_path), {}), clock=clock, store=store)
    full = await _key(store, clock)
    await services.start()
    try:
        assert services.api_keys is not None
        principal, _ = await services.api_keys.verify(full)
        assert principal is not None
        # The feed's own poll runs on real time; the node's clock jumps past the bound.
        store.set_unavailable(True)
        clock.advance(3)
        assert await services.api_keys.verify(full) == (None, STALE)
        await asyncio.sleep(0.05)  # the store check it asked for fails: still refused
        assert await services.api_keys.verify(full) == (None, STALE)
        store.set_unavailable(False)
        clock.advance(KICK_INTERVAL)
        assert await services.api_keys.verify(full) == (None, STALE)  # asks again
        await asyncio.sleep(0.05)  # this check reaches the store: current again
        principal, reason = await services.api_keys.verify(full)
        assert principal is not None, reason
    finally:
        await services.aclose()


def test_staleness_bound_must_exceed_the_poll_interval(tmp_path: Path) -> None:
    doc = _config(tmp_path)
    doc["cluster"] = {"revocation_max_staleness": 1}
    with pytest.raises(ConfigError, match="revocation_max_staleness"):
        parse_config(doc, {})
