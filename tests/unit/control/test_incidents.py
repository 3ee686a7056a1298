"""Incident actions over HTTP: one call revokes every key and token of an application and
pushes it; IP blocks for a duration. Attacks: a stale login (step-up), a developer, a /0."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.control.admin.records import Application, AuditQuery
from bastion.store.base import ApiKeyRecord
from tests.unit.control.harness import NOW, Harness, make_harness


@pytest.fixture
async def h() -> Harness:
    harness = make_harness()
    await harness.store.open()
    await harness.ctx.repo.create_application(
        Application(
            "billing",
            "Billing",
            1.0,
            owner="team-a",
            environment="production",
            risk_class="partner",
            data_classification="internal",
        )
    )
    for n in range(3):
        await harness.store.put_api_key(
            ApiKeyRecord(f"k{n}", "billing", "0" * 64, ("read",), 1.0, None)
        )
    await harness.store.revoke_api_key("k2", 2.0)  # already revoked: left alone
    return harness


async def _revoke(h: Harness, token: str, app: str = "billing") -> Any:
    async with h.client() as c:
        return await c.post(
            "/admin/v1/incidents/revoke-application",
            headers=h.auth(token),
            json={"application": app, "reason": "leaked in a public repo"},
        )


async def test_revoke_application_revokes_keys_and_tokens_and_pushes(h: Harness) -> None:
    r = await _revoke(h, h.token(sub="sec", roles=("security",)))
    assert r.status_code == 200
    assert r.json()["revoked_keys"] == ["k0", "k1"]
    for kid in ("k0", "k1"):
        key = await h.store.get_api_key(kid)
        assert key is not None
        assert key.revoked_at == NOW
    revs = await h.store.active_revocations(NOW)
    assert [(v.kind, v.value, v.not_before) for v in revs] == [
        ("subject", "billing", NOW),
        ("client", "billing", NOW),
    ]
    assert all(v.expires_at > NOW + 3600 for v in revs)
    types = [e["type"] for e in h.pushed]
    assert types == ["api_key.revoked", "api_key.revoked", "subject.revoked", "client.revoked"]
    entries = await h.ctx.repo.list_audit(AuditQuery(limit=10))
    assert len(entries) == 1
    assert entries[0].action == "incident.revoke_app"
    assert entries[0].before == {"active_keys": ["k0", "k1"]}


async def test_stale_login_cannot_revoke(h: Harness) -> None:
    token = h.token(roles=("owner",), auth_time=int(NOW) - 601)
    r = await _revoke(h, token)
    assert r.status_code == 401
    assert r.json()["code"] == "admin.step_up_required"
    assert 'max_age="600"' in r.headers["www-authenticate"]
    key = await h.store.get_api_key("k0")
    assert key is not None
    assert key.revoked_at is None
    assert h.pushed == []
    entries = await h.ctx.repo.list_audit(AuditQuery(limit=10))
    assert [(e.outcome, e.action) for e in entries] == [("denied", "incident.revoke_app")]
    r = await _revoke(h, h.token(roles=("owner",), auth_time=None))
    assert r.status_code == 401  # no auth_time: fail closed


async def test_developer_and_auditor_cannot_revoke(h: Harness) -> None:
    for roles in (("developer",), ("auditor",)):
        r = await _revoke(h, h.token(sub="team-a", roles=roles))
        assert r.status_code == 403
    assert h.pushed == []


async def test_unknown_application_is_404(h: Harness) -> None:
    r = await _revoke(h, h.token(), app="nope")
    assert r.status_code == 404
    assert h.pushed == []


async def _block(h: Harness, body: dict[str, Any], token: str | None = None) -> Any:
    async with h.client() as c:
        return await c.post(
            "/admin/v1/incidents/block-ip", headers=h.auth(token or h.token()), json=body
        )


async def test_block_ip_for_a_duration(h: Harness) -> None:
    r = await _block(h, {"cidr": "203.0.113.9/24", "duration_seconds": 3600, "reason": "spray"})
    assert r.status_code == 201
    assert r.json() == {"cidr": "203.0.113.0/24", "until": NOW + 3600, "reason": "spray"}
    blocks = await h.store.active_ip_blocks(NOW)
    assert [(b.cidr, b.expires_at) for b in blocks] == [("203.0.113.0/24", NOW + 3600)]
    assert await h.store.active_ip_blocks(NOW + 3601) == []
    assert h.pushed == [
        {"type": "ip.blocked", "cidr": "203.0.113.0/24", "until": NOW + 3600, "reason": "spray"}
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"cidr": "0.0.0.0/0", "duration_seconds": 3600, "reason": ""},
        {"cidr": "::/0", "duration_seconds": 3600, "reason": ""},
        {"cidr": "10.0.0.0/7", "duration_seconds": 3600, "reason": ""},
        {"cidr": "not-an-ip", "duration_seconds": 3600, "reason": ""},
        {"cidr": "203.0.113.9", "duration_seconds": 10, "reason": ""},
        {"cidr": "203.0.113.9", "duration_seconds": 400 * 86400, "reason": ""},
        {"cidr": "203.0.113.9", "duration_seconds": "1h", "reason": ""},
        {"cidr": "203.0.113.9", "duration_seconds": 3600},
        {"cidr": "203.0.113.9", "duration_seconds": 3600, "reason": "", "permanent": True},
    ],
)
async def test_bad_blocks_are_refused(h: Harness, body: dict[str, Any]) -> None:
    r = await _block(h, body)
    assert r.status_code == 400
    assert await h.store.active_ip_blocks(NOW) == []
    assert h.pushed == []


async def test_block_needs_step_up(h: Harness) -> None:
    token = h.token(auth_time=int(NOW) - 3600)
    r = await _block(h, {"cidr": "203.0.113.9", "duration_seconds": 3600, "reason": ""}, token)
    assert r.status_code == 401
    assert await h.store.active_ip_blocks(NOW) == []


async def test_revoke_application_revokes_families_issued_to_its_client(h: Harness) -> None:
    """Families issued TO the application's OAuth client (any user) are revoked with their
    live last access token; another client's family of the same user is left alone."""
    from dataclasses import replace

    from bastion.authserver.oauth.repo import MemoryOAuthRepo
    from tests.unit.authserver.oauth.repo_contract import family

    oauth = MemoryOAuthRepo()
    h.ctx.oauth = oauth
    live = replace(family("f1", "u1"), client_id="billing", access_jti="j1", access_exp=NOW + 60)
    stale = replace(family("f2", "u2"), client_id="billing", access_jti="j2", access_exp=NOW - 1)
    other = replace(family("f3", "u1"), client_id="web", access_jti="j3", access_exp=NOW + 60)
    for n, fam in enumerate((live, stale, other)):
        await oauth.create_family(fam, f"{n}" * 64)
    r = await _revoke(h, h.token(sub="sec", roles=("security",)))
    assert r.status_code == 200
    assert (r.json()["revoked_refresh_families"], r.json()["revoked_access_jtis"]) == (2, 1)
    assert {f.id for f in oauth.families.values() if f.revoked_at is not None} == {"f1", "f2"}
    revs = await h.store.active_revocations(NOW)
    assert sorted((v.kind, v.value) for v in revs) == [
        ("client", "billing"),
        ("jti", "j1"),
        ("subject", "billing"),
    ]
    assert [e["type"] for e in h.pushed].count("token.revoked") == 1
    # Again: nothing left to revoke, and the call still succeeds.
    r = await _revoke(h, h.token(sub="sec", roles=("security",)))
    assert (r.json()["revoked_refresh_families"], r.json()["revoked_access_jtis"]) == (0, 0)


async def test_revoke_application_reaches_every_access_token_issued_to_it(h: Harness) -> None:
    """A node that applies the pushed events (or loads the store) refuses every access token
    whose ``client_id`` is the application and that was issued before the call, whoever its
    subject and whatever its jti, and still accepts tokens issued after it or to other clients.
    """
    from bastion.core.clock import ManualClock
    from bastion.core.revocation import RevocationState

    r = await _revoke(h, h.token(sub="sec", roles=("security",)))
    assert r.status_code == 200
    pushed = RevocationState(ManualClock(NOW))
    for event in h.pushed:
        pushed.apply(event)
    loaded = RevocationState(ManualClock(NOW))
    loaded.load(await h.store.active_revocations(NOW))
    for state in (pushed, loaded):
        # an older access token of a user logged in through the application (not the last one)
        assert state.is_client_revoked("billing", NOW - 600)
        assert not state.is_token_revoked(h.ctx.issuer, "alice", "old-jti", NOW - 600)
        assert state.is_client_revoked("billing", None)  # no iat: fail closed
        assert not state.is_client_revoked("billing", NOW + 1)
        assert not state.is_client_revoked("web", NOW - 600)
