"""A single-file HTML report: no script, no external resource, every value escaped.

Findings sort worst first; each opens (``<details>``) to its detail, reproduction and
remediation. Evidence comes from the target, so it is treated as hostile: everything goes
through :func:`html.escape`, and the page forbids scripts with a CSP meta tag anyway.
"""

from __future__ import annotations

import datetime
from html import escape

from bastion.scan.model import Finding, Severity
from bastion.scan.runner import ScanResult

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1b1f24;max-width:1200px}
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%;margin:1rem 0}
td,th{border-bottom:1px solid #d8dee4;padding:.35rem .5rem;text-align:left;vertical-align:top}
pre{background:#f6f8fa;padding:.6rem;overflow:auto;white-space:pre-wrap;word-break:break-all}
.sev{font-weight:600;padding:0 .4rem;border-radius:3px;color:#fff}
.critical{background:#8b0000}.high{background:#cf222e}.medium{background:#bf8700}
.low{background:#0969da}.info{background:#57606a}details{margin:.5rem 0}
summary{cursor:pointer}.muted{color:#57606a}
"""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _finding_html(f: Finding) -> str:
    sev = f.severity.value
    evidence = "".join(f"<pre>{_e(e.as_text())}</pre>" for e in f.evidence)
    return (
        f"<details><summary><span class='sev {_e(sev)}'>{_e(sev)}</span> "
        f"{_e(f.title)} <span class='muted'>{_e(f.operation or 'target-wide')}</span></summary>"
        f"<p>{_e(f.detail)}</p>"
        f"<p class='muted'>{_e(f.owasp_title)} · {_e(f.cwe)} · confidence "
        f"{_e(f.confidence.value)} · {_e(f.kind)} · check {_e(f.check)} · fingerprint "
        f"<code>{_e(f.fingerprint)}</code></p>"
        f"{evidence}<p><b>Remediation:</b> {_e(f.remediation)}</p></details>"
    )


def render_html(result: ScanResult, fail_on: Severity) -> str:
    when = datetime.datetime.fromtimestamp(result.started_at, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )
    counts = ", ".join(f"{n} {s}" for s, n in result.counts().items() if n) or "no findings"
    failing = result.failing(fail_on)
    verdict = (
        f"FAILED: {len(failing)} findings at or above {fail_on.value}"
        if failing
        else f"passed (nothing at or above {fail_on.value})"
    )
    rows = "".join(
        f"<tr><td><span class='sev {_e(f.severity.value)}'>{_e(f.severity.value)}</span></td>"
        f"<td>{_e(f.owasp)}</td><td>{_e(f.check)}</td><td>{_e(f.operation or '-')}</td>"
        f"<td>{_e(f.title)}</td><td>{_e(f.confidence.value)}</td></tr>"
        for f in result.findings
    )
    active = "".join(_finding_html(f) for f in result.findings if f.kind == "active")
    audit = "".join(_finding_html(f) for f in result.findings if f.kind == "audit")
    skips = "".join(
        f"<li>{_e(s.check)}{' on ' + _e(s.operation) if s.operation else ''}: {_e(s.reason)}</li>"
        for s in result.skips
    )
    errors = "".join(f"<li>{_e(e)}</li>" for e in result.errors)
    created = "".join(
        f"<li><code>{_e(o.path)}</code> by {_e(o.operation)} as {_e(o.identity)}"
        f"{' (deleted)' if o.deleted else ''}</li>"
        for o in result.created
    )
    suppressed = "".join(
        f"<li>{_e(f.title)} <span class='muted'>{_e(f.operation or '')} "
        f"{_e(f.fingerprint)}</span></li>"
        for f in result.suppressed
    )
    budget = f"{result.requests} of {result.budget} requests" + (
        " — budget spent, scan stopped early" if result.budget_exhausted else ""
    )
    sections = [
        "<h2>Active findings</h2>" + (active or "<p>None.</p>"),
        "<h2>Contract audit</h2>" + (audit or "<p>None.</p>"),
    ]
    if suppressed:
        sections.append(f"<h2>Suppressed by the baseline</h2><ul>{suppressed}</ul>")
    if skips:
        sections.append(f"<h2>Skipped</h2><ul>{skips}</ul>")
    if errors:
        sections.append(f"<h2>Errors</h2><ul>{errors}</ul>")
    sections.append(
        "<h2>Objects the scanner created</h2>"
        + (f"<ul>{created}</ul>" if created else "<p>None.</p>")
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">"
        f"<title>Bastion scan: {_e(result.target or result.spec_source)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>Bastion scan of {_e(result.target or result.spec_source)}</h1>"
        f"<p>Spec {_e(result.spec_source)} · {_e(when)} · {result.duration:.1f} s · "
        f"{_e(budget)}</p><p><b>{_e(verdict)}</b> — {_e(counts)}</p>"
        "<table><tr><th>Severity</th><th>OWASP</th><th>Check</th><th>Operation</th>"
        f"<th>Finding</th><th>Confidence</th></tr>{rows}</table>"
        + "".join(sections)
        + "</body></html>\n"
    )
