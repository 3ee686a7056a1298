"""Reporters: SARIF valid against the official 2.1.0 schema, JUnit well-formed, HTML escaped,
JSON usable as a baseline."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema_rs
import pytest

from bastion.scan.baseline import load_baseline
from bastion.scan.checks.base import Skip
from bastion.scan.errors import ScanUsageError
from bastion.scan.model import Confidence, Exchange, Finding, Severity
from bastion.scan.report import write_reports
from bastion.scan.report.console import make_console, print_result
from bastion.scan.report.html import render_html
from bastion.scan.report.junit import render_junit
from bastion.scan.report.sarif import render_sarif
from bastion.scan.runner import ScanResult
from bastion.scan.safety import CreatedObject

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
HOSTILE = "<script>alert(1)</script>\x00\x1b[31m ]]> & \"'"


def _result(spec_source: str = "examples/openapi.yaml") -> ScanResult:
    ex = Exchange(
        "GET",
        "http://127.0.0.1:9001/api/invoices/7",
        (("authorization", "Bearer eyJhbG…[redacted]"),),
        "",
        200,
        (("content-type", "application/json"),),
        '{"note": "' + HOSTILE + '"}',
        "as user_b",
    )
    active = Finding(
        "bola",
        "BOLA " + HOSTILE,
        "API1",
        "CWE-639",
        Severity.HIGH,
        Confidence.CERTAIN,
        "GET /api/invoices/{invoice_id}",
        "detail " + HOSTILE,
        "Check the owner.",
        (ex,),
        key="read",
    )
    medium = Finding(
        "misconfig",
        "CORS",
        "API8",
        "CWE-942",
        Severity.MEDIUM,
        Confidence.FIRM,
        None,
        "reflects any origin",
        "Allow-list origins.",
    )
    audit = Finding(
        "audit.open-body",
        "Open body",
        "API3",
        "CWE-915",
        Severity.LOW,
        Confidence.TENTATIVE,
        "POST /api/users",
        "open",
        "Close it.",
        kind="audit",
    )
    result = ScanResult(
        spec_source=spec_source,
        target="http://127.0.0.1:9001",
        findings=[active, medium, audit],
        started_at=1_700_000_000.0,
        duration=1.5,
        requests=42,
        budget=2000,
        checks_run=["bola", "misconfig", "authn"],
    )
    result.skips = [Skip("bfla", "needs identity admin"), Skip("bola", "safety: no", "DELETE /x")]
    result.errors = ["injection GET /x: no answer " + HOSTILE]
    result.created = [CreatedObject("/api/invoices/31", "POST /api/invoices", "user_a", True)]
    return result


def test_sarif_is_valid_against_the_official_schema() -> None:
    validator = jsonschema_rs.Draft7Validator(SCHEMA, validate_formats=True)
    for result in (
        _result(),
        _result("https://api.example/openapi.json"),
        ScanResult(spec_source="spec.yaml", target=None, audit_only=True),
    ):
        doc = json.loads(render_sarif(result))
        errors = [str(e) for e in validator.iter_errors(doc)]
        assert errors == []
    doc = json.loads(render_sarif(_result()))
    run = doc["runs"][0]
    assert doc["version"] == "2.1.0"
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == [
        "bola",
        "misconfig",
        "audit.open-body",
    ]
    first = run["results"][0]
    assert first["level"] == "error"
    assert (
        first["partialFingerprints"]["bastionFingerprint/v1"] == _result().findings[0].fingerprint
    )
    region = first["locations"][0]["physicalLocation"]["region"]
    lines = Path("examples/openapi.yaml").read_text().splitlines()
    assert lines[region["startLine"] - 1].strip() == "get:"
    assert "invoice_id" in "".join(lines[region["startLine"] - 3 : region["startLine"]])
    assert run["tool"]["driver"]["rules"][0]["properties"]["security-severity"] == "8.0"
    assert run["results"][2]["level"] == "note"
    assert run["properties"]["createdObjects"][0]["path"] == "/api/invoices/31"


def test_schema_file_rejects_a_broken_log() -> None:
    validator = jsonschema_rs.Draft7Validator(SCHEMA)
    doc = json.loads(render_sarif(_result()))
    doc["runs"][0]["results"][0]["level"] = "critical"
    assert not validator.is_valid(doc)


def test_junit_counts_failures_at_the_threshold() -> None:
    text = render_junit(_result(), Severity.HIGH)
    root = ET.fromstring(text.encode())  # noqa: S314 - our own output
    assert root.get("failures") == "1"
    assert root.get("errors") == "1"
    assert root.find(".//testsuite[@name='bastion-scan.bfla']/testcase/skipped") is not None
    assert root.find(".//testsuite[@name='bastion-scan.authn']/testcase") is not None
    assert "\x00" not in text
    medium = ET.fromstring(render_junit(_result(), Severity.MEDIUM).encode())  # noqa: S314
    assert medium.get("failures") == "2"


def test_html_escapes_everything_and_has_no_script() -> None:
    page = render_html(_result(), Severity.HIGH)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "FAILED: 1 findings" in page
    assert "Content-Security-Policy" in page
    assert "/api/invoices/31" in page


def test_files_written_and_json_is_a_baseline(tmp_path: Path) -> None:
    result = _result()
    written = write_reports(
        result, ["console", "sarif", "junit", "json", "html"], tmp_path / "out", Severity.HIGH
    )
    assert sorted(p.name for p in written) == [
        "bastion-scan.html",
        "bastion-scan.json",
        "bastion-scan.junit.xml",
        "bastion-scan.sarif",
    ]
    report = json.loads((tmp_path / "out" / "bastion-scan.json").read_text())
    assert report["failed"] is True
    assert report["summary"]["high"] == 1
    assert report["created_objects"][0]["deleted"] is True
    accepted = load_baseline(tmp_path / "out" / "bastion-scan.json")
    assert accepted == {f.fingerprint for f in result.findings}
    assert load_baseline(tmp_path / "out" / "bastion-scan.sarif") == accepted
    again = _result()
    again.apply_baseline(accepted)
    assert again.findings == []
    assert not again.failing(Severity.INFO)
    assert write_reports(result, ["console"], tmp_path / "none", Severity.HIGH) == []
    assert not (tmp_path / "none").exists()


def test_baseline_formats_and_errors(tmp_path: Path) -> None:
    fp = "0123456789abcdef0123456789abcdef"
    (tmp_path / "list.json").write_text(json.dumps([fp]))
    (tmp_path / "obj.json").write_text(json.dumps({"fingerprints": [fp]}))
    (tmp_path / "fps.txt").write_text(f"# accepted\n{fp}  # ticket 12\n\n")
    for name in ("list.json", "obj.json", "fps.txt"):
        assert load_baseline(tmp_path / name) == {fp}
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "junk.txt").write_text("not-a-fingerprint\n")
    with pytest.raises(ScanUsageError, match="invalid JSON"):
        load_baseline(tmp_path / "bad.json")
    with pytest.raises(ScanUsageError, match="not a fingerprint"):
        load_baseline(tmp_path / "junk.txt")
    with pytest.raises(ScanUsageError, match="No such file"):
        load_baseline(tmp_path / "missing")


def test_console_output_is_plain_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    console = make_console()
    assert not console.is_terminal
    print_result(console, _result(), Severity.HIGH)
    out = capsys.readouterr().out
    assert "\x1b[" not in out.replace(HOSTILE, "")
    assert "GET /api/invoices/{invoice_id}" in out
    assert "skipped bfla: needs identity admin" in out
    assert "/api/invoices/31" in out
    assert "FAILED: 1 findings at or above high" in out
    assert "42/2000 requests" in out


def test_narrow_terminal_drops_the_least_needed_columns() -> None:
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    print_result(Console(file=buf, width=80, no_color=True), _result(), Severity.HIGH)
    narrow = buf.getvalue()
    assert "fingerprint" not in narrow
    assert "misconfig" in narrow
    assert "FAILED: 1 findings at or above high" in narrow
