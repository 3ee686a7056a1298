"""The contract audit: static rules over the OpenAPI document (``--audit-only``, and part of
every scan).

A rule points at what makes a flaw *possible*, not at a flaw: so every audit finding has
``kind="audit"``, confidence ``TENTATIVE`` and a low severity (``INFO``, ``LOW``, at most
``MEDIUM`` for credentials in URLs), and the reporters list them after the active findings. To
stay readable on large documents, the rules that would fire on most operations
(unbounded inputs, undeclared error responses) give one finding per operation or per document
that lists every field, instead of one per field.

Rules (ids are stable, they go into the fingerprints):

=====================  ======  =========================================================
``no-security``        API2    operation without any security requirement
``id-path-param``      API1    id-like path parameter (object-level check needed)
``credential-query``   API2    API key scheme or credential-named parameter in the query
``http-server``        API8    ``http://`` server (not loopback)
``open-body``          API3    request body object that allows undeclared properties
``unbounded-input``    API4    strings without maxLength, arrays without maxItems,
                               integers without bounds
``no-error-responses`` API8    no 401/403 (secured operations) or 429 declared
``admin-scope``        API5    admin-looking operation without a scope of its own
=====================  ======  =========================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from bastion.openapi.loader import is_loopback
from bastion.scan.model import Confidence, Finding, Severity
from bastion.scan.spec import ScanOperation, ScanSpec

__all__ = ["audit"]

_ID_PARAM = re.compile(r"(?i)(^id$|_id$|Id$|^uuid$|^guid$|_uuid$|^key$|^slug$)")
_CREDENTIAL = re.compile(
    r"(?i)^(api[-_]?key|apikey|key|token|access[-_]?token|auth|authorization|password|"
    r"passwd|secret|client[-_]?secret|session|sid|jwt)$"
)
_MAX_NAMES = 12


def _finding(
    rule: str,
    owasp: str,
    cwe: str,
    severity: Severity,
    op: ScanOperation | None,
    title: str,
    detail: str,
    remediation: str,
    key: str = "",
) -> Finding:
    return Finding(
        check=f"audit.{rule}",
        title=title,
        owasp=owasp,
        cwe=cwe,
        severity=severity,
        confidence=Confidence.TENTATIVE,
        operation=op.label if op else None,
        detail=detail,
        remediation=remediation,
        key=key,
        kind="audit",
    )


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    return shown + (f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else "")


def _walk(schema: Any, where: str, depth: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every sub-schema (dict) of ``schema`` with a readable location."""
    if not isinstance(schema, dict) or depth > 16:
        return
    yield where, schema
    props = schema.get("properties")
    if isinstance(props, dict):
        for name, sub in props.items():
            yield from _walk(sub, f"{where}.{name}" if where else str(name), depth + 1)
    items = schema.get("items")
    if isinstance(items, dict):
        yield from _walk(items, f"{where}[]", depth + 1)
    for key in ("allOf", "oneOf", "anyOf"):
        subs = schema.get(key)
        if isinstance(subs, list):
            for sub in subs:
                yield from _walk(sub, where, depth + 1)


def _types(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return {"object"} if "properties" in schema else set()


def _is_open_object(schema: dict[str, Any]) -> bool:
    if "object" not in _types(schema) or not isinstance(schema.get("properties"), dict):
        return False
    return (
        schema.get("additionalProperties", True) is not False
        and schema.get("unevaluatedProperties", True) is not False
    )


def _unbounded(schema: dict[str, Any]) -> str | None:
    types = _types(schema)
    if "enum" in schema or "const" in schema:
        return None
    if "string" in types and "maxLength" not in schema and "format" not in schema:
        return "string without maxLength"
    if (
        "string" in types
        and "maxLength" not in schema
        and schema.get("format") not in ("date", "date-time", "uuid", "ipv4", "ipv6", "email")
    ):
        return "string without maxLength"
    if "array" in types and "maxItems" not in schema:
        return "array without maxItems"
    if "integer" in types and (
        ("maximum" not in schema and "exclusiveMaximum" not in schema)
        or ("minimum" not in schema and "exclusiveMinimum" not in schema)
    ):
        return "integer without minimum/maximum"
    return None


def _scopes(op: ScanOperation) -> frozenset[str]:
    return frozenset(s for req in op.security or () for ss in req.values() for s in ss)


def audit(spec: ScanSpec) -> list[Finding]:
    """Run every rule over ``spec``; findings worst first."""
    found: list[Finding] = []
    found += _servers(spec)
    found += _query_schemes(spec)
    ordinary_scopes: set[str] = set()
    for op in spec.operations:
        if not op.is_admin_like:
            ordinary_scopes |= _scopes(op)
    missing_errors: list[str] = []
    for op in spec.operations:
        found += _operation_rules(op, ordinary_scopes)
        codes = set(op.operation.responses)
        wanted = ["429"]
        if not op.is_public:
            wanted += ["401", "403"]
        lacking = [c for c in wanted if c not in codes and f"{c[0]}XX" not in codes]
        if lacking and "default" not in codes:
            missing_errors.append(f"{op.label} ({'/'.join(lacking)})")
    if missing_errors:
        found.append(
            _finding(
                "no-error-responses",
                "API8",
                "CWE-754",
                Severity.INFO,
                None,
                "Error responses not declared",
                f"{len(missing_errors)} operations declare no 401/403 (when secured) or 429 "
                f"response: {_names(missing_errors)}. Clients and gateways cannot tell a "
                "refusal or a throttle from a failure.",
                "Declare 401, 403 and 429 responses (with a problem+json schema) on every "
                "operation they can happen on.",
            )
        )
    return sorted(found, key=Finding.sort_key)


def _servers(spec: ScanSpec) -> list[Finding]:
    out: list[Finding] = []
    servers = spec.document.get("servers")
    for server in servers if isinstance(servers, list) else []:
        url = server.get("url") if isinstance(server, dict) else None
        if not isinstance(url, str) or not url.lower().startswith("http://"):
            continue
        host = urlsplit(url).hostname or ""
        if is_loopback(host):
            continue
        out.append(
            _finding(
                "http-server",
                "API8",
                "CWE-319",
                Severity.LOW,
                None,
                "Server URL without TLS",
                f"servers lists {url}: credentials and data would cross the network in clear.",
                "Serve the API over https:// only and list only https:// servers.",
                key=url,
            )
        )
    return out


def _query_schemes(spec: ScanSpec) -> list[Finding]:
    out: list[Finding] = []
    for name, scheme in spec.security_schemes.items():
        if not isinstance(scheme, dict):
            continue
        if scheme.get("type") == "apiKey" and scheme.get("in") == "query":
            out.append(
                _finding(
                    "credential-query",
                    "API2",
                    "CWE-598",
                    Severity.MEDIUM,
                    None,
                    "API key sent in the query string",
                    f"security scheme {name!r} takes the key in query parameter "
                    f"{scheme.get('name')!r}: URLs end up in access logs, proxies and "
                    "browser history.",
                    "Take API keys in a header (e.g. X-API-Key or Authorization).",
                    key=f"scheme:{name}",
                )
            )
    return out


def _operation_rules(op: ScanOperation, ordinary_scopes: set[str]) -> list[Finding]:
    out: list[Finding] = []
    if op.security is None:
        out.append(
            _finding(
                "no-security",
                "API2",
                "CWE-306",
                Severity.LOW,
                op,
                "Operation without a security requirement",
                f"{op.label} declares no security requirement (neither its own nor a "
                "document-wide one). If it is public on purpose, say so with `security: []`.",
                "Declare the authentication the operation needs, or `security: []` when it is "
                "public by design.",
            )
        )
    for p in op.params_in("path"):
        if _ID_PARAM.search(p.name):
            fmt = p.schema.get("format") if isinstance(p.schema, dict) else None
            sequential = "integer" in _types(p.schema) if isinstance(p.schema, dict) else False
            detail = (
                f"path parameter {p.name!r} names an object"
                + (" by a sequential integer (guessable)" if sequential else "")
                + (f" ({fmt})" if fmt else "")
                + ": every request must check that the object belongs to the caller."
            )
            out.append(
                _finding(
                    "id-path-param",
                    "API1",
                    "CWE-639",
                    Severity.INFO,
                    op,
                    "Object id in the path",
                    detail,
                    "Check ownership on every access (x-bastion-owner, or in the handler); "
                    "prefer unguessable ids.",
                    key=p.name,
                )
            )
    for p in op.params_in("query"):
        if _CREDENTIAL.search(p.name):
            out.append(
                _finding(
                    "credential-query",
                    "API2",
                    "CWE-598",
                    Severity.LOW,
                    op,
                    "Credential-like query parameter",
                    f"query parameter {p.name!r} looks like a credential: URLs end up in logs.",
                    "Take credentials in headers or the body, never in the URL.",
                    key=p.name,
                )
            )
    open_bodies: list[str] = []
    unbounded: list[str] = []
    body = op.body_schema
    if body is not None:
        for where, sub in _walk(body, ""):
            if _is_open_object(sub):
                open_bodies.append(where or "(body)")
            why = _unbounded(sub)
            if why:
                unbounded.append(f"body {where or '(root)'}: {why}")
    for p in op.parameters:
        why = _unbounded(p.schema) if isinstance(p.schema, dict) else None
        if why and p.location in ("query", "path", "header"):
            unbounded.append(f"{p.location} {p.name}: {why}")
    if open_bodies:
        out.append(
            _finding(
                "open-body",
                "API3",
                "CWE-915",
                Severity.LOW,
                op,
                "Request body accepts undeclared properties",
                f"the request body objects at {_names(open_bodies)} do not set "
                "additionalProperties: false, so a client may send properties the contract "
                "does not name (is_admin, role …): a mass-assignment risk if the handler "
                "copies the body.",
                "Set additionalProperties: false on request body objects (Bastion's openapi "
                "layer closes them by default when it enforces the contract).",
            )
        )
    if unbounded:
        out.append(
            _finding(
                "unbounded-input",
                "API4",
                "CWE-770",
                Severity.INFO,
                op,
                "Inputs without size bounds",
                f"{len(unbounded)} inputs have no upper bound: {_names(unbounded)}.",
                "Give strings maxLength, arrays maxItems and integers minimum/maximum.",
            )
        )
    if op.is_admin_like and not op.is_public:
        scopes = _scopes(op)
        own = scopes - ordinary_scopes
        roles = op.operation.roles
        if not own and not roles:
            out.append(
                _finding(
                    "admin-scope",
                    "API5",
                    "CWE-285",
                    Severity.LOW,
                    op,
                    "Administrative operation without a scope of its own",
                    f"{op.label} looks administrative, but requires no scope (or role) that "
                    "ordinary operations do not also require: any user token may be enough.",
                    "Require an admin-only scope or role (x-bastion-roles) and check it.",
                )
            )
    return out
