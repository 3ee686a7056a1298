"""The JSON fast path: a body proven valid in one native pass, without Python objects.

``orjson.loads`` of a 1 KB body costs ~36k instructions and ``jsonschema-rs`` then ~20k more
on the objects it built; that is most of what the OpenAPI layers cost per request. The
optional extension ``bastion_fastcheck`` (C++, in ``native/fastcheck``: simdjson parses the
body, a check program walks its tape, RE2 runs the patterns; no Python objects) proves the
benchmark's 1 KB request valid in ~22k, and its 1 KB response clean in ~30k.

:func:`compile_program` turns a self-contained JSON Schema (as :mod:`bastion.openapi.schema`
builds them, or the response filter's fast schema) into that program, keeping only keywords
whose meaning the extension reproduces exactly; a schema with any other keyword gets no
program (None) and its bodies take the full path. The extension's answer is one-sided: True
proves the body valid under the schema; False means *not proven* (invalid, malformed, too
deep, or a value it does not decide, such as a string with a ``format``), and the caller runs
the full path, which stays the authority and writes the error message. Every approximation
here therefore errs on the strict side:

* ``integer`` accepts number tokens without fraction or exponent only (``1.0`` is not proven);
* numbers are compared exactly or not at all (an integer beyond 2**53 against a float bound
  is not proven);
* ``pattern`` is kept only when it means the same to RE2 as to jsonschema-rs (fancy-regex,
  which gives some syntax its ECMA-262 meaning): an allow-list of syntax, see
  :func:`safe_pattern`;
* ``not`` only of a string check (``minLength`` + ``pattern``: the detectors' hints);
* ``format`` (when formats are asserted) leaves strings at that place unproven;
* repeated keys: a body with an object that repeats a key is never proven. orjson keeps the
  last value and other parsers the first, so such a body means one thing to the gateway and
  another to the upstream; :func:`repeats_a_key` finds them for the full path, which refuses
  such requests and de-duplicates such responses.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import re
from collections.abc import Callable
from typing import Any, Protocol, cast

import orjson

__all__ = [
    "FastChecker",
    "available",
    "compile_program",
    "fast_checker",
    "repeats_a_key",
    "safe_pattern",
]

log = logging.getLogger("bastion.openapi.fastcheck")

T_NULL, T_BOOL, T_INT, T_NUM, T_STR, T_ARR, T_OBJ = 1, 2, 4, 8, 16, 32, 64
T_ALL = 127
_TYPE_BITS = {
    "null": T_NULL,
    "boolean": T_BOOL,
    "integer": T_INT,
    "number": T_NUM,
    "string": T_STR,
    "array": T_ARR,
    "object": T_OBJ,
}
ANY, FALSE = -2, -1  # child indices: no constraint, the false schema
#: The deepest nesting the extension checks; deeper bodies take the full path.
MAX_DEPTH = 128
#: Keywords that never constrain a value (2020-12 annotations, OpenAPI's, extensions).
_ANNOTATIONS = frozenset(
    {"description", "summary", "title", "deprecated", "readOnly", "writeOnly", "example"}
    | {"examples", "default", "$comment", "externalDocs", "xml", "discriminator"}
)


class FastChecker(Protocol):
    """What the extension's ``Checker`` offers."""

    def check(self, body: bytes, /) -> bool:
        """True when ``body`` is proven valid; False: not proven (take the full path)."""
        ...


class Unsupported(Exception):
    """A keyword (or value) the extension does not reproduce exactly."""


def _load() -> tuple[Callable[[str, int], FastChecker], Callable[[bytes], bool]] | None:
    try:
        module = importlib.import_module("bastion_fastcheck")
    except ImportError:
        return None
    if not hasattr(module, "repeats_a_key"):
        # Built from an older native/fastcheck: its checker proves bodies that repeat a key.
        log.error(
            "bastion_fastcheck is older than this Bastion (no repeats_a_key): not used; "
            "rebuild it with `make native` (JSON bodies take the full path meanwhile)"
        )
        return None
    return (
        cast("Callable[[str, int], FastChecker]", module.Checker),
        cast("Callable[[bytes], bool]", module.repeats_a_key),
    )


_NATIVE = _load()
_CHECKER = _NATIVE[0] if _NATIVE is not None else None
_REPEATS = _NATIVE[1] if _NATIVE is not None else None


class _Repeated(Exception):
    pass


def _no_repeats(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len({key for key, _ in pairs}) != len(pairs):
        raise _Repeated
    # The values are not needed: nothing is built.


def repeats_a_key(body: bytes) -> bool:
    """Whether an object anywhere in the JSON document ``body`` has some key twice.

    Call it on a body orjson parsed. Without the extension, or for a body simdjson refuses
    (an integer beyond 64 bits), the standard library's parser looks (tens of µs per KB); a
    document it cannot read counts as repeating (fail closed).
    """
    if _REPEATS is not None:
        try:
            return _REPEATS(body)
        except ValueError:
            pass  # simdjson refuses what orjson takes (integers beyond 64 bits): ask json
    try:
        json.loads(body, object_pairs_hook=_no_repeats)
    except _Repeated:
        return True
    except (RecursionError, ValueError):
        return True
    return False


def available() -> bool:
    """Whether the extension is installed (``make native`` builds it)."""
    return _CHECKER is not None


def safe_pattern(pattern: str) -> bool:
    r"""Whether ``pattern`` means the same to RE2 (the extension's engine) as to jsonschema-rs:
    an allow-list of syntax, read here token by token. Allowed: literal characters, ``\``
    before a regex metacharacter (``\ . + * ? ( ) | [ ] { } ^ $ -``) or ``/``, ``^`` and ``$``, alternation, groups ``(…)``, ``(?:…)``,
    ``(?i)``/``(?i:…)``, the quantifiers ``? * + {n} {n,} {n,m}`` (lazy ``?`` after them, never
    possessive ``+``) and classes of literals and ranges. Refused: ``.`` (jsonschema-rs gives
    it ECMA-262's meaning, without ``\r``, U+2028 and U+2029), every escape before a letter or
    digit (``\d``, ``\w``, ``\s``, ``\b``, ``\u`` … are rewritten), look-around and
    back-references, other flags, POSIX classes, nested classes and class set operations
    (``&&``, ``--``, ``~~``), and a case-insensitive pattern that is not ASCII (the engines'
    case-folding tables come from different Unicode versions)."""
    if "(?i" in pattern and not pattern.isascii():
        return False  # case folding of non-ASCII letters differs between Unicode versions
    i, n = 0, len(pattern)
    depth = 0
    quantifiable = False  # whether a quantifier may follow (`**`, `(?:)+` … are refused)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n or not _punctuation(pattern[i + 1]):
                return False
            i, quantifiable = i + 2, True
        elif c == "[":
            end = _class_end(pattern, i)
            if end < 0:
                return False
            i, quantifiable = end, True
        elif c == "(":
            if pattern.startswith("(?:", i) or pattern.startswith("(?i:", i):
                i += 3 if pattern[i + 2] == ":" else 4
            elif pattern.startswith("(?i)", i):
                i += 4
                continue
            elif pattern.startswith("(?", i):
                return False
            else:
                i += 1
            depth, quantifiable = depth + 1, False
        elif c == ")":
            if depth == 0:
                return False
            depth, i, quantifiable = depth - 1, i + 1, True
        elif c in "?*+{":
            if not quantifiable:
                return False
            if c == "{":
                close = pattern.find("}", i)
                if close < 0 or not _REPEAT.fullmatch(pattern[i + 1 : close]):
                    return False
                i = close + 1
            else:
                i += 1
            if i < n and pattern[i] == "+":
                return False  # possessive in jsonschema-rs, not in RE2
            if i < n and pattern[i] == "?":
                i += 1  # lazy: same matches
            quantifiable = False
        elif c in "|^$":
            i, quantifiable = i + 1, False
        elif c in ".}]":
            return False
        else:
            i, quantifiable = i + 1, True
    return depth == 0


_REPEAT = re.compile(r"[0-9]{1,4}(?:,[0-9]{0,4})?")


#: Characters whose escape every engine reads as the literal character. Other escapes differ:
#: jsonschema-rs reads ``\<``/``\>`` as word boundaries, RE2 as literals.
_LITERAL_ESCAPES = frozenset("\\.+*?()|[]{}^$-/")


def _punctuation(c: str) -> bool:
    return c in _LITERAL_ESCAPES


def _class_end(pattern: str, start: int) -> int:
    """The index after the class opening at ``start``, or -1 for a class outside the
    allow-list (see :func:`safe_pattern`)."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    first = True
    while i < len(pattern):
        c = pattern[i]
        if c == "]" and not first:
            return i + 1
        if c in "[]" or pattern.startswith(("&&", "--", "~~"), i):
            return -1
        if c == "\\":
            if i + 1 >= len(pattern) or not _punctuation(pattern[i + 1]):
                return -1
            i += 2
        else:
            i += 1
        first = False
    return -1


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unsupported("a bound that is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Unsupported("a bound that is not finite")
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise Unsupported("an integer bound beyond 64 bits")  # compared exactly, or not at all
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Unsupported("a count that is not a non-negative integer")
    return value


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return value
    raise Unsupported("enum or const of other than integers, strings, booleans and null")


def _pattern(value: Any) -> str:
    if not isinstance(value, str) or not safe_pattern(value):
        raise Unsupported("a pattern the two regex engines could read differently")
    return value


class _Compiler:
    def __init__(self, root: Any, formats: bool) -> None:
        defs = root.get("$defs") if isinstance(root, dict) else None
        self._defs: dict[str, Any] = defs if isinstance(defs, dict) else {}
        self._formats = formats
        self._refs: dict[str, int] = {}
        self.nodes: list[dict[str, Any]] = []

    def _new(self) -> int:
        self.nodes.append({})
        return len(self.nodes) - 1

    def child(self, schema: Any) -> int:
        """The index of ``schema``'s node, or ANY / FALSE."""
        if schema is True:
            return ANY
        if schema is False:
            return FALSE
        if not isinstance(schema, dict):
            raise Unsupported("a schema that is not an object or a boolean")
        if "$ref" in schema:
            target = self._ref(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            if not self._constrains(rest):
                return target
            index = self._new()
            self.nodes[index] = {"all_of": [target, self.child(rest)]}
            return index
        if not self._constrains(schema):
            return ANY
        index = self._new()
        self.nodes[index] = self._node(schema)
        return index

    @staticmethod
    def _constrains(schema: dict[str, Any]) -> bool:
        return any(k not in _ANNOTATIONS and not k.startswith("x-") for k in schema)

    def _ref(self, ref: Any) -> int:
        prefix = "#/$defs/"
        if not isinstance(ref, str) or not ref.startswith(prefix):
            raise Unsupported("a $ref outside the root's $defs")
        name = ref[len(prefix) :]
        if "~" in name or "%" in name or "/" in name:
            raise Unsupported("a $ref with JSON-pointer escapes")  # (the builder never makes one)
        if name in self._refs:
            return self._refs[name]
        if name not in self._defs:
            raise Unsupported("a $ref to a missing definition")
        target = self._defs[name]
        if target is True or target is False:
            return ANY if target else FALSE
        index = self._refs[name] = self._new()  # before the body: recursion refers to it
        if not isinstance(target, dict) or "$ref" in target:
            self.nodes[index] = {"all_of": [self.child(target)]}
        else:
            self.nodes[index] = self._node(target) if self._constrains(target) else {}
        return index

    def _node(self, schema: dict[str, Any]) -> dict[str, Any]:
        node: dict[str, Any] = {}
        combined: dict[str, list[int]] = {}
        for key, value in schema.items():
            if key in _ANNOTATIONS or key.startswith("x-") or key == "$defs":
                continue
            if key in ("allOf", "anyOf"):
                if not isinstance(value, list) or not value:
                    raise Unsupported(f"{key} that is not a non-empty list")
                combined[key] = [self.child(s) for s in value]
                continue
            handler = _KEYWORDS.get(key)
            if handler is None:
                raise Unsupported(f"keyword {key}")
            handler(self, node, value)
        if not combined:
            return node
        # The extension evaluates all_of / any_of on a node of their own: the other keywords
        # become one more member of all_of.
        out: dict[str, Any] = {}
        all_of = list(combined.get("allOf", []))
        if node:
            own = self._new()
            self.nodes[own] = node
            all_of.insert(0, own)
        if all_of:
            out["all_of"] = all_of
        if "anyOf" in combined:
            out["any_of"] = combined["anyOf"]
        return out

    # -- keywords ---------------------------------------------------------------------------
    def _type(self, node: dict[str, Any], value: Any) -> None:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not all(n in _TYPE_BITS for n in names):
            raise Unsupported("an unknown type")
        bits = 0
        for n in names:
            bits |= _TYPE_BITS[n]
        node["types"] = node.get("types", T_ALL) & bits

    def _properties(self, node: dict[str, Any], value: Any) -> None:
        if not isinstance(value, dict):
            raise Unsupported("properties that are not a mapping")
        node["props"] = [[str(name), self.child(sub)] for name, sub in value.items()]

    def _required(self, node: dict[str, Any], value: Any) -> None:
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise Unsupported("required that is not a list of names")
        if len(set(value)) > 64:
            raise Unsupported("more than 64 required names")
        node["required"] = list(value)

    def _additional(self, node: dict[str, Any], value: Any) -> None:
        node["additional"] = self.child(value)

    def _property_names(self, node: dict[str, Any], value: Any) -> None:
        # Only {"not": {"pattern": …}}: the detectors' key hint.
        inner = value.get("not") if isinstance(value, dict) and len(value) == 1 else None
        if not isinstance(inner, dict) or set(inner) != {"pattern"}:
            raise Unsupported("propertyNames other than a key hint")
        node["key_not"] = _pattern(inner["pattern"])

    def _not(self, node: dict[str, Any], value: Any) -> None:
        # Only a string check: {"minLength"?, "pattern", "type": "string"?} (a detector hint).
        # Without "type": "string" inside, every non-string satisfies the inner schema, so
        # `not` refuses every non-string.
        if not isinstance(value, dict) or "pattern" not in value:
            raise Unsupported("not other than a string check")
        extra = set(value) - {"minLength", "pattern", "type"}
        if extra or value.get("type", "string") != "string":
            raise Unsupported("not other than a string check")
        guard: dict[str, Any] = {"pattern": _pattern(value["pattern"])}
        if "minLength" in value:
            guard["min_len"] = _count(value["minLength"])
        if "type" not in value:
            node["types"] = node.get("types", T_ALL) & T_STR
        if "not_str" in node:
            raise Unsupported("two string checks")
        node["not_str"] = guard

    def _format(self, node: dict[str, Any], value: Any) -> None:
        if self._formats:
            node["unproven_strings"] = True

    def _enum(self, node: dict[str, Any], value: Any) -> None:
        if not isinstance(value, list) or "enum" in node:
            raise Unsupported("enum that is not a list, or enum with const")
        node["enum"] = [_scalar(v) for v in value]

    def _const(self, node: dict[str, Any], value: Any) -> None:
        if "enum" in node:
            raise Unsupported("enum with const")
        node["enum"] = [_scalar(value)]

    def _multiple_of(self, node: dict[str, Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
            raise Unsupported("multipleOf that is not a positive integer")
        node["multiple_of"] = value

    def _prefix(self, node: dict[str, Any], value: Any) -> None:
        if not isinstance(value, list):
            raise Unsupported("prefixItems that is not a list")
        node["prefix"] = [self.child(s) for s in value]

    def _min_properties(self, node: dict[str, Any], value: Any) -> None:
        if _count(value) != 0:  # duplicate keys would make a count laxer than orjson's
            raise Unsupported("minProperties")


def _set(
    field: str, convert: Callable[[Any], Any]
) -> Callable[[_Compiler, dict[str, Any], Any], None]:
    def handler(_compiler: _Compiler, node: dict[str, Any], value: Any) -> None:
        node[field] = convert(value)

    return handler


def _child(field: str) -> Callable[[_Compiler, dict[str, Any], Any], None]:
    def handler(compiler: _Compiler, node: dict[str, Any], value: Any) -> None:
        node[field] = compiler.child(value)

    return handler


_KEYWORDS: dict[str, Callable[[_Compiler, dict[str, Any], Any], None]] = {
    "type": _Compiler._type,
    "properties": _Compiler._properties,
    "required": _Compiler._required,
    "additionalProperties": _child("additional"),
    "propertyNames": _Compiler._property_names,
    "maxProperties": _set("max_props", _count),
    "minProperties": _Compiler._min_properties,
    "items": _child("items"),
    "prefixItems": _Compiler._prefix,
    "minItems": _set("min_items", _count),
    "maxItems": _set("max_items", _count),
    "minLength": _set("min_len", _count),
    "maxLength": _set("max_len", _count),
    "pattern": _set("pattern", _pattern),
    "minimum": _set("min", _number),
    "maximum": _set("max", _number),
    "exclusiveMinimum": _set("xmin", _number),
    "exclusiveMaximum": _set("xmax", _number),
    "multipleOf": _Compiler._multiple_of,
    "enum": _Compiler._enum,
    "const": _Compiler._const,
    "not": _Compiler._not,
    "format": _Compiler._format,
}


def compile_program(schema: Any, *, formats: bool) -> str | None:
    """The check program of ``schema`` as JSON text, or None when a keyword of it has no exact
    counterpart in the extension. ``formats``: whether the full path asserts ``format``."""
    compiler = _Compiler(schema, formats)
    try:
        root = compiler.child(schema)
    except Unsupported as exc:
        log.debug("no fast path: %s", exc)
        return None
    except RecursionError:
        return None
    if root < 0:
        index = compiler._new()
        compiler.nodes[index] = {} if root == ANY else {"never": True}
        root = index
    if _same_instance_cycle(compiler.nodes):
        # {"$ref": "#/$defs/A"} with A = {"$ref": "#/$defs/A"} (or through allOf/anyOf) would
        # recurse without reading input; jsonschema-rs accepts such schemas.
        log.debug("no fast path: a $ref cycle that consumes no input")
        return None
    return orjson.dumps({"root": root, "nodes": compiler.nodes}).decode()


def _same_instance_cycle(nodes: list[dict[str, Any]]) -> bool:
    """Whether the ``all_of``/``any_of`` edges (same value, no input read) form a cycle."""
    state = [0] * len(nodes)  # 0 unseen, 1 on the path, 2 done
    for start in range(len(nodes)):
        if state[start]:
            continue
        stack: list[tuple[int, int]] = [(start, 0)]
        state[start] = 1
        while stack:
            node, at = stack.pop()
            members = (*nodes[node].get("all_of", ()), *nodes[node].get("any_of", ()))
            edges = [i for i in members if i >= 0]
            if at < len(edges):
                stack.append((node, at + 1))
                nxt = edges[at]
                if state[nxt] == 1:
                    return True
                if state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                state[node] = 2
    return False


def fast_checker(schema: Any, *, formats: bool, max_depth: int) -> FastChecker | None:
    """The extension's checker for ``schema`` (objects and arrays nested at most
    ``max_depth`` deep), or None: no extension, or no exact program for the schema."""
    if _CHECKER is None:
        return None
    # Deeper bodies take the full path: the checker's recursion stays shallow whatever the
    # configured limit (the checker recurses once per level).
    max_depth = min(max_depth, MAX_DEPTH)
    program = compile_program(schema, formats=formats)
    if program is None:
        return None
    try:
        return _CHECKER(program, max_depth)
    except ValueError as exc:  # e.g. a pattern RE2 cannot compile
        log.debug("no fast path: %s", exc)
        return None
