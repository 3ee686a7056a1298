"""API5 BFLA: operations that the spec, tags or paths mark as administrative, called as a normal
user; the admin identity, when configured, is the reference that the call works at all.

Writes go only to objects the scanner created for the purpose (two of them: one for user_a to
try, one for the admin reference, which also cleans up).
"""

from __future__ import annotations

from bastion.scan.checks import register
from bastion.scan.checks._probe import (
    create_object,
    creator_of,
    id_param,
    send,
    throttled,
    unique_body,
)
from bastion.scan.checks.base import ADMIN, USER_A, Check, ScanContext
from bastion.scan.client import Reply
from bastion.scan.errors import SafetyRefused
from bastion.scan.model import Confidence, Severity
from bastion.scan.spec import ScanOperation

__all__ = ["Bfla"]


@register
class Bfla(Check):
    id = "bfla"
    title = "Broken function level authorization"
    owasp = "API5"
    cwe = "CWE-285"
    severity = Severity.HIGH
    remediation = "Check the caller's role or scope in every administrative operation."
    order = 40

    def applies_to(self, op: ScanOperation) -> bool:
        return op.is_admin_like

    async def run_operation(self, ctx: ScanContext, op: ScanOperation) -> None:
        if op.method == "GET" and not op.params_in("path"):
            path = ctx.fill_path(op)
            mine = await send(ctx, "GET", path, identity=USER_A, operation=op)
            ref = await self._reference(ctx, "GET", path, op)
            if mine.ok and (ref is None or ref.ok):
                self._report(ctx, op, mine, ref)
        elif op.method == "POST" and "{" not in op.path:
            body = unique_body(ctx.sample_body(op))
            mine = await send(
                ctx, "POST", ctx.fill_path(op), identity=USER_A, json=body, operation=op
            )
            ref = await self._reference(ctx, "POST", ctx.fill_path(op), op, unique_body(body))
            if mine.ok and (ref is None or ref.ok):
                self._report(ctx, op, mine, ref)
        elif op.method in ("DELETE", "PUT", "PATCH") and id_param(op) is not None:
            await self._write(ctx, op)

    async def _reference(
        self, ctx: ScanContext, method: str, path: str, op: ScanOperation, body: object = None
    ) -> Reply | None:
        if not ctx.has(ADMIN):
            return None
        if body is None:
            return await send(ctx, method, path, identity=ADMIN, operation=op)
        return await send(ctx, method, path, identity=ADMIN, json=body, operation=op)

    async def _write(self, ctx: ScanContext, op: ScanOperation) -> None:
        name = id_param(op)
        create = creator_of(ctx, op)
        if name is None or create is None:
            ctx.skip(self, "no operation to create an object to try this on", op)
            return
        maker = ADMIN if ctx.has(ADMIN) else USER_A
        made: list[str] = []
        for _ in range(2 if ctx.has(ADMIN) else 1):
            made_id = await create_object(ctx, create, maker)
            if made_id is not None:
                made.append(made_id)
        if not made:
            ctx.skip(self, "could not create an object to try this on", op)
            return
        body = ctx.sample_body(op) if op.json_body is not None else None
        try:
            mine = await self._send(ctx, op, USER_A, ctx.fill_path(op, {name: made[0]}), body)
            ref = None
            if len(made) > 1:
                ref = await self._send(ctx, op, ADMIN, ctx.fill_path(op, {name: made[1]}), body)
        except SafetyRefused as exc:
            ctx.skip(self, str(exc), op)
            return
        if mine.ok and (ref is None or ref.ok):
            self._report(ctx, op, mine, ref)

    async def _send(
        self, ctx: ScanContext, op: ScanOperation, who: str, path: str, body: object
    ) -> Reply:
        if body is None:
            return await send(ctx, op.method, path, identity=who, operation=op)
        return await send(ctx, op.method, path, identity=who, json=body, operation=op)

    def _report(self, ctx: ScanContext, op: ScanOperation, mine: Reply, ref: Reply | None) -> None:
        if throttled(mine):
            return
        ctx.report(
            self.finding(
                ctx,
                op,
                "an administrative operation works for an ordinary user"
                + (" as it does for the admin" if ref is not None else ""),
                confidence=Confidence.CERTAIN if ref is not None else Confidence.FIRM,
                key=op.method.lower(),
                evidence=(mine,) + ((ref,) if ref else ()),
                notes=("as user_a (not an admin)", "as admin (the reference)"),
            )
        )
