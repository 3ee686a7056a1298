"""OpenAPI schema objects → self-contained JSON Schema 2020-12, ready for ``jsonschema-rs``.

What :class:`SchemaBuilder` does to one schema of a document, once, at start-up:

* **inlines every ``$ref``** (local or into another file). A reference back into a schema that
  is still being expanded (a recursive schema: a tree, a linked list) becomes
  ``{"$ref": "#/$defs/<name>"}`` and the target goes into the root's ``$defs``: those are the
  only ``$ref`` left in a built schema, and they always point into its own root.
* **converts OpenAPI 3.0 schemas** where 3.0 differs from JSON Schema 2020-12: ``nullable``,
  boolean ``exclusiveMinimum``/``exclusiveMaximum``, ``example``. ``format: int32``/``int64``
  become numeric bounds (in 3.0 and 3.1 alike), so jsonschema-rs checks them natively.
* for **request** schemas (``close_objects``): objects are closed — ``additionalProperties:
  false``, or ``unevaluatedProperties: false`` where ``allOf``/``anyOf``/``oneOf`` combine several
  schemas — unless the schema states ``additionalProperties`` or ``unevaluatedProperties``
  itself. Mass assignment (``{"is_admin": true}``) is then a validation error.
* for **request** schemas (``strip_read_only``): a property marked ``readOnly`` becomes the
  ``false`` schema (it may not be sent) and leaves ``required`` (it is required in responses
  only, as OpenAPI says). jsonschema-rs then refuses it; no Python walks the body.

Nothing inside ``not`` or ``if`` is closed or stripped: that would change what they mean.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from bastion.openapi.loader import Documents, SpecProblem, Where

Schema = dict[str, Any] | bool

_SINGLE = (
    "additionalProperties",
    "items",
    "additionalItems",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)
_SAME_INSTANCE = ("allOf", "anyOf", "oneOf", "then", "else", "dependentSchemas")
_CONDITION = ("not", "if")
_MAPS = ("properties", "patternProperties", "dependentSchemas")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
#: Dropped: every reference is inlined, so ids, anchors and the document's own $defs are moot
#: (and a stray ``$id`` would change what ``#/$defs/…`` means to the validator).
_DROP = frozenset(
    {"$id", "$schema", "$anchor", "$dynamicAnchor", "$defs", "definitions", "discriminator"}
)
_UNSUPPORTED = frozenset({"$dynamicRef", "$recursiveRef", "$recursiveAnchor"})
_ANNOTATIONS = frozenset(
    {"description", "summary", "title", "deprecated", "readOnly", "writeOnly", "example"}
    | {"examples", "default", "$comment", "externalDocs", "xml"}
)
_COMBINERS = ("allOf", "anyOf", "oneOf", "$ref", "if", "dependentSchemas")
_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_DEF_NAME = re.compile(r"[^A-Za-z0-9_.-]")
_FALSE: dict[str, Any] = {"not": {}}


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """How to build: ``openapi30`` converts 3.0 keywords; the two request transforms are
    described in the module docstring; ``max_nodes`` bounds a schema's expanded size."""

    openapi30: bool
    close_objects: bool = False
    strip_read_only: bool = False
    max_nodes: int = 200_000


def _types(schema: dict[str, Any]) -> set[str] | None:
    t = schema.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)}
    return None


def _object_like(d: dict[str, Any]) -> bool:
    t = _types(d)
    return (
        "properties" in d
        or "patternProperties" in d
        or (t is not None and "object" in t)
        or any(k in d for k in ("allOf", "anyOf", "oneOf"))
    )


class SchemaBuilder:
    """Builds the schemas of one document (see the module docstring). Problems are appended
    to ``problems`` as ``location: message``; a schema with problems is still returned (as
    built so far) so that every problem of the document can be reported at once."""

    def __init__(self, docs: Documents, options: BuildOptions, problems: list[str]) -> None:
        self._docs = docs
        self._opt = options
        self._problems = problems
        #: Names of every property stripped as readOnly, for readable error messages.
        self.read_only_names: set[str] = set()
        self._stack: list[Where] = []
        self._names: dict[Where, str] = {}
        self._defs: dict[str, Schema] = {}
        self._memo: dict[tuple[Where, bool, bool], Schema] = {}

    def build(self, node: Any, where: Where) -> dict[str, Any]:
        """The self-contained schema for ``node`` (found at ``where``), always a mapping
        (a boolean schema becomes ``{}`` or ``{"not": {}}``)."""
        self._stack, self._names, self._defs, self._memo = [], {}, {}, {}
        try:
            out = self._schema(node, where, composed=False, literal=False)
        except RecursionError:
            self._problem(where, "schema nested too deeply")
            return _FALSE
        if isinstance(out, bool):
            out = {} if out else dict(_FALSE)
        if self._defs:
            out = {**out, "$defs": dict(self._defs)}
        size = expanded_size(out, self._opt.max_nodes)
        if size > self._opt.max_nodes:
            self._problem(
                where, f"schema larger than {self._opt.max_nodes} nodes once $refs are inlined"
            )
            return _FALSE
        return out

    def _problem(self, where: Where, message: str) -> None:
        self._problems.append(f"{self._docs.loc(where)}: {message}")

    # -- walking ------------------------------------------------------------------------------
    def _schema(self, node: Any, where: Where, *, composed: bool, literal: bool) -> Schema:
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict):
            self._problem(where, "a schema must be an object or a boolean")
            return {}
        if "$ref" in node:
            return self._ref(node, where, composed=composed, literal=literal)
        doc, parts = where
        d: dict[str, Any] = {}
        for key, value in node.items():
            k = str(key)
            at: Where = (doc, (*parts, k))
            if k in _DROP:
                continue
            if k in _UNSUPPORTED:
                self._problem(at, f"{k} is not supported")
                continue
            sub_composed = k in _SAME_INSTANCE
            sub_literal = literal or k in _CONDITION
            if k in _MAPS and isinstance(value, dict):
                d[k] = {
                    str(n): self._schema(
                        s, (doc, (*parts, k, str(n))), composed=sub_composed, literal=sub_literal
                    )
                    for n, s in value.items()
                }
            elif k in _LISTS and isinstance(value, list):
                d[k] = [
                    self._schema(
                        s, (doc, (*parts, k, i)), composed=sub_composed, literal=sub_literal
                    )
                    for i, s in enumerate(value)
                ]
            elif k in _SINGLE or k in _SAME_INSTANCE or k in _CONDITION:
                d[k] = self._schema(value, at, composed=sub_composed, literal=sub_literal)
            else:
                d[k] = value
        nullable = self._convert(d)
        if not literal:
            self._request_transforms(d, composed)
        if nullable:
            return _nullable(d)
        return d

    def _ref(self, node: dict[str, Any], where: Where, *, composed: bool, literal: bool) -> Schema:
        try:
            target, key = self._docs.resolve(node["$ref"], where)
        except SpecProblem as exc:
            self._problem((where[0], (*where[1], "$ref")), str(exc))
            return {}
        siblings = {str(k): v for k, v in node.items() if k != "$ref"}
        if self._opt.openapi30:
            siblings = {}  # 3.0: a $ref replaces its whole object
        notes = {k: v for k, v in siblings.items() if k in _ANNOTATIONS or k.startswith("x-")}
        checks = {k: v for k, v in siblings.items() if k not in notes}
        built = self._target(target, key, composed=composed or bool(checks), literal=literal)
        if checks:
            extra = self._schema(checks, where, composed=True, literal=literal)
            combined: dict[str, Any] = {"allOf": [built, extra], **notes}
            if not literal:
                self._request_transforms(combined, composed)
            return combined
        if notes:
            if isinstance(built, bool):
                return {"allOf": [built], **notes}
            return {**built, **notes}
        return built

    def _target(self, target: Any, key: Where, *, composed: bool, literal: bool) -> Schema:
        if key in self._stack or key in self._names:
            return {"$ref": f"#/$defs/{self._def_name(key)}"}
        memo_key = (key, composed, literal)
        hit = self._memo.get(memo_key)
        if hit is not None:
            return hit
        self._stack.append(key)
        try:
            built = self._schema(target, key, composed=composed, literal=literal)
        finally:
            self._stack.pop()
        if key in self._names:  # it referred to itself while being built: keep it in $defs
            name = self._names[key]
            self._defs[name] = built
            built = {"$ref": f"#/$defs/{name}"}
        self._memo[memo_key] = built
        return built

    def _def_name(self, key: Where) -> str:
        name = self._names.get(key)
        if name is None:
            last = str(key[1][-1]) if key[1] else "root"
            base = _DEF_NAME.sub("_", last) or "schema"
            name, n = base, 1
            while name in self._names.values():
                n += 1
                name = f"{base}_{n}"
            self._names[key] = name
        return name

    # -- conversions --------------------------------------------------------------------------
    def _convert(self, d: dict[str, Any]) -> bool:
        """3.0 keywords to 2020-12 and int formats to bounds, in place; True if nullable."""
        nullable = False
        if self._opt.openapi30:
            nullable = d.pop("nullable", False) is True
            for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
                if isinstance(d.get(flag), bool) and d.pop(flag) and bound in d:
                    d[flag] = d.pop(bound)
            if "example" in d:
                example = d.pop("example")
                d.setdefault("examples", [example])
        bounds = _INT_BOUNDS.get(d.get("format", ""))
        if bounds is not None:
            t = _types(d)
            if t is None or "integer" in t or "number" in t:
                d.setdefault("minimum", bounds[0])
                d.setdefault("maximum", bounds[1])
        return nullable

    def _request_transforms(self, d: dict[str, Any], composed: bool) -> None:
        props = d.get("properties")
        if self._opt.strip_read_only and isinstance(props, dict):
            read_only = {n for n, s in props.items() if isinstance(s, dict) and s.get("readOnly")}
            if read_only:
                d["properties"] = {n: (False if n in read_only else s) for n, s in props.items()}
                required = d.get("required")
                if isinstance(required, list):
                    d["required"] = [r for r in required if r not in read_only]
                self.read_only_names |= read_only
        if (
            self._opt.close_objects
            and not composed
            and "additionalProperties" not in d
            and "unevaluatedProperties" not in d
            and _object_like(d)
        ):
            if any(k in d for k in _COMBINERS):
                d["unevaluatedProperties"] = False
            else:
                d["additionalProperties"] = False


def _nullable(d: dict[str, Any]) -> Schema:
    t = d.get("type")
    if isinstance(t, str):
        d["type"] = [t, "null"]
    elif isinstance(t, list) and "null" not in t:
        d["type"] = [*t, "null"]
    elif t is None:
        return {"anyOf": [{"type": "null"}, d]}
    enum = d.get("enum")
    if isinstance(enum, list) and None not in enum:
        d["enum"] = [*enum, None]
    return d


def expanded_size(schema: Any, limit: int) -> int:
    """Nodes of ``schema`` counted as if every shared sub-object were copied (stops past
    ``limit``): what jsonschema-rs will hold once the inlined ``$ref``s are serialised."""
    memo: dict[int, int] = {}

    def size(node: Any) -> int:
        if isinstance(node, dict | list):
            known = memo.get(id(node))
            if known is not None:
                return known
            values = node.values() if isinstance(node, dict) else node
            total = 1
            for v in values:
                total += size(v)
                if total > limit:
                    break
            memo[id(node)] = total
            return total
        return 1

    return size(schema)


def nesting_bound(schema: Schema) -> float:
    """The deepest nesting of objects and arrays a value valid under ``schema`` can have
    (``math.inf`` when unbounded or unknown: recursion, free-form values). Conservative: may
    say ``inf`` where a bound exists, never a bound that is too small."""
    if schema is False:
        return 0
    if schema is True or "$ref" in schema:
        return math.inf
    if "enum" in schema or "const" in schema:
        return 0
    t = _types(schema)
    depth = 0.0
    if t is None or "object" in t:
        closed = schema.get("additionalProperties") is False or (
            schema.get("unevaluatedProperties") is False and not _has_combiner(schema)
        )
        extra = schema.get("additionalProperties")
        if not closed and not isinstance(extra, dict):
            return math.inf
        subs = [
            *schema.get("properties", {}).values(),
            *schema.get("patternProperties", {}).values(),
        ]
        if isinstance(extra, dict):
            subs.append(extra)
        depth = max(depth, 1 + max((nesting_bound(s) for s in subs), default=0))
    if t is None or "array" in t:
        items = schema.get("items")
        if not isinstance(items, dict | bool) or items is True:
            return math.inf
        prefix = schema.get("prefixItems", [])
        depth = max(depth, 1 + max((nesting_bound(s) for s in [items, *prefix]), default=0))
    for key in ("allOf", "anyOf", "oneOf"):
        for member in schema.get(key, []):
            depth = max(depth, nesting_bound(member))
    return depth


def _has_combiner(schema: dict[str, Any]) -> bool:
    return any(k in schema for k in ("allOf", "anyOf", "oneOf"))
