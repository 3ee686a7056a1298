"""Property-level checks: the vulnerable example leaks SSN, card and hash (undeclared too) and
lets is_admin through on sign-up; the secure one does neither."""

from __future__ import annotations

from bastion.scan.checks.properties import (
    Properties,
    looks_like_card,
    luhn_ok,
    sensitive_fields,
    undeclared,
)
from tests.unit.scan.checks.conftest import Target, run_check


async def test_vulnerable_api_leaks_and_takes_is_admin(target: Target) -> None:
    async with target(True) as ctx:
        found = await run_check(Properties(), ctx)
    keys = {(f.operation, f.key) for f in found}
    assert ("GET /api/users/{user_id}", "sensitive-data") in keys
    assert ("GET /api/users/{user_id}", "undeclared-properties") in keys
    assert ("POST /api/users", "mass-assignment") in keys
    ma = next(f for f in found if f.key == "mass-assignment")
    assert "is_admin" in ma.detail


async def test_secure_api_gives_nothing(target: Target) -> None:
    async with target(False) as ctx:
        assert await run_check(Properties(), ctx) == []


def test_detectors() -> None:
    assert luhn_ok("4111111111111111")
    assert not luhn_ok("4111111111111112")
    assert sensitive_fields({"n": "Bob", "c": "4111 1111 1111 1111", "id": 7}) == ["c"]
    assert sensitive_fields({"user": {"ssn": "123-45-6789"}}) == ["ssn"]
    assert sensitive_fields({"total": 1234567890123, "status": "open"}) == []
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert undeclared({"a": 1, "b": 2}, schema) == ["b"]
    assert undeclared({"a": 1}, schema) == []


def test_cards_need_a_network_range_or_a_card_name() -> None:
    for card in ("4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"):
        assert looks_like_card(card)
    assert looks_like_card("4111-1111-1111-1111")
    assert luhn_ok("1234567812345670")  # Luhn-valid, but no network issues it
    assert not looks_like_card("1234567812345670")
    assert looks_like_card("1234567812345670", "card_number")
    assert sensitive_fields({"order_id": "1234567812345670"}) == []
    assert sensitive_fields({"card": "****1111", "password": "********"}) == []
