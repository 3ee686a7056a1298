"""API7 SSRF: URL-like parameters and body fields pointed at the scanner's canary listener on
127.0.0.1; a request arriving there is proof (the token in its path says which field)."""

from __future__ import annotations

import re

from bastion.scan.checks import register
from bastion.scan.checks._probe import path_for, send, unique_body
from bastion.scan.checks.base import USER_A, Check, ScanContext
from bastion.scan.errors import RequestFailed, SafetyRefused
from bastion.scan.model import Confidence, Severity
from bastion.scan.spec import ScanOperation

__all__ = ["Ssrf", "url_fields"]

_URL_NAME = re.compile(
    r"(?i)(url|uri|link|href|src|callback|webhook|endpoint|redirect|image|avatar|feed|proxy|fetch)"
)
WAIT_SECONDS = 2.5


def url_fields(op: ScanOperation) -> tuple[list[str], list[str]]:
    """(query parameters, body properties) that look like they take a URL."""
    query = [
        p.name
        for p in op.params_in("query")
        if _URL_NAME.search(p.name)
        or (isinstance(p.schema, dict) and p.schema.get("format") in ("uri", "url"))
    ]
    props = (op.body_schema or {}).get("properties") or {}
    body = [
        k
        for k, v in props.items()
        if _URL_NAME.search(k) or (isinstance(v, dict) and v.get("format") in ("uri", "url"))
    ]
    return query, body


@register
class Ssrf(Check):
    id = "ssrf"
    title = "Server-side request forgery"
    owasp = "API7"
    cwe = "CWE-918"
    severity = Severity.HIGH
    remediation = (
        "Fetch only URLs on an allow-list of hosts; resolve and refuse loopback, private and "
        "link-local addresses; no redirects."
    )
    order = 60

    def applies_to(self, op: ScanOperation) -> bool:
        query, body = url_fields(op)
        return bool(query or body)

    async def run_operation(self, ctx: ScanContext, op: ScanOperation) -> None:
        if ctx.canary is None:
            ctx.skip(self, "no canary listener", op)
            return
        path = await path_for(ctx, op)
        if path is None:
            return
        query, body_fields = url_fields(op)
        for name in query + body_fields:
            token = ctx.canary.new_token()
            url = ctx.canary.url(token)
            try:
                if name in query:
                    reply = await send(
                        ctx, op.method, path, identity=USER_A, params={name: url}, operation=op
                    )
                else:
                    body = unique_body(ctx.sample_body(op)) or {}
                    body[name] = url
                    reply = await send(
                        ctx, op.method, path, identity=USER_A, json=body, operation=op
                    )
            except (SafetyRefused, RequestFailed):
                reply = None
            hit = await ctx.canary.wait(token, seconds=WAIT_SECONDS)
            if hit is not None:
                ctx.report(
                    self.finding(
                        ctx,
                        op,
                        f"{name}: the server fetched the scanner's canary URL "
                        f"({hit.method} from the target)",
                        confidence=Confidence.CERTAIN,
                        key=f"ssrf:{name}",
                        evidence=(reply,) if reply else (),
                    )
                )
