"""The audit log: one redacted ECS record per request, written off the request path.

:mod:`~bastion.audit.redact` masks secrets and personal data, :mod:`~bastion.audit.record`
shapes and serialises a record, :mod:`~bastion.audit.sinks` writes them (file, stdout, store)
and :mod:`~bastion.audit.writer` batches, retries and applies backpressure.
"""

from __future__ import annotations

from bastion.audit.record import AuditEntry, build_record, to_line
from bastion.audit.redact import Redactor, redact_headers, redact_query, redact_text
from bastion.audit.writer import Auditor

__all__ = [
    "AuditEntry",
    "Auditor",
    "Redactor",
    "build_record",
    "redact_headers",
    "redact_query",
    "redact_text",
    "to_line",
]
