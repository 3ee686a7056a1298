"""Validation errors as short, safe ``detail`` text for clients: where and which rule.

jsonschema-rs messages quote the offending value (``"x…" is longer than 64 characters``); a
gateway must not echo client input back (reflection, secrets pasted in the wrong field). The
text here is built from the schema side only — the rule and its limit, which are the API's
public contract — and the instance location. Client-chosen property names in a location are
kept only when they look like ordinary identifiers.
"""

from __future__ import annotations

import re
from typing import Any

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_LIMITS = {
    "maxLength": "longer than {} characters",
    "minLength": "shorter than {} characters",
    "maxItems": "more than {} items",
    "minItems": "fewer than {} items",
    "maxProperties": "more than {} properties",
    "minProperties": "fewer than {} properties",
    "maximum": "greater than {}",
    "minimum": "less than {}",
    "exclusiveMaximum": "not less than {}",
    "exclusiveMinimum": "not greater than {}",
}
_PLAIN = {
    "enum": "not one of the allowed values",
    "const": "not the allowed value",
    "pattern": "does not match the pattern",
    "uniqueItems": "items are not unique",
    "multipleOf": "not a multiple of the allowed step",
    "anyOf": "matches none of the allowed schemas",
    "oneOf": "does not match exactly one allowed schema",
    "not": "matches a forbidden schema",
    "contains": "contains no allowed item",
    "propertyNames": "has a property name that is not allowed",
}


def segment(part: str | int) -> str:
    """One location segment: indexes and identifier-like names as they are, else ``*``."""
    text = str(part)
    return text if _SAFE_SEGMENT.match(text) else "*"


def location(prefix: str, parts: list[str | int] | tuple[str | int, ...]) -> str:
    """``body/items/0/name`` from a prefix and an instance path."""
    return "/".join([prefix, *(segment(p) for p in parts)])


def describe(error: Any, prefix: str, read_only: frozenset[str] = frozenset()) -> str:
    """``<location>: <rule>`` for a jsonschema-rs ``ValidationError``."""
    kind = error.kind
    name = kind.name
    where = location(prefix, error.instance_path)
    if name in ("additionalProperties", "unevaluatedProperties"):
        unexpected = list(getattr(kind, "unexpected", []) or [])
        if unexpected:
            return f"{location(prefix, [*error.instance_path, unexpected[0]])}: not declared"
        return f"{where}: has undeclared properties"
    if name == "falseSchema":
        last = error.instance_path[-1] if error.instance_path else None
        if isinstance(last, str) and last in read_only:
            return f"{where}: read-only"
        return f"{where}: not allowed"
    if name == "required":
        prop = getattr(kind, "property", "")
        return f"{location(prefix, [*error.instance_path, prop])}: required"
    if name == "type":
        types = getattr(kind, "types", None) or []
        return f"{where}: must be {' or '.join(str(t) for t in types) or 'another type'}"
    if name == "format":
        return f"{where}: not a valid {getattr(kind, 'format', 'value')}"
    if name in _LIMITS:
        return f"{where}: {_LIMITS[name].format(getattr(kind, 'limit', '?'))}"
    return f"{where}: {_PLAIN.get(name, 'invalid')}"


def first_error(validator: Any, instance: Any) -> Any:
    """The first error jsonschema-rs reports for an instance known to be invalid."""
    return next(iter(validator.iter_errors(instance)), None)
