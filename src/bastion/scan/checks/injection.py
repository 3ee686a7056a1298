"""Injection: SQL (error-based by signature, boolean-based by comparing a true and a false
condition with the plain answer), NoSQL operators in JSON bodies (``{"$ne": …}`` where a string
belongs, compared with a wrong plain value), OS command (time-based: a separator and
``sleep 2``, confirmed by ``sleep 0`` being fast; bounded to a few requests per field).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from bastion.scan.checks import register
from bastion.scan.checks._probe import path_for, same_answer, send, throttled, unique_body
from bastion.scan.checks.base import USER_A, Check, ScanContext
from bastion.scan.checks.misconfig import SIGNATURES
from bastion.scan.client import Reply
from bastion.scan.errors import RequestFailed, SafetyRefused
from bastion.scan.model import Confidence, Severity
from bastion.scan.sample import sample_value
from bastion.scan.spec import ScanOperation

__all__ = ["Injection"]

_SQL = dict(SIGNATURES)["sql-error"]
_COMMANDISH = re.compile(r"(?i)(file|path|dir|name$|host|ip$|cmd|command|exec|domain|target)")
SLEEP = 2.0


@register
class Injection(Check):
    id = "injection"
    title = "Injection"
    owasp = "INJECTION"
    cwe = "CWE-74"
    severity = Severity.HIGH
    remediation = (
        "Use parameterised queries, never operators from client JSON, no shell: pass "
        "arguments as a list; validate inputs against an allow-list."
    )
    order = 50

    def applies_to(self, op: ScanOperation) -> bool:
        return bool(_string_params(op) or _string_props(op))

    async def run_operation(self, ctx: ScanContext, op: ScanOperation) -> None:
        path = await path_for(ctx, op)
        if path is None:
            return
        try:
            for name, value in _string_params(op):
                await self._query(ctx, op, path, name, value)
            if op.method in ("POST", "PUT", "PATCH") and "{" not in op.path:
                for name in _string_props(op):
                    await self._body(ctx, op, path, name)
        except SafetyRefused:
            return

    async def _query(
        self, ctx: ScanContext, op: ScanOperation, path: str, name: str, value: str
    ) -> None:
        async def get(v: str) -> Reply:
            return await send(
                ctx,
                "GET" if op.method == "GET" else op.method,
                path,
                identity=USER_A,
                params={name: v},
                operation=op,
            )

        plain = await get(value)
        if throttled(plain):
            return
        broken = await get(value + "'\"")
        if _SQL.search(broken.text) and not _SQL.search(plain.text):
            self._sql(ctx, op, name, "error", (plain, broken))
            return
        if not plain.ok:
            return
        true = await get(f"{value}' AND '1'='1")
        false = await get(f"{value}' AND '1'='2")
        if any(throttled(r) for r in (true, false)):
            return
        if same_answer(true, plain) and not same_answer(false, plain):
            true2 = await get(f"{value}' AND 'b'='b")
            false2 = await get(f"{value}' AND 'b'='c")
            if same_answer(true2, plain) and same_answer(false2, false):
                self._sql(ctx, op, name, "boolean", (plain, true, false))

    def _sql(
        self, ctx: ScanContext, op: ScanOperation, name: str, how: str, evidence: tuple[Reply, ...]
    ) -> None:
        detail = {
            "error": "a quote in the value produces a SQL error in the answer",
            "boolean": "a true condition appended to the value answers like the plain value, "
            "a false one differently",
        }[how]
        ctx.report(
            self.finding(
                ctx,
                op,
                f"{name}: {detail}",
                confidence=Confidence.CERTAIN if how == "boolean" else Confidence.FIRM,
                key=f"sql:{name}",
                cwe="CWE-89",
                evidence=evidence,
                title="SQL injection",
            )
        )

    async def _body(self, ctx: ScanContext, op: ScanOperation, path: str, name: str) -> None:
        base = self._body_base(ctx, op)
        if base is None:
            return
        wrong = await self._post(ctx, op, path, {**base, name: "bastion-" + secrets.token_hex(6)})
        if wrong is None or throttled(wrong):
            return
        if not wrong.ok:
            op_reply = await self._post(ctx, op, path, {**base, name: {"$ne": "bastion-x"}})
            if op_reply is not None and op_reply.ok:
                ctx.report(
                    self.finding(
                        ctx,
                        op,
                        f'{name}: a NoSQL operator ({{"$ne": …}}) where a string belongs '
                        f"turns a {wrong.status} into a {op_reply.status}",
                        confidence=Confidence.CERTAIN,
                        key=f"nosql:{name}",
                        cwe="CWE-943",
                        evidence=(wrong, op_reply),
                        title="NoSQL operator injection",
                    )
                )
                return
        if not _COMMANDISH.search(name):
            return
        value = str(base.get(name) or "scan")
        slow = await self._post(
            ctx, op, path, {**base, name: f"{value};sleep {int(SLEEP)}"}, timeout=SLEEP * 3
        )
        if slow is None or slow.elapsed < SLEEP * 0.9:
            return
        fast = await self._post(ctx, op, path, {**base, name: f"{value};sleep 0"})
        again = await self._post(
            ctx, op, path, {**base, name: f"{value}|sleep {int(SLEEP)}"}, timeout=SLEEP * 3
        )
        if (
            fast is not None
            and fast.elapsed < SLEEP / 2
            and again is not None
            and again.elapsed >= SLEEP * 0.9
        ):
            ctx.report(
                self.finding(
                    ctx,
                    op,
                    f"{name}: 'sleep {int(SLEEP)}' after a shell separator delays the "
                    f"answer by {slow.elapsed:.1f} s, 'sleep 0' does not",
                    confidence=Confidence.FIRM,
                    key=f"command:{name}",
                    cwe="CWE-78",
                    evidence=(slow, fast),
                    title="OS command injection",
                )
            )

    def _body_base(self, ctx: ScanContext, op: ScanOperation) -> dict[str, Any] | None:
        base = unique_body(ctx.sample_body(op))
        if not isinstance(base, dict):
            return None
        login = ctx.auth.login
        if login is not None and op.path == login.path and ctx.has(USER_A):
            username = ctx.identity(USER_A).username
            if username:
                base[login.username_field] = username  # a real user: operators can match
        return base

    async def _post(
        self,
        ctx: ScanContext,
        op: ScanOperation,
        path: str,
        body: Any,
        timeout: float | None = None,  # noqa: ASYNC109 - the HTTP timeout
    ) -> Reply | None:
        try:
            return await send(
                ctx, op.method, path, identity=USER_A, json=body, operation=op, timeout=timeout
            )
        except RequestFailed:
            return None


def _string_params(op: ScanOperation) -> list[tuple[str, str]]:
    out = []
    for p in op.params_in("query"):
        schema = p.schema if isinstance(p.schema, dict) else {}
        if schema.get("type") == "string" and schema.get("format") not in ("uri", "url"):
            out.append((p.name, str(sample_value(schema))))
    return out


def _string_props(op: ScanOperation) -> list[str]:
    props = (op.body_schema or {}).get("properties") or {}
    return [
        k
        for k, v in props.items()
        if isinstance(v, dict)
        and v.get("type") == "string"
        and v.get("format") not in ("uri", "url", "email")
    ]
