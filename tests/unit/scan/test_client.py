"""The scan client: origin lock, budget, body cap, timeouts, rate parsing."""

from __future__ import annotations

import httpx
import pytest

from bastion.scan.client import Budget, RateLimiter, ScanClient, origin_of, parse_rate
from bastion.scan.errors import BudgetExhausted, OffOrigin, RequestFailed, ScanUsageError


def _client(handler: object, **kw: object) -> ScanClient:
    return ScanClient(
        "http://api.test/base",
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
        rate=1000.0,
        **kw,  # type: ignore[arg-type]
    )


def test_origin_and_rate_parsing() -> None:
    assert origin_of("HTTPS://Api.Example/x") == "https://api.example:443"
    assert origin_of("http://[::1]:8080/") == "http://[::1]:8080"
    with pytest.raises(ValueError, match="not an http"):
        origin_of("ftp://x")
    assert parse_rate("20/s") == 20
    assert parse_rate("600/min") == 10
    assert parse_rate("5") == 5
    for bad in ("fast", "0/s", "-1/s", "20/h", "99999/s"):
        with pytest.raises(ScanUsageError):
            parse_rate(bad)


def test_budget() -> None:
    b = Budget(2)
    b.spend()
    b.spend()
    assert b.remaining == 0
    with pytest.raises(BudgetExhausted):
        b.spend()
    with pytest.raises(ScanUsageError):
        Budget(0)


def test_bad_targets() -> None:
    with pytest.raises(ScanUsageError):
        ScanClient("api.test")
    with pytest.raises(ScanUsageError):
        ScanClient("http://api.test/?q=1")


async def test_requests_stay_on_origin_and_spend_budget() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"ok": True})

    client = _client(handler, budget=2)
    reply = await client.request("GET", "/x", params={"a": "1"})
    assert reply.ok
    assert reply.json() == {"ok": True}
    assert seen == ["http://api.test/base/x?a=1"]
    for url in (
        "http://evil.test/x",
        "https://api.test/base/x",
        "http://api.test:81/x",
        "file:///etc/passwd",
    ):
        with pytest.raises(OffOrigin):
            await client.request("GET", url)
    await client.request("POST", "/y", json=None)  # JSON null is a body
    with pytest.raises(BudgetExhausted):
        await client.request("GET", "/z")
    assert len(seen) == 2
    await client.aclose()


async def test_redirects_followed_only_on_origin_and_when_asked() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/base/hop":
            return httpx.Response(302, headers={"location": "/base/end"})
        if request.url.path == "/base/away":
            return httpx.Response(307, headers={"location": "http://evil.test/"})
        return httpx.Response(200, text=request.method)

    client = _client(handler)
    assert (await client.request("GET", "/hop")).status == 302
    followed = await client.request("POST", "/hop", follow_redirects=True)
    assert followed.status == 200
    assert followed.text == "GET"
    with pytest.raises(OffOrigin):
        await client.request("GET", "/away", follow_redirects=True)
    await client.aclose()


async def test_body_cap_and_failures() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/slow"):
            raise httpx.ReadTimeout("slow", request=request)
        if request.url.path.endswith("/reset"):
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, content=b"x" * 5000)

    client = _client(handler, max_body=1000)
    big = await client.request("GET", "/big")
    assert big.truncated
    assert len(big.body) == 1000
    with pytest.raises(RequestFailed) as slow:
        await client.request("GET", "/slow")
    assert slow.value.timed_out
    with pytest.raises(RequestFailed) as reset:
        await client.request("GET", "/reset")
    assert not reset.value.timed_out
    await client.aclose()


async def test_rate_limiter_hands_out_the_burst_then_waits() -> None:
    """A fake clock: two requests go at once (the burst), the third waits 1/rate seconds."""
    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(10.0, burst=2, clock=lambda: now[0], sleep=fake_sleep)
    await limiter.acquire()
    await limiter.acquire()
    assert slept == []
    await limiter.acquire()
    assert slept == [pytest.approx(0.1)]
    now[0] += 10  # a long pause refills only up to the burst
    for _ in range(2):
        await limiter.acquire()
    assert len(slept) == 1
