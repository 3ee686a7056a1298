"""The audit step: hands each completed exchange to the :class:`~bastion.audit.writer.Auditor`.

It runs once per exchange, after the response is complete (the runner calls :meth:`finish`,
not ``on_request``), whether the upstream answered or a layer did. It holds no per-request
state; the auditor it wraps is shared by every route and closed by its owner, not here.
"""

from __future__ import annotations

from bastion.audit.writer import Auditor
from bastion.core.exchange import Exchange
from bastion.gateway.layers.base import Layer


class AuditLayer(Layer):
    """Submits one audit record per exchange, waiting first if the audit buffer is full."""

    name = "audit"

    def __init__(self, auditor: Auditor) -> None:
        self._auditor = auditor

    async def finish(self, ex: Exchange) -> None:
        """Record ``ex`` (call exactly once per exchange, after the response is complete).

        Backpressure: when the audit buffer is full this waits for the sinks to catch up, so
        a stalled sink slows requests down instead of losing their records.
        """
        auditor = self._auditor
        if auditor.full:
            await auditor.wait_for_space()
        auditor.submit(ex)
