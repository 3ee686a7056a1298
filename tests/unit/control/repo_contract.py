"""The :class:`ControlRepo` contract, run against every backend (memory and SQLite here,
PostgreSQL in tests/integration/control)."""

from __future__ import annotations

import pytest

from bastion.control.admin.errors import AdminConflict
from bastion.control.admin.records import Application, AuditEntry, AuditQuery
from bastion.control.admin.repo import control_repo
from bastion.store.base import ClientRecord, Store


def app(app_id: str = "billing", owner: str = "team-a") -> Application:
    return Application(
        id=app_id,
        name="Billing",
        created_at=10.0,
        owner=owner,
        contact="billing@example.test",
        environment="production",
        risk_class="partner",
        data_classification="confidential",
        allowed_scopes=("invoices:read",),
        updated_at=10.0,
    )


def entry(n: int, **kw: object) -> AuditEntry:
    base: dict[str, object] = {
        "at": float(n),
        "actor": "alice" if n % 2 else "bob",
        "action": "apps.create",
        "target_type": "application",
        "target_id": f"app-{n}",
        "outcome": "success",
        "source_ip": "198.51.100.7",
        "request_id": f"req-{n}",
        "before": None,
        "after": {"id": f"app-{n}"},
    }
    base.update(kw)
    return AuditEntry(**base)  # type: ignore[arg-type]


async def check_applications(store: Store) -> None:
    repo = control_repo(store)
    await repo.create_application(app())
    with pytest.raises(AdminConflict):
        await repo.create_application(app())
    got = await repo.get_application("billing")
    assert got == app()
    assert (await store.get_client("billing")) is not None  # the client row API keys reference
    # A client made before the control plane has no metadata and no owner.
    await store.put_client(ClientRecord("legacy", "Legacy", 5.0))
    legacy = await repo.get_application("legacy")
    assert legacy is not None
    assert legacy.owner is None
    assert [a.id for a in await repo.list_applications()] == ["billing", "legacy"]
    updated = app(owner="team-b")
    assert await repo.update_application(updated)
    assert (await repo.get_application("billing")) == updated
    assert not await repo.update_application(app("nope"))
    assert await repo.get_application("nope") is None


async def check_audit(store: Store) -> None:
    repo = control_repo(store)
    ids = [await repo.append_audit(entry(n)) for n in range(1, 8)]
    assert ids == sorted(ids)
    newest = await repo.list_audit(AuditQuery(limit=3))
    assert [e.target_id for e in newest] == ["app-7", "app-6", "app-5"]
    assert newest[0].after == {"id": "app-7"}
    assert newest[0].source_ip == "198.51.100.7"
    rest = await repo.list_audit(AuditQuery(limit=10, before_id=newest[-1].id))
    assert [e.target_id for e in rest] == ["app-4", "app-3", "app-2", "app-1"]
    alice = await repo.list_audit(AuditQuery(limit=10, actor="alice"))
    assert {e.actor for e in alice} == {"alice"}
    assert len(alice) == 4
    window = await repo.list_audit(AuditQuery(limit=10, since=3.0, until=5.0))
    assert [e.target_id for e in window] == ["app-4", "app-3"]
    one = await repo.list_audit(AuditQuery(limit=10, target_id="app-2", outcome="success"))
    assert [e.request_id for e in one] == ["req-2"]
    assert await repo.list_audit(AuditQuery(limit=10, action="keys.revoke")) == []
