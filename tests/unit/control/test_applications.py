"""Applications and the audit trail over HTTP, with the attacks: unknown fields (mass
assignment), bad enums, another team's application, oversized paging, audit tampering."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.control.harness import Harness, make_harness

APP: dict[str, Any] = {
    "id": "billing",
    "name": "Billing",
    "owner": "team-a",
    "contact": "billing@example.test",
    "environment": "production",
    "risk_class": "partner",
    "data_classification": "confidential",
    "allowed_scopes": ["invoices:read"],
}


@pytest.fixture
async def h() -> Harness:
    harness = make_harness()
    await harness.store.open()
    return harness


async def _create(h: Harness, body: dict[str, Any], token: str | None = None) -> Any:
    async with h.client() as c:
        return await c.post("/admin/v1/applications", headers=h.auth(token or h.token()), json=body)


async def test_create_get_list_update_and_one_audit_entry_each(h: Harness) -> None:
    r = await _create(h, APP)
    assert r.status_code == 201
    assert r.json()["owner"] == "team-a"
    assert (await h.store.get_client("billing")) is not None
    async with h.client() as c:
        auth = h.auth(h.token())
        assert (await c.get("/admin/v1/applications/billing", headers=auth)).json()[
            "name"
        ] == "Billing"
        listed = (await c.get("/admin/v1/applications", headers=auth)).json()
        assert [a["id"] for a in listed["items"]] == ["billing"]
        assert listed["next_cursor"] is None
        r = await c.patch(
            "/admin/v1/applications/billing", headers=auth, json={"risk_class": "internal"}
        )
        assert r.status_code == 200
        assert r.json()["risk_class"] == "internal"
        audit = (await c.get("/admin/v1/audit", headers=auth)).json()["items"]
    assert [e["action"] for e in audit] == ["apps.update", "apps.create"]
    update = audit[0]
    assert update["actor"] == "alice"
    assert update["target"] == {"type": "application", "id": "billing"}
    assert update["before"]["risk_class"] == "partner"
    assert update["after"]["risk_class"] == "internal"
    assert update["source_ip"] == "198.51.100.7"
    assert len(update["request_id"]) == 32


@pytest.mark.parametrize(
    "change",
    [
        {"created_at": 1.0},  # mass assignment of a server-set field
        {"is_admin": True},
        {"risk_class": "secret"},
        {"data_classification": "top"},
        {"id": "Bad Id"},
        {"name": ""},
        {"contact": "line\nbreak"},
        {"allowed_scopes": ["a", "a"]},
        {"allowed_scopes": "read"},
    ],
)
async def test_bad_bodies_are_refused(h: Harness, change: dict[str, Any]) -> None:
    r = await _create(h, {**APP, **change})
    assert r.status_code == 400
    assert r.json()["code"] == "openapi.invalid_request"
    assert "billing@example" not in r.text  # the rule is named, never the value
    assert await h.store.get_client("billing") is None


async def test_body_transport_attacks(h: Harness) -> None:
    auth = h.auth(h.token())
    async with h.client() as c:
        r = await c.post("/admin/v1/applications", headers=auth, content=b"{not json")
        assert r.status_code == 415  # no JSON content type
        hdr = {**auth, "content-type": "application/json"}
        r = await c.post("/admin/v1/applications", headers=hdr, content=b"{not json")
        assert r.status_code == 400
        r = await c.post("/admin/v1/applications", headers=hdr, content=b"[1]")
        assert r.status_code == 400
        r = await c.post("/admin/v1/applications", headers=hdr, content=b" " * 70_000)
        assert r.status_code == 413
        r = await c.request("GET", "/admin/v1/me", headers=hdr, content=b"{}")
        assert r.status_code == 400
        r = await c.patch("/admin/v1/applications/billing", headers=auth, json={})
        assert r.status_code == 400  # nothing to change is an error, not a silent no-op


async def test_developer_sees_only_its_own_applications(h: Harness) -> None:
    await _create(h, APP)
    await _create(h, {**APP, "id": "crm", "owner": "team-b"})
    dev = h.auth(h.token(sub="dev-1", roles=("developer",), groups=["team-b"]))
    async with h.client() as c:
        listed = (await c.get("/admin/v1/applications", headers=dev)).json()["items"]
        assert [a["id"] for a in listed] == ["crm"]
        assert (await c.get("/admin/v1/applications/crm", headers=dev)).status_code == 200
        other = await c.get("/admin/v1/applications/billing", headers=dev)
        assert other.status_code == 404  # another team's: indistinguishable from absent
        assert other.json()["code"] == "admin.not_found"
        r = await c.patch("/admin/v1/applications/crm", headers=dev, json={"owner": "dev-1"})
        assert r.status_code == 403  # developers do not change applications


async def test_paging_is_bounded_and_strict(h: Harness) -> None:
    for n in range(5):
        await _create(h, {**APP, "id": f"app-{n}"})
    auth = h.auth(h.token())
    async with h.client() as c:
        first = (await c.get("/admin/v1/applications?limit=2", headers=auth)).json()
        assert [a["id"] for a in first["items"]] == ["app-0", "app-1"]
        second = await c.get(
            f"/admin/v1/applications?limit=2&cursor={first['next_cursor']}", headers=auth
        )
        assert [a["id"] for a in second.json()["items"]] == ["app-2", "app-3"]
        for query in (
            "limit=201",
            "limit=0",
            "limit=-1",
            "limit=1e9",
            "limit=99999999999999999999999",
            "limit=2&limit=3",
            "cursor=abc",
            "sort=name",
            "owner=team-a",
        ):
            r = await c.get(f"/admin/v1/applications?{query}", headers=auth)
            assert r.status_code == 400, query
        page = (await c.get("/admin/v1/audit?limit=2", headers=auth)).json()
        assert len(page["items"]) == 2
        nxt = (
            await c.get(f"/admin/v1/audit?limit=2&cursor={page['next_cursor']}", headers=auth)
        ).json()
        assert nxt["items"][0]["id"] < page["items"][-1]["id"]
        assert (await c.get("/admin/v1/audit?limit=1000", headers=auth)).status_code == 400


async def test_audit_cannot_be_changed_through_the_api(h: Harness) -> None:
    await _create(h, APP)
    auth = h.auth(h.token())
    async with h.client() as c:
        for method in ("DELETE", "PUT", "PATCH", "POST"):
            r = await c.request(method, "/admin/v1/audit", headers=auth)
            assert r.status_code == 405
            assert r.headers["allow"] == "GET"
        r = await c.delete("/admin/v1/audit/1", headers=auth)
        assert r.status_code == 404
        items = (await c.get("/admin/v1/audit", headers=auth)).json()["items"]
    assert len(items) == 1


async def test_audit_filters_and_auditor_reads_it(h: Harness) -> None:
    await _create(h, APP)
    await _create(h, {**APP, "id": "crm"}, token=h.token(sub="bob", roles=("admin",)))
    await _create(h, {**APP, "id": "x"}, token=h.token(sub="carol", roles=("auditor",)))
    auditor = h.auth(h.token(sub="carol", roles=("auditor",)))
    async with h.client() as c:
        by_bob = (await c.get("/admin/v1/audit?actor=bob", headers=auditor)).json()["items"]
        assert [e["target"]["id"] for e in by_bob] == ["crm"]
        denied = (await c.get("/admin/v1/audit?outcome=denied", headers=auditor)).json()["items"]
        assert [e["actor"] for e in denied] == ["carol"]
        target = (await c.get("/admin/v1/audit?target=billing", headers=auditor)).json()["items"]
        assert len(target) == 1
        assert (await c.get("/admin/v1/audit?outcome=maybe", headers=auditor)).status_code == 400
        dev = h.auth(h.token(sub="d", roles=("developer",)))
        assert (await c.get("/admin/v1/audit", headers=dev)).status_code == 403


async def test_openapi_document_is_served(h: Harness) -> None:
    async with h.client() as c:
        r = await c.get("/admin/v1/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    assert all(
        op["security"] == [{"adminToken": []}]
        for item in doc["paths"].values()
        for op in item.values()
    )


async def test_unknown_paths_and_bad_path_values(h: Harness) -> None:
    auth = h.auth(h.token())
    async with h.client() as c:
        assert (await c.get("/admin/v1/nothing", headers=auth)).status_code == 404
        assert (await c.get("/admin/v1/applications/a%0Ab", headers=auth)).status_code == 404
        r = await c.get("/admin/v1/applications/" + "a" * 300, headers=auth)
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"


async def test_store_outage_is_a_503(h: Harness) -> None:
    h.store.set_unavailable(True)
    r = await _create(h, APP)
    assert r.status_code == 503
    assert r.json()["code"] == "store.unavailable"


async def test_a_legacy_client_needs_all_metadata_to_be_updated(h: Harness) -> None:
    from bastion.store.base import ClientRecord

    await h.store.put_client(ClientRecord("legacy", "Legacy", 1.0))
    auth = h.auth(h.token())
    async with h.client() as c:
        r = await c.patch("/admin/v1/applications/legacy", headers=auth, json={"owner": "team-a"})
        assert r.status_code == 400
        full = {k: v for k, v in APP.items() if k not in ("id", "name")}
        r = await c.patch("/admin/v1/applications/legacy", headers=auth, json=full)
        assert r.status_code == 200
        assert r.json()["owner"] == "team-a"
        assert r.json()["name"] == "Legacy"


async def test_time_filters_are_numbers(h: Harness) -> None:
    await _create(h, APP)
    auth = h.auth(h.token())
    async with h.client() as c:
        r = await c.get("/admin/v1/audit?since=1699999999.5&until=1700000001", headers=auth)
        assert len(r.json()["items"]) == 1
        for bad in ("since=yesterday", "since=1e3", "until=-1"):
            assert (await c.get(f"/admin/v1/audit?{bad}", headers=auth)).status_code == 400


async def test_a_failing_handler_is_an_opaque_500() -> None:
    from bastion.control.admin.app import AdminApi
    from bastion.control.admin.service import AdminContext, Call

    h = make_harness()
    await h.store.open()

    async def broken(ctx: AdminContext, call: Call) -> Any:
        raise RuntimeError("secret internals")

    api = AdminApi(h.ctx, h.api.verifier, {"me.get": broken})
    h.api = api
    async with h.client() as c:
        r = await c.get("/admin/v1/me", headers=h.auth(h.token()))
        doc = (await c.get("/admin/v1/openapi.json")).json()
    assert r.status_code == 500
    assert r.json()["code"] == "internal.error"
    assert "secret internals" not in r.text
    assert list(doc["paths"]) == ["/admin/v1/me"]  # only served operations are documented
