"""Plausible values for parameters and bodies, built from their JSON Schemas.

A check needs *a* valid request to start from (create an invoice, call an operation as user
B) before it mutates one thing. Values come from, in order: ``const``, ``example``,
``examples[0]``, ``default``, ``enum[0]``, then a value of the declared type and format that
respects the bounds. Deterministic: the same schema always gives the same value, so two runs
send the same requests.
"""

from __future__ import annotations

from typing import Any

__all__ = ["sample_value"]

_FORMATS: dict[str, Any] = {
    "email": "scanner@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000001",
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "hostname": "example.com",
    "password": "Scanner-Passw0rd!",
}


def sample_value(schema: Any, *, depth: int = 0, all_properties: bool = False) -> Any:
    """A value valid for ``schema`` as far as a quick construction allows.

    Only ``required`` properties of objects are filled unless ``all_properties``; properties
    whose schema is ``false`` (readOnly in a request) are left out.
    """
    if schema is True or not isinstance(schema, dict) or depth > 8:
        return "scan"
    if schema is False:
        return None
    for key in ("const", "example", "default"):
        if key in schema:
            return schema[key]
    examples = schema.get("examples")
    if isinstance(examples, list) and examples:
        return examples[0]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("allOf", "oneOf", "anyOf"):
        subs = schema.get(key)
        if isinstance(subs, list) and subs:
            if key == "allOf":
                merged: dict[str, Any] = {}
                for sub in subs:
                    value = sample_value(sub, depth=depth + 1, all_properties=all_properties)
                    if isinstance(value, dict):
                        merged.update(value)
                if merged:
                    return merged
            first = next(
                (s for s in subs if isinstance(s, dict) and s.get("type") != "null"), subs[0]
            )
            return sample_value(first, depth=depth + 1, all_properties=all_properties)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        raw_required = schema.get("required")
        required = raw_required if isinstance(raw_required, list) else []
        out: dict[str, Any] = {}
        for name, sub in (props or {}).items():
            if sub is False or (not all_properties and name not in required):
                continue
            if isinstance(sub, dict) and sub.get("readOnly"):
                continue
            out[name] = sample_value(sub, depth=depth + 1, all_properties=all_properties)
        return out
    if kind == "array":
        items = schema.get("items", {})
        n = max(1, int(schema.get("minItems", 1) or 1))
        return [sample_value(items, depth=depth + 1, all_properties=all_properties)] * min(n, 3)
    if kind == "integer":
        return _number(schema, 1)
    if kind == "number":
        return _number(schema, 1.5)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, "scan") if isinstance(fmt, str) else "scan"
    lo = int(schema.get("minLength", 0) or 0)
    hi = schema.get("maxLength")
    if len(text) < lo:
        text = text + "x" * (lo - len(text))
    if isinstance(hi, int) and len(text) > hi:
        text = text[:hi]
    return text


def _number(schema: dict[str, Any], fallback: float) -> Any:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    xlo = schema.get("exclusiveMinimum")
    value: float = fallback
    if isinstance(lo, int | float):
        value = lo
    elif isinstance(xlo, int | float) and not isinstance(xlo, bool):
        value = xlo + 1
    if isinstance(hi, int | float) and value > hi:
        value = hi
    if schema.get("type") == "integer":
        return int(value)
    return value
