"""What the scanner reports: findings, their severity and confidence, and the evidence.

Plain immutable values, shared by the checks (which build them), the runner (which orders,
counts and filters them) and the reporters (which render them). Nothing here does I/O.

A :class:`Finding`'s :attr:`~Finding.fingerprint` is stable across runs: it hashes only the
check id, the OWASP category, the operation (``METHOD /template``) and the check's own ``key``
(e.g. the parameter or property name), never ids, tokens, timings or response bodies. That is
what ``--baseline`` compares, and what SARIF's ``partialFingerprints`` carries, so a finding
accepted once stays accepted while the flaw stays the same.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "OWASP",
    "Confidence",
    "Exchange",
    "Finding",
    "Severity",
    "fingerprint",
]


class Severity(enum.Enum):
    """How bad a finding is if true. Ordered: ``Severity.HIGH > Severity.LOW``."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 (info) … 4 (critical)."""
        return _SEVERITY_RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    @classmethod
    def parse(cls, text: str) -> Severity:
        """``"high"`` → ``Severity.HIGH``; ValueError names the accepted values."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown severity {text!r} (one of {names})") from None


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class Confidence(enum.Enum):
    """How sure the check is. ``CERTAIN``: proven (a canary hit, A's private value in B's
    answer, a forged token accepted). ``FIRM``: a strong signal (a SQL error signature).
    ``TENTATIVE``: a heuristic (a slow answer, a static rule)."""

    TENTATIVE = "tentative"
    FIRM = "firm"
    CERTAIN = "certain"


#: OWASP API Security Top 10 2023 categories by short code. Static contract-audit findings use
#: the category they would lead to; injection (not in the 2023 list) uses ``"INJECTION"``.
OWASP: dict[str, str] = {
    "API1": "API1:2023 Broken Object Level Authorization",
    "API2": "API2:2023 Broken Authentication",
    "API3": "API3:2023 Broken Object Property Level Authorization",
    "API4": "API4:2023 Unrestricted Resource Consumption",
    "API5": "API5:2023 Broken Function Level Authorization",
    "API6": "API6:2023 Unrestricted Access to Sensitive Business Flows",
    "API7": "API7:2023 Server Side Request Forgery",
    "API8": "API8:2023 Security Misconfiguration",
    "API9": "API9:2023 Improper Inventory Management",
    "API10": "API10:2023 Unsafe Consumption of APIs",
    "INJECTION": "Injection (OWASP Top 10 2021 A03)",
}


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its answer as shown in a report: already redacted and cut short.

    Built by :meth:`bastion.scan.checks.base.ScanContext.exchange` from an ``httpx.Response``;
    our own credentials are shortened (``eyJhbG…[redacted]``), bodies cut to a few KiB.
    """

    method: str
    url: str
    request_headers: tuple[tuple[str, str], ...] = ()
    request_body: str = ""
    status: int | None = None  # None: no answer (timeout, connection refused)
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: str = ""
    note: str = ""  # e.g. "as user_b", "took 3.1 s"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.url,
            "request_headers": [list(h) for h in self.request_headers],
            "request_body": self.request_body,
            "status": self.status,
            "response_headers": [list(h) for h in self.response_headers],
            "response_body": self.response_body,
            "note": self.note,
        }

    def as_text(self) -> str:
        """The exchange as HTTP-like text (for SARIF messages, JUnit and console)."""
        lines = [f"{self.method} {self.url}"]
        lines += [f"{k}: {v}" for k, v in self.request_headers]
        if self.request_body:
            lines += ["", self.request_body]
        lines.append("")
        lines.append(f"-> {self.status if self.status is not None else 'no answer'}")
        lines += [f"{k}: {v}" for k, v in self.response_headers]
        if self.response_body:
            lines += ["", self.response_body]
        if self.note:
            lines.append(f"({self.note})")
        return "\n".join(lines)


Kind = Literal["active", "audit"]


def fingerprint(check: str, owasp: str, operation: str | None, key: str = "") -> str:
    """A stable id for a finding: 32 hex chars of SHA-256 over its identifying parts."""
    parts = "\x1f".join((check, owasp, operation or "-", key))
    return hashlib.sha256(parts.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the scanner found.

    ``owasp`` is a key of :data:`OWASP` (``"API1"``); ``cwe`` like ``"CWE-639"``;
    ``operation`` is ``"GET /api/invoices/{invoice_id}"`` (the template, not the concrete path)
    or None for target-wide findings; ``key`` tells apart two findings of one check on one
    operation (a parameter name, a header, a wordlist path) and goes into the fingerprint, so it
    must not contain run-specific values (ids the server minted, tokens, times).
    """

    check: str
    title: str
    owasp: str
    cwe: str
    severity: Severity
    confidence: Confidence
    operation: str | None
    detail: str
    remediation: str
    evidence: tuple[Exchange, ...] = ()
    key: str = ""
    kind: Kind = "active"
    tags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.owasp not in OWASP:
            raise ValueError(f"unknown OWASP category {self.owasp!r}")
        if not self.cwe.startswith("CWE-"):
            raise ValueError(f"cwe must look like CWE-639, not {self.cwe!r}")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.check, self.owasp, self.operation, self.key)

    @property
    def owasp_title(self) -> str:
        return OWASP[self.owasp]

    def sort_key(self) -> tuple[int, int, str, str, str]:
        """Worst first: active before audit, then severity, then check and operation."""
        return (
            0 if self.kind == "active" else 1,
            -self.severity.rank,
            self.check,
            self.operation or "",
            self.key,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "check": self.check,
            "kind": self.kind,
            "title": self.title,
            "owasp": self.owasp,
            "owasp_title": self.owasp_title,
            "cwe": self.cwe,
            "severity": self.severity.value,
            "confidence": self.confidence.value,
            "operation": self.operation,
            "key": self.key,
            "detail": self.detail,
            "remediation": self.remediation,
            "evidence": [e.to_dict() for e in self.evidence],
            "tags": list(self.tags),
        }
