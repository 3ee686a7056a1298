"""API2 on the login endpoint of scan-auth.yaml: user enumeration (a known username with a wrong
password answered differently from an unknown one), no lockout or throttling (a bounded burst
of wrong passwords against an account the scanner signed up itself), and API8 default
credentials (a short list).

Login attempts do not change an account, so they go through the budgeted, origin-locked client
directly rather than through the account-mutation rule that ``ctx.send`` applies to anything
whose summary mentions passwords or tokens. The burst never targets a configured identity:
locking user_a would blind every other check.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

from bastion.scan.auth import LoginSpec
from bastion.scan.checks import register
from bastion.scan.checks._probe import send, throttled, unique_body
from bastion.scan.checks.base import ANONYMOUS, USER_A, Check, ScanContext
from bastion.scan.client import Reply
from bastion.scan.errors import SafetyRefused
from bastion.scan.model import Confidence, Severity
from bastion.scan.spec import ScanOperation

__all__ = ["Login"]

DEFAULT_CREDENTIALS = (
    ("admin", "admin"),
    ("admin", "password"),
    ("admin", "admin123"),
    ("root", "root"),
    ("administrator", "administrator"),
    ("test", "test"),
    ("user", "user"),
    ("guest", "guest"),
)
BURST = 12
_LOCKED = re.compile(r"(?i)(lock|too many|try (again )?later|throttl|rate.?limit|captcha)")


def _normalised(reply: Reply, *values: str) -> tuple[int, str]:
    """Status and body with the usernames we sent taken out, so an echo does not count."""
    text = reply.text
    for value in values:
        text = text.replace(value, "<user>")
    return reply.status, text


@register
class Login(Check):
    id = "login"
    title = "Weak login protection"
    owasp = "API2"
    cwe = "CWE-307"
    severity = Severity.MEDIUM
    remediation = (
        "Answer every failed login alike; lock or slow down a username after a few failures "
        "(whether it exists or not); never ship default accounts."
    )
    order = 95  # may lock an account: after everything else

    async def run_once(self, ctx: ScanContext) -> None:
        login = ctx.auth.login
        if login is None:
            ctx.skip(self, "no login endpoint in scan-auth.yaml")
            return
        op, _ = ctx.spec.match(login.method, login.path)
        where: ScanOperation | str = op or f"{login.method} {login.path}"
        await self._default_credentials(ctx, login, where)
        await self._enumeration(ctx, login, where)
        await self._lockout(ctx, login, where)

    async def _attempt(
        self,
        ctx: ScanContext,
        login: LoginSpec,
        username: str,
        password: Any,
        *,
        patient: bool = True,
    ) -> Reply:
        """One login attempt. ``patient``: after a 429/503, wait what Retry-After asks (at
        most 2 s) and try once more — except in the burst, where the 429 is the answer."""
        fields = {login.username_field: username, login.password_field: password}
        reply = await self._post(ctx, login, fields)
        if patient and throttled(reply):
            await asyncio.sleep(min(_retry_after(reply), 2.0))
            reply = await self._post(ctx, login, fields)
        return reply

    async def _post(self, ctx: ScanContext, login: LoginSpec, fields: dict[str, Any]) -> Reply:
        if login.format == "json":
            return await ctx.client.request(
                login.method, login.path, json=fields, identity=ANONYMOUS
            )
        return await ctx.client.request(login.method, login.path, data=fields, identity=ANONYMOUS)

    async def _enumeration(
        self, ctx: ScanContext, login: LoginSpec, where: ScanOperation | str
    ) -> None:
        known = ctx.identity(USER_A).username if ctx.has(USER_A) else None
        if not known:
            return
        wrong = "Wrong-" + secrets.token_urlsafe(12)
        ghosts = [f"nobody-{secrets.token_hex(5)}@bastion-scan.invalid" for _ in range(2)]
        first = await self._attempt(ctx, login, ghosts[0], wrong)
        second = await self._attempt(ctx, login, ghosts[1], wrong)
        real = await self._attempt(ctx, login, known, wrong)
        if any(throttled(r) or r.ok for r in (first, second, real)):
            return
        if _normalised(first, ghosts[0]) != _normalised(second, ghosts[1]):
            return  # unknown users alone get varying answers: nothing to compare against
        if _normalised(real, known) != _normalised(first, ghosts[0]):
            ctx.report(
                self.finding(
                    ctx,
                    where,
                    f"a wrong password for an existing user is answered {real.status}, an "
                    f"unknown username {first.status}: usernames can be enumerated",
                    confidence=Confidence.FIRM,
                    key="user-enumeration",
                    cwe="CWE-204",
                    title="User enumeration through the login answer",
                    evidence=(real, first),
                    notes=("existing user, wrong password", "unknown user"),
                )
            )

    async def _default_credentials(
        self, ctx: ScanContext, login: LoginSpec, where: ScanOperation | str
    ) -> None:
        for username, password in DEFAULT_CREDENTIALS:
            reply = await self._attempt(ctx, login, username, password)
            if reply.ok and _token_in(reply):
                ctx.report(
                    self.finding(
                        ctx,
                        where,
                        f"the default credentials {username}/{'*' * len(password)} log in",
                        severity=Severity.CRITICAL,
                        confidence=Confidence.CERTAIN,
                        key="default-credentials",
                        owasp="API8",
                        cwe="CWE-1392",
                        title="Default credentials accepted",
                        evidence=(reply,),
                        remediation="Remove default accounts; force a password change on "
                        "first use.",
                    )
                )
                return

    async def _lockout(
        self, ctx: ScanContext, login: LoginSpec, where: ScanOperation | str
    ) -> None:
        account = await self._sign_up(ctx, login)
        if account is None:
            ctx.skip(
                self,
                "no sign-up operation to create an account of our own: lockout not tested",
            )
            return
        username, password = account
        first = await self._attempt(ctx, login, username, password)
        if not first.ok:
            ctx.skip(self, "the account the scanner signed up cannot log in")
            return
        if not ctx.can_spend(BURST + 1):
            ctx.skip(self, "budget too small for the login burst")
            return
        last: Reply | None = None
        for _ in range(BURST):
            last = await self._attempt(
                ctx, login, username, "Wrong-" + secrets.token_urlsafe(10), patient=False
            )
            if throttled(last) or last.status == 423 or _LOCKED.search(last.text):
                return  # locked or throttled: what we want to see
        after = await self._attempt(ctx, login, username, password, patient=False)
        if after.ok and last is not None:
            ctx.report(
                self.finding(
                    ctx,
                    where,
                    f"{BURST} wrong passwords in a row for one account were neither locked "
                    "nor throttled, and the right password still works after them",
                    confidence=Confidence.CERTAIN,
                    key="no-lockout",
                    title="No lockout or throttling of failed logins",
                    evidence=(last, after),
                    notes=(f"wrong password #{BURST}", "the right password afterwards"),
                )
            )

    async def _sign_up(self, ctx: ScanContext, login: LoginSpec) -> tuple[str, str] | None:
        """Create an account of our own through a documented sign-up operation (a POST whose
        body takes the login's password field), return its username and password."""
        for op in ctx.spec.operations:
            schema = op.body_schema
            props = schema.get("properties") if isinstance(schema, dict) else None
            if op.method != "POST" or not isinstance(props, dict) or op.path == login.path:
                continue
            if login.password_field not in props:
                continue
            body = unique_body(ctx.sample_body(op))
            if not isinstance(body, dict):
                continue
            password = "Scan-" + secrets.token_urlsafe(18)
            body[login.password_field] = password
            if login.username_field in props:
                username = str(body.get(login.username_field) or "")
            else:
                username = next((str(v) for k, v in body.items() if "email" in k.lower()), "")
            if not username:
                continue
            for who in (ANONYMOUS, USER_A):
                try:
                    reply = await send(
                        ctx, "POST", ctx.fill_path(op), identity=who, json=body, operation=op
                    )
                except SafetyRefused:
                    break
                if reply.ok:
                    ctx.redactor.add(password, keep_prefix=False)
                    return username, password
        return None


def _token_in(reply: Reply) -> bool:
    """Whether a login answer hands out a credential (a token-like field or a cookie)."""
    doc = reply.json()
    if isinstance(doc, dict) and any(
        "token" in k.lower() and isinstance(v, str) and len(v) > 10 for k, v in doc.items()
    ):
        return True
    return "set-cookie" in reply.headers


def _retry_after(reply: Reply) -> float:
    value = reply.headers.get("retry-after", "1")
    return float(value) if value.isdigit() else 1.0
