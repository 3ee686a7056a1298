"""JUnit XML: one test suite per check, one test case per finding (a failure when at or above
``--fail-on``, else a passing case with the finding as output), a passing case for a check
that found nothing, a skipped case for a check that did not run. CI systems (GitLab, Jenkins,
Azure) show it as a test report. Built with ElementTree, so every value is escaped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

from bastion.scan.model import Finding, Severity
from bastion.scan.runner import ScanResult

__all__ = ["render_junit"]


def _text(f: Finding) -> str:
    parts = [
        f.detail,
        "",
        f"{f.owasp_title}, {f.cwe}, confidence {f.confidence.value}",
        f"fingerprint {f.fingerprint}",
    ]
    for e in f.evidence:
        parts += ["", e.as_text()]
    parts += ["", f"Remediation: {f.remediation}"]
    return "\n".join(parts)


def _clean(text: str) -> str:
    """XML 1.0 cannot carry most control characters: replace them."""
    return "".join(
        c
        if c in "\t\n\r"
        or (" " <= c <= "\ud7ff")
        or ("\ue000" <= c <= "\ufffd")
        or c >= "\U00010000"
        else "\ufffd"
        for c in text
    )


def render_junit(result: ScanResult, fail_on: Severity) -> str:
    by_check: dict[str, list[Finding]] = defaultdict(list)
    for f in result.findings:
        by_check[f.check].append(f)
    names = list(dict.fromkeys([*result.checks_run, *by_check]))
    skipped = {s.check: s.reason for s in result.skips if s.operation is None}
    root = ET.Element("testsuites", name="bastion-scan")
    total = failures = skips = 0
    for check in [*names, *[c for c in skipped if c not in names]]:
        suite = ET.SubElement(root, "testsuite", name=f"bastion-scan.{check}")
        s_tests = s_fail = s_skip = 0
        findings = by_check.get(check, [])
        if check in skipped and not findings:
            case = ET.SubElement(suite, "testcase", classname=f"bastion.scan.{check}", name=check)
            ET.SubElement(case, "skipped", message=_clean(skipped[check]))
            s_tests += 1
            s_skip += 1
        elif not findings:
            ET.SubElement(
                suite, "testcase", classname=f"bastion.scan.{check}", name=f"{check}: no findings"
            )
            s_tests += 1
        for f in findings:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"bastion.scan.{check}",
                name=_clean(f"{f.operation or 'target'}: {f.title} [{f.fingerprint[:12]}]"),
            )
            s_tests += 1
            if f.severity >= fail_on:
                failure = ET.SubElement(
                    case,
                    "failure",
                    type=f.severity.value,
                    message=_clean(f"{f.severity.value}: {f.title}"),
                )
                failure.text = _clean(_text(f))
                s_fail += 1
            else:
                out = ET.SubElement(case, "system-out")
                out.text = _clean(f"[{f.severity.value}] " + _text(f))
        suite.set("tests", str(s_tests))
        suite.set("failures", str(s_fail))
        suite.set("errors", "0")
        suite.set("skipped", str(s_skip))
        total += s_tests
        failures += s_fail
        skips += s_skip
    if result.errors:
        suite = ET.SubElement(
            root,
            "testsuite",
            name="bastion-scan.errors",
            tests=str(len(result.errors)),
            failures="0",
            errors=str(len(result.errors)),
            skipped="0",
        )
        for i, message in enumerate(result.errors, 1):
            case = ET.SubElement(
                suite, "testcase", classname="bastion.scan.errors", name=f"error {i}"
            )
            ET.SubElement(case, "error", message=_clean(message))
        total += len(result.errors)
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", str(len(result.errors)))
    root.set("skipped", str(skips))
    root.set("time", f"{result.duration:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
