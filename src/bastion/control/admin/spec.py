"""The admin API's operations and its OpenAPI 3.1 document, from one table.

Every operation lists its method, path, id (the RBAC matrix's key), query parameters and body
schema. :func:`openapi_document` turns the table into the document served at
``/admin/v1/openapi.json``: each operation carries ``security: [{"adminToken": []}]`` and the
roles that may call it (``x-bastion-roles``). The app validates bodies and queries against the
same schemas (``jsonschema-rs``, draft 2020-12), so the document cannot drift from what is
enforced. Every object schema is closed (``additionalProperties: false``): unknown fields are
refused, which rules out mass assignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion.control.admin.records import DATA_CLASSES, RISK_CLASSES
from bastion.control.admin.roles import DESTRUCTIVE, PERMISSIONS

BASE = "/admin/v1"
#: The largest page any list returns; a larger ``limit`` is refused, not clamped.
MAX_PAGE = 200
DEFAULT_PAGE = 50
#: Largest request body accepted (bytes).
MAX_BODY_BYTES = 64 * 1024

ID = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"}
SCOPE = {"type": "string", "pattern": "^[\\x21\\x23-\\x5b\\x5d-\\x7e]{1,128}$"}
ROLE = {"type": "string", "enum": ["owner", "admin", "security", "auditor", "developer"]}
TEXT = {"type": "string", "maxLength": 500, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}
OWNER = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}

APP_FIELDS: dict[str, Any] = {
    "name": {
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
        "pattern": "^[^\\x00-\\x1f\\x7f]*$",
    },
    "owner": OWNER,
    "contact": TEXT,
    "environment": {"type": "string", "enum": ["production", "staging", "development", "test"]},
    "risk_class": {"type": "string", "enum": list(RISK_CLASSES)},
    "data_classification": {"type": "string", "enum": list(DATA_CLASSES)},
    "allowed_scopes": {"type": "array", "items": SCOPE, "maxItems": 64, "uniqueItems": True},
}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


APP_CREATE = _closed(
    {"id": ID, **APP_FIELDS},
    ("id", "name", "owner", "contact", "environment", "risk_class", "data_classification"),
)
APP_UPDATE = _closed(APP_FIELDS) | {"minProperties": 1}
KEY_CREATE = _closed(
    {
        "name": {"type": "string", "maxLength": 128, "pattern": "^[^\\x00-\\x1f\\x7f]*$"},
        "scopes": {"type": "array", "items": SCOPE, "maxItems": 64, "uniqueItems": True},
        "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 180},
    }
)
KEY_ROTATE = _closed({"grace_days": {"type": "integer", "minimum": 0, "maximum": 30}})
REASON_ONLY = _closed({"reason": TEXT})
USER_INVITE = _closed(
    {
        "username": {"type": "string", "minLength": 1, "maxLength": 128},
        "email": {"type": "string", "maxLength": 254, "pattern": "^[^@\\s]+@[^@\\s]+$"},
        "name": TEXT,
        "roles": {"type": "array", "items": ROLE, "maxItems": 5, "uniqueItems": True},
    },
    ("username", "roles"),
)
USER_ROLES = _closed(
    {"roles": {"type": "array", "items": ROLE, "maxItems": 5, "uniqueItems": True}}, ("roles",)
)
REVOKE_APP = _closed({"application": ID, "reason": TEXT}, ("application", "reason"))
BLOCK_IP = _closed(
    {
        "cidr": {"type": "string", "minLength": 2, "maxLength": 64},
        "duration_seconds": {"type": "integer", "minimum": 60, "maximum": 366 * 86400},
        "reason": TEXT,
    },
    ("cidr", "duration_seconds", "reason"),
)

PAGING = {
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
    "cursor": {"type": "integer", "minimum": 1},
}
AUDIT_QUERY = {
    **PAGING,
    "actor": OWNER,
    "action": {"type": "string", "pattern": "^[a-z_.]{1,64}$"},
    "target": OWNER,
    "outcome": {"type": "string", "enum": ["success", "denied"]},
    "since": {"type": "number", "minimum": 0},
    "until": {"type": "number", "minimum": 0},
}


@dataclass(frozen=True, slots=True)
class OperationSpec:
    """One admin operation: where it lives and what it accepts."""

    id: str
    method: str
    path: str
    summary: str
    body: dict[str, Any] | None = None
    query: dict[str, Any] = field(default_factory=dict)
    success: int = 200

    @property
    def destructive(self) -> bool:
        return self.id in DESTRUCTIVE

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(p[1:-1] for p in self.path.split("/") if p.startswith("{"))


OPERATIONS: tuple[OperationSpec, ...] = (
    OperationSpec("me.get", "GET", "/me", "Who the token belongs to and which roles count."),
    OperationSpec(
        "apps.list", "GET", "/applications", "Applications (a developer: its own).", query=PAGING
    ),
    OperationSpec(
        "apps.create", "POST", "/applications", "Register an application.", APP_CREATE, success=201
    ),
    OperationSpec("apps.get", "GET", "/applications/{app_id}", "One application."),
    OperationSpec(
        "apps.update",
        "PATCH",
        "/applications/{app_id}",
        "Change an application's metadata.",
        APP_UPDATE,
    ),
    OperationSpec(
        "keys.list",
        "GET",
        "/applications/{app_id}/keys",
        "The application's API keys.",
        query=PAGING,
    ),
    OperationSpec(
        "keys.create",
        "POST",
        "/applications/{app_id}/keys",
        "A new key; the secret is in this response only.",
        KEY_CREATE,
        success=201,
    ),
    OperationSpec(
        "keys.rotate",
        "POST",
        "/keys/{key_id}/rotate",
        "A successor key; the old one keeps working for the grace period.",
        KEY_ROTATE,
        success=201,
    ),
    OperationSpec(
        "keys.revoke",
        "POST",
        "/keys/{key_id}/revoke",
        "Revoke a key on every node now.",
        REASON_ONLY,
    ),
    OperationSpec(
        "users.list", "GET", "/users", "Users of the authorization server.", query=PAGING
    ),
    OperationSpec(
        "users.invite",
        "POST",
        "/users",
        "Create a user with a one-time password shown once.",
        USER_INVITE,
        success=201,
    ),
    OperationSpec("users.get", "GET", "/users/{user_id}", "One user."),
    OperationSpec(
        "users.set_roles",
        "PUT",
        "/users/{user_id}/roles",
        "Replace a user's admin roles.",
        USER_ROLES,
    ),
    OperationSpec(
        "users.disable",
        "POST",
        "/users/{user_id}/disable",
        "Lock a user out and revoke their refresh-token families.",
        REASON_ONLY,
    ),
    OperationSpec(
        "users.enable",
        "POST",
        "/users/{user_id}/enable",
        "Lift an administrator's lock.",
        REASON_ONLY,
    ),
    OperationSpec(
        "users.reset_mfa",
        "POST",
        "/users/{user_id}/reset-mfa",
        "Remove TOTP and recovery codes; enrol again at next login.",
        REASON_ONLY,
    ),
    OperationSpec(
        "incident.revoke_app",
        "POST",
        "/incidents/revoke-application",
        "Revoke every key and token of an application, on every node.",
        REVOKE_APP,
    ),
    OperationSpec(
        "incident.block_ip",
        "POST",
        "/incidents/block-ip",
        "Block an address or network on every node for a duration.",
        BLOCK_IP,
        success=201,
    ),
    OperationSpec(
        "audit.list", "GET", "/audit", "The admin audit trail, newest first.", query=AUDIT_QUERY
    ),
)

PROBLEM = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "code"],
}


def _operation_object(op: OperationSpec) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string", "maxLength": 256}}
        for p in op.path_params
    ]
    params += [
        {"name": n, "in": "query", "required": False, "schema": s} for n, s in op.query.items()
    ]
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    responses: dict[str, Any] = {
        str(op.success): {"description": "Success", "content": {"application/json": {}}},
        "400": {"description": "Invalid request", "content": problem},
        "401": {"description": "No valid MFA admin token (or no recent login)", "content": problem},
        "403": {"description": "The caller's roles may not do this", "content": problem},
    }
    obj: dict[str, Any] = {
        "operationId": op.id,
        "summary": op.summary,
        "security": [{"adminToken": []}],
        "x-bastion-roles": sorted(PERMISSIONS[op.id]),
        "x-bastion-step-up": op.destructive,
        "parameters": params,
        "responses": responses,
    }
    if op.body is not None:
        obj["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": op.body}},
        }
    return obj


def openapi_document() -> dict[str, Any]:
    """The admin API's OpenAPI 3.1 document (a fresh dict the caller may change)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(BASE + op.path, {})[op.method.lower()] = _operation_object(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bastion admin API",
            "version": "1",
            "description": "Applications, API keys, users and roles, incident actions and the "
            "admin audit trail. Tokens: access tokens of the Bastion authorization server with "
            "the admin audience, issued after MFA; destructive operations need a login at most "
            "10 minutes old (RFC 9470 step-up).",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{"adminToken": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": {"Problem": PROBLEM},
        },
    }
