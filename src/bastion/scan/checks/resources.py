"""API4 unrestricted resource consumption: no rate limit on a bounded burst, no upper bound on
page size, an oversized body accepted, and a ReDoS signal (a pathological string that takes
far longer than a plain one of the same length, confirmed twice, time-bounded).
"""

from __future__ import annotations

from bastion.scan.checks import register
from bastion.scan.checks._probe import path_for, throttled, unique_body
from bastion.scan.checks.base import ANONYMOUS, USER_A, Check, ScanContext
from bastion.scan.client import Reply
from bastion.scan.errors import RequestFailed, SafetyRefused
from bastion.scan.model import Confidence, Severity
from bastion.scan.spec import ScanOperation

__all__ = ["Resources"]

BURST = 30
HUGE_PAGE = 100000
OVERSIZE = 2 * 1024 * 1024 + 17
PAGE_PARAMS = ("limit", "page_size", "pagesize", "per_page", "size", "count", "top", "max")
REDOS_TIMEOUT = 5.0
#: A pathological string must take at least this long, and ten times the plain one.
SLOW_SECONDS = 0.25
_URLISH = ("url", "uri", "link", "callback", "webhook", "host")


@register
class Resources(Check):
    id = "resources"
    title = "Unrestricted resource consumption"
    owasp = "API4"
    cwe = "CWE-770"
    severity = Severity.MEDIUM
    remediation = (
        "Limit the rate per client, the page size, the body size and the work one input can "
        "cause (linear-time matching, timeouts)."
    )
    order = 85  # the burst may trip the target's limiter: late

    def __init__(self) -> None:
        self.body_tried = False

    def applies_to(self, op: ScanOperation) -> bool:
        return op.method in ("GET", "POST")

    async def run_once(self, ctx: ScanContext) -> None:
        for op in ctx.spec.operations:
            if op.method != "GET" or op.params_in("path") or op.is_public:
                continue
            first = await ctx.send("GET", ctx.fill_path(op), identity=USER_A, operation=op)
            if first.ok:
                await self._burst(ctx, op, first)
                return

    async def _burst(self, ctx: ScanContext, op: ScanOperation, first: Reply) -> None:
        if not ctx.can_spend(BURST):
            ctx.skip(self, "budget too small for the rate-limit burst", op)
            return
        last = first
        for _ in range(BURST):
            last = await ctx.send("GET", ctx.fill_path(op), identity=USER_A, operation=op)
            if throttled(last) or not last.ok:
                return
        ctx.report(
            self.finding(
                ctx,
                op,
                f"{BURST + 1} requests in a burst were all answered: no rate limit",
                confidence=Confidence.FIRM,
                key="rate-limit",
                evidence=(last,),
                cwe="CWE-770",
                title="No rate limit",
            )
        )

    async def run_operation(self, ctx: ScanContext, op: ScanOperation) -> None:
        if op.method == "GET":
            path = await path_for(ctx, op)
            if path is None:
                return
            await self._page_size(ctx, op, path)
            await self._redos(ctx, op, path)
        elif op.body_schema is not None and not self.body_tried and "{" not in op.path:
            await self._oversized(ctx, op)

    async def _page_size(self, ctx: ScanContext, op: ScanOperation, path: str) -> None:
        for param in op.params_in("query"):
            if param.name.lower() not in PAGE_PARAMS:
                continue
            reply = await ctx.send(
                "GET", path, identity=USER_A, params={param.name: HUGE_PAGE}, operation=op
            )
            if reply.ok:
                maximum = param.schema.get("maximum") if isinstance(param.schema, dict) else None
                ctx.report(
                    self.finding(
                        ctx,
                        op,
                        f"{param.name}={HUGE_PAGE} is accepted"
                        + (f" (the contract says at most {maximum})" if maximum else ""),
                        confidence=Confidence.FIRM,
                        key=f"page-size:{param.name}",
                        evidence=(reply,),
                        title="No upper bound on the page size",
                    )
                )

    async def _oversized(self, ctx: ScanContext, op: ScanOperation) -> None:
        body = unique_body(ctx.sample_body(op))
        props = (op.body_schema or {}).get("properties") or {}
        if not isinstance(body, dict) or any(w in k.lower() for k in props for w in _URLISH):
            return
        body["bastion_scan_padding"] = "x" * OVERSIZE
        for who in (USER_A, ANONYMOUS):
            try:
                reply = await ctx.send(
                    "POST", ctx.fill_path(op), identity=who, json=body, operation=op
                )
            except (SafetyRefused, RequestFailed):
                return
            if reply.status in (401, 403):
                continue
            if reply.status == 413 or reply.ok:
                self.body_tried = True  # decided: one answer per scan is enough
            if reply.ok:
                ctx.report(
                    self.finding(
                        ctx,
                        op,
                        f"a {OVERSIZE // 1024} KiB request body was accepted",
                        confidence=Confidence.FIRM,
                        key="body-size",
                        evidence=(reply,),
                        title="Oversized request body accepted",
                    )
                )
            return

    async def _redos(self, ctx: ScanContext, op: ScanOperation, path: str) -> None:
        for param in op.params_in("query"):
            schema = param.schema if isinstance(param.schema, dict) else {}
            if schema.get("type") != "string" or "enum" in schema or "format" in schema:
                continue
            n = min(int(schema.get("maxLength", 32)), 32)
            if n < 8:
                continue
            plain = "a" * n
            evil = "a" * (n - 1) + "!"
            base = await self._timed(ctx, op, path, param.name, plain)
            slow = await self._timed(ctx, op, path, param.name, evil)
            if base is None or slow is None or slow < max(SLOW_SECONDS, 10 * base):
                continue
            again = await self._timed(ctx, op, path, param.name, evil)
            if again is None or again < max(SLOW_SECONDS, 10 * base):
                continue
            ctx.report(
                self.finding(
                    ctx,
                    op,
                    f"{param.name}: a pathological {n}-character string took "
                    f"{min(slow, again):.1f} s, a plain one {base:.2f} s (catastrophic "
                    "backtracking?)",
                    confidence=Confidence.TENTATIVE,
                    key=f"redos:{param.name}",
                    cwe="CWE-1333",
                    title="Pathological input is slow (ReDoS)",
                )
            )

    async def _timed(
        self, ctx: ScanContext, op: ScanOperation, path: str, name: str, value: str
    ) -> float | None:
        try:
            reply = await ctx.send(
                "GET",
                path,
                identity=USER_A,
                params={name: value},
                operation=op,
                timeout=REDOS_TIMEOUT,
            )
        except RequestFailed as exc:
            return exc.elapsed if exc.timed_out else None
        return None if throttled(reply) else reply.elapsed
