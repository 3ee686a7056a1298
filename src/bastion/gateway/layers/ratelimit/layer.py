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
from bastion.core.exchange import Exchange, Principal, Reply
from bastion.core.gcra import GcraResult
from bastion.errors import RateLimited
from bastion.gateway.layers.base import NEEDS_IO, Layer, NeedsIo
from bastion.gateway.layers.ratelimit.backend import (
    Key,
    LimitSpec,
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


SyncCheck = Callable[[Sequence[LimitSpec], Sequence[Key], float], list[GcraResult]]
LeasedCheck = Callable[[Sequence[LimitSpec], Sequence[Key]], "list[GcraResult] | None"]
Prepare = Callable[[Sequence[LimitSpec]], PreparedLimits]


@dataclass(frozen=True, slots=True)
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
        # subject -> (the Principal object, client IP, keys) and client IP -> keys of an
        # anonymous request: the keys of the last request of each (bounded, emptied when full).
        self._principal_keys: dict[str, tuple[Principal, str, tuple[Key, ...]]] = {}
        self._anonymous_keys: dict[str, tuple[Key, ...]] = {}

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
        req = ex.request
        ip = req.client_ip or req.peer_ip  # transport sets client_ip; never count under ''
        p = ex.principal
        if p is not None:
            hit = self._principal_keys.get(p.subject)
            if hit is not None and hit[0] is p and hit[1] == ip:
                return hit[2]
            keys = self._build_keys(p, ip)
            cache = self._principal_keys
            if len(cache) >= KEY_CACHE_SIZE:
                cache.clear()
            cache[p.subject] = (p, ip, keys)
            return keys
        anonymous = self._anonymous_keys.get(ip)
        if anonymous is None:
            anonymous = self._build_keys(None, ip)
            if len(self._anonymous_keys) >= KEY_CACHE_SIZE:
                self._anonymous_keys.clear()
            self._anonymous_keys[ip] = anonymous
        return anonymous

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
        keys = self.keys(ex)
        now = self._clock.monotonic()
        admitted = fast.admit(keys, now)
        if admitted is None:  # refused: every limit's result, to report the deciding one
            return self._decide(ex, fast.details(keys, now))
        if self._headers:
            i, remaining, reset = admitted
            t = math.ceil(reset - _CEIL_SLACK)
            headers = ex.response_headers
            headers.append(self._policy_header)
            headers.append(
                ("ratelimit", f"{self._state_prefix[i]}{remaining};t={t if t > 0 else 0}")
            )
        return None

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
            ex.annotations["ratelimit_shadow"] = worst_lim.description
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
