"""BOLA: user B reading user A's invoice is found by A's private values in B's answer; the
secure API (404 for another's object) gives nothing."""

from __future__ import annotations

from bastion.scan.checks.bola import Bola, private_values
from bastion.scan.model import Confidence
from tests.unit.scan.checks.conftest import Target, run_check


async def test_vulnerable_invoice_read_is_found(target: Target) -> None:
    async with target(True) as ctx:
        found = await run_check(Bola(), ctx)
    assert [f.operation for f in found] == ["GET /api/invoices/{invoice_id}"]
    assert found[0].confidence is Confidence.CERTAIN
    assert found[0].evidence[1].note == "as user_b"


async def test_secure_api_gives_nothing(target: Target) -> None:
    async with target(False) as ctx:
        assert await run_check(Bola(), ctx) == []


def test_private_values_ignore_what_both_users_share() -> None:
    mine = {"id": 4, "user_id": 2, "amount": 2099, "currency": "EUR", "paid": False}
    theirs = {"id": 7, "user_id": 3, "amount": 3099, "currency": "EUR", "paid": False}
    assert private_values(mine, theirs) == {"4", "2", "2099"}
    assert private_values(mine, mine) == set()
