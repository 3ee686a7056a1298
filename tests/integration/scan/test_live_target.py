"""The scanner over real sockets: a live uvicorn target, the real SSRF canary, real logins.

The target is the small notes app of the scanner's unit tests, served on 127.0.0.1; its
``POST /api/webhook`` fetches any URL (an SSRF on purpose). The check below is a minimal SSRF
probe written against the public Check interface, so this also proves that a check written the
way base.py teaches works end to end: canary hit → finding with a redacted reproduction →
SARIF and JSON reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion.scan.checks.base import USER_A, Check, ScanContext
from bastion.scan.model import Confidence, Severity
from bastion.scan.report import write_reports
from bastion.scan.runner import run_scan
from bastion.scan.session import ScanOptions
from bastion.scan.spec import ScanOperation, scan_spec_from_document
from tests.unit.scan.conftest import AUTH, SPEC, LiveServer, make_app

pytestmark = pytest.mark.integration


class WebhookSsrf(Check):
    id = "t-ssrf"
    title = "SSRF through a URL field"
    owasp = "API7"
    cwe = "CWE-918"
    remediation = "Allow-list the hosts the server may fetch."

    def applies_to(self, op: ScanOperation) -> bool:
        schema = op.body_schema or {}
        return "url" in (schema.get("properties") or {})

    async def run_operation(self, ctx: ScanContext, op: ScanOperation) -> None:
        assert ctx.canary is not None
        token = ctx.canary.new_token()
        reply = await ctx.send(
            op.method,
            ctx.fill_path(op),
            json={"url": ctx.canary.url(token)},
            identity=USER_A,
            operation=op,
        )
        hit = await ctx.canary.wait(token, seconds=1.0)
        if hit is not None:
            ctx.report(
                self.finding(
                    ctx,
                    op,
                    f"the server fetched the canary ({hit.method})",
                    severity=Severity.HIGH,
                    confidence=Confidence.CERTAIN,
                    evidence=(reply,),
                    key="url",
                )
            )


def _spec() -> Any:
    doc = json.loads(json.dumps(SPEC))
    doc["paths"]["/webhook"] = {
        "post": {
            "operationId": "testWebhook",
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"url": {"type": "string", "format": "uri"}},
                        }
                    }
                }
            },
            "responses": {"200": {"description": "ok"}},
        }
    }
    return scan_spec_from_document(doc)


async def test_canary_proves_ssrf_on_a_live_target(tmp_path: Path) -> None:
    app = make_app()
    with LiveServer(app) as live:
        result = await run_scan(
            _spec(), live.url, _auth(), ScanOptions(rate=200.0), checks=[WebhookSsrf]
        )
    active = [f for f in result.findings if f.kind == "active"]
    assert [(f.check, f.operation, f.key) for f in active] == [("t-ssrf", "POST /webhook", "url")]
    evidence = active[0].evidence[0]
    assert "127.0.0.1" in evidence.request_body
    sent = {k.lower(): v for k, v in evidence.request_headers}
    assert sent["authorization"] == "Bearer tok-1-…[redacted]"
    written = write_reports(result, ["sarif", "json"], tmp_path, Severity.HIGH)
    text = "".join(p.read_text() for p in written)
    assert "alice-pass-123" not in text
    assert result.requests < 10


async def test_no_canary_no_finding_when_the_target_does_not_fetch(tmp_path: Path) -> None:
    app = make_app()
    doc = json.loads(json.dumps(SPEC))
    doc["paths"]["/notes"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"
    ]["url"] = {"type": "string"}
    with LiveServer(app) as live:
        result = await run_scan(
            scan_spec_from_document(doc),
            live.url,
            _auth(),
            ScanOptions(rate=200.0),
            checks=[WebhookSsrf],
        )
    assert [f for f in result.findings if f.kind == "active"] == []
    assert all(o.path.startswith("/api/notes/") for o in result.created)


def _auth() -> Any:
    from bastion.scan.auth import parse_auth

    return parse_auth(AUTH)
