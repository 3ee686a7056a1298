"""Login protection: enumeration, default credentials and no lockout are found on the vulnerable
example; the secure one (one answer for every failure, lockout after five) gives nothing."""

from __future__ import annotations

from bastion.scan.checks.login import Login
from bastion.scan.model import Severity
from tests.unit.scan.checks.conftest import Target, run_check


async def test_vulnerable_login_is_weak_three_ways(target: Target) -> None:
    async with target(True) as ctx:
        found = await run_check(Login(), ctx)
        created = [o.path for o in ctx.ledger.objects]
    by_key = {f.key: f for f in found}
    assert set(by_key) == {"user-enumeration", "default-credentials", "no-lockout"}
    assert by_key["default-credentials"].owasp == "API8"
    assert by_key["default-credentials"].severity is Severity.CRITICAL
    assert "admin/*****" in by_key["default-credentials"].detail
    assert created == ["/api/users/11"]  # the burst hit the scanner's own account


async def test_secure_login_gives_nothing(target: Target) -> None:
    async with target(False) as ctx:
        assert await run_check(Login(), ctx) == []
        assert ctx.skips == []  # everything ran: the lockout stopped the burst
