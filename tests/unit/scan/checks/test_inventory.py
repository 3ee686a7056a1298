"""Inventory: /debug and /api/v1/users/{id} are found on the vulnerable example; the secure
one answers its ordinary 404 to every guess."""

from __future__ import annotations

from bastion.scan.checks.inventory import Inventory, version_variants
from tests.unit.scan.checks.conftest import Target, run_check


async def test_vulnerable_shadow_endpoints_are_found(target: Target) -> None:
    async with target(True) as ctx:
        found = await run_check(Inventory(), ctx)
    assert {f.key for f in found} == {"endpoint:/debug", "version:/api/v1/users/{user_id}"}


async def test_secure_api_gives_nothing(target: Target) -> None:
    async with target(False) as ctx:
        assert await run_check(Inventory(), ctx) == []


def test_version_variants() -> None:
    assert version_variants("/api/users/2") == [
        "/api/v1/users/2",
        "/api/v2/users/2",
        "/api/v0/users/2",
    ]
    assert version_variants("/v2/users") == ["/v0/users", "/v1/users", "/v3/users"]
