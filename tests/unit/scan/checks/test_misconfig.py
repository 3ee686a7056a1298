"""Misconfiguration: CORS reflection, tracebacks, version header and an undocumented DELETE on
the vulnerable example; none on the secure one."""

from __future__ import annotations

from bastion.scan.checks.bfla import Bfla
from bastion.scan.checks.misconfig import Misconfig, error_signature
from tests.unit.scan.checks.conftest import Target, run_check


async def test_vulnerable_api_is_misconfigured(target: Target) -> None:
    async with target(True) as ctx:
        await run_check(Bfla(), ctx)  # creates invoices the undocumented DELETE may use
        found = await run_check(Misconfig(), ctx)
    keys = {(f.operation, f.key) for f in found}
    assert (None, "cors-reflect") in keys
    assert (None, "version-header:x-runtime") in keys
    assert ("POST /api/invoices", "error-disclosure") in keys
    assert ("DELETE /api/invoices/{invoice_id}", "method:DELETE") in keys


async def test_secure_api_gives_nothing(target: Target) -> None:
    async with target(False) as ctx:
        await run_check(Bfla(), ctx)
        assert await run_check(Misconfig(), ctx) == []


def test_signatures() -> None:
    assert error_signature("Traceback (most recent call last):\n  File") == "python-traceback"
    assert error_signature("sqlite3.OperationalError: near") == "sql-error"
    assert error_signature('{"error": "internal"}') is None
