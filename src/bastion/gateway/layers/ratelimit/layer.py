"""The ratelimit layer: every limit of a route must pass (GCRA), or the request gets a 429.

It runs after authn, so a limit keyed by ``principal`` counts per authenticated caller; an
anonymous request is counted by its client IP instead, under a different key prefix, so an IP
can never share a budget with a subject that happens to look like one. Headers follow
draft-ietf-httpapi-ratelimit-headers (structured fields)::

    RateLimit-Policy: "l0";q=20;w=1, "l1";q=2000;w=3600
    RateLimit: "l1";r=17;t=5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bastion.core.clock import Clock
from bastion.core.exchange import Exchange, Header, Principal, Reply
from bastion.core.gcra import GcraResult, LocalLimiter, admit_pair
from bastion.errors import RateLimited
from bastion.gateway.layers.base import NEEDS_IO, Layer, NeedsIo
from bastion.gateway.layers.ratelimit.backend import (
    Key,
    LimitSpec,
    MemoryRateLimitBackend,
    PreparedLimits,
    RateLimitBackend,
)
from bastion.gateway.layers.ratelimit.config import LimitConfig, RateLimitConfig

# Float noise must not turn an exact 2.0 s into "3"; far below any real wait.
_CEIL_SLACK = 1e-6
#: Subjects (and anonymous client IPs) whose limiter keys are remembered; each cache is emptied
#: when full. The verified-token cache hands out the same Principal object for the same token,
#: so a caller's requests hit.
KEY_CACHE_SIZE = 4096
#: RateLimit header values remembered (each cache is emptied when full).
STATE_CACHE_SIZE = 4096
_ceil = math.ceil


SyncCheck = Callable[[Sequence[LimitSpec], Sequence[Key], float], list[GcraResult]]
LeasedCheck = Callable[[Sequence[LimitSpec], Sequence[Key]], "list[GcraResult] | None"]
Prepare = Callable[[Sequence[LimitSpec]], PreparedLimits]
# (the Principal or None, client IP, the limiter keys, their in-memory form)
_KeysEntry = tuple[Principal | None, str, tuple[Key, ...], tuple[str, ...]]


@dataclass(frozen=True)
class _Limit:
    """One compiled limit: its policy name (``l<i>``), GCRA parameters and key kind."""

    index: int
    name: str
    key: str
    spec: LimitSpec
    description: str


def ceil_seconds(seconds: float, minimum: int = 0) -> int:
    """Whole seconds, rounded up (ignoring float noise), at least ``minimum``."""
    return max(minimum, math.ceil(seconds - _CEIL_SLACK))


def policy_item(name: str, limit: LimitConfig) -> str:
    """One RateLimit-Policy item: ``"l0";q=<quota>;w=<window s>``. A window that is not a whole
    number of seconds is widened to the next one and its quota scaled down to match."""
    window = ceil_seconds(limit.per, 1)
    quota = limit.rate if window == limit.per else max(1, int(limit.rate * window / limit.per))
    return f'"{name}";q={quota};w={window}'


class RateLimitLayer(Layer):
    """Enforces a route's limits through a :class:`RateLimitBackend`.

    Refused with ``enforce: true``: a 429 ``RateLimited`` reply with ``Retry-After`` (whole
    seconds, at least 1). With ``enforce: false`` (shadow mode) the request continues and
    ``ex.annotations["ratelimit_shadow"]`` names the limit that would have refused it. With
    ``headers: true`` the RateLimit headers go to ``ex.response_headers``, so upstream
    responses and 429s carry them alike.

    With a backend that answers without I/O (the in-memory one: ``check_many_now``, and
    ``prepare`` for the fast path) :meth:`check` decides; with one that needs I/O (Redis) it
    decides only an admission from a lease the node holds (``check_leased_now``) and returns
    NEEDS_IO otherwise, and :meth:`on_request` awaits the backend. Both decide alike.
    """

    name = "ratelimit"

    def __init__(
        self, route_name: str, config: RateLimitConfig, backend: RateLimitBackend, clock: Clock
    ) -> None:
        self._route = route_name
        self._backend = backend
        self._clock = clock
        self._enforce = config.enforce
        self._headers = config.headers
        self._limits = tuple(
            _Limit(
                index=i,
                name=f"l{i}",
                key=lim.key,
                spec=LimitSpec(lim.emission_interval, lim.effective_burst),
                description=f"l{i} {lim.describe()} per {lim.key}",
            )
            for i, lim in enumerate(config.limits)
        )
        self._specs = tuple(lim.spec for lim in self._limits)
        self._sync_check: SyncCheck | None = getattr(backend, "check_many_now", None)
        # A shared backend may admit from a lease this node holds without a round trip.
        self._leased_check: LeasedCheck | None = getattr(backend, "check_leased_now", None)
        prepare: Prepare | None = getattr(backend, "prepare", None)
        self._fast: PreparedLimits | None = (
            prepare(self._specs) if prepare is not None and self._limits else None
        )
        self._policy = ", ".join(policy_item(f"l{i}", lim) for i, lim in enumerate(config.limits))
        self._policy_header = ("ratelimit-policy", self._policy)
        self._state_prefix = tuple(f'"{lim.name}";r=' for lim in self._limits)
        # (t * stride + remaining) * len(limits) + i names one RateLimit state: remaining is
        # at most the burst, below the stride.
        self._state_stride = max((lim.spec.burst for lim in self._limits), default=0) + 1
        self._nlimits = len(self._limits)
        self._state_lines: dict[int, tuple[Header, Header]] = {}
        self._last_reset = math.nan
        self._last_i = 0
        self._last_lines: tuple[Header, Header] = (self._policy_header, self._policy_header)
        # subject (principal) and client IP (anonymous) -> (the Principal object or None,
        # client IP, keys, in-memory keys): the keys of the last request of each (bounded,
        # emptied when full).
        self._principal_keys: dict[str, _KeysEntry] = {}
        self._anonymous_keys: dict[str, _KeysEntry] = {}
        pair = self._fast.pair if self._fast is not None else None
        self._pair: tuple[LocalLimiter, LocalLimiter, MemoryRateLimitBackend] | None = (
            (pair[0], pair[1], self._fast.backend)
            if pair is not None and self._fast is not None
            else None
        )

    @property
    def policy_header(self) -> str:
        """The precomputed ``RateLimit-Policy`` value ('' when the route has no limits)."""
        return self._policy

    def keys(self, ex: Exchange) -> tuple[Key, ...]:
        """The limiter key of each limit for this request, in order.

        A limit keyed by ``principal`` counts per authenticated caller (kind, issuer, subject)
        and, for an anonymous request, by client IP under the ``"ip"`` prefix, so an IP never
        shares a budget with a subject that looks like one. The keys of the last request of
        each subject (and of each anonymous IP) are remembered, bounded: a hit needs the very
        same Principal object and client IP.
        """
        return self._keys_entry(ex)[2]

    def _keys_entry(self, ex: Exchange) -> _KeysEntry:
        req = ex.request
        ip = req.client_ip or req.peer_ip  # transport sets client_ip; never count under ''
        p = ex.principal
        hit = self._principal_keys.get(p.subject) if p is not None else self._anonymous_keys.get(ip)
        if hit is not None and hit[0] is p and hit[1] == ip:
            return hit
        return self._remember_keys(p, ip)

    def _remember_keys(self, p: Principal | None, ip: str) -> _KeysEntry:
        keys = self._build_keys(p, ip)
        # The in-memory limiters are keyed by each key's repr: a str hashes once (a tuple on
        # every lookup), and repr is one-to-one on tuples of str and int.
        entry = (p, ip, keys, tuple(repr(k) for k in keys))
        if p is not None:
            cache = self._principal_keys
            name = p.subject
        else:
            cache = self._anonymous_keys
            name = ip
        if len(cache) >= KEY_CACHE_SIZE:
            cache.clear()
        cache[name] = entry
        return entry

    def _build_keys(self, p: Principal | None, ip: str) -> tuple[Key, ...]:
        route = self._route
        keys: list[Key] = []
        for lim in self._limits:
            if lim.key == "route":
                keys.append((route, lim.index))
            elif lim.key == "principal" and p is not None:
                keys.append((route, lim.index, "sub", p.kind, p.issuer or "", p.subject))
            else:
                keys.append((route, lim.index, "ip", ip))
        return tuple(keys)

    def check(self, ex: Exchange) -> Reply | NeedsIo | None:
        """Decide without I/O when the backend can (in memory); NEEDS_IO otherwise."""
        fast = self._fast
        if fast is None:
            return self._check_backend(ex)
        # _keys_entry(ex) inline: the in-memory keys of this caller.
        req = ex.request
        ip = req.client_ip or req.peer_ip
        p = ex.principal
        hit = self._principal_keys.get(p.subject) if p is not None else self._anonymous_keys.get(ip)
        if hit is None or hit[0] is not p or hit[1] != ip:
            hit = self._remember_keys(p, ip)
        keys = hit[3]
        now = self._clock.monotonic()
        pair = self._pair
        if pair is None:
            admitted = fast.admit(keys, now)
        else:  # fast.admit inline
            lim0, lim1, memory = pair
            if now >= memory.next_prune:
                memory.tick(now)
            key0, key1 = keys
            admitted = admit_pair(lim0, key0, lim1, key1, now)
        if admitted is None:  # refused: every limit's result, to report the deciding one
            return self._decide(ex, fast.details(keys, now))
        if self._headers:
            i, remaining, reset = admitted
            # The header lines are a function of the limit and the reset (remaining is one of
            # them): those of the last admission are kept.
            if reset == self._last_reset and i == self._last_i:
                ex.response_headers += self._last_lines
                return None
            t = _ceil(reset - _CEIL_SLACK)
            if t < 0:
                t = 0
            # The two header lines for this state, built once per (limit, remaining, t): the
            # number names it as long as remaining < stride (always: remaining <= burst).
            stride = self._state_stride
            state = (t * stride + remaining) * self._nlimits + i
            lines = self._state_lines.get(state) if remaining < stride else None
            if lines is None:
                lines = self._new_state_lines(state, i, remaining, t)
            self._last_reset, self._last_i, self._last_lines = reset, i, lines
            ex.response_headers += lines
        return None

    def _new_state_lines(self, state: int, i: int, remaining: int, t: int) -> tuple[Header, Header]:
        lines = (self._policy_header, ("ratelimit", f"{self._state_prefix[i]}{remaining};t={t}"))
        if remaining < self._state_stride:
            cache = self._state_lines
            if len(cache) >= STATE_CACHE_SIZE:
                cache.clear()
            cache[state] = lines
        return lines

    def _check_backend(self, ex: Exchange) -> Reply | NeedsIo | None:
        """:meth:`check` with a backend that cannot :meth:`~MemoryRateLimitBackend.prepare`."""
        if not self._limits:
            return None
        sync = self._sync_check
        if sync is not None:
            keys = self.keys(ex)
            return self._decide(ex, sync(self._specs, keys, self._clock.monotonic()))
        leased = self._leased_check
        if leased is not None:
            results = leased(self._specs, self.keys(ex))
            if results is not None:
                return self._decide(ex, results)
        return NEEDS_IO

    async def on_request(self, ex: Exchange) -> Reply | None:
        """Check every limit at once (awaiting a backend that needs I/O); answer 429 when one
        refuses and the route enforces."""
        result = self.check(ex)
        if result is not NEEDS_IO:
            return result  # type: ignore[return-value]
        keys = self.keys(ex)
        now = self._clock.monotonic()
        return self._decide(ex, await self._backend.check_many(self._specs, keys, now))

    def _decide(self, ex: Exchange, results: Sequence[GcraResult]) -> Reply | None:
        limits = self._limits
        # Report the limit that decides: among refusals the longest wait (the request passes
        # only once every refusing limit allows it), otherwise the fewest remaining.
        worst_i = 0
        refused = False
        for i, r in enumerate(results):
            w = results[worst_i]
            if not r.allowed:
                if not refused or r.retry_after > w.retry_after:
                    worst_i, refused = i, True
            elif not refused and (
                r.remaining < w.remaining or (r.remaining == w.remaining and r.reset > w.reset)
            ):
                worst_i = i
        worst_lim, worst = limits[worst_i], results[worst_i]
        if self._headers:
            ex.response_headers.append(self._policy_header)
            ex.response_headers.append(("ratelimit", _state_item(worst_lim.name, worst)))
        if not refused:
            return None
        if not self._enforce:
            ex.record_finding("ratelimit_shadow", worst_lim.description)
            return None
        retry = ceil_seconds(worst.retry_after, 1)
        return ex.deny(
            RateLimited(
                diagnosis=f"{worst_lim.description} exceeded",
                headers=[("retry-after", str(retry))],
            )
        )


def _state_item(name: str, result: GcraResult) -> str:
    return f'"{name}";r={result.remaining};t={ceil_seconds(result.reset)}'
