"""BOLA: user B reading user A's invoice is found by A's private values in B's answer; the
secure API (404 for another's object) gives nothing."""

from __future__ import annotations

from typing import Any

import httpx

from bastion.scan.auth import parse_auth
from bastion.scan.checks.base import USER_A
from bastion.scan.checks.bola import Bola, private_values
from bastion.scan.model import Confidence
from bastion.scan.session import ScanOptions, open_session
from bastion.scan.spec import ScanSpec
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


async def test_writes_go_only_to_objects_user_a_created(
    spec: ScanSpec, auth: Any, transport: httpx.ASGITransport
) -> None:
    """The notes app (tests/unit/scan/conftest.py) checks no owner: user_b reads alice's note
    and deletes the one user_a created during the scan — and nothing else."""
    async with open_session(
        spec,
        "http://testserver",
        auth,
        ScanOptions(rate=1000.0, canary=False),
        transport=transport,
    ) as ctx:
        created = await ctx.send("POST", "/notes", identity=USER_A, json={"text": "mine"})
        assert created.status == 201
        found = await run_check(Bola(), ctx)
        ledger = [(o.path, o.deleted) for o in ctx.ledger.objects]
    assert {(f.operation, f.key) for f in found} == {
        ("GET /notes/{note_id}", "read"),
        ("DELETE /notes/{note_id}", "delete"),
    }
    assert ledger == [("/api/notes/101", True)]  # the only object written to


async def test_user_a_without_objects_creates_one_to_try(
    spec: ScanSpec, transport: httpx.ASGITransport
) -> None:
    """Bob owns no note: the check creates one as him, and Alice (user_b) reads it."""
    swapped = parse_auth(
        {
            "version": 1,
            "login": {"path": "/api/login", "token_path": "access_token"},
            "identities": {
                "user_a": {"id": "2", "login": {"username": "bob", "password": "bob-pass-456"}},
                "user_b": {"id": "1", "login": {"username": "alice", "password": "alice-pass-123"}},
            },
        }
    )
    async with open_session(
        spec,
        "http://testserver",
        swapped,
        ScanOptions(rate=1000.0, canary=False),
        transport=transport,
    ) as ctx:
        await Bola().run_operation(
            ctx, next(o for o in spec.operations if o.label == "GET /notes/{note_id}")
        )
        created = [(o.path, o.identity) for o in ctx.ledger.objects]
        found = list(ctx.findings)
    assert created == [("/api/notes/101", "user_a")]
    assert [(f.operation, f.key) for f in found] == [("GET /notes/{note_id}", "read")]
