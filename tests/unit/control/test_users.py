"""Users and roles over HTTP against the real user service (memory store). Attacks: granting
owner without being one, demoting or disabling the last owner, a disabled user's token, a
token whose roles claim says more than the directory, a stale login."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bastion.authserver.users.service import UserService
from bastion.control.admin.records import AuditQuery
from tests.unit.control.harness import NOW, Harness, make_harness, with_users


class Env:
    def __init__(self, h: Harness, users: UserService) -> None:
        self.h = h
        self.users = users
        self.ids: dict[str, str] = {}
        self.disabled: list[str] = []

    async def add(self, username: str, *roles: str) -> str:
        user = await self.users.create_user(username, "a-long-enough-password", roles=roles)
        self.ids[username] = user.id
        return user.id

    def token(self, username: str, **claims: Any) -> str:
        return self.h.token(sub=self.ids[username], roles=("owner",), **claims)

    async def call(
        self, method: str, path: str, as_user: str, body: Any = None, **claims: Any
    ) -> Any:
        async with self.h.client() as c:
            return await c.request(
                method,
                "/admin/v1" + path,
                headers=self.h.auth(self.token(as_user, **claims)),
                json=body,
            )


@pytest.fixture
async def env() -> Env:
    h = make_harness()
    await h.store.open()
    users = await with_users(h)
    e = Env(h, users)

    async def hook(user_id: str) -> None:
        e.disabled.append(user_id)

    users.on_disable.append(hook)
    await e.add("olivia", "owner")
    await e.add("adam", "admin", "gateway-user")
    await e.add("sam", "security")
    await e.add("aude", "auditor")
    return e


async def test_invite_shows_the_password_once_and_never_audits_it(env: Env) -> None:
    r = await env.call(
        "POST",
        "/users",
        "adam",
        {"username": "Newbie", "roles": ["auditor"], "email": "n@example.test"},
    )
    assert r.status_code == 201
    body = r.json()
    password = body["one_time_password"]
    assert len(password) == 32
    assert body["username"] == "newbie"
    assert body["mfa_enrolled"] is False
    user = await env.users.find_user("newbie")
    assert user is not None
    assert user.roles == ("auditor",)
    entries = await env.h.ctx.repo.list_audit(AuditQuery(limit=10))
    dumped = orjson.dumps([e.public() for e in entries]).decode()
    assert password not in dumped
    assert "password" not in dumped
    assert "argon2" not in dumped
    got = await env.call("GET", f"/users/{user.id}", "aude")
    assert "one_time_password" not in got.json()
    assert password not in got.text
    again = await env.call("POST", "/users", "adam", {"username": "newbie", "roles": []})
    assert again.status_code == 409


async def test_an_invited_user_changes_the_one_time_password_at_first_login(env: Env) -> None:
    """The invitation's password gets the user only to the forced change page: no session
    the OAuth endpoints accept until a password of the user's own is set (then TOTP)."""
    from tests.unit.authserver.users.browser import Browser, csrf_of

    r = await env.call("POST", "/users", "adam", {"username": "nina", "roles": ["auditor"]})
    assert r.status_code == 201
    one_time = r.json()["one_time_password"]
    user = await env.users.find_user("nina")
    assert user is not None
    assert user.must_change_password
    browser = Browser(env.users)
    page = await browser.get("/login")
    form = {"csrf_token": csrf_of(page), "username": "nina", "password": one_time}
    assert (await browser.post("/login", form)).header("location") == "/password/change"
    assert await browser.current() is None
    page = await browser.get("/password/change")
    new = {
        "csrf_token": csrf_of(page),
        "new_password": "nina's own passphrase",
        "confirm_password": "nina's own passphrase",
    }
    # auditor needs MFA here: enrolment comes next, still not signed in.
    assert (await browser.post("/password/change", new)).header("location") == "/mfa/enroll"
    assert await browser.current() is None
    changed = await env.users.find_user("nina")
    assert changed is not None
    assert not changed.must_change_password


async def test_invite_attacks(env: Env) -> None:
    r = await env.call("POST", "/users", "adam", {"username": "evil", "roles": ["owner"]})
    assert r.status_code == 403  # an admin cannot mint an owner
    r = await env.call("POST", "/users", "adam", {"username": "x", "roles": [], "password": "mine"})
    assert r.status_code == 400  # no caller-chosen password (unknown field)
    r = await env.call("POST", "/users", "adam", {"username": "bad name!", "roles": []})
    assert r.status_code == 400
    r = await env.call("POST", "/users", "adam", {"username": "x", "roles": ["root"]})
    assert r.status_code == 400
    r = await env.call("POST", "/users", "olivia", {"username": "co-owner", "roles": ["owner"]})
    assert r.status_code == 201


async def test_set_roles_keeps_other_roles_and_guards_owner(env: Env) -> None:
    adam = env.ids["adam"]
    r = await env.call("PUT", f"/users/{adam}/roles", "olivia", {"roles": ["security"]})
    assert r.status_code == 200
    assert r.json()["roles"] == ["gateway-user", "security"]
    sam = env.ids["sam"]
    r = await env.call("PUT", f"/users/{sam}/roles", "adam", {"roles": ["owner"]})
    assert r.status_code == 403  # adam is security now: not even an admin
    r = await env.call("PUT", f"/users/{env.ids['olivia']}/roles", "olivia", {"roles": ["admin"]})
    assert r.status_code == 409  # the last owner
    r = await env.call(
        "PUT", f"/users/{sam}/roles", "olivia", {"roles": ["auditor"]}, auth_time=int(NOW) - 900
    )
    assert r.status_code == 401  # step-up
    r = await env.call("PUT", "/users/nobody/roles", "olivia", {"roles": []})
    assert r.status_code == 404


async def test_directory_roles_win_over_the_token_claim(env: Env) -> None:
    # aude's token claims owner (env.token), the directory says auditor: auditor counts.
    r = await env.call(
        "POST",
        "/applications",
        "aude",
        {
            "id": "x",
            "name": "X",
            "owner": "t",
            "contact": "",
            "environment": "test",
            "risk_class": "internal",
            "data_classification": "public",
        },
    )
    assert r.status_code == 403
    me = await env.call("GET", "/me", "aude")
    assert me.json()["roles"] == ["auditor"]


async def test_disable_revokes_and_locks_out_at_once(env: Env) -> None:
    adam = env.ids["adam"]
    before = await env.call("GET", "/me", "adam")
    assert before.status_code == 200
    r = await env.call("POST", f"/users/{adam}/disable", "sam", {"reason": "phished"})
    assert r.status_code == 200
    assert r.json()["disabled"] is True
    assert env.disabled == [adam]  # on_disable ran: refresh families revoked there
    after = await env.call("GET", "/me", "adam")
    assert after.status_code == 401  # the same kind of token, refused now
    r = await env.call("POST", f"/users/{adam}/enable", "sam", {"reason": ""})
    assert r.status_code == 403  # security may revoke, not restore
    r = await env.call("POST", f"/users/{adam}/enable", "olivia", {"reason": "cleared"})
    assert r.status_code == 200
    assert (await env.call("GET", "/me", "adam")).status_code == 200


async def test_owners_are_protected(env: Env) -> None:
    olivia = env.ids["olivia"]
    r = await env.call("POST", f"/users/{olivia}/disable", "sam", {"reason": ""})
    assert r.status_code == 403
    r = await env.call("POST", f"/users/{olivia}/disable", "olivia", {"reason": ""})
    assert r.status_code == 409
    assert env.disabled == []


async def test_reset_mfa_and_list(env: Env) -> None:
    sam = env.ids["sam"]
    r = await env.call("POST", f"/users/{sam}/reset-mfa", "adam", {"reason": "lost phone"})
    assert r.status_code == 200
    assert r.json()["mfa_enrolled"] is False
    listed = (await env.call("GET", "/users?limit=2", "aude")).json()
    assert len(listed["items"]) == 2
    assert listed["next_cursor"] == 2
    assert all("password_hash" not in u for u in listed["items"])
    r = await env.call("POST", f"/users/{sam}/reset-mfa", "aude", {"reason": ""})
    assert r.status_code == 403


async def test_unknown_user_token_is_refused(env: Env) -> None:
    async with env.h.client() as c:
        r = await c.get("/admin/v1/me", headers=env.h.auth(env.h.token(sub="ghost")))
    assert r.status_code == 401


async def test_without_a_directory_user_operations_are_404() -> None:
    h = make_harness()
    await h.store.open()
    async with h.client() as c:
        r = await c.get("/admin/v1/users", headers=h.auth(h.token()))
    assert r.status_code == 404
    assert r.json()["code"] == "admin.not_found"


async def test_set_roles_through_the_repository_on_sqlite(tmp_path: Any) -> None:
    """The admin API writes roles through UserRepo.set_roles (here: SQLite), and the audit
    entry shows the stored result."""
    from bastion.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "u.db"))
    await store.open()
    try:
        h = make_harness(store)  # type: ignore[arg-type]
        users = await with_users(h)
        e = Env(h, users)
        await e.add("olivia", "owner")
        dora = await e.add("dora", "auditor", "gateway-user")
        h.clock.advance(5)
        r = await e.call("PUT", f"/users/{dora}/roles", "olivia", {"roles": ["security"]})
        assert r.status_code == 200, r.text
        got = await users.repo.get_user(dora)
        assert got is not None
        assert got.roles == ("gateway-user", "security")
        assert got.updated_at == NOW + 5
        entries = await h.ctx.repo.list_audit(AuditQuery(limit=10, action="users.set_roles"))
        assert [a.after["roles"] for a in entries] == [["gateway-user", "security"]]
    finally:
        await store.close()


async def test_granting_an_mfa_role_forces_enrolment_at_next_login(env: Env) -> None:
    """A password-only session of a user who is then given an admin role stops counting at
    once, and the next login goes to TOTP enrolment (mfa_required_roles lists admin roles)."""
    from tests.unit.authserver.users.browser import Browser, csrf_of

    gus = await env.add("gus", "gateway-user")
    browser = Browser(env.users)
    page = await browser.get("/login")
    form = {
        "csrf_token": csrf_of(page),
        "username": "gus",
        "password": "a-long-enough-password",
    }
    resp = await browser.post("/login", form)
    assert resp.header("location") != "/mfa/enroll"
    signed_in = await browser.current()
    assert signed_in is not None
    assert signed_in.amr == ("pwd",)
    r = await env.call("PUT", f"/users/{gus}/roles", "olivia", {"roles": ["auditor"]})
    assert r.status_code == 200, r.text
    assert await browser.current() is None  # the password-only login no longer counts
    page = await browser.get("/login")
    resp = await browser.post("/login", {**form, "csrf_token": csrf_of(page)})
    assert resp.header("location") == "/mfa/enroll"
    assert await browser.current() is None  # half signed in until TOTP is enrolled


async def test_an_admin_cannot_grant_or_remove_owner(env: Env) -> None:
    sam = env.ids["sam"]
    r = await env.call("PUT", f"/users/{sam}/roles", "adam", {"roles": ["owner"]})
    assert r.status_code == 403
    await env.add("otto", "owner")
    r = await env.call("PUT", f"/users/{env.ids['otto']}/roles", "adam", {"roles": ["admin"]})
    assert r.status_code == 403
    r = await env.call("PUT", f"/users/{env.ids['otto']}/roles", "olivia", {"roles": ["admin"]})
    assert r.status_code == 200  # an owner may, while another owner remains


async def test_directory_user_without_admin_role_is_forbidden(env: Env) -> None:
    await env.add("gus", "gateway-user")
    r = await env.call("GET", "/me", "gus")
    assert r.status_code == 403


async def test_disable_hook_revokes_each_familys_last_access_token(env: Env) -> None:
    from types import SimpleNamespace

    from bastion.control.admin.users import revoke_tokens_on_disable

    now = env.h.clock.now()
    families = [
        SimpleNamespace(access_jti="live", access_exp=now + 300),
        SimpleNamespace(access_jti="old", access_exp=now - 1),  # expired: nothing to revoke
        SimpleNamespace(access_jti=None, access_exp=None),
    ]
    seen: list[tuple[str, float]] = []

    async def revoke_families(user_id: str, at: float) -> list[Any]:
        seen.append((user_id, at))
        return families

    hook = revoke_tokens_on_disable(env.h.ctx, revoke_families)
    await hook("u1")
    assert seen == [("u1", now)]
    revs = await env.h.store.active_revocations(now)
    assert [(r.kind, r.value, r.expires_at) for r in revs] == [("jti", "live", now + 300)]
    assert [e["type"] for e in env.h.pushed] == ["token.revoked"]
