"""Running a scan: preflight, every registered check over every operation, the audit, results.

:func:`run_scan` is the whole scan as one coroutine; the CLI adds the console, the reporters
and the exit code. Failures inside one check do not stop the scan: a check that crashes or gets
no answer is recorded in :attr:`ScanResult.errors` and the next one runs. What stops it:
the target unreachable before the first check, an identity that cannot log in (both
:class:`~bastion.scan.errors.TargetError`), or the request budget running out (the results so
far are kept and :attr:`ScanResult.budget_exhausted` says so).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import httpx

from bastion.scan.audit import audit
from bastion.scan.auth import AuthConfig
from bastion.scan.checks import registered_checks
from bastion.scan.checks.base import Check, ScanContext, Skip
from bastion.scan.errors import (
    BudgetExhausted,
    LoginFailed,
    OffOrigin,
    RequestFailed,
    SafetyRefused,
    TargetError,
)
from bastion.scan.model import Exchange, Finding, Severity
from bastion.scan.redact import Redactor
from bastion.scan.safety import CreatedObject
from bastion.scan.session import ScanOptions, open_session
from bastion.scan.spec import ScanOperation, ScanSpec

__all__ = ["ProgressHook", "ScanResult", "run_audit", "run_scan"]

#: Called as ``hook(total_steps, finished_steps, description)`` after every step.
ProgressHook = Callable[[int, int, str], None]
CHECK_TIME_LIMIT = 120.0


@dataclass
class ScanResult:
    """Everything a scan found and did; what the reporters render."""

    spec_source: str
    target: str | None
    findings: list[Finding] = field(default_factory=list)
    suppressed: list[Finding] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    created: list[CreatedObject] = field(default_factory=list)
    checks_run: list[str] = field(default_factory=list)
    check_titles: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    budget: int = 0
    budget_exhausted: bool = False
    started_at: float = 0.0
    duration: float = 0.0
    audit_only: bool = False

    def apply_baseline(self, accepted: frozenset[str]) -> None:
        """Move findings whose fingerprint is in ``accepted`` to :attr:`suppressed`."""
        keep = [f for f in self.findings if f.fingerprint not in accepted]
        self.suppressed += [f for f in self.findings if f.fingerprint in accepted]
        self.findings = keep

    def failing(self, threshold: Severity) -> list[Finding]:
        """Unsuppressed findings at or above ``threshold`` (what makes the exit code 1)."""
        return [f for f in self.findings if f.severity >= threshold]

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in reversed(Severity)}
        for f in self.findings:
            out[f.severity.value] += 1
        return out


def _redacted(finding: Finding, red: Redactor) -> Finding:
    def exchange(e: Exchange) -> Exchange:
        return replace(
            e,
            url=red.redact(e.url),
            request_headers=tuple((k, red.header(k, v)) for k, v in e.request_headers),
            request_body=red.redact(e.request_body),
            response_headers=tuple((k, red.header(k, v)) for k, v in e.response_headers),
            response_body=red.redact(e.response_body),
            note=red.redact(e.note),
        )

    return replace(
        finding,
        detail=red.redact(finding.detail),
        title=red.redact(finding.title),
        evidence=tuple(exchange(e) for e in finding.evidence),
    )


def run_audit(spec: ScanSpec) -> ScanResult:
    """The contract audit alone (``--audit-only``): no request is sent."""
    start = time.time()
    result = ScanResult(spec_source=spec.source, target=None, audit_only=True, started_at=start)
    result.findings = audit(spec)
    result.checks_run = sorted({f.check for f in result.findings})
    result.duration = time.time() - start
    return result


async def _preflight(ctx: ScanContext) -> None:
    """Fail fast (TargetError) when the target does not answer or an identity cannot log in."""
    try:
        await ctx.client.request("GET", ctx.api_path("/"))
    except RequestFailed as exc:
        raise TargetError(f"target does not answer: {exc}") from None
    for ident in ctx.identities.values():
        try:
            await ident.credentials()
        except RequestFailed as exc:
            raise LoginFailed(f"{ident.name}: {exc}") from None


async def run_scan(
    spec: ScanSpec,
    target: str,
    auth: AuthConfig,
    options: ScanOptions | None = None,
    *,
    checks: Sequence[type[Check]] | None = None,
    progress: ProgressHook | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    include_audit: bool = True,
) -> ScanResult:
    """Scan ``target`` with every registered check (or ``checks``). Raises TargetError and
    ScanUsageError; everything else ends up in the result."""
    options = options or ScanOptions()
    start = time.time()
    result = ScanResult(
        spec_source=spec.source, target=target, started_at=start, budget=options.budget
    )
    classes = list(checks) if checks is not None else registered_checks()
    async with open_session(spec, target, auth, options, transport=transport) as ctx:
        try:
            await _preflight(ctx)
        except BudgetExhausted:
            raise TargetError("the request budget is too small even for logging in") from None
        plan: list[tuple[Check, list[ScanOperation]]] = []
        for cls in classes:
            check = cls()
            result.check_titles[check.id] = check.title
            missing = sorted(n for n in check.needs if not ctx.has(n))
            if missing:
                ctx.skips.append(Skip(check.id, f"needs identity {', '.join(missing)}"))
                continue
            plan.append((check, [op for op in spec.operations if check.applies_to(op)]))
        total = sum(1 + len(ops) for _c, ops in plan)
        done = 0
        for check, ops in plan:
            result.checks_run.append(check.id)
            steps: list[tuple[str, ScanOperation | None]] = [("once", None)]
            steps += [("op", op) for op in ops]
            for kind, op in steps:
                label = f"{check.id} {op.label}" if op else f"{check.id}"
                try:
                    async with asyncio.timeout(CHECK_TIME_LIMIT):
                        if op is None:
                            await check.run_once(ctx)
                        else:
                            await check.run_operation(ctx, op)
                except BudgetExhausted:
                    result.budget_exhausted = True
                    break
                except SafetyRefused as exc:
                    ctx.skips.append(Skip(check.id, f"safety: {exc}", op.label if op else None))
                except (RequestFailed, OffOrigin) as exc:
                    ctx.errors.append(f"{label}: {exc}")
                except TimeoutError:
                    ctx.errors.append(f"{label}: gave up after {CHECK_TIME_LIMIT:.0f} s")
                except Exception as exc:  # a check's bug must not end the scan
                    ctx.errors.append(f"{label}: check failed: {type(exc).__name__}: {exc}")
                done += 1
                if progress is not None:
                    progress(total, done, label if kind == "op" else check.id)
            if result.budget_exhausted:
                break
        # Defence in depth: whatever a check put in a finding or an error message, our own
        # secrets leave the scan shortened.
        red = ctx.redactor
        result.findings = [_redacted(f, red) for f in ctx.findings]
        result.skips = [replace(s, reason=red.redact(s.reason)) for s in ctx.skips]
        result.errors = [red.redact(e) for e in ctx.errors]
        result.created = list(ctx.ledger.objects)
        result.requests = ctx.client.budget.used
    if include_audit:
        result.findings += audit(spec)
    result.findings.sort(key=Finding.sort_key)
    result.duration = time.time() - start
    return result
