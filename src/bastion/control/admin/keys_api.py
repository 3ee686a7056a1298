"""API-key endpoints: thin HTTP ends of KEYLIFE's :class:`bastion.control.keys.KeyService`.

The admin API adds what the service does not know: who may touch which application (a
developer only its own; another team's key is "not found", exactly like a key that does not
exist, so ids cannot be probed), the application's ``allowed_scopes`` (a key may not carry a
scope its application is not allowed), and the audit trail. The secret of a new or rotated key
is in the response only: the audit entry holds the key's public view.
"""

from __future__ import annotations

from typing import Any

from bastion.control.admin.errors import AdminNotFound
from bastion.control.admin.service import AdminContext, Call, Result, page, visible_application
from bastion.control.keys import DAY, KeyNotFound, KeyService, KeyView
from bastion.errors import InvalidRequest


def _keys(ctx: AdminContext) -> KeyService:
    if ctx.keys is None:
        raise AdminNotFound("API keys are not configured (no api_keys.pepper)")
    return ctx.keys


async def _visible_key(ctx: AdminContext, call: Call) -> KeyView:
    """The key of the path if the caller may touch its application; one 404 otherwise."""
    try:
        view = await _keys(ctx).get(call.path["key_id"])
        await visible_application(ctx, call, view.client_id)
    except (KeyNotFound, AdminNotFound) as exc:
        raise AdminNotFound("no such API key", diagnosis=exc.diagnosis) from None
    return view


async def keys_list(ctx: AdminContext, call: Call) -> Result:
    app = await visible_application(ctx, call, call.path["app_id"])
    views = await _keys(ctx).list_keys(app.id)
    return 200, page([v.to_dict() for v in views], call)


async def keys_create(ctx: AdminContext, call: Call) -> Result:
    service = _keys(ctx)
    app = await visible_application(ctx, call, call.path["app_id"])
    body = call.body or {}
    scopes = tuple(body.get("scopes", ()))
    if app.risk_class is not None:  # an application with metadata: its scopes are the limit
        extra = sorted(set(scopes) - set(app.allowed_scopes))
        if extra:
            raise InvalidRequest("body/scopes: the application is not allowed these scopes")
    days = body.get("expires_in_days")
    issued = await service.create(
        app.id,
        scopes=scopes,
        name=body.get("name", ""),
        owner=app.owner or call.principal.sub,
        ttl=None if days is None else float(days) * DAY,
    )
    shown = issued.key.to_dict()
    await ctx.record(call, target_type="api_key", target_id=issued.key.id, after=shown)
    return 201, {**shown, "secret": issued.secret}


async def keys_rotate(ctx: AdminContext, call: Call) -> Result:
    before = await _visible_key(ctx, call)
    days = (call.body or {}).get("grace_days")
    rotation = await _keys(ctx).rotate(before.id, grace=None if days is None else days * DAY)
    after: dict[str, Any] = {
        "successor": rotation.successor.key.to_dict(),
        "previous": rotation.previous.to_dict(),
    }
    await ctx.record(
        call, target_type="api_key", target_id=before.id, before=before.to_dict(), after=after
    )
    return 201, {
        "successor": {**after["successor"], "secret": rotation.successor.secret},
        "previous": after["previous"],
    }


async def keys_revoke(ctx: AdminContext, call: Call) -> Result:
    before = await _visible_key(ctx, call)
    after = await _keys(ctx).revoke(before.id)
    await ctx.record(
        call,
        target_type="api_key",
        target_id=before.id,
        before=before.to_dict(),
        after={**after.to_dict(), "reason": (call.body or {}).get("reason", "")},
    )
    return 200, after.to_dict()
