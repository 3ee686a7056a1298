"""Resource limits: the vulnerable example has no rate limit, takes limit=100000 and a 2 MiB
body, and backtracks on q; the secure one throttles, bounds, refuses and stays fast."""

from __future__ import annotations

from bastion.scan.checks.resources import Resources
from tests.unit.scan.checks.conftest import Target, run_check


async def test_vulnerable_api_has_no_limits(target: Target) -> None:
    async with target(True) as ctx:
        found = await run_check(Resources(), ctx)
    keys = {(f.operation, f.key) for f in found}
    assert ("GET /api/invoices", "rate-limit") in keys
    assert ("GET /api/invoices", "page-size:limit") in keys
    assert ("GET /api/invoices", "redos:q") in keys
    assert any(k == "body-size" for _, k in keys)


async def test_secure_api_gives_nothing(target: Target) -> None:
    async with target(False) as ctx:
        assert await run_check(Resources(), ctx) == []
