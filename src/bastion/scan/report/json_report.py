"""The JSON report: every finding with its evidence, what was skipped, what was created.

Also a valid ``--baseline`` file: the baseline reads the ``fingerprint`` of each finding.
"""

from __future__ import annotations

import datetime
from typing import Any

import orjson

from bastion.scan.model import Severity
from bastion.scan.runner import ScanResult

__all__ = ["render_json", "result_dict"]

REPORT_VERSION = 1


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_dict(result: ScanResult, fail_on: Severity) -> dict[str, Any]:
    return {
        "version": REPORT_VERSION,
        "tool": "bastion-scan",
        "spec": result.spec_source,
        "target": result.target,
        "audit_only": result.audit_only,
        "started_at": _iso(result.started_at),
        "duration_s": round(result.duration, 3),
        "requests": result.requests,
        "budget": result.budget,
        "budget_exhausted": result.budget_exhausted,
        "fail_on": fail_on.value,
        "failed": bool(result.failing(fail_on)),
        "summary": result.counts(),
        "checks_run": result.checks_run,
        "findings": [f.to_dict() for f in result.findings],
        "suppressed": [
            {
                "fingerprint": f.fingerprint,
                "check": f.check,
                "operation": f.operation,
                "title": f.title,
            }
            for f in result.suppressed
        ],
        "skipped": [
            {"check": s.check, "operation": s.operation, "reason": s.reason} for s in result.skips
        ],
        "errors": result.errors,
        "created_objects": [
            {"path": o.path, "operation": o.operation, "identity": o.identity, "deleted": o.deleted}
            for o in result.created
        ],
    }


def render_json(result: ScanResult, fail_on: Severity) -> str:
    return orjson.dumps(result_dict(result, fail_on), option=orjson.OPT_INDENT_2).decode() + "\n"
