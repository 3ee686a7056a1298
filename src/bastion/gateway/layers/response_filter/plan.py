"""Response schemas → allow-list plans, and the fast-path schema that proves a body clean.

A :class:`Node` says, for one place in a response body, which properties are declared (an
allow-list), where undeclared ones are allowed anyway (``additionalProperties``), what array
items look like, and whether the value is marked ``x-bastion-sensitive``. It is built once per
response schema from the resolved JSON Schema (``bastion.openapi.schema`` leaves ``$ref`` only
for recursion, into the root's ``$defs``). Composition is read conservatively: the node of an
``allOf``/``anyOf``/``oneOf`` is the union of its branches, so a property declared in any branch
is kept; an ``anyOf``/``oneOf`` branch that accepts anything makes the node open. A schema that
says nothing (``true``, ``{}``, only annotations) is open: no allow-list below it, detectors only.
Any other schema is closed unless ``additionalProperties``/``unevaluatedProperties`` opens it.

:func:`fast_schema` turns a plan into a JSON Schema that a body satisfies only if filtering it
would change and report nothing: every key declared, no ``writeOnly``, sensitive-marked or
sensitive-named property present, no string or number any selected detector could flag (their
*hints*). One compiled ``jsonschema-rs`` call then replaces the Python walk for clean bodies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bastion.core.sensitive import CARD_NUMBER_FLOOR, SensitiveScanner

#: Keywords that do not constrain a value: a schema made only of these (and ``x-…``) is open.
_ANNOTATIONS = frozenset(
    {"description", "summary", "title", "deprecated", "readOnly", "writeOnly", "example"}
    | {"examples", "default", "$comment", "externalDocs", "xml", "$defs", "format"}
)
_COMPOSITION = frozenset({"allOf", "anyOf", "oneOf", "then", "else", "dependentSchemas", "$ref"})
_ALTERNATIVES = ("anyOf", "oneOf")
_GUARD = "#/$defs/bastion_guard"
_MATCH_ALL = re.compile("")


@dataclass(eq=False, slots=True)
class Node:
    """The allow-list at one place of a body. ``additional`` is the node of undeclared
    properties when they are allowed (None: they are not); ``items`` None means any items."""

    open: bool = False
    props: dict[str, Node] = field(default_factory=dict)
    write_only: frozenset[str] = frozenset()
    patterns: tuple[tuple[re.Pattern[str], Node], ...] = ()
    additional: Node | None = None
    items: Node | None = None
    prefix: tuple[Node, ...] = ()
    sensitive: bool | None = None  # x-bastion-sensitive: True masked, False exempt
    roles: frozenset[str] | None = None  # x-bastion-sensitive-roles
    types: frozenset[str] | None = None  # JSON types the schema allows (None: not stated)
    named: frozenset[str] = frozenset()  # declared properties whose names are sensitive

    def children(self) -> list[Node]:
        """Every node directly below this one."""
        out = [*self.props.values(), *(n for _, n in self.patterns), *self.prefix]
        out.extend(n for n in (self.additional, self.items) if n is not None)
        return out


OPEN = Node(open=True)
#: What an array's items are held to where the schema allows no array (a string declared, an
#: array sent): no property of an object among them is declared, nor of any below.
CLOSED = Node(types=frozenset())


def arrays_closed(node: Node) -> bool:
    """Whether an array met at ``node`` holds only :data:`CLOSED` items: the schema says
    nothing of items and allows no array — it states types without "array", or states none
    but describes an object (``properties``, ``patternProperties``, ``additionalProperties``:
    OpenAPI documents often leave out ``type: object``)."""
    if node.open or node.items is not None or node.prefix:
        return False
    if node.types is not None:
        return "array" not in node.types
    return bool(node.props or node.patterns or node.additional is not None)


def _is_open(schema: Any) -> bool:
    if schema is True:
        return True
    return isinstance(schema, dict) and all(k in _ANNOTATIONS or k.startswith("x-") for k in schema)


def _constrains(facet: dict[str, Any]) -> bool:
    return any(
        k not in _ANNOTATIONS and k not in _COMPOSITION and not k.startswith("x-") for k in facet
    )


class PlanBuilder:
    """Builds the :class:`Node` of one response schema (its ``$defs`` resolve ``$ref``).

    ``problems`` collects ``x-bastion-sensitive`` values that are not booleans and
    ``x-bastion-sensitive-roles`` that are not lists of names (treated as sensitive, no roles).
    """

    def __init__(self, root: Any) -> None:
        defs = root.get("$defs") if isinstance(root, dict) else None
        self._defs: dict[str, Any] = defs if isinstance(defs, dict) else {}
        self._memo: dict[tuple[int, ...], Node] = {}
        self.problems: list[str] = []
        self._root = root

    def build(self) -> Node:
        """The plan of the whole body."""
        return self._node((self._root,))

    def _deref(self, schema: Any) -> list[Any]:
        if not isinstance(schema, dict) or "$ref" not in schema:
            return [schema]
        ref = schema["$ref"]
        name = ref[len("#/$defs/") :] if isinstance(ref, str) and ref.startswith("#/$defs/") else ""
        target = self._defs.get(name, {})  # an unknown target constrains nothing known: open
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return [target, rest] if rest else [target]

    def _facets(
        self, schemas: tuple[Any, ...]
    ) -> tuple[list[dict[str, Any]], bool, frozenset[str] | None]:
        """Every schema that applies to the same instance, whether the node is open, and the
        types every instance must have (from the schemas that are not alternatives)."""
        facets: list[dict[str, Any]] = []
        types: frozenset[str] | None = None
        seen: set[int] = set()
        stack: list[tuple[Any, bool]] = [(s, False) for s in schemas]
        alternative_open = False
        while stack:
            schema, alternative = stack.pop()
            for s in self._deref(schema):
                if id(s) in seen or s is False:
                    continue
                seen.add(id(s))
                if not isinstance(s, dict) or _is_open(s):
                    alternative_open |= alternative
                    if isinstance(s, dict):
                        facets.append(s)  # keeps its x-bastion-* marks
                    continue
                facets.append(s)
                if not alternative and "type" in s:
                    types = _narrow(types, s["type"])
                stack.extend((b, alternative) for b in s.get("allOf", ()) or ())
                for key in _ALTERNATIVES:
                    stack.extend((b, True) for b in s.get(key, ()) or ())
                stack.extend((s[k], True) for k in ("then", "else") if k in s)
                deps = s.get("dependentSchemas")
                if isinstance(deps, dict):
                    stack.extend((b, True) for b in deps.values())
        is_open = alternative_open or not any(_constrains(f) for f in facets)
        return facets, is_open, types or None  # no type in common: leave it unstated

    def _node(self, schemas: tuple[Any, ...]) -> Node:
        key = tuple(id(s) for s in schemas)
        found = self._memo.get(key)
        if found is not None:
            return found
        facets, is_open, types = self._facets(schemas)
        node = Node(open=is_open, types=types)
        self._memo[key] = node  # before the children: recursive schemas refer back to it
        self._marks(node, facets)
        if is_open:
            return node
        props: dict[str, list[Any]] = {}
        patterns: dict[str, list[Any]] = {}
        additional: list[Any] = []
        items: list[Any] = []
        prefix: list[list[Any]] = []
        write_only: set[str] = set()
        for f in facets:
            for name, sub in (f.get("properties") or {}).items():
                props.setdefault(name, []).append(sub)
                if isinstance(sub, dict) and sub.get("writeOnly") is True:
                    write_only.add(name)
            for pattern, sub in (f.get("patternProperties") or {}).items():
                patterns.setdefault(pattern, []).append(sub)
            additional.extend(
                f[k]
                for k in ("additionalProperties", "unevaluatedProperties")
                if k in f and f[k] is not False
            )
            if "items" in f and f["items"] is not False:
                items.append(f["items"])
            for i, sub in enumerate(f.get("prefixItems") or ()):
                while len(prefix) <= i:
                    prefix.append([])
                prefix[i].append(sub)
        node.props = {name: self._node(tuple(subs)) for name, subs in props.items()}
        node.write_only = frozenset(write_only)
        node.patterns = tuple((_pattern(p), self._node(tuple(s))) for p, s in patterns.items())
        node.additional = self._node(tuple(additional)) if additional else None
        node.items = self._node(tuple(items)) if items else None
        node.prefix = tuple(self._node(tuple(subs)) for subs in prefix)
        return node

    def _marks(self, node: Node, facets: list[dict[str, Any]]) -> None:
        roles: set[str] = set()
        for f in facets:
            mark = f.get("x-bastion-sensitive")
            if mark is not None and not isinstance(mark, bool):
                self.problems.append(f"x-bastion-sensitive must be true or false, not {mark!r}")
                mark = True
            if mark is True:
                node.sensitive = True
            elif mark is False and node.sensitive is None:
                node.sensitive = False
            listed = f.get("x-bastion-sensitive-roles")
            if listed is not None:
                if not isinstance(listed, list) or not all(isinstance(r, str) for r in listed):
                    self.problems.append("x-bastion-sensitive-roles must be a list of role names")
                    continue
                roles.update(listed)
        if roles:
            node.roles = frozenset(roles)


def _narrow(types: frozenset[str] | None, stated: Any) -> frozenset[str] | None:
    """``types`` narrowed by one more ``type`` keyword (``number`` includes ``integer``)."""
    listed = [stated] if isinstance(stated, str) else stated
    if not isinstance(listed, list):
        return types
    new = {t for t in listed if isinstance(t, str)}
    if "number" in new:
        new.add("integer")
    return frozenset(new) if types is None else types & new


def _pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error:
        return _MATCH_ALL  # a pattern Python cannot read keeps every key (conservative)


def build_plan(schema: Any, scanner: SensitiveScanner | None = None) -> tuple[Node, list[str]]:
    """The plan of a resolved response schema and the problems found in its marks; with a
    ``scanner``, each node also knows which of its declared names are sensitive."""
    builder = PlanBuilder(schema)
    root = builder.build()
    if scanner is not None:
        stack, seen = [root], {id(root)}
        while stack:
            node = stack.pop()
            node.named = frozenset(k for k in node.props if scanner.is_sensitive_name(k))
            for child in node.children():
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append(child)
    return root, builder.problems


def _recursive_nodes(root: Node) -> set[int]:
    """Ids of the nodes reached again while they are being visited (cycles)."""
    found: set[int] = set()
    done: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    path: set[int] = set()
    while stack:
        node, leaving = stack.pop()
        if leaving:
            path.discard(id(node))
            done.add(id(node))
            continue
        if id(node) in path:
            found.add(id(node))
            continue
        if id(node) in done:
            continue
        path.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in node.children())
    return found


def fast_schema(root: Node, scanner: SensitiveScanner) -> dict[str, Any] | None:
    """The JSON Schema only bodies that filtering would leave untouched satisfy, or None when
    the plan cannot be expressed safely (``patternProperties``: Python and the validator's regex
    dialects might disagree on a key; a body marked sensitive as a whole)."""
    if root.sensitive is True:
        return None
    return subtree_schema(root, scanner, True)


def subtree_schema(node: Node, scanner: SensitiveScanner, guarded: bool) -> dict[str, Any] | None:
    """The JSON Schema only values satisfy that the walk, reaching ``node`` with ``guarded``
    (detectors on), would leave untouched and not report; None when the plan below ``node``
    has ``patternProperties``, and for :data:`CLOSED` (an array where none is allowed: always
    walked). The caller handles ``node``'s own ``x-bastion-sensitive``."""
    if node is CLOSED:
        return None
    stack, seen = [node], {id(node)}
    while stack:
        current = stack.pop()
        if current.patterns:
            return None
        for child in current.children():
            if id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    return _FastSchema(scanner, _recursive_nodes(node)).document(node, guarded)


class _FastSchema:
    def __init__(self, scanner: SensitiveScanner, recursive: set[int]) -> None:
        self._scanner = scanner
        self._recursive = recursive
        self._defs: dict[str, Any] = {"bastion_guard": scanner.guard_schema(_GUARD)}
        self._numbers = any(d.scans_numbers for d in scanner.detectors)
        keys = scanner.key_hint
        self._key_guard = {"not": {"pattern": keys}} if keys else None

    def document(self, root: Node, guarded: bool = True) -> dict[str, Any]:
        body = self._schema(root, guarded)
        out: dict[str, Any] = {"allOf": [body]} if isinstance(body, bool) else dict(body)
        out["$defs"] = {**out.get("$defs", {}), **self._defs}
        return out

    def _child(self, node: Node, guarded: bool) -> Any:
        """A child's schema with its own mark applied: sensitive → must be absent."""
        if node.sensitive is True:
            return False
        return self._schema(node, guarded and node.sensitive is None)

    def _schema(self, node: Node, guarded: bool) -> Any:
        if node.open:
            return {"$ref": _GUARD} if guarded else True
        if id(node) not in self._recursive:
            return self._body(node, guarded)
        name = f"n{id(node):x}{'g' if guarded else ''}"
        if name not in self._defs:
            self._defs[name] = True  # placeholder while the body is built (it may refer to it)
            self._defs[name] = self._body(node, guarded)
        return {"$ref": f"#/$defs/{name}"}

    def _body(self, node: Node, guarded: bool) -> dict[str, Any]:
        """Only the keywords for the types the node allows; ``type`` rejects the rest (a
        body of an unexpected type takes the slow path)."""
        types = node.types
        out: dict[str, Any] = {}
        if types is not None:
            stated = sorted(types - {"integer"} if "number" in types else types)
            # One type as a string: jsonschema-rs checks that much faster than a list.
            out["type"] = stated[0] if len(stated) == 1 else stated
        if types is None or "object" in types:
            props: dict[str, Any] = {}
            for name, child in node.props.items():
                named = (
                    guarded and child.sensitive is None and self._scanner.is_sensitive_name(name)
                )
                withheld = name in node.write_only or named
                props[name] = False if withheld else self._child(child, guarded)
            if props:
                out["properties"] = props
            if node.additional is None:
                out["additionalProperties"] = False
            else:
                out["additionalProperties"] = self._child(node.additional, guarded)
                if guarded and self._key_guard is not None:
                    out["propertyNames"] = self._key_guard
        if types is None or "array" in types:
            if node.items is not None:
                out["items"] = self._child(node.items, guarded)
            elif arrays_closed(node):
                out["items"] = False  # the walk edits any item it finds: never clean
            elif guarded:
                out["items"] = {"$ref": _GUARD}
            if node.prefix:
                out["prefixItems"] = [self._child(p, guarded) for p in node.prefix]
        if guarded:
            hint = self._scanner.value_hint
            if hint and (types is None or "string" in types):
                # minLength first: most strings are too short for any detector, and that
                # check costs a fraction of the pattern's.
                flagged = {"minLength": self._scanner.min_length, "pattern": hint}
                only_strings = types == frozenset({"string"})
                out["not"] = flagged if only_strings else {"type": "string", **flagged}
            if self._numbers and (types is None or "integer" in types):
                out["exclusiveMaximum"] = CARD_NUMBER_FLOOR
                out["exclusiveMinimum"] = -CARD_NUMBER_FLOOR
        return out
