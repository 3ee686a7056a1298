"""Findings: severity order, stable fingerprints, validation."""

from __future__ import annotations

import pytest

from bastion.scan.model import OWASP, Confidence, Exchange, Finding, Severity, fingerprint


def _finding(**kw: object) -> Finding:
    base: dict[str, object] = {
        "check": "bola",
        "title": "t",
        "owasp": "API1",
        "cwe": "CWE-639",
        "severity": Severity.HIGH,
        "confidence": Confidence.CERTAIN,
        "operation": "GET /x/{id}",
        "detail": "d",
        "remediation": "r",
    }
    base.update(kw)
    return Finding(**base)  # type: ignore[arg-type]


def test_severity_order_and_parse() -> None:
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW > Severity.INFO
    assert Severity.LOW <= Severity.LOW
    assert sorted([Severity.HIGH, Severity.INFO]) == [Severity.INFO, Severity.HIGH]
    assert Severity.parse(" High ") is Severity.HIGH
    with pytest.raises(ValueError, match="one of"):
        Severity.parse("severe")
    assert Severity.HIGH.__lt__(3) is NotImplemented
    assert Severity.HIGH.__ge__(3) is NotImplemented


def test_fingerprint_is_stable_and_ignores_evidence_and_detail() -> None:
    a = _finding(detail="user 7 read", evidence=(Exchange("GET", "http://x/7"),))
    b = _finding(detail="user 9 read", evidence=(Exchange("GET", "http://x/9"),))
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint == fingerprint("bola", "API1", "GET /x/{id}", "")
    assert len(a.fingerprint) == 32
    assert _finding(key="write").fingerprint != a.fingerprint
    assert _finding(operation=None).fingerprint != a.fingerprint


def test_finding_validates_category_and_cwe() -> None:
    with pytest.raises(ValueError, match="OWASP"):
        _finding(owasp="API11")
    with pytest.raises(ValueError, match="cwe"):
        _finding(cwe="639")
    assert set(OWASP) >= {"API1", "API9", "INJECTION"}


def test_sort_key_puts_active_and_severe_first() -> None:
    audit_high = _finding(kind="audit")
    active_low = _finding(severity=Severity.LOW)
    active_crit = _finding(severity=Severity.CRITICAL)
    ordered = sorted([audit_high, active_low, active_crit], key=Finding.sort_key)
    assert ordered == [active_crit, active_low, audit_high]


def test_to_dict_and_text() -> None:
    ex = Exchange("GET", "http://x/1", (("a", "b"),), "q", 200, (("c", "d"),), "body", "as b")
    d = _finding(evidence=(ex,)).to_dict()
    assert d["fingerprint"]
    assert d["owasp_title"].startswith("API1:2023")
    assert d["evidence"][0]["status"] == 200
    text = ex.as_text()
    assert "GET http://x/1" in text
    assert "-> 200" in text
    assert "(as b)" in text
    assert "no answer" in Exchange("GET", "http://x").as_text()
