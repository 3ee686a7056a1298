"""The scanner's HTTP client: locked to the target origin, budgeted, rate limited, timed out.

Every request of a scan — the checks' probes and the identities' logins — goes through one
:class:`ScanClient`, which

* refuses (:class:`~bastion.scan.errors.OffOrigin`, never sent) any URL whose scheme, host or
  port differ from the target's, except origins named explicitly (an OAuth token endpoint);
* never follows a redirect by itself; with ``follow_redirects=True`` it follows at most five,
  and only to the same origin;
* counts each request against a global budget (:class:`~bastion.scan.errors.BudgetExhausted`
  once spent) and spaces requests with a token bucket (``rate`` per second, bursts of
  ``rate``), with at most ``concurrency`` in flight;
* reads at most ``max_body`` bytes of an answer and gives up after ``timeout`` seconds
  (:class:`~bastion.scan.errors.RequestFailed`).

Answers come back as :class:`Reply`: plain values, body already read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from bastion.scan.errors import BudgetExhausted, OffOrigin, RequestFailed, ScanUsageError

__all__ = ["Budget", "RateLimiter", "Reply", "ScanClient", "origin_of", "parse_rate"]

MAX_REDIRECTS = 5
UNSET: Any = object()  # "no JSON body" (None is a JSON body: null)


def origin_of(url: str) -> str:
    """``scheme://host:port`` of ``url`` (default ports written out), lower case."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def parse_rate(text: str) -> float:
    """``"20/s"``, ``"600/min"`` or ``"20"`` → requests per second (ScanUsageError if bad)."""
    raw = text.strip().lower()
    count, _, unit = raw.partition("/")
    per = {
        "": 1.0,
        "s": 1.0,
        "sec": 1.0,
        "second": 1.0,
        "m": 60.0,
        "min": 60.0,
        "minute": 60.0,
    }.get(unit.strip())
    try:
        n = float(count)
    except ValueError:
        n = -1.0
    if per is None or not n > 0 or n > 10000:
        raise ScanUsageError(f"--rate: expected like 20/s or 600/min, not {text!r}")
    return n / per


class Budget:
    """How many requests the scan may still send."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ScanUsageError("--budget must be at least 1")
        self.limit = limit
        self.used = 0

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def spend(self) -> None:
        """Take one request from the budget, or raise BudgetExhausted."""
        if self.used >= self.limit:
            raise BudgetExhausted(f"the request budget of {self.limit} is spent")
        self.used += 1


class RateLimiter:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up. ``clock`` and
    ``sleep`` are injectable so the arithmetic is testable without waiting."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1.0 - 1e-9:  # float rounding must not mean one more wait
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return
                await self._sleep((1.0 - self._tokens) / self.rate)


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer and the request that got it. ``body`` holds at most the client's
    ``max_body`` bytes (``truncated`` says when more was sent); ``elapsed`` in seconds."""

    method: str
    url: str
    request_headers: tuple[tuple[str, str], ...]
    request_body: bytes
    status: int
    headers: httpx.Headers
    body: bytes
    elapsed: float
    identity: str = "anonymous"
    truncated: bool = False

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


class ScanClient:
    """See the module docstring. ``transport`` replaces the network (tests)."""

    def __init__(
        self,
        target: str,
        *,
        budget: int = 2000,
        rate: float = 20.0,
        timeout: float = 10.0,
        concurrency: int = 8,
        max_body: int = 1024 * 1024,
        extra_origins: tuple[str, ...] = (),
        verify: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        try:
            self.origin = origin_of(target)
        except ValueError:
            raise ScanUsageError(f"--target: expected an http(s):// URL, not {target!r}") from None
        parts = urlsplit(target)
        if parts.query or parts.fragment:
            raise ScanUsageError("--target: no query or fragment, just scheme://host[:port][/path]")
        self.prefix = parts.path.rstrip("/")
        self.base_url = target.rstrip("/")
        self.origins = frozenset({self.origin, *(origin_of(o) for o in extra_origins)})
        self.budget = Budget(budget)
        self.limiter = RateLimiter(rate)
        self.timeout = timeout
        self.max_body = max_body
        self._sem = asyncio.Semaphore(concurrency)
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
            verify=verify,
            transport=transport,
            trust_env=False,  # never route the scan through a proxy from the environment
            headers={"user-agent": "bastion-scan/1"},
        )

    def allow_origin(self, url: str) -> None:
        """Allow one more origin (an OAuth token endpoint named in scan-auth.yaml)."""
        self.origins = self.origins | {origin_of(url)}

    def url(self, path: str) -> str:
        """Absolute URL for ``path``: absolute URLs pass through, ``/x`` is relative to the
        target URL (its path prefix included)."""
        if "://" in path:
            return path
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    def check_origin(self, url: str) -> None:
        """Raise OffOrigin unless ``url`` is on an allowed origin."""
        try:
            origin = origin_of(url)
        except ValueError:
            raise OffOrigin(f"refused {url!r}: not an http(s) URL") from None
        if origin not in self.origins:
            raise OffOrigin(f"refused {url!r}: outside the target origin {self.origin}")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        json: Any = UNSET,
        data: dict[str, str] | None = None,
        content: bytes | str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the HTTP timeout
        follow_redirects: bool = False,
        identity: str = "anonymous",
    ) -> Reply:
        """Send one request (plus same-origin redirects when asked); see the module doc."""
        url = self.url(path)
        for _hop in range(MAX_REDIRECTS + 1):
            reply = await self._once(
                method, url, params, headers, json, data, content, timeout, identity
            )
            location = reply.headers.get("location")
            if (
                not follow_redirects
                or reply.status not in (301, 302, 303, 307, 308)
                or not location
            ):
                return reply
            url = urljoin(reply.url, location)
            self.check_origin(url)
            params = None
            if reply.status == 303 or (reply.status in (301, 302) and method != "HEAD"):
                method, json, data, content = "GET", UNSET, None, None
        return reply

    async def _once(
        self,
        method: str,
        url: str,
        params: Any,
        headers: Any,
        json: Any,
        data: Any,
        content: Any,
        timeout: float | None,  # noqa: ASYNC109 - the HTTP timeout
        identity: str,
    ) -> Reply:
        self.check_origin(url)
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if json is not UNSET:
            kwargs["content"] = orjson.dumps(json)
            hdrs = httpx.Headers(headers or {})
            if "content-type" not in hdrs:
                hdrs["content-type"] = "application/json"
            kwargs["headers"] = hdrs
        elif data is not None:
            kwargs["data"] = data
        elif content is not None:
            kwargs["content"] = content
        request = self._http.build_request(
            method.upper(),
            url,
            timeout=timeout if timeout is not None else self.timeout,
            **kwargs,
        )
        self.check_origin(str(request.url))
        self.budget.spend()
        await self.limiter.acquire()
        async with self._sem:
            start = time.monotonic()
            try:
                response = await self._http.send(request, stream=True)
                try:
                    chunks: list[bytes] = []
                    size = 0
                    truncated = False
                    async for chunk in response.aiter_bytes():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > self.max_body:
                            truncated = True
                            break
                finally:
                    await response.aclose()
            except httpx.TimeoutException:
                elapsed = time.monotonic() - start
                raise RequestFailed(
                    f"{method} {url}: no answer within {elapsed:.1f} s",
                    elapsed=elapsed,
                    timed_out=True,
                ) from None
            except httpx.HTTPError as exc:
                elapsed = time.monotonic() - start
                raise RequestFailed(
                    f"{method} {url}: {type(exc).__name__}: {exc}", elapsed=elapsed
                ) from None
            elapsed = time.monotonic() - start
        body = b"".join(chunks)[: self.max_body]
        return Reply(
            method=request.method,
            url=str(request.url),
            request_headers=tuple(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
            ),
            request_body=request.content if isinstance(request.stream, httpx.ByteStream) else b"",
            status=response.status_code,
            headers=response.headers,
            body=body,
            elapsed=elapsed,
            identity=identity,
            truncated=truncated,
        )

    async def aclose(self) -> None:
        await self._http.aclose()
