"""The runner: checks over operations, failures contained, budget, preflight, progress."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bastion.scan.checks.base import USER_A, USER_B, Check, ScanContext
from bastion.scan.errors import LoginFailed, RequestFailed, TargetError
from bastion.scan.model import Confidence, Severity
from bastion.scan.runner import run_audit, run_scan
from bastion.scan.session import ScanOptions
from bastion.scan.spec import ScanOperation, ScanSpec

OPTS = ScanOptions(rate=1000.0, canary=False)


class ReadOthersNotes(Check):
    """A small BOLA check: user_b reads user_a's note by id."""

    id = "t-bola"
    title = "Other users' notes readable"
    owasp = "API1"
    cwe = "CWE-639"
    remediation = "Check the owner."
    needs = frozenset({USER_A, USER_B})

    def applies_to(self, op: ScanOperation) -> bool:
        return op.method == "GET" and bool(op.params_in("path"))

    async def run_operation(self, ctx: ScanContext, op: ScanOperation) -> None:
        created = await ctx.send("POST", "/notes", json={"text": "private-of-a"})
        path = ctx.fill_path(op, {"note_id": created.json()["id"]})
        theirs = await ctx.send("GET", path, identity=USER_B, operation=op)
        if theirs.ok and "private-of-a" in theirs.text:
            ctx.report(
                self.finding(
                    ctx,
                    op,
                    "user_b read user_a's note",
                    severity=Severity.HIGH,
                    confidence=Confidence.CERTAIN,
                    evidence=(created, theirs),
                )
            )
        await ctx.send("DELETE", path, identity=USER_A)


class Crashes(Check):
    id = "t-crash"
    title = "crash"
    owasp = "API8"
    cwe = "CWE-16"

    async def run_once(self, ctx: ScanContext) -> None:
        raise KeyError("bug")


class NoAnswer(Check):
    id = "t-noanswer"
    title = "no answer"
    owasp = "API8"
    cwe = "CWE-16"

    async def run_once(self, ctx: ScanContext) -> None:
        raise RequestFailed("GET /x: timed out", elapsed=1.0, timed_out=True)


class Unsafe(Check):
    id = "t-unsafe"
    title = "unsafe"
    owasp = "API1"
    cwe = "CWE-639"

    async def run_once(self, ctx: ScanContext) -> None:
        await ctx.send("DELETE", "/notes/1")


class NeedsAdmin(Check):
    id = "t-admin"
    title = "admin"
    owasp = "API5"
    cwe = "CWE-285"
    needs = frozenset({"admin"})


class Greedy(Check):
    id = "t-greedy"
    title = "greedy"
    owasp = "API4"
    cwe = "CWE-770"

    async def run_once(self, ctx: ScanContext) -> None:
        while True:
            await ctx.send("GET", "/notes")


async def test_scan_reports_contains_failures_and_skips(
    spec: ScanSpec, auth: Any, transport: httpx.ASGITransport, app: Any
) -> None:
    progress: list[tuple[int, int, str]] = []
    result = await run_scan(
        spec,
        "http://testserver",
        auth,
        OPTS,
        checks=[ReadOthersNotes, Crashes, NoAnswer, Unsafe, NeedsAdmin],
        transport=transport,
        progress=lambda t, d, w: progress.append((t, d, w)),
    )
    active = [f for f in result.findings if f.kind == "active"]
    assert [f.check for f in active] == ["t-bola"]
    assert active[0].operation == "GET /notes/{note_id}"
    assert any(f.kind == "audit" for f in result.findings)
    assert result.findings[0].kind == "active"  # active before audit
    assert any("t-crash" in e and "KeyError" in e for e in result.errors)
    assert any("t-noanswer" in e for e in result.errors)
    assert any(s.check == "t-unsafe" and "safety" in s.reason for s in result.skips)
    assert any(s.check == "t-admin" and "admin" in s.reason for s in result.skips)
    assert "1" in app.state.data["notes"]  # the refused DELETE never reached the app
    assert result.created
    assert all(o.deleted for o in result.created)
    assert progress[-1][0] == progress[-1][1] == 5  # 4 checks once + 1 operation
    assert result.requests > 0
    assert "t-admin" not in result.checks_run
    assert result.check_titles["t-bola"] == "Other users' notes readable"


async def test_budget_exhaustion_stops_the_scan(
    spec: ScanSpec, auth: Any, transport: httpx.ASGITransport
) -> None:
    opts = ScanOptions(rate=1000.0, canary=False, budget=20)
    result = await run_scan(
        spec, "http://testserver", auth, opts, checks=[Greedy, ReadOthersNotes], transport=transport
    )
    assert result.budget_exhausted
    assert result.requests == 20
    assert result.checks_run == ["t-greedy"]


async def test_preflight_failures_are_target_errors(spec: ScanSpec, auth: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TargetError, match="does not answer"):
        await run_scan(
            spec, "http://testserver", auth, OPTS, checks=[], transport=httpx.MockTransport(refuse)
        )

    def no_login(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401 if request.url.path.endswith("/login") else 200)

    with pytest.raises(LoginFailed, match="user_a"):
        await run_scan(
            spec,
            "http://testserver",
            auth,
            OPTS,
            checks=[],
            transport=httpx.MockTransport(no_login),
        )
    tiny = ScanOptions(rate=1000.0, canary=False, budget=1)
    with pytest.raises(TargetError, match="budget"):
        await run_scan(
            spec,
            "http://testserver",
            auth,
            tiny,
            checks=[],
            transport=httpx.MockTransport(lambda r: httpx.Response(200)),
        )


def test_audit_only_and_baseline(spec: ScanSpec) -> None:
    result = run_audit(spec)
    assert result.audit_only
    assert result.findings
    assert result.requests == 0
    first = result.findings[0]
    result.apply_baseline(frozenset({first.fingerprint}))
    assert first in result.suppressed
    assert first not in result.findings
    assert result.failing(Severity.INFO) == result.findings
    assert sum(result.counts().values()) == len(result.findings)


class Leaky(Check):
    """A careless check that puts our token into its own evidence and error text."""

    id = "t-leaky"
    title = "leaky"
    owasp = "API2"
    cwe = "CWE-287"

    async def run_once(self, ctx: ScanContext) -> None:
        from bastion.scan.model import Exchange

        token = await ctx.token(USER_A)
        ctx.report(
            self.finding(
                ctx,
                None,
                "saw something",
                evidence=(
                    Exchange(
                        "GET",
                        f"http://t/?t={token}",
                        (("x-token", str(token)),),
                        f"body {token}",
                        200,
                        (),
                        f"echo {token}",
                    ),
                ),
            )
        )
        raise RuntimeError(f"failed with {token}")


async def test_our_secrets_are_redacted_even_from_careless_checks(
    spec: ScanSpec, auth: Any, transport: httpx.ASGITransport
) -> None:
    result = await run_scan(
        spec,
        "http://testserver",
        auth,
        OPTS,
        checks=[Leaky],
        transport=transport,
        include_audit=False,
    )
    text = repr(result.findings) + repr(result.errors)
    assert "tok-1-" in text  # a prefix is kept, so two tokens can be told apart
    assert "-abcdef" not in text  # the rest of the token is not
    assert len(result.findings) == 1
