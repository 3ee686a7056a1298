"""The example SaaS API (examples/saas_api.py) in process, in both modes, as the target of each
check's tests: the vulnerable mode must give the check's findings, the secure mode none."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from examples.saas_api import SaasStore, create_app

from bastion.scan.auth import parse_auth
from bastion.scan.checks.base import Check, ScanContext
from bastion.scan.errors import SafetyRefused
from bastion.scan.model import Finding
from bastion.scan.session import ScanOptions, open_session
from bastion.scan.spec import load_scan_spec

EXAMPLES = Path(__file__).resolve().parents[4] / "examples"
SPEC = load_scan_spec(str(EXAMPLES / "openapi.yaml"))
AUTH = parse_auth(yaml.safe_load((EXAMPLES / "scan-auth.yaml").read_text(encoding="utf-8")))

Target = Callable[[bool], AbstractAsyncContextManager[ScanContext]]


@asynccontextmanager
async def example_target(vulnerable: bool) -> AsyncIterator[ScanContext]:
    app = create_app(SaasStore(), vulnerable=vulnerable)
    transport = httpx.ASGITransport(app=app)
    async with open_session(
        SPEC, "http://testserver", AUTH, ScanOptions(rate=1000.0), transport=transport
    ) as ctx:
        yield ctx


@pytest.fixture
def target() -> Target:
    return example_target


async def run_check(check: Check, ctx: ScanContext) -> list[Finding]:
    """What the runner does with one check: run_once, then every operation it applies to."""
    await check.run_once(ctx)
    for op in ctx.spec.operations:
        if check.applies_to(op):
            try:
                await check.run_operation(ctx, op)
            except SafetyRefused:
                continue
    return [f for f in ctx.findings if f.check == check.id]
