"""SSRF: the vulnerable webhook test fetches the canary; the secure one refuses the URL."""

from __future__ import annotations

from bastion.scan.checks.ssrf import Ssrf
from tests.unit.scan.checks.conftest import SPEC, Target, run_check


async def test_vulnerable_webhook_fetches_the_canary(target: Target) -> None:
    async with target(True) as ctx:
        found = await run_check(Ssrf(), ctx)
    assert [(f.operation, f.key) for f in found] == [("POST /api/webhooks/test", "ssrf:url")]


async def test_secure_webhook_does_not(target: Target) -> None:
    async with target(False) as ctx:
        assert await run_check(Ssrf(), ctx) == []


def test_only_url_like_fields_are_tried() -> None:
    assert [op.label for op in SPEC.operations if Ssrf().applies_to(op)] == [
        "POST /api/webhooks/test"
    ]
