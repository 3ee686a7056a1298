"""The contract audit: each rule fires where it should, stays quiet where it should not, and
keeps its severities low."""

from __future__ import annotations

from typing import Any

from bastion.scan.audit import audit
from bastion.scan.model import Confidence, Severity
from bastion.scan.spec import scan_spec_from_document

ERRORS = {
    "200": {"description": "ok"},
    "401": {"description": "no"},
    "403": {"description": "no"},
    "429": {"description": "slow down"},
}


def _doc(paths: dict[str, Any], **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://api.example"}],
        "security": [{"bearer": ["read"]}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
    doc.update(extra)
    return doc


CLEAN = _doc(
    {
        "/things": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string", "maxLength": 40},
                                    "tags": {
                                        "type": "array",
                                        "maxItems": 5,
                                        "items": {"enum": ["a", "b"]},
                                    },
                                    "n": {"type": "integer", "minimum": 0, "maximum": 9},
                                },
                            }
                        }
                    }
                },
                "responses": ERRORS,
            }
        },
        "/health": {
            "get": {
                "security": [],
                "responses": {"200": {"description": "ok"}, "429": {"description": "x"}},
            }
        },
    }
)


def _rules(doc: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for f in audit(scan_spec_from_document(doc)):
        out.setdefault(f.check, []).append(f)
    return out


def test_clean_contract_has_no_findings() -> None:
    assert _rules(CLEAN) == {}


def test_each_rule_fires() -> None:
    doc = _doc(
        {
            "/open": {"get": {"security": None, "responses": {"200": {"description": "ok"}}}},
            "/things/{thing_id}": {
                "parameters": [
                    {
                        "name": "thing_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer"},
                    }
                ],
                "get": {
                    "parameters": [
                        {
                            "name": "api_key",
                            "in": "query",
                            "schema": {"type": "string", "maxLength": 9},
                        }
                    ],
                    "responses": ERRORS,
                },
                "patch": {
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "name": {"type": "string"},
                                        "nested": {"type": "object", "properties": {}},
                                    },
                                }
                            }
                        }
                    },
                    "responses": ERRORS,
                },
            },
            "/admin/purge": {"post": {"tags": ["admin"], "responses": ERRORS}},
        },
        servers=[{"url": "http://api.example"}, {"url": "http://127.0.0.1:8080"}],
    )
    doc["paths"]["/open"]["get"].pop("security")
    doc.pop("security")
    doc["paths"]["/things/{thing_id}"]["get"]["security"] = [{"bearer": ["read"]}]
    doc["paths"]["/things/{thing_id}"]["patch"]["security"] = [{"bearer": ["read"]}]
    doc["paths"]["/admin/purge"]["post"]["security"] = [{"bearer": ["read"]}]
    doc["components"]["securitySchemes"]["qkey"] = {"type": "apiKey", "in": "query", "name": "key"}
    rules = _rules(doc)
    assert {f.operation for f in rules["audit.no-security"]} == {"GET /open"}
    assert rules["audit.id-path-param"][0].key == "thing_id"
    assert "sequential" in rules["audit.id-path-param"][0].detail
    assert {f.key for f in rules["audit.credential-query"]} == {"api_key", "scheme:qkey"}
    assert [f.key for f in rules["audit.http-server"]] == ["http://api.example"]
    assert "nested" in rules["audit.open-body"][0].detail
    unbounded = {f.operation: f.detail for f in rules["audit.unbounded-input"]}
    assert "name: string without maxLength" in unbounded["PATCH /things/{thing_id}"]
    assert "thing_id: integer without minimum/maximum" in unbounded["GET /things/{thing_id}"]
    assert rules["audit.admin-scope"][0].operation == "POST /admin/purge"
    assert "GET /open" in rules["audit.no-error-responses"][0].detail
    for findings in rules.values():
        for f in findings:
            assert f.kind == "audit"
            assert f.confidence is Confidence.TENTATIVE
            assert f.severity <= Severity.MEDIUM


def test_admin_with_own_scope_or_role_is_fine() -> None:
    doc = _doc(
        {
            "/items": {"get": {"responses": ERRORS}},
            "/admin/a": {"get": {"security": [{"bearer": ["admin"]}], "responses": ERRORS}},
            "/admin/b": {"get": {"x-bastion-roles": ["admin"], "responses": ERRORS}},
        }
    )
    assert "audit.admin-scope" not in _rules(doc)


def test_audit_on_the_example_contract_is_low() -> None:
    from bastion.scan.spec import load_scan_spec

    findings = audit(load_scan_spec("examples/openapi.yaml"))
    assert all(f.severity <= Severity.MEDIUM for f in findings)
    assert len(findings) < 20
