"""Rate limits shared by every gateway node: GCRA in Redis, one Lua script per round trip.

Exactness comes from Redis: the script reads the server's clock (``TIME``), so the nodes'
clocks never matter, and runs atomically, so N nodes draw from one budget per key. The state
is one integer per key, the theoretical arrival time in microseconds, stored with a TTL in
milliseconds that ends when the bucket is full again (an expired key and a full bucket are
the same thing).

Speed comes from batching and leases. The layer's checks are queued, and one flusher task
sends every check queued so far as a single ``EVALSHA`` (one script call decides the whole
batch, each check all-or-nothing), then the next batch while the first is in flight. And a
check on generous limits (every burst ≥ ``LEASE_MIN_BURST``) also takes a *lease*: up to
``LEASE_UNITS`` more units recorded in Redis at once, which this node then admits without a
round trip, for at most ``LEASE_TTL`` seconds; what it did not use it gives back. Redis counts
leased units when it grants them, so the shared limit stays exact (never more admitted than the
limit allows); a lease never takes a bucket below half full, so near a limit every check is
decided by Redis, one by one, and a lease held by one node delays other nodes' callers only in
the upper half of a bucket. Checks Redis refuses in the batch whose earlier check took a lease
for the same caller are admitted from that lease. For a caller far below its limits this makes
the Redis round trip one per ``LEASE_UNITS`` requests instead of one per request.

Failure: when Redis errs or exceeds the client's timeout, the batch, and every check for the
next ``retry_after`` seconds, is decided by a local in-memory limiter holding ``1/nodes`` of
each limit, so the cluster as a whole stays near the configured rate, never unlimited. The
switch is logged once each way. There is deliberately no ``check_many_now``: the layer must
await this backend, except for an admission from a lease this node holds
(:meth:`RedisRateLimitBackend.check_leased_now`, the first step of ``check_many``, which needs no
round trip).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from bastion.core.gcra import GcraResult
from bastion.gateway.layers.ratelimit.backend import Key, LimitSpec, MemoryRateLimitBackend
from bastion.store.redis_pipe import RedisPipe, RedisReplyError

log = logging.getLogger("bastion.ratelimit")

# KEYS: every limit key of every check, in order.
# ARGV[1]: the whole batch as integers separated by spaces: number of checks, then per check:
# number of limits, cost, lease wanted, mode (0 check, 1 refund), then per limit: interval
# (us), burst. One argument instead of several per check: the client's per-argument encoding
# was most of the cost of a batch.
# A check (mode 0) is all-or-nothing over its limits. When allowed it may also take a lease:
# up to `lease wanted` more units, recorded now, that the node then admits on its own; never
# more than leaves half of every bucket free. A refund (mode 1) gives back `cost` unused
# leased units (the bucket never goes above full).
# Returns one string of integers separated by spaces: per check, all-allowed (0/1) and the
# lease granted, then per limit: allowed, retry_after (us), remaining, reset (us).
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = {}
for num in string.gmatch(ARGV[1], '%d+') do v[#v + 1] = tonumber(num) end
local out = {}
local k, a = 1, 2
for c = 1, v[1] do
  local n, cost, lease, mode = v[a], v[a + 1], v[a + 2], v[a + 3]
  a = a + 4
  local all = 1
  local res = {}
  for i = 1, n do
    local interval, burst = v[a], v[a + 1]
    a = a + 2
    local tau = interval * burst
    local stored = redis.call('GET', KEYS[k + i - 1])
    local tat = now
    if stored then
      tat = tonumber(stored)
      if tat < now then tat = now end
    end
    if mode == 1 then
      local back = tat - interval * cost
      if back < now then back = now end
      res[i] = {1, 0, back, interval, tau}
    else
      local new_tat = tat + interval * cost
      if new_tat - tau > now then
        all = 0
        res[i] = {0, new_tat - tau - now, tat, interval, tau}
      else
        local room = math.floor((tau / 2 - (new_tat - now)) / interval)
        if room < lease then lease = room end
        res[i] = {1, 0, new_tat, interval, tau}
      end
    end
  end
  if all == 0 or mode == 1 or lease < 0 then lease = 0 end
  out[#out + 1] = all
  out[#out + 1] = lease
  for i = 1, n do
    local r = res[i]
    local tat = r[3]
    if r[1] == 1 and all == 1 then
      tat = tat + lease * r[4]
      redis.call('SET', KEYS[k + i - 1], string.format('%.0f', tat),
                 'PX', math.max(1, math.ceil((tat - now) / 1000)))
    end
    out[#out + 1] = r[1]
    out[#out + 1] = string.format('%.0f', r[2])
    out[#out + 1] = string.format('%.0f', math.max(0, math.floor((r[5] - (tat - now)) / r[4])))
    out[#out + 1] = string.format('%.0f', tat - now)
  end
  k = k + n
end
return table.concat(out, ' ')
"""

#: Keys longer than this (a long subject) are hashed, to keep Redis keys small.
MAX_KEY_BYTES = 200
#: Redis key names remembered per backend (limiter key -> name); the cache is emptied when full.
KEY_CACHE_SIZE = 65_536
#: Leases: units a node may take ahead of time on a check whose limits all have a burst of at
#: least LEASE_MIN_BURST (and never more than leaves half of each bucket free), and how long it
#: may hold them before giving back what it did not use.
LEASE_UNITS = 64
LEASE_MIN_BURST = 20
LEASE_TTL = 0.25
#: How often (s) leases nobody asked for again are looked for and given back.
LEASE_SWEEP = 0.5

CHECK, REFUND = 0, 1


@dataclass(slots=True)
class _Check:
    limits: Sequence[LimitSpec]
    keys: Sequence[Key]
    now: float
    cost: int
    future: asyncio.Future[list[GcraResult]]
    lease: int = 0  # units wanted ahead of time
    mode: int = CHECK


@dataclass(slots=True)
class _Lease:
    """Units recorded in Redis for one (limits, keys) pair that this node admits itself."""

    units: int
    expires: float  # monotonic
    results: list[GcraResult]  # what an admission from the lease answers (as at the grant)
    limits: Sequence[LimitSpec]
    keys: Sequence[Key]


LeaseKey = tuple[tuple[LimitSpec, ...], tuple[Key, ...]]


class RedisRateLimitBackend:
    """A :class:`~bastion.gateway.layers.ratelimit.backend.RateLimitBackend` on Redis.

    ``client`` should fail fast (``events.redis_bus.redis_client``). ``prefix`` namespaces
    the keys; ``nodes`` sizes the local fallback (each node gets ``1/nodes`` of every limit);
    ``retry_after`` (s) is how long the fallback lasts before Redis is tried again;
    ``max_batch`` bounds the checks sent in one round trip. Use it from one event loop.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "bastion:",
        nodes: int = 1,
        retry_after: float = 1.0,
        max_batch: int = 256,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if nodes < 1 or retry_after <= 0 or max_batch < 1:
            raise ValueError("nodes, retry_after and max_batch must be positive")
        self._client = client
        # The per-request path talks to Redis through its own pipelined connection (hiredis):
        # a redis-py call costs several times the client CPU (bastion/store/redis_pipe.py).
        self._pipe = RedisPipe.from_client(client)
        self._sha = hashlib.sha1(GCRA_SCRIPT.encode(), usedforsecurity=False).hexdigest()
        self._prefix = f"{prefix}rl:"
        self._nodes = nodes
        self._retry_after = retry_after
        self._max_batch = max_batch
        self._monotonic = monotonic
        self._queue: list[_Check] = []
        self._flusher: asyncio.Task[None] | None = None
        self._down_until: float | None = None
        self._local = MemoryRateLimitBackend()
        self._local_specs: dict[LimitSpec, LimitSpec] = {}
        self._names: dict[Key, str] = {}
        self._leases: dict[LeaseKey, _Lease] = {}
        self._next_sweep = 0.0
        self.round_trips = 0
        self.leased = 0  # admissions decided from a lease, without a round trip
        self.fallbacks = 0

    @property
    def degraded(self) -> bool:
        """True while checks are decided by the local fallback limiter."""
        return self._down_until is not None

    async def check_many(
        self, limits: Sequence[LimitSpec], keys: Sequence[Key], now: float, cost: int = 1
    ) -> list[GcraResult]:
        """See :meth:`RateLimitBackend.check_many`. ``now`` (monotonic s) is used only by the
        local fallback; Redis decides on its own clock."""
        if len(limits) != len(keys):
            raise ValueError("limits and keys must have the same length")
        mono = self._monotonic()
        lk: LeaseKey = (tuple(limits), tuple(keys))
        lease = self._leases.get(lk)
        if lease is not None:
            if lease.units >= cost and mono < lease.expires:
                lease.units -= cost
                self.leased += 1
                return lease.results
            self._return_lease(lk, lease)
        if mono >= self._next_sweep:
            self._sweep_leases(mono)
        down = self._down_until
        if down is not None and mono < down:
            return self._decide_locally(limits, keys, now, cost)
        want = LEASE_UNITS if all(spec.burst >= LEASE_MIN_BURST for spec in limits) else 0
        future: asyncio.Future[list[GcraResult]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Check(limits, keys, now, cost, future, want))
        return await future

    def check_leased_now(
        self, limits: Sequence[LimitSpec], keys: Sequence[Key], cost: int = 1
    ) -> list[GcraResult] | None:
        """The first step of :meth:`check_many`, without I/O: when this node holds a live lease
        for ``(limits, keys)`` with ``cost`` units left, admit from it (as ``check_many``
        would) and return its results; otherwise None, and ``check_many`` decides (it also
        gives back an expired lease)."""
        lease = self._leases.get((tuple(limits), tuple(keys)))
        if lease is None or lease.units < cost or self._monotonic() >= lease.expires:
            return None
        lease.units -= cost
        self.leased += 1
        return lease.results

    def _enqueue(self, check: _Check) -> None:
        self._queue.append(check)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="ratelimit-redis-flush")

    # -- leases ---------------------------------------------------------------------------------

    def _return_lease(self, lk: LeaseKey, lease: _Lease) -> None:
        """Forget ``lease`` and give its unused units back to Redis (fire and forget)."""
        if self._leases.get(lk) is lease:
            del self._leases[lk]
        if lease.units > 0 and self._down_until is None:
            future: asyncio.Future[list[GcraResult]] = asyncio.get_running_loop().create_future()
            self._enqueue(_Check(lease.limits, lease.keys, 0.0, lease.units, future, 0, REFUND))
        lease.units = 0

    def _sweep_leases(self, mono: float) -> None:
        self._next_sweep = mono + LEASE_SWEEP
        for lk, lease in list(self._leases.items()):
            if mono >= lease.expires:
                self._return_lease(lk, lease)

    def _take_lease(self, check: _Check, granted: int, results: list[GcraResult]) -> None:
        lk: LeaseKey = (tuple(check.limits), tuple(check.keys))
        held = self._leases.get(lk)
        expires = self._monotonic() + LEASE_TTL
        if held is not None:
            held.units += granted
            held.expires = expires
            held.results = results
        else:
            self._leases[lk] = _Lease(granted, expires, results, check.limits, check.keys)

    def _admit_from_lease(self, check: _Check) -> list[GcraResult] | None:
        """A check Redis refused in the batch that granted its pair a lease: the lease is what
        was left of the bucket, so admit from it (exactness under concurrent checks)."""
        lease = self._leases.get((tuple(check.limits), tuple(check.keys)))
        if lease is None or lease.units < check.cost:
            return None
        lease.units -= check.cost
        self.leased += 1
        return lease.results

    async def check(self, limit: LimitSpec, key: Key, now: float, cost: int = 1) -> GcraResult:
        """See :meth:`RateLimitBackend.check`."""
        return (await self.check_many((limit,), (key,), now, cost))[0]

    async def aclose(self) -> None:
        """Give back unused leases, let the queued checks finish (at most the client's
        timeout), then close this backend's own connection (the redis-py client is closed by
        its owner)."""
        for lk, lease in list(self._leases.items()):
            self._return_lease(lk, lease)
        flusher = self._flusher
        if flusher is not None:
            await asyncio.wait({flusher}, timeout=5.0)
        await self._pipe.aclose()

    # -- the flusher ----------------------------------------------------------------------------

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
                down = self._down_until
                if down is not None and self._monotonic() < down:
                    self._resolve_locally(batch)
                    continue
                try:
                    reply = await self._eval(*self._encode(batch))
                    results = self._decode(batch, reply)
                except asyncio.CancelledError:
                    self._resolve_locally(batch)
                    raise
                except Exception as exc:  # Redis down, slow, or a broken reply
                    self._enter_fallback(exc)
                    self._resolve_locally(batch)
                    continue
                self.round_trips += 1
                if self._down_until is not None:
                    self._down_until = None
                    log.warning("Redis rate limiting available again; shared limits restored")
                for check, (allowed_all, granted, result) in zip(batch, results, strict=True):
                    if granted:
                        self._take_lease(check, granted, result)
                    elif check.mode == CHECK and not allowed_all:
                        result = self._admit_from_lease(check) or result
                    if not check.future.done():
                        check.future.set_result(result)
        finally:
            self._flusher = None

    async def _eval(self, keys: list[str], args: list[str]) -> object:
        """EVALSHA of the script; loads it first when Redis does not know it (a restart)."""
        try:
            return await self._pipe.call("EVALSHA", self._sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self._pipe.call("SCRIPT", "LOAD", GCRA_SCRIPT)
        return await self._pipe.call("EVALSHA", self._sha, len(keys), *keys, *args)

    def _encode(self, batch: list[_Check]) -> tuple[list[str], list[str]]:
        keys: list[str] = []
        args: list[int] = [len(batch)]
        names = self._names
        for check in batch:
            args.append(len(check.limits))
            args.append(check.cost)
            args.append(check.lease)
            args.append(check.mode)
            for spec, key in zip(check.limits, check.keys, strict=True):
                name = names.get(key)
                if name is None:
                    if len(names) >= KEY_CACHE_SIZE:
                        names.clear()
                    name = names[key] = self.redis_key(key)
                keys.append(name)
                args.append(max(1, round(spec.interval * 1_000_000)))
                args.append(spec.burst)
        return keys, [" ".join(map(str, args))]

    @staticmethod
    def _decode(batch: list[_Check], reply: object) -> list[tuple[bool, int, list[GcraResult]]]:
        """Per check: all limits allowed, the lease granted, the result of each limit."""
        if not isinstance(reply, bytes | str) or not reply:
            raise ValueError("unexpected reply from the rate-limit script")
        values = [int(v) for v in reply.split()]
        pos = 0
        out: list[tuple[bool, int, list[GcraResult]]] = []
        for check in batch:
            allowed_all, granted = values[pos] == 1, values[pos + 1]
            pos += 2
            results: list[GcraResult] = []
            for _ in check.limits:
                allowed, retry_us, remaining, reset_us = values[pos : pos + 4]
                pos += 4
                reset = reset_us / 1_000_000
                results.append(
                    GcraResult(bool(allowed), check.now + reset, retry_us / 1e6, remaining, reset)
                )
            out.append((allowed_all, granted, results))
        if pos != len(values):
            raise ValueError("rate-limit script reply has the wrong length")
        return out

    def redis_key(self, key: Key) -> str:
        """The Redis key of a limiter key: its JSON form (hashed when long), prefixed."""
        raw = orjson.dumps(key, default=str)
        if len(raw) > MAX_KEY_BYTES:
            return self._prefix + "h:" + hashlib.sha256(raw).hexdigest()
        return self._prefix + raw.decode()

    # -- the local fallback --------------------------------------------------------------------

    def _enter_fallback(self, exc: BaseException) -> None:
        self.fallbacks += 1
        if self._down_until is None:
            log.warning(
                "Redis rate limiting unavailable (%s): limits enforced locally at 1/%d per node",
                type(exc).__name__,
                self._nodes,
            )
        self._down_until = self._monotonic() + self._retry_after

    def _resolve_locally(self, batch: list[_Check]) -> None:
        for check in batch:
            if check.mode == REFUND:  # nothing to give back to while Redis is away
                if not check.future.done():
                    check.future.set_result([])
                continue
            if not check.future.done():
                check.future.set_result(
                    self._decide_locally(check.limits, check.keys, check.now, check.cost)
                )

    def _decide_locally(
        self, limits: Sequence[LimitSpec], keys: Sequence[Key], now: float, cost: int
    ) -> list[GcraResult]:
        specs = [self._local_spec(s) for s in limits]
        return self._local.check_many_now(specs, keys, now, cost)

    def _local_spec(self, spec: LimitSpec) -> LimitSpec:
        local = self._local_specs.get(spec)
        if local is None:
            n = self._nodes
            local = self._local_specs[spec] = LimitSpec(spec.interval * n, max(1, spec.burst // n))
        return local
