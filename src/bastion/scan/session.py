"""Opening a scan session: the client, identities, canary, safety policy and ledger, wired into
one :class:`~bastion.scan.checks.base.ScanContext` and closed together.

The runner uses :func:`open_session`; so do tests of checks, with ``transport=`` an
``httpx.ASGITransport(app)`` to scan an in-process ASGI app without a socket::

    async with open_session(spec, "http://testserver", auth, transport=transport) as ctx:
        await MyCheck().run_operation(ctx, ctx.spec.operations[0])
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from bastion.scan.auth import AuthConfig, build_identities
from bastion.scan.canary import Canary
from bastion.scan.checks.base import ScanContext
from bastion.scan.client import ScanClient
from bastion.scan.redact import Redactor
from bastion.scan.safety import Ledger, SafetyPolicy
from bastion.scan.spec import ScanSpec

__all__ = ["ScanOptions", "open_session"]


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """The knobs of one scan (the CLI's options)."""

    budget: int = 2000
    rate: float = 20.0  # requests per second
    timeout: float = 10.0  # seconds per request
    concurrency: int = 8
    allow_account_mutation: bool = False
    canary: bool = True
    verify_tls: bool = True


@asynccontextmanager
async def open_session(
    spec: ScanSpec,
    target: str,
    auth: AuthConfig,
    options: ScanOptions | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[ScanContext]:
    """A ready :class:`ScanContext`; everything is closed on exit. ScanUsageError for a bad
    target or budget."""
    options = options or ScanOptions()
    client = ScanClient(
        target,
        budget=options.budget,
        rate=options.rate,
        timeout=options.timeout,
        concurrency=options.concurrency,
        verify=options.verify_tls,
        transport=transport,
    )
    canary = Canary() if options.canary else None
    try:
        if canary is not None:
            await canary.start()
        redactor = Redactor()
        ledger = Ledger()
        ctx = ScanContext(
            spec=spec,
            client=client,
            auth=auth,
            identities=build_identities(auth, client, redactor),
            safety=SafetyPolicy(ledger, allow_account_mutation=options.allow_account_mutation),
            ledger=ledger,
            redactor=redactor,
            canary=canary,
        )
        yield ctx
    finally:
        if canary is not None:
            await canary.close()
        await client.aclose()
