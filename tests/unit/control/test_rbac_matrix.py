"""The RBAC matrix: every operation of the admin API against every role.

The expected matrix is written out here by hand, independently of ``roles.PERMISSIONS``: a
change to the table must change this test too. Each cell is also exercised over HTTP: a role
outside the cell gets 403 (and a ``denied`` audit entry), a role inside it gets past the
authorization step.
"""

from __future__ import annotations

from typing import Any

import pytest

from bastion.control.admin import HANDLERS
from bastion.control.admin.records import Application, AuditQuery
from bastion.control.admin.roles import ADMIN_ROLES, DESTRUCTIVE, PERMISSIONS, allowed
from bastion.control.admin.spec import OPERATIONS, openapi_document
from tests.unit.control.harness import make_harness

OW, A, S, U, D = "owner", "admin", "security", "auditor", "developer"
EXPECTED: dict[str, set[str]] = {
    "me.get": {OW, A, S, U, D},
    "apps.list": {OW, A, S, U, D},
    "apps.get": {OW, A, S, U, D},
    "apps.create": {OW, A},
    "apps.update": {OW, A},
    "keys.list": {OW, A, S, U, D},
    "keys.create": {OW, A, D},
    "keys.rotate": {OW, A, D},
    "keys.revoke": {OW, A, S, D},
    "users.list": {OW, A, S, U},
    "users.get": {OW, A, S, U},
    "users.invite": {OW, A},
    "users.set_roles": {OW, A},
    "users.disable": {OW, A, S},
    "users.enable": {OW, A},
    "users.reset_mfa": {OW, A},
    "incident.revoke_app": {OW, A, S},
    "incident.block_ip": {OW, A, S},
    "audit.list": {OW, A, S, U},
}

#: A request per operation that a permitted role can make (path values filled in).
SAMPLES: dict[str, tuple[str, Any]] = {
    "me.get": ("/me", None),
    "apps.list": ("/applications", None),
    "apps.create": (
        "/applications",
        {
            "id": "new-app",
            "name": "New",
            "owner": "team-a",
            "contact": "a@example.test",
            "environment": "production",
            "risk_class": "partner",
            "data_classification": "internal",
        },
    ),
    "apps.get": ("/applications/app-a", None),
    "apps.update": ("/applications/app-a", {"contact": "b@example.test"}),
    "keys.list": ("/applications/app-a/keys", None),
    "keys.create": ("/applications/app-a/keys", {"scopes": ["read"]}),
    "keys.rotate": ("/keys/nokey/rotate", {}),
    "keys.revoke": ("/keys/nokey/revoke", {"reason": "test"}),
    "users.list": ("/users", None),
    "users.invite": ("/users", {"username": "newbie", "roles": ["auditor"]}),
    "users.get": ("/users/nouser", None),
    "users.set_roles": ("/users/nouser/roles", {"roles": ["auditor"]}),
    "users.disable": ("/users/nouser/disable", {"reason": "test"}),
    "users.enable": ("/users/nouser/enable", {"reason": "test"}),
    "users.reset_mfa": ("/users/nouser/reset-mfa", {"reason": "test"}),
    "incident.revoke_app": (
        "/incidents/revoke-application",
        {"application": "app-a", "reason": "x"},
    ),
    "incident.block_ip": (
        "/incidents/block-ip",
        {"cidr": "203.0.113.0/24", "duration_seconds": 3600, "reason": "x"},
    ),
    "audit.list": ("/audit", None),
}


def test_permission_table_is_the_expected_matrix() -> None:
    assert {k: set(v) for k, v in PERMISSIONS.items()} == EXPECTED
    assert {op.id for op in OPERATIONS} == set(EXPECTED)
    assert set(HANDLERS) == set(EXPECTED)  # every operation is served
    for op in EXPECTED:
        for role in ADMIN_ROLES:
            assert allowed({role}, op) == (role in EXPECTED[op])
    assert not allowed({OW}, "apps.delete")  # unknown operations: never
    assert set(EXPECTED) >= DESTRUCTIVE


def test_every_operation_declares_security_and_roles() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    seen = set()
    for item in doc["paths"].values():
        for op in item.values():
            assert op["security"] == [{"adminToken": []}]
            assert set(op["x-bastion-roles"]) == EXPECTED[op["operationId"]]
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                assert schema["additionalProperties"] is False
            seen.add(op["operationId"])
    assert seen == set(EXPECTED)


SERVED = [op for op in OPERATIONS if op.id in HANDLERS]


@pytest.mark.parametrize("role", ADMIN_ROLES)
@pytest.mark.parametrize("op", SERVED, ids=[op.id for op in SERVED])
async def test_matrix_over_http(op: Any, role: str) -> None:
    h = make_harness()
    await h.store.open()
    await h.ctx.repo.create_application(
        Application(
            "app-a",
            "A",
            1.0,
            owner="dev-1",
            environment="production",
            risk_class="partner",
            data_classification="internal",
        )
    )
    path, body = SAMPLES[op.id]
    token = h.token(sub="dev-1" if role == D else "someone", roles=(role,))
    async with h.client() as c:
        r = await c.request(op.method, "/admin/v1" + path, headers=h.auth(token), json=body)
    if role in EXPECTED[op.id]:
        assert r.status_code not in (401, 403), (op.id, role, r.text)
    else:
        assert r.status_code == 403, (op.id, role, r.text)
        entries = await h.ctx.repo.list_audit(AuditQuery(limit=5))
        assert entries[0].outcome == "denied"
        assert entries[0].action == op.id


def test_ownership_is_decided_per_operation() -> None:
    from bastion.control.admin.roles import needs_ownership

    assert needs_ownership({D}, "keys.create")
    assert needs_ownership({D}, "apps.list")
    assert needs_ownership({D, U}, "keys.create")
    assert not needs_ownership({D, U}, "apps.list")
    assert not needs_ownership({D, S}, "keys.revoke")
    assert not needs_ownership({A}, "keys.create")
    assert not needs_ownership({D, A}, "keys.rotate")
