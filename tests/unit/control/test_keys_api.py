"""API-key endpoints over HTTP on KEYLIFE's KeyService. Attacks: a developer reaching another
team's keys (indistinguishable from a missing key), scopes beyond the application's, a stale
login rotating or revoking, the secret leaking into lists or the audit trail."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bastion.control.admin.records import Application, AuditQuery
from bastion.core.apikeys import parse_api_key, secret_matches
from tests.unit.control.harness import NOW, Harness, make_harness

DAY = 86400


@pytest.fixture
async def h() -> Harness:
    harness = make_harness()
    await harness.store.open()
    for app_id, owner in (("billing", "team-a"), ("crm", "team-b")):
        await harness.ctx.repo.create_application(
            Application(
                app_id,
                app_id,
                1.0,
                owner=owner,
                environment="production",
                risk_class="partner",
                data_classification="internal",
                allowed_scopes=("read", "write"),
            )
        )
    return harness


def dev(h: Harness, **claims: Any) -> dict[str, str]:
    return h.auth(h.token(sub="dev-1", roles=("developer",), groups=["team-a"], **claims))


async def _create(h: Harness, app: str, headers: dict[str, str], **body: Any) -> Any:
    async with h.client() as c:
        return await c.post(f"/admin/v1/applications/{app}/keys", headers=headers, json=body)


async def test_developer_creates_a_key_for_its_application_secret_shown_once(h: Harness) -> None:
    r = await _create(h, "billing", dev(h), scopes=["read"], name="ci")
    assert r.status_code == 201
    body = r.json()
    secret = body["secret"]
    parsed = parse_api_key(secret)
    assert parsed is not None
    rec = await h.store.get_api_key(body["id"])
    assert rec is not None
    assert secret_matches(b"p" * 32, parsed[1], rec.secret_hash)
    assert body["owner"] == "team-a"
    assert body["expires_at"] == NOW + 180 * DAY
    async with h.client() as c:
        listed = await c.get("/admin/v1/applications/billing/keys", headers=dev(h))
        audit = await c.get("/admin/v1/audit", headers=h.auth(h.token(roles=("auditor",))))
    assert listed.status_code == 200
    assert [k["id"] for k in listed.json()["items"]] == [body["id"]]
    stored = orjson.dumps([e.public() for e in await h.ctx.repo.list_audit(AuditQuery(limit=9))])
    for text in (listed.text, audit.text, stored.decode()):
        assert secret not in text
        assert parsed[1] not in text
    assert [e["action"] for e in audit.json()["items"]] == ["keys.create"]


async def test_developer_cannot_reach_another_teams_keys(h: Harness) -> None:
    other = (await _create(h, "crm", h.auth(h.token()), scopes=["read"])).json()
    r = await _create(h, "crm", dev(h), scopes=["read"])
    assert r.status_code == 404
    async with h.client() as c:
        listed = await c.get("/admin/v1/applications/crm/keys", headers=dev(h))
        assert listed.status_code == 404
        theirs = await c.post(
            f"/admin/v1/keys/{other['id']}/revoke", headers=dev(h), json={"reason": ""}
        )
        missing = await c.post(
            "/admin/v1/keys/aaaaaaaaaaaaaaaa/revoke", headers=dev(h), json={"reason": ""}
        )
        rotate = await c.post(f"/admin/v1/keys/{other['id']}/rotate", headers=dev(h), json={})
    assert theirs.status_code == missing.status_code == rotate.status_code == 404
    assert theirs.json() == {**missing.json(), "instance": theirs.json()["instance"]}
    rec = await h.store.get_api_key(other["id"])
    assert rec is not None
    assert rec.revoked_at is None


async def test_scopes_beyond_the_application_are_refused(h: Harness) -> None:
    r = await _create(h, "billing", h.auth(h.token()), scopes=["admin"])
    assert r.status_code == 400
    r = await _create(h, "billing", h.auth(h.token()), scopes=["read"], expires_in_days=181)
    assert r.status_code == 400
    r = await _create(h, "billing", h.auth(h.token()), scopes=["read"], secret="mine")
    assert r.status_code == 400
    assert await h.store.list_api_keys("billing") == []


async def test_rotate_gives_the_old_key_a_grace_period(h: Harness) -> None:
    old = (await _create(h, "billing", dev(h), scopes=["read"])).json()
    h.clock.advance(10)
    async with h.client() as c:
        r = await c.post(
            f"/admin/v1/keys/{old['id']}/rotate", headers=dev(h), json={"grace_days": 2}
        )
    assert r.status_code == 201
    body = r.json()
    assert body["successor"]["secret"].startswith("bsk_")
    assert body["successor"]["rotated_from"] == old["id"]
    assert body["previous"]["expires_at"] == NOW + 10 + 2 * DAY
    entries = await h.ctx.repo.list_audit(AuditQuery(limit=1))
    assert entries[0].action == "keys.rotate"
    assert body["successor"]["secret"] not in orjson.dumps(entries[0].public()).decode()


async def test_rotate_and_revoke_need_a_recent_login(h: Harness) -> None:
    key = (await _create(h, "billing", dev(h), scopes=["read"])).json()
    stale = dev(h, auth_time=int(NOW) - 3600)
    async with h.client() as c:
        r1 = await c.post(f"/admin/v1/keys/{key['id']}/rotate", headers=stale, json={})
        r2 = await c.post(f"/admin/v1/keys/{key['id']}/revoke", headers=stale, json={"reason": ""})
    assert r1.status_code == r2.status_code == 401
    assert r1.json()["code"] == "admin.step_up_required"
    assert len(await h.store.list_api_keys("billing")) == 1


async def test_security_revokes_at_once_and_pushes(h: Harness) -> None:
    key = (await _create(h, "billing", h.auth(h.token()), scopes=["read"])).json()
    h.pushed.clear()
    sec = h.auth(h.token(sub="sec", roles=("security",)))
    async with h.client() as c:
        r = await c.post(f"/admin/v1/keys/{key['id']}/revoke", headers=sec, json={"reason": "leak"})
        assert r.status_code == 200
        assert r.json()["state"] == "revoked"
        again = await c.post(f"/admin/v1/keys/{key['id']}/revoke", headers=sec, json={"reason": ""})
        assert again.status_code == 409
        create = await c.post("/admin/v1/applications/billing/keys", headers=sec, json={})
        assert create.status_code == 403  # security may revoke, not create
    assert [e["type"] for e in h.pushed] == ["api_key.revoked"]


async def test_expired_and_warning_states_show_in_the_list(h: Harness) -> None:
    await _create(h, "billing", h.auth(h.token()), scopes=["read"], expires_in_days=100)
    h.clock.advance(91 * DAY)
    async with h.client() as c:
        token = h.auth(h.token())
        states = [
            k["state"]
            for k in (await c.get("/admin/v1/applications/billing/keys", headers=token)).json()[
                "items"
            ]
        ]
        assert states == ["warning"]
        h.clock.advance(10 * DAY)
        token = h.auth(h.token())
        states = [
            k["state"]
            for k in (await c.get("/admin/v1/applications/billing/keys", headers=token)).json()[
                "items"
            ]
        ]
    assert states == ["expired"]


async def test_auditor_and_developer_reads_all_but_writes_only_its_own(h: Harness) -> None:
    both = h.auth(h.token(sub="dev-2", roles=("auditor", "developer"), groups=["team-a"]))
    async with h.client() as c:
        listed = (await c.get("/admin/v1/applications", headers=both)).json()["items"]
        assert [a["id"] for a in listed] == ["billing", "crm"]  # auditor: reads everything
        assert (await c.get("/admin/v1/applications/crm/keys", headers=both)).status_code == 200
    r = await _create(h, "crm", both, scopes=["read"])
    assert r.status_code == 404  # writing keys comes from developer alone: own apps only
    r = await _create(h, "billing", both, scopes=["read"])
    assert r.status_code == 201
