"""Users and roles through the admin API, over the authorization server's user service.

* **invite** creates the user with a random one-time password that the response shows once
  (the admin hands it over out of band); the first login stops at a forced password change
  before it completes, and a user holding an admin role must then enrol TOTP when
  ``auth.users.mfa_required_roles`` lists that role (``docs/control.md``).
* **roles** replaces the user's *admin* roles; other roles (the gateway's) are kept. Granting or
  removing ``owner`` takes an owner, and the last enabled owner cannot be demoted.
* **disable** locks the user out: sessions end and the service's ``on_disable`` hooks revoke
  the user's refresh-token families (see :func:`revoke_tokens_on_disable`). Only an owner may
  disable an owner, and the last enabled owner cannot be disabled.
* **reset-mfa** removes TOTP and recovery codes; the user enrols again at the next login.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from bastion.authserver.users.model import UserRecord
from bastion.authserver.users.repo import UserExists
from bastion.authserver.users.service import AccountError, UserService
from bastion.control.admin.errors import AdminConflict, AdminNotFound
from bastion.control.admin.roles import ADMIN_ROLES, OWNER, may_grant
from bastion.control.admin.service import AdminContext, Call, Result, page
from bastion.errors import Forbidden, InvalidRequest

#: Length of an invited user's one-time password (URL-safe characters, ~190 bits).
INVITE_PASSWORD_CHARS = 32


def _users(ctx: AdminContext) -> UserService:
    if ctx.users is None:
        raise AdminNotFound("this deployment has no user directory (no 'auth' section)")
    return ctx.users


def public_user(user: UserRecord) -> dict[str, Any]:
    """What the admin API shows of a user: never a hash, TOTP key or recovery code."""
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "name": user.name,
        "roles": list(user.roles),
        "disabled": user.disabled,
        "mfa_enrolled": user.totp_secret is not None,
        "created_at": user.created_at,
    }


async def _user(service: UserService, user_id: str) -> UserRecord:
    user = await service.repo.get_user(user_id)
    if user is None:
        raise AdminNotFound("no such user")
    return user


async def _answer_change(
    ctx: AdminContext,
    call: Call,
    service: UserService,
    before: UserRecord,
    **extra: Any,
) -> Result:
    """After a change to ``before``'s user: read it again, record before/after (plus ``extra``)
    in the audit trail, answer the new public view."""
    after = await _user(service, before.id)
    await ctx.record(
        call,
        target_type="user",
        target_id=before.id,
        before=public_user(before),
        after={**public_user(after), **extra},
    )
    return 200, public_user(after)


async def _enabled_owners(service: UserService) -> list[UserRecord]:
    return [u for u in await service.list_users() if OWNER in u.roles and not u.disabled]


async def users_list(ctx: AdminContext, call: Call) -> Result:
    users = await _users(ctx).list_users()
    return 200, page([public_user(u) for u in users], call)


async def users_get(ctx: AdminContext, call: Call) -> Result:
    return 200, public_user(await _user(_users(ctx), call.path["user_id"]))


async def users_invite(ctx: AdminContext, call: Call) -> Result:
    service = _users(ctx)
    body = call.body or {}
    roles = tuple(body["roles"])
    if not may_grant(call.principal.roles, (), roles):
        raise Forbidden("only an owner may grant the owner role")
    password = secrets.token_urlsafe(INVITE_PASSWORD_CHARS)[:INVITE_PASSWORD_CHARS]
    try:
        user = await service.create_user(
            body["username"],
            password,
            email=body.get("email"),
            name=body.get("name"),
            roles=roles,
            must_change_password=True,  # replaced at the first login, before it completes
        )
    except UserExists:
        raise AdminConflict("that username is taken") from None
    except AccountError as exc:
        raise InvalidRequest(f"body: {exc}") from None
    shown = public_user(user)
    await ctx.record(call, target_type="user", target_id=user.id, after=shown)
    # The one-time password is in this response only: not stored, not audited, not logged.
    return 201, {**shown, "one_time_password": password}


async def users_set_roles(ctx: AdminContext, call: Call) -> Result:
    service = _users(ctx)
    before = await _user(service, call.path["user_id"])
    wanted = tuple(call.body["roles"]) if call.body else ()
    kept = tuple(r for r in before.roles if r not in ADMIN_ROLES)
    new_roles = tuple(dict.fromkeys((*kept, *wanted)))
    if not may_grant(call.principal.roles, before.roles, new_roles):
        raise Forbidden("only an owner may grant or remove the owner role")
    demoted = OWNER in before.roles and OWNER not in new_roles and not before.disabled
    if demoted and len(await _enabled_owners(service)) <= 1:
        raise AdminConflict("the last enabled owner keeps the owner role")
    now = ctx.clock.now()
    # A role that needs MFA takes effect at once: the user service decides it on every
    # request (a password-only session stops counting) and at the next login (enrolment).
    if not await service.repo.set_roles(before.id, new_roles, now):
        raise AdminNotFound("no such user")
    return await _answer_change(ctx, call, service, before)


async def users_disable(ctx: AdminContext, call: Call) -> Result:
    service = _users(ctx)
    before = await _user(service, call.path["user_id"])
    if OWNER in before.roles:
        if OWNER not in call.principal.roles:
            raise Forbidden("only an owner may disable an owner")
        if not before.disabled and len(await _enabled_owners(service)) <= 1:
            raise AdminConflict("the last enabled owner cannot be disabled")
    await service.lock(before.id)
    reason = call.body.get("reason") if call.body else None
    return await _answer_change(ctx, call, service, before, reason=reason)


async def users_enable(ctx: AdminContext, call: Call) -> Result:
    service = _users(ctx)
    before = await _user(service, call.path["user_id"])
    await service.unlock(before.id)
    return await _answer_change(ctx, call, service, before)


async def users_reset_mfa(ctx: AdminContext, call: Call) -> Result:
    service = _users(ctx)
    before = await _user(service, call.path["user_id"])
    await service.reset_mfa(before.id)
    return await _answer_change(ctx, call, service, before)


def revoke_tokens_on_disable(
    ctx: AdminContext, revoke_families: Callable[[str, float], Awaitable[list[Any]]]
) -> Callable[[str], Awaitable[None]]:
    """An ``on_disable`` hook for the user service: revoke every refresh-token family of the
    user (``revoke_families(user_id, now)``, the OAuth repository's
    ``revoke_subject_families``) and the last access token of each, and push the revocations."""

    async def hook(user_id: str) -> None:
        from bastion.control.admin.incidents import revoke_last_access_tokens

        now = ctx.clock.now()
        await revoke_last_access_tokens(ctx, await revoke_families(user_id, now), now)

    return hook
