"""SARIF 2.1.0 for GitHub code scanning (and any SARIF viewer).

One ``reportingDescriptor`` (rule) per check id; one ``result`` per finding with

* ``level`` from the severity (critical/high → error, medium → warning, low/info → note) and
  the rule's ``security-severity`` property (what GitHub ranks security alerts by);
* a physical location in the OpenAPI document — the line of the operation, found in the
  spec's text — because code scanning only shows results that point into the repository; the
  operation itself as a logical location;
* ``partialFingerprints["bastionFingerprint/v1"]``: the stable fingerprint, so an alert keeps
  its identity from one run to the next;
* the redacted reproduction in the message's markdown and in ``properties.evidence``.

Validated against the official schema (``sarif-schema-2.1.0.json``) in the tests.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import orjson

from bastion.scan.model import Finding, Severity
from bastion.scan.runner import ScanResult

__all__ = ["render_sarif"]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
FINGERPRINT_KEY = "bastionFingerprint/v1"
_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "1.0",
}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _artifact_uri(source: str) -> str:
    """A repository-relative path for a spec file (GitHub maps it to the file), else the URL."""
    if "://" in source:
        return source
    path = Path(source)
    try:
        path = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        path = Path(path.name)
    return path.as_posix()


class _LineIndex:
    """Finds the line of ``paths['/x'].get`` in the spec text (YAML or JSON), else line 1."""

    def __init__(self, source: str) -> None:
        self.lines: list[str] = []
        if "://" not in source:
            try:
                self.lines = Path(source).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                self.lines = []

    def line_of(self, operation: str | None) -> int:
        if not operation or not self.lines:
            return 1
        method, _, template = operation.partition(" ")
        key = re.compile(r"^\s*[\"']?" + re.escape(template) + r"[\"']?\s*:")
        method_key = re.compile(r"^\s*[\"']?" + method.lower() + r"[\"']?\s*:")
        for i, line in enumerate(self.lines):
            if key.match(line):
                indent = len(line) - len(line.lstrip())
                for j in range(i + 1, len(self.lines)):
                    nxt = self.lines[j]
                    if (
                        nxt.strip()
                        and (len(nxt) - len(nxt.lstrip())) <= indent
                        and not nxt.lstrip().startswith(("}", "]"))
                    ):
                        break
                    if method_key.match(nxt):
                        return j + 1
                return i + 1
        return 1


def _markdown(f: Finding) -> str:
    parts = [
        f"**{f.title}** ({f.owasp_title}, {f.cwe}; severity {f.severity.value}, "
        f"confidence {f.confidence.value})",
        "",
        f.detail,
        "",
    ]
    for e in f.evidence:
        parts += ["```http", e.as_text().replace("```", "`\u200b``"), "```", ""]
    parts += [f"Remediation: {f.remediation}"]
    return "\n".join(parts)


def render_sarif(result: ScanResult) -> str:
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for f in result.findings:
        if f.check in index:
            continue
        index[f.check] = len(rules)
        title = result.check_titles.get(f.check, f.title)
        rules.append(
            {
                "id": f.check,
                "name": "".join(w.capitalize() for w in re.split(r"[^A-Za-z0-9]+", f.check)),
                "shortDescription": {"text": title},
                "fullDescription": {"text": f"{title}. {f.owasp_title}, {f.cwe}."},
                "help": {"text": f.remediation, "markdown": f.remediation},
                "defaultConfiguration": {"level": _LEVEL[f.severity]},
                "properties": {
                    "tags": ["security", f.owasp, f.cwe, f.kind],
                    "security-severity": _SECURITY_SEVERITY[f.severity],
                    "precision": {"certain": "very-high", "firm": "high"}.get(
                        f.confidence.value, "medium"
                    ),
                },
            }
        )
    uri = _artifact_uri(result.spec_source)
    lines = _LineIndex(result.spec_source)
    results: list[dict[str, Any]] = []
    for f in result.findings:
        where = f.operation or (result.target or result.spec_source)
        message = f"{f.title}: {f.detail}"
        location: dict[str, Any] = {
            "physicalLocation": {
                "artifactLocation": {"uri": uri},
                "region": {"startLine": lines.line_of(f.operation)},
            },
            "logicalLocations": [{"name": where, "kind": "function" if f.operation else "module"}],
        }
        results.append(
            {
                "ruleId": f.check,
                "ruleIndex": index[f.check],
                "level": _LEVEL[f.severity],
                "kind": "fail",
                "message": {"text": message, "markdown": _markdown(f)},
                "locations": [location],
                "partialFingerprints": {FINGERPRINT_KEY: f.fingerprint},
                "properties": {
                    "severity": f.severity.value,
                    "confidence": f.confidence.value,
                    "owasp": f.owasp_title,
                    "cwe": f.cwe,
                    "kind": f.kind,
                    "operation": f.operation or "",
                    "evidence": [e.to_dict() for e in f.evidence],
                },
            }
        )
    notifications = [{"level": "warning", "message": {"text": e}} for e in result.errors] + [
        {
            "level": "note",
            "message": {
                "text": f"skipped {s.check}"
                + (f" on {s.operation}" if s.operation else "")
                + f": {s.reason}"
            },
        }
        for s in result.skips
    ]
    if result.budget_exhausted:
        notifications.append(
            {
                "level": "warning",
                "message": {
                    "text": f"request budget of {result.budget} spent: the scan stopped early"
                },
            }
        )
    invocation: dict[str, Any] = {
        "executionSuccessful": not result.budget_exhausted,
        "startTimeUtc": _iso(result.started_at),
        "endTimeUtc": _iso(result.started_at + result.duration),
        "toolExecutionNotifications": notifications,
    }
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "bastion-scan",
                        "informationUri": "https://bastion.dev/docs/scanner",
                        "semanticVersion": "1.0.0",
                        "rules": rules,
                    }
                },
                "automationDetails": {"id": "bastion-scan/"},
                "invocations": [invocation],
                "columnKind": "unicodeCodePoints",
                "results": results,
                "properties": {
                    "target": result.target or "",
                    "requests": result.requests,
                    "suppressedByBaseline": [f.fingerprint for f in result.suppressed],
                    "createdObjects": [
                        {
                            "path": o.path,
                            "operation": o.operation,
                            "identity": o.identity,
                            "deleted": o.deleted,
                        }
                        for o in result.created
                    ],
                },
            }
        ],
    }
    return orjson.dumps(log, option=orjson.OPT_INDENT_2).decode() + "\n"
