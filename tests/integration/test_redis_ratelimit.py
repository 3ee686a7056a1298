"""The Redis rate-limit backend against the real Redis on 127.0.0.1:6379: exact shared GCRA,
all-or-nothing, server time, millisecond TTLs, coalesced round trips, and a local fallback
that is never "unlimited"."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bastion.events.redis_bus import redis_client
from bastion.gateway.layers.ratelimit.backend import LimitSpec
from bastion.gateway.layers.ratelimit.redis_backend import RedisRateLimitBackend
from tests.support.cluster import REDIS_URL, new_prefix

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

TEN_PER_S = LimitSpec(0.1, 10)


@pytest.fixture
async def made() -> AsyncIterator[list[RedisRateLimitBackend]]:
    """Backends a test made, closed at its end (each has its own Redis connection)."""
    backends: list[RedisRateLimitBackend] = []
    yield backends
    for b in backends:
        await b.aclose()


def keep(
    made: list[RedisRateLimitBackend], backend: RedisRateLimitBackend
) -> RedisRateLimitBackend:
    made.append(backend)
    return backend


async def admitted(backend: RedisRateLimitBackend, n: int, spec: LimitSpec = TEN_PER_S) -> int:
    results = await asyncio.gather(
        *(backend.check(spec, ("r", 0, "ip", "a"), 0.0) for _ in range(n))
    )
    return sum(r.allowed for r in results)


async def test_a_burst_admits_exactly_the_burst_in_few_round_trips(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    backend = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    assert await admitted(backend, 60) == 10
    assert backend.round_trips <= 2  # 60 concurrent checks were coalesced
    assert not hasattr(backend, "check_many_now")  # the layer must await it


async def test_two_nodes_share_one_budget(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    other = redis_client(REDIS_URL, timeout=1.0)
    try:
        a = keep(made, RedisRateLimitBackend(client, prefix=prefix))
        b = keep(made, RedisRateLimitBackend(other, prefix=prefix))
        counts = await asyncio.gather(admitted(a, 30), admitted(b, 30))
        assert sum(counts) == 10
    finally:
        await other.aclose()


async def test_the_nodes_clocks_do_not_matter(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    backend = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    key = ("r", 0, "ip", "b")
    wild = [0.0, 1e9, -5.0, 123.4] * 5
    results = [await backend.check(TEN_PER_S, key, now) for now in wild]
    assert sum(r.allowed for r in results) == 10
    refused = results[-1]
    assert not refused.allowed
    assert 0 < refused.retry_after <= 0.1
    assert refused.remaining == 0


async def test_all_or_nothing_across_limits(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    backend = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    small, big = LimitSpec(1.0, 2), LimitSpec(10.0, 1000)
    keys = (("r", 0, "ip", "c"), ("r", 1, "route"))
    outcomes = [await backend.check_many((small, big), keys, 0.0) for _ in range(5)]
    assert [o[0].allowed for o in outcomes] == [True, True, False, False, False]
    # The refusals took nothing from the big limit: only two units were recorded there.
    assert outcomes[1][1].remaining == 998
    assert outcomes[4][1].remaining == 997  # "would have" after the two recorded
    assert not outcomes[4][0].allowed
    assert outcomes[4][1].allowed  # described, not recorded


async def test_keys_expire_in_milliseconds_when_the_bucket_is_full_again(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    backend = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    key = ("r", 0, "ip", "d")
    started = time.monotonic()
    await backend.check(LimitSpec(0.25, 4), key, 0.0)
    ttl = await client.pttl(backend.redis_key(key))
    waited_ms = (time.monotonic() - started) * 1000
    # 250 ms set by the script, minus what passed since (a loaded machine can stall for a while).
    assert 250 - waited_ms - 2 <= ttl <= 250
    await asyncio.sleep(0.3)
    assert await client.exists(backend.redis_key(key)) == 0


async def test_long_and_odd_keys_stay_distinct_and_bounded(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    backend = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    long_a = ("r", 0, "sub", "jwt", "https://iss", "x" * 500 + "a")
    long_b = ("r", 0, "sub", "jwt", "https://iss", "x" * 500 + "b")
    assert backend.redis_key(long_a) != backend.redis_key(long_b)
    assert len(backend.redis_key(long_a)) < 100
    tricky = ("r", 0, "sub", "jwt", 'a","b', "c")
    assert backend.redis_key(tricky) != backend.redis_key(("r", 0, "sub", "jwt", "a", 'b","c'))
    one = LimitSpec(10.0, 1)
    assert (await backend.check(one, long_a, 0.0)).allowed
    assert (await backend.check(one, long_b, 0.0)).allowed
    assert not (await backend.check(one, long_a, 0.0)).allowed


async def test_unreachable_redis_falls_back_to_a_per_node_share(
    caplog: pytest.LogCaptureFixture, made: list[RedisRateLimitBackend]
) -> None:
    dead = redis_client("redis://127.0.0.1:1/0", timeout=0.2)
    try:
        backend = keep(
            made, RedisRateLimitBackend(dead, prefix=new_prefix(), nodes=2, retry_after=60)
        )
        with caplog.at_level(logging.WARNING, logger="bastion.ratelimit"):
            first = await admitted(backend, 20)
            second = await admitted(backend, 20)
        assert first == 5  # half of the burst of 10: two nodes share the limit
        assert second == 0  # never unlimited
        assert backend.degraded
        warnings = [r for r in caplog.records if "enforced locally" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await dead.aclose()


async def test_fallback_ends_when_redis_answers_again(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    backend = keep(made, RedisRateLimitBackend(client, prefix=prefix, retry_after=0.05))
    backend._enter_fallback(ConnectionError("simulated"))
    assert backend.degraded
    assert (await backend.check(TEN_PER_S, ("r", 0, "ip", "e"), 0.0)).allowed  # local
    assert backend.round_trips == 0
    await asyncio.sleep(0.06)
    assert (await backend.check(TEN_PER_S, ("r", 0, "ip", "e"), 0.0)).allowed
    assert backend.round_trips == 1
    assert not backend.degraded


# -- leases: generous limits are decided on the node, the shared count stays exact ------------


async def test_leases_cut_round_trips_for_generous_limits(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    backend = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    spec = LimitSpec(0.001, 1000)  # 1000/s, burst 1000
    results = [await backend.check(spec, ("r", 0, "ip", "lease"), 0.0) for _ in range(300)]
    assert all(r.allowed for r in results)
    assert backend.round_trips <= 8  # one per lease of up to 64, not one per check
    assert backend.leased >= 250


async def test_leases_keep_the_shared_limit_exact(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    # 100 units per 100 s: nothing refills during the test, so exactly 100 may ever pass.
    spec = LimitSpec(1.0, 100)
    key = ("r", 0, "route")
    a = RedisRateLimitBackend(client, prefix=prefix)
    b = RedisRateLimitBackend(client, prefix=prefix)

    async def drive(backend: RedisRateLimitBackend, n: int) -> int:
        passed = 0
        for _ in range(n):
            passed += (await backend.check(spec, key, 0.0)).allowed
        return passed

    during = sum(await asyncio.gather(drive(a, 150), drive(b, 150)))
    assert during <= 100
    assert a.leased + b.leased > 0
    await a.aclose()  # unused leased units go back
    await b.aclose()
    c = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    after = await drive(c, 200)
    assert during + after == 100


async def test_a_lease_never_takes_more_than_half_a_bucket(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    spec = LimitSpec(1.0, 100)
    a = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    b = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    assert (await a.check(spec, ("r", 0, "route"), 0.0)).allowed
    seen_by_b = await b.check(spec, ("r", 0, "route"), 0.0)
    assert seen_by_b.allowed
    assert seen_by_b.remaining >= 49  # a took 1 + at most 49, b 1 (b may lease too)


async def test_small_bursts_and_multi_limit_checks_lease_only_what_all_allow(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    backend = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    small = LimitSpec(0.1, 10)  # below the leasing floor: every check asks Redis
    for _ in range(5):
        await backend.check(small, ("r", 0, "ip", "s"), 0.0)
    assert backend.leased == 0
    assert backend.round_trips == 5
    # Two generous limits: the lease is the smaller of what each bucket's upper half allows.
    big, bigger = LimitSpec(1.0, 40), LimitSpec(0.001, 100_000)
    keys = (("r", 0, "ip", "m"), ("r", 1, "route"))
    first = await backend.check_many((big, bigger), keys, 0.0)
    assert first[0].remaining <= 20  # 1 + a lease of at most 19 out of 40
    passed = 0
    for _ in range(60):
        passed += all(r.allowed for r in await backend.check_many((big, bigger), keys, 0.0))
    assert passed == 39  # 40 in all with the first: the small limit governs, exactly


async def test_unused_lease_is_given_back_after_its_time(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    clock = [1000.0]
    spec = LimitSpec(1.0, 100)
    a = keep(made, RedisRateLimitBackend(client, prefix=prefix, monotonic=lambda: clock[0]))
    b = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    await a.check(spec, ("r", 0, "route"), 0.0)  # takes a lease
    before = await b.check(spec, ("r", 0, "route"), 0.0)
    clock[0] += 10.0  # past the lease's time and the sweep interval
    await a.check(LimitSpec(1.0, 100), ("r", 0, "ip", "other"), 0.0)  # sweeps: refund queued
    await asyncio.sleep(0.05)
    after = await b.check(spec, ("r", 0, "route"), 0.0)
    assert after.remaining > before.remaining  # the unused units are back


async def test_refunds_are_dropped_not_charged_locally_while_redis_is_down() -> None:
    dead = redis_client("redis://127.0.0.1:1/0", timeout=0.2)
    backend = RedisRateLimitBackend(dead, prefix=new_prefix(), retry_after=60)
    try:
        from bastion.gateway.layers.ratelimit import redis_backend as rb

        loop = asyncio.get_running_loop()
        refund = rb._Check((LimitSpec(1.0, 100),), (("r", 0, "route"),), 0.0, 30,
                           loop.create_future(), 0, rb.REFUND)  # fmt: skip
        backend._resolve_locally([refund])
        assert refund.future.result() == []
        assert len(backend._local) == 0  # nothing charged to the local fallback
        backend._enter_fallback(ConnectionError("simulated"))
        lease = rb._Lease(5, 0.0, [], (LimitSpec(1.0, 100),), (("r", 0, "route"),))
        backend._return_lease(((LimitSpec(1.0, 100),), (("r", 0, "route"),)), lease)
        assert backend._queue == []  # no refund sent to a Redis that is away
    finally:
        await backend.aclose()
        await dead.aclose()


async def test_concurrent_checks_share_the_lease_their_batch_granted(
    client: Redis, prefix: str, made: list[RedisRateLimitBackend]
) -> None:
    """Checks queued together go in one round trip; the first takes a lease out of the
    bucket, so the ones Redis then refuses are admitted from it: still exactly the burst."""
    backend = keep(made, RedisRateLimitBackend(client, prefix=prefix))
    spec = LimitSpec(1.0, 40)
    results = await asyncio.gather(
        *(backend.check(spec, ("r", 0, "ip", "batch"), 0.0) for _ in range(100))
    )
    assert sum(r.allowed for r in results) == 40
    assert backend.round_trips == 1
    assert backend.leased > 0
