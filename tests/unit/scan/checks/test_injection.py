"""Injection: SQL on status, NoSQL on the login password and a time-based command injection on
the export filename (vulnerable); the secure example validates all three."""

from __future__ import annotations

from bastion.scan.checks.injection import Injection
from tests.unit.scan.checks.conftest import Target, run_check


async def test_vulnerable_injections_are_found(target: Target) -> None:
    async with target(True) as ctx:
        found = await run_check(Injection(), ctx)
    keys = {(f.operation, f.key) for f in found}
    assert ("GET /api/invoices", "sql:status") in keys
    assert ("POST /api/login", "nosql:password") in keys
    assert ("POST /api/exports", "command:filename") in keys


async def test_secure_api_gives_nothing(target: Target) -> None:
    async with target(False) as ctx:
        assert await run_check(Injection(), ctx) == []
