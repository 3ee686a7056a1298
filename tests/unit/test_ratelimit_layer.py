"""The ratelimit layer and its memory backend: accuracy, keys, shadow mode, headers."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from bastion.core.clock import ManualClock
from bastion.core.exchange import Exchange, Headers, Principal, Reply, RequestView
from bastion.core.gcra import GcraResult
from bastion.gateway.layers.base import NEEDS_IO
from bastion.gateway.layers.ratelimit import layer as layer_module
from bastion.gateway.layers.ratelimit import redis_backend
from bastion.gateway.layers.ratelimit.backend import LimitSpec, MemoryRateLimitBackend
from bastion.gateway.layers.ratelimit.config import LimitConfig, RateLimitConfig
from bastion.gateway.layers.ratelimit.layer import RateLimitLayer, ceil_seconds, policy_item
from bastion.gateway.layers.ratelimit.redis_backend import RedisRateLimitBackend


def user(sub: str) -> Principal:
    return Principal(kind="jwt", subject=sub, issuer="https://id.example")


def make_exchange(ip: str = "198.51.100.9", principal: Principal | None = None) -> Exchange:
    req = RequestView(
        method="GET", path="/v1/x", query="", headers=Headers(), peer_ip=ip, client_ip=ip
    )
    return Exchange(request=req, request_id="r", started=0.0, started_wall=0.0, principal=principal)


class Rig:
    """A layer over a fresh memory backend and a manual clock."""

    def __init__(self, *limits: dict[str, Any], **cfg: Any) -> None:
        self.clock = ManualClock()
        self.backend = MemoryRateLimitBackend()
        config = RateLimitConfig(limits=[LimitConfig(**lim) for lim in limits], **cfg)
        self.layer = RateLimitLayer("api", config, self.backend, self.clock)

    async def send(self, ex: Exchange | None = None) -> Reply | None:
        return await self.layer.on_request(ex or make_exchange())

    async def burst(self, n: int, **kw: Any) -> int:
        """Send ``n`` requests now; how many were admitted."""
        return sum([await self.send(make_exchange(**kw)) is None for _ in range(n)])


TEN_PER_SECOND = {"rate": 10, "per": 1.0}


async def test_burst_admits_exactly_the_burst() -> None:
    rig = Rig(TEN_PER_SECOND)
    assert await rig.burst(25) == 10


async def test_evenly_spread_requests_admit_ten_per_second() -> None:
    rig = Rig(TEN_PER_SECOND)
    await rig.burst(10)  # drain the burst: from here on only the rate counts
    per_second = []
    for _ in range(5):
        admitted = 0
        for _ in range(100):  # one request every 10 ms
            rig.clock.advance(0.01)
            admitted += await rig.send() is None
        per_second.append(admitted)
    assert all(9 <= n <= 11 for n in per_second), per_second
    # Over the whole 5 s: at most burst + rate x elapsed, counted from the drained state.
    assert sum(per_second) <= 10 * 5


async def test_full_bucket_then_spread_requests_respect_the_gcra_bound() -> None:
    rig = Rig(TEN_PER_SECOND)
    admitted = 0
    for _ in range(100):  # one second of requests every 10 ms, starting with a full bucket
        admitted += await rig.send() is None
        rig.clock.advance(0.01)
    # b + floor(d / T) over [0, 0.99]: 10 + 9 = 19.
    assert admitted == 10 + math.floor(0.99 / 0.1)


async def test_window_boundary_gives_no_second_burst() -> None:
    rig = Rig(TEN_PER_SECOND)
    rig.clock.advance(0.99)
    first = await rig.burst(30)
    rig.clock.advance(0.02)  # t = 1.01, across the second boundary
    second = await rig.burst(30)
    # Exact GCRA bound over [0.99, 1.01]: b + floor(0.02 s / 0.1 s) = 10 (a fixed window: 20).
    assert first + second == 10 + math.floor(0.02 / 0.1) == 10


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
async def test_two_limits_together_and_refusals_consume_nothing(order: tuple[int, int]) -> None:
    pair = ({"rate": 20, "per": 1.0}, {"rate": 50, "per": 60.0})
    rig = Rig(*(pair[i] for i in order))
    assert await rig.burst(100) == 20  # 20/s binds; the 80 refused take nothing from 50/min
    rig.clock.advance(1.0)
    assert await rig.burst(100) == 20  # 50/min has 30 left after 20 used and 1 s of refill
    rig.clock.advance(1.0)
    # 50/min: TAT 48 s after 40 requests; room up to 60 + 2 s: floor((62 - 48) / 1.2) = 11.
    assert await rig.burst(100) == 11


async def test_refusal_by_the_second_limit_does_not_consume_the_first() -> None:
    rig = Rig({"rate": 5, "per": 1.0, "key": "principal"}, {"rate": 2, "per": 1.0, "key": "ip"})
    alice = user("alice")
    assert await rig.burst(10, principal=alice, ip="192.0.2.1") == 2  # the IP limit binds
    # Had the 8 refusals consumed alice's 5/s, she would get nothing from another IP.
    assert await rig.burst(10, principal=alice, ip="192.0.2.2") == 2
    assert await rig.burst(10, principal=alice, ip="192.0.2.3") == 1


async def test_shadow_mode_admits_everything_but_annotates() -> None:
    rig = Rig(TEN_PER_SECOND, enforce=False)
    exchanges = [make_exchange() for _ in range(15)]
    for ex in exchanges:
        assert await rig.send(ex) is None
    shadowed = [ex.annotations.get("ratelimit_shadow") for ex in exchanges]
    assert shadowed[:10] == [None] * 10
    assert shadowed[10:] == ["l0 10/s per principal"] * 5
    assert all(ex.decision == "allow" for ex in exchanges)
    # Shadow refusals do not consume either: the bucket refills as if they had been refused.
    rig.clock.advance(0.1)
    ex = make_exchange()
    await rig.send(ex)
    assert "ratelimit_shadow" not in ex.annotations


async def test_per_principal_keys_isolate_users() -> None:
    rig = Rig(TEN_PER_SECOND)
    assert await rig.burst(20, principal=user("alice")) == 10
    assert await rig.burst(20, principal=user("bob")) == 10  # same IP, own budget


async def test_principal_key_follows_the_user_across_ips() -> None:
    rig = Rig(TEN_PER_SECOND)
    assert await rig.burst(6, principal=user("alice"), ip="192.0.2.1") == 6
    assert await rig.burst(6, principal=user("alice"), ip="192.0.2.2") == 4


async def test_ip_key_is_shared_by_users_on_one_ip() -> None:
    rig = Rig({"rate": 10, "per": 1.0, "key": "ip"})
    assert await rig.burst(6, principal=user("alice")) == 6
    assert await rig.burst(6, principal=user("bob")) == 4
    assert await rig.burst(6, principal=user("bob"), ip="192.0.2.77") == 6


async def test_route_key_is_shared_by_everyone() -> None:
    rig = Rig({"rate": 10, "per": 1.0, "key": "route"})
    assert await rig.burst(6, principal=user("alice"), ip="192.0.2.1") == 6
    assert await rig.burst(6, ip="192.0.2.2") == 4


async def test_anonymous_ip_cannot_collide_with_a_subject() -> None:
    rig = Rig(TEN_PER_SECOND)
    assert await rig.burst(10, principal=user("192.0.2.1"), ip="203.0.113.1") == 10
    assert await rig.burst(10, ip="192.0.2.1") == 10  # anonymous: keyed by IP, other prefix


async def test_empty_client_ip_falls_back_to_the_peer() -> None:
    rig = Rig({"rate": 1, "per": 1.0, "key": "ip"})
    ex = make_exchange(ip="192.0.2.1")
    ex.request.client_ip = ""
    assert await rig.send(ex) is None
    assert await rig.send(make_exchange(ip="192.0.2.1")) is not None  # same bucket as the peer


async def test_refusal_is_a_429_problem_with_retry_after() -> None:
    rig = Rig(TEN_PER_SECOND)
    await rig.burst(10)
    ex = make_exchange()
    reply = await rig.send(ex)
    assert reply is not None
    assert reply.status == 429
    assert ("retry-after", "1") in reply.headers
    assert orjson.loads(reply.body)["code"] == "ratelimit.exceeded"
    assert ex.decision == "deny"
    assert ex.reason == "ratelimit.exceeded"
    assert ex.diagnosis == "l0 10/s per principal exceeded"


@pytest.mark.parametrize(("elapsed", "expected"), [(0.0, "60"), (0.5, "60"), (59.2, "1")])
async def test_retry_after_rounds_up_to_whole_seconds(elapsed: float, expected: str) -> None:
    rig = Rig({"rate": 1, "per": 60.0})
    assert await rig.send() is None
    rig.clock.advance(elapsed)
    reply = await rig.send()
    assert reply is not None
    assert dict(reply.headers)["retry-after"] == expected


def test_ceil_seconds_ignores_float_noise_and_keeps_a_floor() -> None:
    assert ceil_seconds(2.0000000001) == 2
    assert ceil_seconds(2.1) == 3
    assert ceil_seconds(0.0, 1) == 1
    assert ceil_seconds(0.3333, 1) == 1


async def test_retry_after_is_the_longest_wait_of_the_refusing_limits() -> None:
    rig = Rig({"rate": 1, "per": 1.0}, {"rate": 1, "per": 30.0})
    assert await rig.send() is None
    reply = await rig.send()
    assert reply is not None
    assert dict(reply.headers)["retry-after"] == "30"


async def test_headers_describe_policy_and_most_constrained_limit() -> None:
    rig = Rig({"rate": 20, "per": 1.0}, {"rate": 2000, "per": 3600.0})
    ex = make_exchange()
    assert await rig.send(ex) is None
    h = dict(ex.response_headers)
    assert h["ratelimit-policy"] == '"l0";q=20;w=1, "l1";q=2000;w=3600'
    assert h["ratelimit"] == '"l0";r=19;t=1'
    await rig.burst(19)
    ex = make_exchange()
    assert await rig.send(ex) is not None
    assert dict(ex.response_headers)["ratelimit"] == '"l0";r=0;t=1'


async def test_long_window_is_most_constrained_once_nearly_used() -> None:
    rig = Rig({"rate": 20, "per": 1.0}, {"rate": 30, "per": 3600.0})
    await rig.burst(20)
    rig.clock.advance(1.0)
    ex = make_exchange()
    await rig.send(ex)
    # 21 of 30 used at t=1 s; 120 s per unit: TAT 2520 s, so full again in 2519 s.
    assert dict(ex.response_headers)["ratelimit"] == '"l1";r=9;t=2519'


async def test_no_headers_when_disabled_and_nothing_without_limits() -> None:
    ex = make_exchange()
    await Rig(TEN_PER_SECOND, headers=False).send(ex)
    assert ex.response_headers == []
    ex = make_exchange()
    assert await Rig().send(ex) is None
    assert ex.response_headers == []


def test_policy_item_scales_a_fractional_window() -> None:
    assert policy_item("l0", LimitConfig(rate=10, per=0.5)) == '"l0";q=20;w=1'
    assert policy_item("l1", LimitConfig(rate=5, per=60.0)) == '"l1";q=5;w=60'
    assert policy_item("l2", LimitConfig(rate=3, per=1.5)) == '"l2";q=4;w=2'


async def test_backend_check_many_is_all_or_nothing_and_never_suspends() -> None:
    backend = MemoryRateLimitBackend()
    limits = [LimitSpec(1.0, 2), LimitSpec(1.0, 1)]
    keys = [("a",), ("b",)]
    coro = backend.check_many(limits, keys, 0.0)
    with pytest.raises(StopIteration) as done:
        coro.send(None)  # completes on the first step: no event-loop turn
    assert [r.allowed for r in done.value.value] == [True, True]
    results = await backend.check_many(limits, keys, 0.0)
    assert [r.allowed for r in results] == [True, False]
    # "a" had 1 unit left; the refusal by "b" did not take it.
    assert (await backend.check(LimitSpec(1.0, 2), ("a",), 0.0)).allowed


async def test_backend_cost_is_charged_to_every_limit() -> None:
    backend = MemoryRateLimitBackend()
    limits = [LimitSpec(1.0, 5), LimitSpec(1.0, 3)]
    assert (await backend.check_many(limits, [("a",), ("b",)], 0.0, cost=3))[0].remaining == 2
    assert not (await backend.check(limits[1], ("b",), 0.0)).allowed


async def test_backend_prunes_periodically() -> None:
    backend = MemoryRateLimitBackend(prune_every=10.0)
    spec = LimitSpec(1.0, 5)
    for i in range(100):
        await backend.check(spec, (i,), 0.0)
    assert len(backend) == 100
    await backend.check(spec, ("late",), 9.0)
    assert len(backend) == 101  # not yet time to prune
    await backend.check(spec, ("later",), 10.5)
    assert len(backend) == 1  # every full bucket dropped, the new key kept


@pytest.mark.parametrize("kw", [{"max_keys_per_limit": 0}, {"prune_every": 0}])
def test_backend_rejects_bad_bounds(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryRateLimitBackend(**kw)


# --- the synchronous contract (Layer.check) --------------------------------------------------


class AwaitOnly:
    """A backend that can only be awaited (like Redis): the memory backend behind
    check_many/check, without check_many_now or prepare."""

    def __init__(self) -> None:
        self.inner = MemoryRateLimitBackend()
        self.calls = 0

    async def check_many(
        self, limits: Any, keys: Any, now: float, cost: int = 1
    ) -> list[GcraResult]:
        self.calls += 1
        return self.inner.check_many_now(limits, keys, now, cost)

    async def check(self, limit: Any, key: Any, now: float, cost: int = 1) -> GcraResult:
        return (await self.check_many((limit,), (key,), now, cost))[0]


def outcome(reply: Reply | None, ex: Exchange) -> tuple[Any, ...]:
    return (
        None if reply is None else (reply.status, reply.headers, reply.body),
        ex.response_headers,
        ex.annotations.get("ratelimit_shadow"),
        ex.decision,
        ex.diagnosis,
    )


MIXED = (
    {"rate": 3, "per": 1.0, "key": "principal"},
    {"rate": 5, "per": 1.0, "key": "ip"},
    {"rate": 8, "per": 10.0, "key": "route"},
)


@pytest.mark.parametrize("cfg", [{}, {"enforce": False}, {"headers": False}])
async def test_check_with_memory_backend_decides_synchronously_like_on_request(
    cfg: dict[str, Any],
) -> None:
    sync, awaited = Rig(*MIXED, **cfg), Rig(*MIXED, **cfg)
    users = [user("alice"), user("bob"), None]
    ips = ["192.0.2.1", "192.0.2.2"]
    for step in range(60):
        kw = {"principal": users[step % 3], "ip": ips[step % 2]}
        a, b = make_exchange(**kw), make_exchange(**kw)
        got = sync.layer.check(a)
        assert got is not NEEDS_IO
        assert outcome(got, a) == outcome(await awaited.send(b), b), step  # type: ignore[arg-type]
        if step % 7 == 6:
            sync.clock.advance(0.35)
            awaited.clock.advance(0.35)


async def test_check_with_an_awaited_backend_needs_io_and_on_request_decides_alike() -> None:
    backend = AwaitOnly()
    clock = ManualClock()
    config = RateLimitConfig(limits=[LimitConfig(**lim) for lim in MIXED])
    layer = RateLimitLayer("api", config, backend, clock)  # type: ignore[arg-type]
    memory = Rig(*MIXED)
    for step in range(30):
        kw = {"principal": user("alice") if step % 2 else None}
        a, b = make_exchange(**kw), make_exchange(**kw)
        assert layer.check(a) is NEEDS_IO
        assert a.response_headers == []  # nothing decided, nothing recorded
        assert outcome(await layer.on_request(a), a) == outcome(await memory.send(b), b)
    assert backend.calls == 30


@pytest.mark.parametrize(
    "limits",
    [
        # two specs: two limiters
        ({"rate": 3, "per": 1.0, "key": "principal"}, {"rate": 5, "per": 2.0, "key": "ip"}),
        # one spec: one limiter holding both keys
        ({"rate": 4, "per": 1.0, "key": "principal"}, {"rate": 4, "per": 1.0, "key": "ip"}),
        ({"rate": 2, "per": 1.0, "key": "route"}, {"rate": 20, "per": 3600.0, "key": "ip"}),
    ],
)
@pytest.mark.parametrize("cfg", [{}, {"enforce": False}])
async def test_two_limit_fast_path_decides_and_reports_like_an_awaited_backend(
    limits: tuple[dict[str, Any], ...], cfg: dict[str, Any]
) -> None:
    clock = ManualClock()
    config = RateLimitConfig(limits=[LimitConfig(**lim) for lim in limits], **cfg)
    awaited = RateLimitLayer("api", config, AwaitOnly(), clock)  # type: ignore[arg-type]
    fast = RateLimitLayer("api", config, MemoryRateLimitBackend(), clock)
    assert fast._pair is not None
    users = [user("alice"), user("bob"), None]
    ips = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    for step in range(150):
        kw = {"principal": users[step % 3], "ip": ips[step % 5 % 3]}
        a, b = make_exchange(**kw), make_exchange(**kw)
        got = fast.check(a)
        assert got is not NEEDS_IO
        assert outcome(got, a) == outcome(await awaited.on_request(b), b), step  # type: ignore[arg-type]
        clock.advance((0.0, 0.05, 0.0, 0.3, 1e-7, 2.5)[step % 6])


async def test_ratelimit_header_lines_are_remembered_per_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(layer_module, "STATE_CACHE_SIZE", 3)
    rig = Rig({"rate": 10, "per": 1.0}, {"rate": 100, "per": 60.0, "key": "ip"})
    seen = []
    for _ in range(8):
        ex = make_exchange()
        assert rig.layer.check(ex) is None
        seen.append(dict(ex.response_headers)["ratelimit"])
    assert seen == [f'"l0";r={n};t=1' for n in range(9, 1, -1)]
    assert len(rig.layer._state_lines) <= 3
    for _ in range(2):  # a refilled bucket: the same lines again
        rig.clock.advance(60)
        ex = make_exchange()
        assert rig.layer.check(ex) is None
        assert ex.response_headers == [
            ("ratelimit-policy", '"l0";q=10;w=1, "l1";q=100;w=60'),
            ("ratelimit", '"l0";r=9;t=1'),
        ]


async def test_fast_path_refusal_reports_like_the_slow_path() -> None:
    rig = Rig({"rate": 2, "per": 1.0}, {"rate": 100, "per": 60.0, "key": "ip"})
    assert await rig.burst(2) == 2
    ex = make_exchange()
    reply = rig.layer.check(ex)
    assert isinstance(reply, Reply)
    assert reply.status == 429
    assert dict(ex.response_headers)["ratelimit"] == '"l0";r=0;t=1'
    assert ex.diagnosis == "l0 2/s per principal exceeded"
    # The refusal consumed nothing from the IP limit: 98 left after 2 admitted.
    rig.clock.advance(1.0)
    ex = make_exchange()
    assert rig.layer.check(ex) is None
    assert dict(ex.response_headers)["ratelimit"] == '"l0";r=1;t=1'


async def test_keys_are_remembered_per_principal_object_and_ip() -> None:
    rig = Rig({"rate": 10, "per": 1.0, "key": "principal"}, {"rate": 10, "per": 1.0, "key": "ip"})
    alice = user("alice")
    first = rig.layer.keys(make_exchange(principal=alice, ip="192.0.2.1"))
    assert rig.layer.keys(make_exchange(principal=alice, ip="192.0.2.1")) is first
    other_ip = rig.layer.keys(make_exchange(principal=alice, ip="192.0.2.2"))
    assert other_ip[0] == first[0]
    assert other_ip[1] == ("api", 1, "ip", "192.0.2.2")
    # Same subject from another issuer (another Principal object): its own budget.
    mallory = Principal(kind="jwt", subject="alice", issuer="https://evil.example")
    keys = rig.layer.keys(make_exchange(principal=mallory, ip="192.0.2.1"))
    assert keys[0] == ("api", 0, "sub", "jwt", "https://evil.example", "alice")
    assert rig.layer.keys(make_exchange(principal=alice, ip="192.0.2.1"))[0] == first[0]
    assert await rig.burst(10, principal=alice) == 10
    assert await rig.burst(10, principal=mallory, ip="192.0.2.9") == 10


async def test_key_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layer_module, "KEY_CACHE_SIZE", 8)
    rig = Rig({"rate": 10, "per": 1.0, "key": "principal"})
    for i in range(50):
        assert await rig.send(make_exchange(principal=user(f"u{i}"), ip=f"192.0.2.{i}")) is None
        assert await rig.send(make_exchange(ip=f"198.51.100.{i}")) is None
    assert len(rig.layer._principal_keys) <= 8
    assert len(rig.layer._anonymous_keys) <= 8


def test_prepared_limits_admit_matches_check_many_now() -> None:
    fast, slow = MemoryRateLimitBackend(), MemoryRateLimitBackend()
    specs = (LimitSpec(0.1, 3), LimitSpec(1.0, 5), LimitSpec(0.5, 2))
    prepared = fast.prepare(specs)
    keys = (("a",), ("b",), ("c",))
    now = 1000.0
    for step in range(200):
        admitted = prepared.admit(keys, now)
        results = slow.check_many_now(specs, keys, now)
        assert (admitted is not None) == all(r.allowed for r in results), step
        if admitted is not None:
            i, remaining, reset = admitted
            assert remaining == min(r.remaining for r in results)
            assert (remaining, reset) == (results[i].remaining, results[i].reset)
        else:
            assert prepared.details(keys, now) == results
        now += (0.03, 0.2, 0.0, 0.45)[step % 4]


async def test_redis_backend_admits_from_a_held_lease_synchronously() -> None:
    # No Redis here: the lease a round trip would have granted is handed over directly.
    mono = [100.0]
    backend = RedisRateLimitBackend(Redis(host="127.0.0.1", port=1), monotonic=lambda: mono[0])
    clock = ManualClock()
    config = RateLimitConfig(limits=[LimitConfig(rate=100, per=1.0, key="ip")])
    layer = RateLimitLayer("api", config, backend, clock)
    ex = make_exchange()
    assert layer.check(ex) is NEEDS_IO  # no lease yet: Redis must decide
    keys = layer.keys(ex)
    specs = (LimitSpec(0.01, 100),)
    granted = [GcraResult(True, 0.0, 0.0, 63, 0.37)]
    future = asyncio.get_running_loop().create_future()
    backend._take_lease(redis_backend._Check(specs, keys, 0.0, 1, future, 2), 2, granted)
    for _ in range(2):
        ex = make_exchange()
        assert layer.check(ex) is None  # admitted from the lease, no round trip
        assert dict(ex.response_headers)["ratelimit"] == '"l0";r=63;t=1'
    assert backend.leased == 2
    assert layer.check(make_exchange()) is NEEDS_IO  # the lease is used up
    backend._take_lease(redis_backend._Check(specs, keys, 0.0, 1, future, 2), 1, granted)
    mono[0] += redis_backend.LEASE_TTL
    assert layer.check(make_exchange()) is NEEDS_IO  # expired: check_many gives it back
    assert backend.check_leased_now(specs, keys) is None
    assert backend.round_trips == 0
