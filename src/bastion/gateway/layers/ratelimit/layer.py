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
from bastion.core.exchange import Exchange, Reply
from bastion.core.gcra import GcraResult
from bastion.errors import RateLimited
from bastion.gateway.layers.base import Layer
from bastion.gateway.layers.ratelimit.backend import Key, LimitSpec, RateLimitBackend
from bastion.gateway.layers.ratelimit.config import LimitConfig, RateLimitConfig

# Float noise must not turn an exact 2.0 s into "3"; far below any real wait.
_CEIL_SLACK = 1e-6


SyncCheck = Callable[[Sequence[LimitSpec], Sequence[Key], float], list[GcraResult]]


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
        self._policy = ", ".join(policy_item(f"l{i}", lim) for i, lim in enumerate(config.limits))

    @property
    def policy_header(self) -> str:
        """The precomputed ``RateLimit-Policy`` value ('' when the route has no limits)."""
        return self._policy

    async def on_request(self, ex: Exchange) -> Reply | None:
        """Check every limit at once; answer 429 when one refuses and the route enforces."""
        limits = self._limits
        if not limits:
            return None
        req = ex.request
        ip = req.client_ip or req.peer_ip  # transport sets client_ip; never count under ''
        p = ex.principal
        route = self._route
        keys: list[Key] = []
        for lim in limits:
            if lim.key == "route":
                keys.append((route, lim.index))
            elif lim.key == "principal" and p is not None:
                keys.append((route, lim.index, "sub", p.kind, p.issuer or "", p.subject))
            else:
                keys.append((route, lim.index, "ip", ip))
        now = self._clock.monotonic()
        # A backend that can answer without I/O (the in-memory one) is called directly: no
        # coroutine per request on the hot path.
        sync = self._sync_check
        if sync is not None:
            results = sync(self._specs, keys, now)
        else:
            results = await self._backend.check_many(self._specs, keys, now)
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
            ex.response_headers.append(("ratelimit-policy", self._policy))
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
