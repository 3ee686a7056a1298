"""What each admin operation does, without a web framework: plain values in, plain values out.

:class:`AdminContext` holds what the operations need (the store, the control repository, the
user service, a publisher that pushes changes to every node, the clock). Every handler takes
a :class:`Call` (the authenticated principal, path and query parameters, the validated body,
the source IP and request id) and returns ``(status, body)``. Every change is recorded in the
admin audit trail after it committed, with before/after states that never hold a secret.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bastion.authserver.oauth.repo import OAuthRepo
from bastion.authserver.users.service import UserService
from bastion.control.admin.auth import AdminPrincipal
from bastion.control.admin.errors import AdminNotFound
from bastion.control.admin.records import Application, AuditEntry, AuditQuery
from bastion.control.admin.repo import ControlRepo
from bastion.control.admin.roles import needs_ownership
from bastion.control.admin.spec import DEFAULT_PAGE, OperationSpec
from bastion.control.keys import KeyService
from bastion.core.clock import Clock
from bastion.errors import InvalidRequest
from bastion.events.bus import Event
from bastion.store.base import Store

Publisher = Callable[[Event], Awaitable[None]]
Result = tuple[int, Any]

#: Field names whose values never reach the audit trail, at any depth.
_SECRET_NAME = re.compile(r"secret|password|passwd|token|hash|pepper|private|credential", re.I)


def scrub(value: Any) -> Any:
    """A copy of ``value`` without fields whose names look like secrets (defence in depth:
    handlers already build before/after from public shapes)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not _SECRET_NAME.search(str(k))}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated, validated request to an operation."""

    op: OperationSpec
    principal: AdminPrincipal
    path: dict[str, str]
    query: dict[str, Any]
    body: dict[str, Any] | None
    source_ip: str | None
    request_id: str


@dataclass(slots=True)
class AdminContext:
    """The admin API's dependencies. ``users`` is None when the deployment has no user
    directory (no ``auth`` section): user operations then answer 404."""

    store: Store
    repo: ControlRepo
    clock: Clock
    publish: Publisher
    users: UserService | None = None
    #: KEYLIFE's key operations; None when ``api_keys.pepper`` is not set (key endpoints 404).
    keys: KeyService | None = None
    #: The issuer recorded on token revocations this API makes.
    issuer: str | None = None
    #: The authorization server's OAuth state on the same store: revoke-application revokes the
    #: refresh families issued to the application's client id (None: no OAuth state here).
    oauth: OAuthRepo | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    async def record(
        self,
        call: Call,
        *,
        action: str | None = None,
        target_type: str,
        target_id: str,
        before: Any = None,
        after: Any = None,
        outcome: str = "success",
    ) -> None:
        """Append one audit entry for ``call`` (StoreError propagates: the caller answers 503,
        and the change it made stays, recorded in the store's change feed)."""
        await self.repo.append_audit(
            AuditEntry(
                at=self.clock.now(),
                actor=call.principal.sub,
                action=action or call.op.id,
                target_type=target_type,
                target_id=target_id,
                outcome=outcome,
                source_ip=call.source_ip,
                request_id=call.request_id,
                before=scrub(before) if before is not None else None,
                after=scrub(after) if after is not None else None,
            )
        )


def page(items: list[Any], call: Call) -> dict[str, Any]:
    """Offset paging: ``cursor`` is where the page starts, ``limit`` bounded by the schema."""
    limit = int(call.query.get("limit", DEFAULT_PAGE))
    start = int(call.query.get("cursor", 0))
    chunk = items[start : start + limit]
    nxt = start + limit if start + limit < len(items) else None
    return {"items": chunk, "next_cursor": nxt}


async def visible_application(ctx: AdminContext, call: Call, app_id: str) -> Application:
    """The application ``app_id`` if the caller may see it; AdminNotFound otherwise. A
    developer sees only applications it owns: another team's is "not found", not "forbidden",
    so ids cannot be probed."""
    app = await ctx.repo.get_application(app_id)
    if app is None:
        raise AdminNotFound(f"no application {app_id!r}")
    if needs_ownership(call.principal.roles, call.op.id) and (
        app.owner is None or not call.principal.owns(app.owner)
    ):
        raise AdminNotFound(
            f"no application {app_id!r}",
            diagnosis=f"{call.principal.sub!r} does not own application {app_id!r}",
        )
    return app


# -- me, applications ---------------------------------------------------------------------


async def me_get(ctx: AdminContext, call: Call) -> Result:
    p = call.principal
    return 200, {
        "sub": p.sub,
        "roles": sorted(p.roles),
        "amr": list(p.amr),
        "auth_time": p.auth_time,
    }


async def apps_list(ctx: AdminContext, call: Call) -> Result:
    apps = await ctx.repo.list_applications()
    if needs_ownership(call.principal.roles, call.op.id):
        apps = [a for a in apps if a.owner is not None and call.principal.owns(a.owner)]
    return 200, page([a.public() for a in apps], call)


async def apps_get(ctx: AdminContext, call: Call) -> Result:
    return 200, (await visible_application(ctx, call, call.path["app_id"])).public()


async def apps_create(ctx: AdminContext, call: Call) -> Result:
    body = call.body or {}
    now = ctx.clock.now()
    app = Application(
        id=body["id"],
        name=body["name"],
        created_at=now,
        owner=body["owner"],
        contact=body["contact"],
        environment=body["environment"],
        risk_class=body["risk_class"],
        data_classification=body["data_classification"],
        allowed_scopes=tuple(body.get("allowed_scopes", ())),
        updated_at=now,
    )
    await ctx.repo.create_application(app)
    await ctx.record(call, target_type="application", target_id=app.id, after=app.public())
    return 201, app.public()


async def apps_update(ctx: AdminContext, call: Call) -> Result:
    before = await visible_application(ctx, call, call.path["app_id"])
    changes = dict(call.body or {})
    if "allowed_scopes" in changes:
        changes["allowed_scopes"] = tuple(changes["allowed_scopes"])
    after = replace(before, **changes, updated_at=ctx.clock.now())
    for name in ("owner", "risk_class", "data_classification", "environment"):
        if getattr(after, name) in (None, ""):
            raise InvalidRequest(f"/{name}: an application without metadata needs {name}")
    if not await ctx.repo.update_application(after):
        raise AdminNotFound(f"no application {before.id!r}")
    await ctx.record(
        call,
        target_type="application",
        target_id=after.id,
        before=before.public(),
        after=after.public(),
    )
    return 200, after.public()


# -- audit --------------------------------------------------------------------------------


async def audit_list(ctx: AdminContext, call: Call) -> Result:
    """Newest first; ``cursor`` is the id of the last entry of the previous page."""
    q = call.query
    limit = int(q.get("limit", DEFAULT_PAGE))
    entries = await ctx.repo.list_audit(
        AuditQuery(
            limit=limit,
            before_id=q.get("cursor"),
            actor=q.get("actor"),
            action=q.get("action"),
            target_id=q.get("target"),
            outcome=q.get("outcome"),
            since=q.get("since"),
            until=q.get("until"),
        )
    )
    nxt = entries[-1].id if len(entries) == limit else None
    return 200, {"items": [e.public() for e in entries], "next_cursor": nxt}
