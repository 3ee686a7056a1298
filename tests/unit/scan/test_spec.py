"""Spec loading for the scanner, and the building blocks checks use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.scan.errors import ScanUsageError
from bastion.scan.sample import sample_value
from bastion.scan.spec import load_scan_spec, scan_spec_from_document
from tests.unit.scan.conftest import SPEC


def test_operations_and_matching() -> None:
    spec = scan_spec_from_document(SPEC)
    assert spec.base_path == "/api"
    labels = {op.label for op in spec.operations}
    assert "GET /notes/{note_id}" in labels
    op, params = spec.match("GET", "/notes/5")
    assert op is not None
    assert op.operation_id == "getNote"
    assert params == {"note_id": "5"}
    assert spec.match("PUT", "/notes/5") == (None, {})
    assert spec.documented_methods("/notes/5") >= {"GET", "DELETE"}
    assert spec.documented_methods("/nowhere") == frozenset()
    login, _ = spec.match("POST", "/login")
    assert login is not None
    assert login.is_public
    assert login.body_schema is not None
    assert login.json_body is not None
    assert not op.is_public
    reset, _ = spec.match("POST", "/revoke-all")
    assert reset is not None
    assert reset.summary == "Log everyone out"
    assert spec.security_schemes == {"bearer": {"type": "http", "scheme": "bearer"}}


def _doc(op: dict[str, Any], path: str = "/x") -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {path: {"get": {"responses": {"200": {"description": "ok"}}, **op}}},
    }


@pytest.mark.parametrize(
    ("op", "path", "admin"),
    [
        ({"tags": ["admin"]}, "/x", True),
        ({"x-bastion-roles": ["admin"]}, "/x", True),
        ({"security": [{"oauth": ["admin:write"]}]}, "/x", True),
        ({}, "/internal/stats", True),
        ({"summary": "Administration of users"}, "/x", True),
        ({"operationId": "listBadminton"}, "/x", False),
        ({}, "/users", False),
    ],
)
def test_admin_like(op: dict[str, Any], path: str, admin: bool) -> None:
    doc = _doc(op, path)
    if "security" in op:
        doc["components"] = {"securitySchemes": {"oauth": {"type": "oauth2", "flows": {}}}}
    spec = scan_spec_from_document(doc)
    assert spec.operations[0].is_admin_like is admin


def test_response_schema_and_params() -> None:
    doc = _doc(
        {
            "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}],
            "responses": {
                "200": {
                    "description": "ok",
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"a": {"type": "string"}}}
                        }
                    },
                }
            },
        }
    )
    op = scan_spec_from_document(doc).operations[0]
    assert op.response_schema(200) == {"type": "object", "properties": {"a": {"type": "string"}}}
    assert op.response_schema(404) is None
    assert [p.name for p in op.params_in("query")] == ["q"]
    assert op.body_schema is None


def test_loading_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ScanUsageError, match=r"cannot read|No such"):
        load_scan_spec(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("openapi: 3.1.0\npaths: [\n")
    with pytest.raises(ScanUsageError, match="spec"):
        load_scan_spec(str(bad))
    swagger = tmp_path / "swagger.json"
    swagger.write_text('{"swagger": "2.0"}')
    with pytest.raises(ScanUsageError, match=r"Swagger 2\.0"):
        load_scan_spec(str(swagger))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ScanUsageError, match="mapping"):
        load_scan_spec(str(scalar))
    with pytest.raises(ScanUsageError, match="http"):
        load_scan_spec("ftp://example.com/spec.yaml")


def test_loads_the_example_contract() -> None:
    spec = load_scan_spec("examples/openapi.yaml")
    assert any(op.is_admin_like for op in spec.operations)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "string", "example": "ex"}, "ex"),
        ({"type": "string", "examples": ["e1"]}, "e1"),
        ({"type": "string", "enum": ["a", "b"]}, "a"),
        ({"type": "string", "default": "d"}, "d"),
        ({"const": 3}, 3),
        ({"type": "string", "format": "email"}, "scanner@example.com"),
        ({"type": "string", "minLength": 8}, "scanxxxx"),
        ({"type": "string", "maxLength": 2}, "sc"),
        ({"type": "integer", "minimum": 5}, 5),
        ({"type": "integer", "maximum": 0}, 0),
        ({"type": "integer", "exclusiveMinimum": 5}, 6),
        ({"type": "number"}, 1.5),
        ({"type": "boolean"}, False),
        ({"type": ["null", "integer"]}, 1),
        ({"type": "null"}, None),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 2}, [1, 1]),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
                "required": ["b"],
            },
            {"b": 1},
        ),
        (
            {
                "properties": {"a": False, "r": {"type": "string", "readOnly": True}},
                "required": ["a", "r"],
            },
            {},
        ),
        (
            {
                "allOf": [
                    {"properties": {"a": {"const": 1}}, "required": ["a"]},
                    {"properties": {"b": {"const": 2}}, "required": ["b"]},
                ]
            },
            {"a": 1, "b": 2},
        ),
        ({"oneOf": [{"type": "null"}, {"type": "integer"}]}, 1),
        (True, "scan"),
    ],
)
def test_sample_values(schema: Any, value: Any) -> None:
    assert sample_value(schema) == value


def test_sample_all_properties() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert sample_value(schema) == {}
    assert sample_value(schema, all_properties=True) == {"a": "scan"}


def test_spec_read_from_the_target(live: Any) -> None:
    spec = load_scan_spec(f"{live.url}/openapi.json")
    assert spec.source.endswith("/openapi.json")
    assert any(op.operation_id == "getNote" for op in spec.operations)
    with pytest.raises(ScanUsageError, match="HTTP 404"):
        load_scan_spec(f"{live.url}/missing.json")
