"""Reading parameters as OpenAPI serialises them, into JSON values a schema can check.

Parameters arrive as strings. Each :class:`ParamCodec` is built once from the parameter's
``style``/``explode`` (OpenAPI defaults: ``simple`` for path and header, ``form`` with
``explode: true`` for query and cookie) and the types its schema allows, and turns the raw
string(s) into ``5``, ``True``, ``["a", "b"]`` or ``{"status": "paid"}``. Supported: primitives,
arrays (``form``, ``simple``, ``spaceDelimited``, ``pipeDelimited``), objects (``form``,
``simple``, ``deepObject``) and ``content: application/json`` parameters. Other styles
(``matrix``, ``label``) are refused when the document is compiled.

A value that does not look like the schema's type stays a string, so the validator reports a
type error; a query parameter that is not an array but is given twice is refused (parameter
pollution: the gateway and the upstream could each pick a different one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from bastion.openapi.loader import SpecProblem
from bastion.openapi.model import Location

Kind = Literal["value", "array", "object", "json"]

_INT = re.compile(r"-?[0-9]{1,40}\Z")
_NUMBER = re.compile(r"-?[0-9]{1,40}(?:\.[0-9]{1,40})?(?:[eE][+-]?[0-9]{1,4})?\Z")
_STYLES: dict[str, frozenset[str]] = {
    "path": frozenset({"simple"}),
    "query": frozenset({"form", "spaceDelimited", "pipeDelimited", "deepObject"}),
    "header": frozenset({"simple"}),
    "cookie": frozenset({"form"}),
}
_DEFAULT_STYLE = {"path": "simple", "query": "form", "header": "simple", "cookie": "form"}


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: Returned when a parameter is absent from the request.
MISSING: Any = _Missing()


class ParamError(ValueError):
    """A parameter cannot be read; the message is safe to show (it never holds the value)."""


def schema_types(schema: Any) -> frozenset[str] | None:
    """Types a schema allows at its top level (one level of anyOf/oneOf/allOf looked into);
    None when unknown (anything)."""
    if not isinstance(schema, dict):
        return None
    t = schema.get("type")
    if isinstance(t, str):
        return frozenset({t})
    if isinstance(t, list):
        return frozenset(x for x in t if isinstance(x, str))
    found: set[str] = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for member in schema.get(key, []):
            sub = schema_types(member)
            if sub is None:
                return None
            found |= sub
    return frozenset(found) if found else None


def coerce(raw: str, types: frozenset[str] | None) -> Any:
    """``raw`` as the first of integer, number, boolean, null that ``types`` allows and
    ``raw`` spells; else ``raw`` unchanged."""
    if types is None or types == {"string"}:
        return raw
    if "integer" in types and _INT.match(raw):
        return int(raw)
    if "number" in types and _NUMBER.match(raw):
        return float(raw) if ("." in raw or "e" in raw or "E" in raw) else int(raw)
    if "boolean" in types and raw in ("true", "false"):
        return raw == "true"
    if "null" in types and raw in ("", "null"):
        return None
    return raw


@dataclass(frozen=True, slots=True)
class ParamCodec:
    """How one parameter is read. Build with :func:`codec_for`."""

    name: str
    location: Location
    kind: Kind
    style: str
    explode: bool
    types: frozenset[str] | None = None
    item_types: frozenset[str] | None = None
    prop_types: dict[str, frozenset[str] | None] = field(default_factory=dict)

    @property
    def reads_name(self) -> bool:
        """Whether the value sits under the parameter's own name in the query (not so for
        ``deepObject`` and exploded form objects)."""
        return self.kind != "object" or not (
            self.style == "deepObject" or (self.style == "form" and self.explode)
        )

    @property
    def label(self) -> str:
        """``query.limit``: how errors name the parameter."""
        return f"{self.location}.{self.name}"

    def query_keys(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """Query keys this parameter reads: exact names, and name prefixes (deepObject)."""
        if self.kind == "object" and self.style == "deepObject":
            return frozenset(), (self.name + "[",)
        if self.kind == "object" and self.style == "form" and self.explode:
            return frozenset(self.prop_types), ()
        return frozenset({self.name}), ()

    def from_query(self, multi: dict[str, list[str]]) -> Any:
        """The value from the parsed query (name → every value), or MISSING."""
        if self.kind == "object" and self.style == "deepObject":
            prefix = self.name + "["
            out: dict[str, Any] = {}
            for key, values in multi.items():
                if key.startswith(prefix) and key.endswith("]"):
                    prop = key[len(prefix) : -1]
                    out[prop] = self._prop(prop, self._single(values))
            return out if out else MISSING
        if self.kind == "object" and self.style == "form" and self.explode:
            out = {p: self._prop(p, self._single(multi[p])) for p in self.prop_types if p in multi}
            return out if out else MISSING
        sent = multi.get(self.name)
        if sent is None:
            return MISSING
        if self.kind == "array" and self.explode and self.style == "form":
            return [coerce(v, self.item_types) for v in sent]
        return self.from_string(self._single(sent))

    def from_string(self, raw: str) -> Any:
        """The value of a parameter sent once as ``raw`` (path, header, cookie, query)."""
        kind = self.kind
        if kind == "value":
            return coerce(raw, self.types)
        if kind == "json":
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ParamError("malformed JSON") from None
        if kind == "array":
            if not raw:
                return []
            sep = {"spaceDelimited": " ", "pipeDelimited": "|"}.get(self.style, ",")
            return [coerce(v.strip(), self.item_types) for v in raw.split(sep)]
        # object: k,v,k,v (explode false) or k=v,k=v (simple, explode true)
        parts = raw.split(",") if raw else []
        if self.explode and self.style == "simple":
            pairs = [p.partition("=") for p in parts]
            return {k: self._prop(k, v) for k, _, v in pairs}
        if len(parts) % 2:
            raise ParamError("an object needs name,value pairs")
        return {parts[i]: self._prop(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)}

    def _single(self, values: list[str]) -> str:
        if len(values) != 1:
            raise ParamError("given more than once")
        return values[0]

    def _prop(self, name: str, raw: str) -> Any:
        return coerce(raw, self.prop_types.get(name))


def codec_for(param: dict[str, Any], schema: Any, *, json_content: bool) -> ParamCodec:
    """The codec of a declared parameter (``param`` as in the document, ``schema`` as built).
    SpecProblem for a style this gateway cannot read."""
    location: Location = param["in"]
    name = str(param["name"]).lower() if location == "header" else str(param["name"])
    if "content" in param:
        kind: Kind = "json" if json_content else "value"
        return ParamCodec(name, location, kind, "", False, types=None)
    style = param.get("style", _DEFAULT_STYLE[location])
    if style not in _STYLES[location]:
        raise SpecProblem(f"style {style!r} is not supported for {location} parameters")
    explode = param.get("explode", style == "form")
    if not isinstance(explode, bool):
        raise SpecProblem("explode must be a boolean")
    types = schema_types(schema)
    if types is not None and types <= {"array", "null"} and "array" in types:
        items = schema.get("items") if isinstance(schema, dict) else None
        if style == "deepObject":
            raise SpecProblem("style 'deepObject' is for objects")
        return ParamCodec(name, location, "array", style, explode, item_types=schema_types(items))
    if types is not None and types <= {"object", "null"} and "object" in types:
        if style in ("spaceDelimited", "pipeDelimited"):
            raise SpecProblem(f"style {style!r} is supported for arrays only")
        props = schema.get("properties", {}) if isinstance(schema, dict) else {}
        prop_types = {str(k): schema_types(v) for k, v in props.items()}
        if style == "form" and explode and not prop_types:
            raise SpecProblem("an exploded form object needs declared properties")
        return ParamCodec(name, location, "object", style, explode, prop_types=prop_types)
    if style in ("spaceDelimited", "pipeDelimited", "deepObject"):
        raise SpecProblem(f"style {style!r} needs an array or object schema")
    return ParamCodec(name, location, "value", style, explode, types=types)
