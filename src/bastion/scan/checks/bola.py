"""API1 BOLA: user B reads (and, on objects the scanner created, writes) user A's objects.

Proof is in the body, not the status: B's answer must carry A's private values — the values of
A's object that differ from B's own object of the same kind (or, when B has none, A's whole
answer). A 200 with B's own data, an empty object or an error page is not a finding.
"""

from __future__ import annotations

from typing import Any

from bastion.scan.checks import register
from bastion.scan.checks._probe import (
    api_relative,
    create_object,
    creator_of,
    id_param,
    json_leaves,
    owned_ids,
    send,
    throttled,
)
from bastion.scan.checks.base import USER_A, USER_B, Check, ScanContext
from bastion.scan.errors import SafetyRefused
from bastion.scan.model import Confidence, Severity
from bastion.scan.spec import ScanOperation

__all__ = ["Bola"]


def private_values(mine: Any, theirs_own: Any) -> set[str]:
    """Scalars of A's object that B's own object does not have (owner ids, amounts, names), as
    strings; booleans and nulls never count."""
    other = {str(v) for v in json_leaves(theirs_own).values()}
    out: set[str] = set()
    for value in json_leaves(mine).values():
        if isinstance(value, bool) or value is None:
            continue
        text = str(value)
        if text and text not in other:
            out.add(text)
    return out


@register
class Bola(Check):
    id = "bola"
    title = "Broken object level authorization"
    owasp = "API1"
    cwe = "CWE-639"
    severity = Severity.HIGH
    remediation = (
        "Check on every request that the addressed object belongs to the caller (or that the "
        "caller may act on it); answer 404 otherwise."
    )
    needs = frozenset({USER_A, USER_B})
    order = 10

    def applies_to(self, op: ScanOperation) -> bool:
        return op.method in ("GET", "PATCH", "PUT", "DELETE") and id_param(op) is not None

    async def run_operation(self, ctx: ScanContext, op: ScanOperation) -> None:
        name = id_param(op)
        if name is None:
            return
        if op.method != "GET":
            await self._write(ctx, op, name)
            return
        mine_ids = await owned_ids(ctx, op, USER_A) or await self._create(ctx, op)
        theirs_ids = await owned_ids(ctx, op, USER_B)
        if not mine_ids:
            ctx.skip(self, "no object of user_a found to try", op)
            return
        b_own = None
        for oid in theirs_ids[:1]:
            reply = await send(
                ctx, "GET", ctx.fill_path(op, {name: oid}), identity=USER_B, operation=op
            )
            if reply.ok:
                b_own = reply
        for oid in mine_ids:
            if oid in theirs_ids:
                continue
            path = ctx.fill_path(op, {name: oid})
            mine = await send(ctx, "GET", path, identity=USER_A, operation=op)
            if not mine.ok or mine.json() is None:
                continue
            theirs = await send(ctx, "GET", path, identity=USER_B, operation=op)
            if not theirs.ok or throttled(theirs):
                continue
            if b_own is not None:
                leaked = private_values(mine.json(), b_own.json()) & {
                    str(v) for v in json_leaves(theirs.json()).values()
                }
                leaked.discard(oid)  # the id is in the path: it proves nothing
                proven = bool(leaked)
            else:
                leaked = set()
                proven = theirs.json() == mine.json()
            if proven:
                ctx.report(
                    self.finding(
                        ctx,
                        op,
                        f"user_b read user_a's object at {op.path} ({name}={oid}): the answer "
                        f"carries user_a's private values"
                        + (f" ({len(leaked)} of them)" if leaked else " (the same body)"),
                        confidence=Confidence.CERTAIN,
                        evidence=(mine, theirs),
                        notes=("as user_a (the owner)", "as user_b"),
                        key="read",
                    )
                )
                return

    async def _create(self, ctx: ScanContext, op: ScanOperation) -> list[str]:
        """user_a has nothing to try: create one object through the collection's POST."""
        create = creator_of(ctx, op)
        if create is None or create.body_schema is None:
            return []
        try:
            made = await create_object(ctx, create, USER_A)
        except SafetyRefused:
            return []
        return [] if made is None else [made]

    async def _write(self, ctx: ScanContext, op: ScanOperation, name: str) -> None:
        """B writes to an object A created during this scan (never to anything else)."""
        prefix = op.path.split("{")[0]
        for obj in ctx.ledger.objects:
            rel = api_relative(ctx, obj.path)
            tail = rel[len(prefix) :] if rel.startswith(prefix) else ""
            if obj.identity != USER_A or obj.deleted or not tail or "/" in tail:
                continue
            path = ctx.fill_path(op, {name: tail})
            body = ctx.sample_body(op) if op.json_body is not None else None
            try:
                if body is not None:
                    reply = await send(
                        ctx, op.method, path, identity=USER_B, json=body, operation=op
                    )
                else:
                    reply = await send(ctx, op.method, path, identity=USER_B, operation=op)
            except SafetyRefused:
                return
            if reply.ok:
                ctx.report(
                    self.finding(
                        ctx,
                        op,
                        f"user_b could {op.method} an object user_a created ({obj.path})",
                        confidence=Confidence.CERTAIN,
                        evidence=(reply,),
                        notes=("as user_b, on user_a's object",),
                        key=op.method.lower(),
                    )
                )
            return
