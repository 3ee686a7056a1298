"""BFLA: Bob creates invoices and deletes a user the scanner created (vulnerable); the secure
API answers 403 while the admin reference works."""

from __future__ import annotations

from bastion.scan.checks.bfla import Bfla
from bastion.scan.model import Confidence
from tests.unit.scan.checks.conftest import Target, run_check


async def test_vulnerable_admin_operations_work_for_users(target: Target) -> None:
    async with target(True) as ctx:
        found = await run_check(Bfla(), ctx)
        deleted = [o.path for o in ctx.ledger.objects if o.deleted]
    assert {(f.operation, f.key) for f in found} == {
        ("POST /api/invoices", "post"),
        ("DELETE /api/users/{user_id}", "delete"),
    }
    assert all(f.confidence is Confidence.CERTAIN for f in found)
    assert deleted == ["/api/users/11", "/api/users/12"]  # only what the scanner created


async def test_secure_api_gives_nothing(target: Target) -> None:
    async with target(False) as ctx:
        assert await run_check(Bfla(), ctx) == []
