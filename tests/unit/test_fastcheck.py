"""The native JSON fast path (``bastion.openapi.fastcheck`` + the ``bastion_fastcheck``
extension) against the authoritative path (orjson + jsonschema-rs).

The contract under test: ``check(body)`` True implies that orjson parses the body, that
``jsonschema_rs.validator_for(schema, validate_formats=formats)`` accepts the document, and
that the body nests at most ``max_depth`` deep. False only means "not proven". Stricter is
allowed, laxer never; on the common schemas valid documents should be proven.

Tests that need the extension skip without it, unless ``BASTION_EXPECT_FASTCHECK=1`` is set:
then its absence is a failure. The last section pins the bugs this file found in the first
version (regex dialects, ``$ref`` escapes and cycles, exponential ``anyOf``, open children).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.openapi import fastcheck
from bastion.openapi.fastcheck import FastChecker, compile_program, fast_checker, safe_pattern

EXPECT_NATIVE = os.environ.get("BASTION_EXPECT_FASTCHECK") == "1"
MAX_DEPTH = 16


@pytest.fixture(scope="module")
def native() -> None:
    """Skip without the extension; fail instead when the environment expects it."""
    if not fastcheck.available():
        if EXPECT_NATIVE:
            pytest.fail("BASTION_EXPECT_FASTCHECK=1 but bastion_fastcheck is not importable")
        pytest.skip("bastion_fastcheck is not installed (make native)")


needs_native = pytest.mark.usefixtures("native")


def test_extension_present_when_expected() -> None:
    if EXPECT_NATIVE:
        assert fastcheck.available(), "BASTION_EXPECT_FASTCHECK=1: the extension must load"


# -- helpers ----------------------------------------------------------------------------------


def checker(schema: Any, *, formats: bool = False, max_depth: int = MAX_DEPTH) -> FastChecker:
    c = fast_checker(schema, formats=formats, max_depth=max_depth)
    assert c is not None, f"no fast path for {schema!r}"
    return c


def depth(doc: Any) -> int:
    """Nesting of objects and arrays (a root object or array is 1, a scalar 0)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, level + 1) for child in children)
    return deepest


def full_valid(schema: Any, body: bytes, *, formats: bool = False) -> bool:
    """The authoritative answer: orjson parses it and jsonschema-rs accepts it."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return bool(jsonschema_rs.validator_for(schema, validate_formats=formats).is_valid(doc))


def assert_both_say(schema: Any, body: bytes, proven: bool) -> None:
    """The full path and the checker give the same answer: an exact case, not only a sound one."""
    assert full_valid(schema, body) is proven
    assert checker(schema).check(body) is proven


def assert_sound(
    c: FastChecker, schema: Any, body: bytes, *, formats: bool = False, max_depth: int = MAX_DEPTH
) -> bool:
    """``c.check(body)``, after asserting that True is backed by the full path."""
    proven = c.check(body)
    assert isinstance(proven, bool)
    if proven:
        assert full_valid(schema, body, formats=formats), (
            f"UNSOUND: check() is True but jsonschema-rs refuses: schema={schema!r} body={body!r}"
        )
        assert depth(orjson.loads(body)) <= max_depth, f"too deep but proven: {body!r}"
    return proven


# -- compile_program: what is refused, what is kept --------------------------------------------

UNSUPPORTED: list[Any] = [
    {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    {"if": {"type": "string"}, "then": {"minLength": 1}, "else": {"type": "integer"}},
    {"if": {"type": "string"}, "then": {"minLength": 1}},
    {"type": "object", "patternProperties": {"^a": {"type": "string"}}},
    {"type": "object", "unevaluatedProperties": False},
    {"type": "array", "unevaluatedItems": False},
    {"type": "object", "dependentRequired": {"a": ["b"]}},
    {"type": "object", "dependentSchemas": {"a": {"required": ["b"]}}},
    {"type": "array", "uniqueItems": True},
    {"type": "array", "contains": {"type": "string"}},
    {"type": "object", "minProperties": 1},
    {"enum": [1.5, 2]},
    {"enum": ["a", {"b": 1}]},
    {"enum": [[1]]},
    {"const": {"a": 1}},
    {"const": 2.5},
    {"type": "number", "multipleOf": 0.5},
    {"type": "integer", "multipleOf": 0},
    {"type": "integer", "minimum": 2**64},
    {"type": "integer", "maximum": -(2**63) - 1},
    {"type": "integer", "exclusiveMaximum": 10**30},
    {"enum": [2**64]},
    {"type": "string", "pattern": "^\\d+$"},
    {"type": "string", "pattern": "^\\w+$"},
    {"type": "string", "pattern": "\\s"},
    {"type": "string", "pattern": "\\bword\\b"},
    {"type": "string", "pattern": "^(?=a)"},
    {"type": "string", "pattern": "a(?!b)"},
    {"type": "string", "pattern": "(?<=a)b"},
    {"type": "string", "pattern": "(?<!a)b"},
    {"type": "string", "pattern": "(a)\\1"},
    {"type": "string", "pattern": "(?P<x>a)"},
    {"type": "string", "pattern": "\\u0041"},
    {"type": "string", "pattern": "[unclosed"},
    {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}},
    {"type": "object", "propertyNames": {"maxLength": 3}},
    {"type": "object", "propertyNames": {"not": {"pattern": "a", "minLength": 2}}},
    {"type": "object", "propertyNames": {"not": {"pattern": "\\d"}}},
    {"not": {"type": "string"}},
    {"not": {"enum": ["a"]}},
    {"not": {"pattern": "a", "type": "integer"}},
    {"not": {"pattern": "a", "maxLength": 3}},
    {"not": {"minLength": 3}},
    {"$ref": "https://example.com/schema.json"},
    {"$ref": "#/$defs/missing"},
    {"$ref": "#/components/schemas/x", "components": {}},
    {"$id": "https://example.com/s", "type": "string"},
    {"$dynamicRef": "#node"},
    {"$anchor": "a", "type": "string"},
    {"nullable": True, "type": "string"},
    {"type": "string", "contentEncoding": "base64"},
    {"type": "unknown"},
    {"allOf": []},
    {"anyOf": []},
    {"items": [{"type": "string"}]},
    # An unsupported keyword anywhere makes the whole schema unsupported.
    {"type": "object", "properties": {"a": {"type": "array", "items": {"oneOf": [True]}}}},
    {"$defs": {"x": {"uniqueItems": True}}, "properties": {"a": {"$ref": "#/$defs/x"}}},
]


@pytest.mark.parametrize("schema", UNSUPPORTED, ids=lambda s: json.dumps(s)[:60])
def test_compile_refuses_unsupported(schema: Any) -> None:
    assert compile_program(schema, formats=False) is None
    assert fast_checker(schema, formats=False, max_depth=MAX_DEPTH) is None


TREE: dict[str, Any] = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["name"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}

#: (schema, formats, bodies jsonschema-rs accepts (all must be proven), bodies it refuses)
SUPPORTED: list[tuple[str, Any, bool, list[str], list[str]]] = [
    ("type list", {"type": ["string", "null"]}, False, ['"x"', "null"], ["1", "[]", "{}"]),
    (
        "number types",
        {"type": ["integer", "boolean"]},
        False,
        ["1", "-7", "true", "18446744073709551615"],
        ["1.5", '"1"', "null"],
    ),
    (
        "closed object",
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
            "required": ["a"],
            "additionalProperties": False,
        },
        False,
        ['{"a":1}', '{"b":"x","a":2}'],
        ["{}", '{"a":1,"c":1}', '{"a":"x"}', '{"b":"x"}', "[]"],
    ),
    (
        "additionalProperties schema",
        {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 2},
        False,
        ["{}", '{"x":1}', '{"x":1,"y":2}'],
        ['{"x":"s"}', '{"x":1,"y":2,"z":3}'],
    ),
    (
        "minProperties 0",
        {"type": "object", "minProperties": 0, "properties": {"a": {"type": "null"}}},
        False,
        ["{}", '{"a":null}', '{"b":[1]}'],
        ['{"a":1}'],
    ),
    (
        "items and counts",
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
        False,
        ["[1]", "[1,2,3]"],
        ["[]", "[1,2,3,4]", '["a"]', "{}"],
    ),
    (
        "prefixItems",
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
        False,
        ["[]", '["a"]', '["a",1]'],
        ['["a",1,2]', "[1]", '["a","b"]'],
    ),
    (
        "string keywords",
        {"type": "string", "minLength": 2, "maxLength": 4, "pattern": "^[a-z]+$"},
        False,
        ['"ab"', '"abcd"'],
        ['"a"', '"abcde"', '"AB"', "12"],
    ),
    (
        "number bounds",
        {"type": "number", "minimum": -1.5, "maximum": 10, "exclusiveMinimum": -2},
        False,
        ["-1.5", "0", "10", "9.75"],
        ["-1.6", "10.5", "11", '"5"'],
    ),
    (
        "integer multipleOf",
        {"type": "integer", "multipleOf": 5},
        False,
        ["0", "10", "-5", "9223372036854775805"],
        ["7", "2.5"],
    ),
    (
        "enum scalars",
        {"enum": ["a", 1, True, None]},
        False,
        ['"a"', "1", "true", "null"],
        ['"b"', "2", "false", "1.5", "[]", "{}"],
    ),
    ("const", {"const": "x"}, False, ['"x"'], ['"y"', "null"]),
    ("const false", {"const": False}, False, ["false"], ["0", "true", "null"]),
    (
        "allOf",
        {"allOf": [{"type": "string"}, {"maxLength": 3}]},
        False,
        ['"ab"', '"abc"'],
        ['"abcd"', "1"],
    ),
    (
        "anyOf",
        {"anyOf": [{"type": "string", "maxLength": 2}, {"type": "integer", "minimum": 10}]},
        False,
        ['"ab"', "10", "12345"],
        ['"abc"', "5", "null"],
    ),
    (
        "$ref",
        {
            "$defs": {"id": {"type": "string", "pattern": "^[0-9a-f]{8}$"}},
            "type": "object",
            "properties": {"id": {"$ref": "#/$defs/id"}},
            "required": ["id"],
        },
        False,
        ['{"id":"0123abcd"}', '{"id":"deadbeef","other":[1,{}]}'],
        ['{"id":"xyz"}', "{}", '{"id":12345678}'],
    ),
    (
        "$ref with siblings",
        {
            "$defs": {"name": {"type": "string", "minLength": 1}},
            "properties": {"first": {"$ref": "#/$defs/name", "maxLength": 3}},
        },
        False,
        ['{"first":"ab"}', "{}"],
        ['{"first":""}', '{"first":"abcd"}'],
    ),
    (
        "recursive tree",
        TREE,
        False,
        ['{"name":"r"}', '{"name":"r","children":[{"name":"c","children":[{"name":"d"}]}]}'],
        ['{"name":"r","children":[{"children":[]}]}', '{"name":"r","children":[{"name":""}]}'],
    ),
    (
        "format, not asserted",
        {"type": "string", "format": "email"},
        False,
        ['"no email at all"'],
        ["1"],
    ),
    (
        "annotations",
        {
            "type": "string",
            "description": "d",
            "title": "t",
            "examples": ["a"],
            "default": "a",
            "deprecated": False,
            "x-vendor": {"anything": 1},
        },
        False,
        ['"a"'],
        ["1"],
    ),
    (
        "not: a string check",
        {"type": "string", "not": {"minLength": 3, "pattern": "x"}},
        False,
        ['"xx"', '"abcdef"'],
        ['"abx"', "1"],
    ),
    ("true", True, False, ["1", '"s"', "[]", "{}", "null"], []),
    ("false", False, False, [], ["1", '"s"', "[]", "{}", "null"]),
    ("empty", {}, False, ["1", '"s"', "[[]]", '{"a":{}}', "null"], []),
]


@pytest.mark.parametrize(
    ("schema", "formats"), [(s[1], s[2]) for s in SUPPORTED], ids=[s[0] for s in SUPPORTED]
)
def test_compile_keeps_supported(schema: Any, formats: bool) -> None:
    program = compile_program(schema, formats=formats)
    assert program is not None
    parsed = json.loads(program)
    assert isinstance(parsed["nodes"], list)
    assert 0 <= parsed["root"] < len(parsed["nodes"])


@needs_native
@pytest.mark.parametrize(
    ("schema", "formats", "valid", "invalid"),
    [s[1:] for s in SUPPORTED],
    ids=[s[0] for s in SUPPORTED],
)
def test_supported_schemas_prove_valid_and_refuse_invalid(
    schema: Any, formats: bool, valid: list[str], invalid: list[str]
) -> None:
    c = checker(schema, formats=formats)
    for text in valid:
        body = text.encode()
        assert full_valid(schema, body, formats=formats), f"test data: {text} should be valid"
        assert c.check(body) is True, f"valid but not proven: {text}"
    for text in invalid:
        body = text.encode()
        assert not full_valid(schema, body, formats=formats), f"test data: {text} is valid"
        assert c.check(body) is False, f"invalid but proven: {text}"


@needs_native
def test_asserted_format_leaves_its_strings_unproven() -> None:
    schema = {
        "type": "object",
        "properties": {
            "email": {"type": "string", "format": "email"},
            "name": {"type": "string"},
        },
    }
    c = checker(schema, formats=True)
    with_format = b'{"name":"ann","email":"ann@example.com"}'
    assert full_valid(schema, with_format, formats=True)
    assert c.check(with_format) is False  # not decided natively: the full path checks it
    assert c.check(b'{"name":"ann","email":"not an email"}') is False
    assert c.check(b'{"name":"ann"}') is True
    # Formats not asserted: the same body is proven.
    assert checker(schema, formats=False).check(with_format) is True


def test_safe_pattern() -> None:
    for good in ["^[A-Z]{3}$", "^[a-z0-9-]{2,10}$", "(?i:password|ssn)", "a|b", "^\\.$", "x*"]:
        assert safe_pattern(good), good
    for bad in [
        "\\d",
        "\\w+",
        "\\s",
        "\\b",
        "\\p{L}",
        "\\x41",
        "(?=a)",
        "(?!a)",
        "(?<=a)",
        "(?<!a)",
    ]:
        assert not safe_pattern(bad), bad
    for bad in ["(a)\\1", "(?P<n>a)", "[", "(?<n>a)", "a)"]:
        assert not safe_pattern(bad), bad
    # Case folding of non-ASCII letters: the first extension's regex 1.7 and jsonschema-rs's newer
    # regex disagree (U+A7CB folds to U+0264 only in the latter): such patterns are refused.
    assert not safe_pattern("(?i)\u0264")
    assert not safe_pattern("^(?i:[^\u019b])$")
    assert safe_pattern("\u0264")  # case-sensitive: the same code point on both sides
    assert safe_pattern("(?i:[a-z])")
    # Escapes: only of metacharacters (and /). jsonschema-rs reads \< and \> as word boundaries,
    # RE2 as literals: {"not": {"pattern": "\\<K"}} would prove "a K" clean.
    for bad in ["\\<K", "a\\>", "\\#", "\\&", "\\~", "[\\<]"]:
        assert not safe_pattern(bad), bad
    for good in ["\\.", "\\/", "\\$", "\\-", "[\\-\\]]", "\\\\"]:
        assert safe_pattern(good), good


# -- attacks on the checker --------------------------------------------------------------------

CURRENCY = {
    "type": "object",
    "properties": {"currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    "additionalProperties": False,
}


@needs_native
@pytest.mark.parametrize(
    "body",
    [
        b'{"currency":"EURO","currency":"EUR"}',  # orjson keeps the last: valid, first is not
        b'{"currency":"EUR","currency":"EURO"}',
        b'{"currency":"EUR","currency":1}',
        b'{"\\u0069s_admin":true}',  # an escaped undeclared key
        b'{"currency":"EUR","\\u0069s_admin":true}',
        b'{"currenc\\u0079":"EURO"}',  # an escaped declared key with an invalid value
        b'{"currency":"EU\xff"}',  # invalid UTF-8
        b'{"currency":"\xed\xa0\x80AB"}',  # a UTF-8-encoded surrogate
        b'{"currency":"\\ud800"}',  # a lone surrogate escape
        b'{"currency":"\\udc00AB"}',
        b'{"currency":"\\ud800\\u0041"}',
        b'{"currency":"EUR"} x',  # trailing garbage
        b'{"currency":"EUR"}{"currency":"EUR"}',  # two documents
        b'{"currency":"EUR"}\n{}',
        b'\xef\xbb\xbf{"currency":"EUR"}',  # a UTF-8 BOM
        b'{"currency":"EUR"} // comment',
        b'/* c */ {"currency":"EUR"}',
        b'{"currency":"EUR",}',  # trailing comma
        b"{'currency':'EUR'}",
        b'{currency:"EUR"}',
        b'{"currency":"E\tR"}',  # a raw control character
        b'{"currency":"EUR"',
        b"",
        b"   ",
        b"\n\t ",
        b"\x00",
    ],
)
def test_malformed_or_smuggled_bodies_are_not_proven(body: bytes) -> None:
    c = checker(CURRENCY)
    assert c.check(body) is False
    assert_sound(c, CURRENCY, body)


MANY_KEYS = {  # more than 16 names: the node looks them up in a map; more than 64: no slots
    "type": "object",
    "properties": {f"k{i}": {"type": "integer"} for i in range(70)},
}


@needs_native
@pytest.mark.parametrize(
    ("schema", "body"),
    [
        (CURRENCY, b'{"currency":"EUR","currency":"USD"}'),  # both valid: still not proven
        (CURRENCY, b'{"currency":"EURO","currency":"EUR"}'),  # orjson keeps the valid last one
        (CURRENCY, b'{"currency":"EUR","currenc\\u0079":"EUR"}'),  # the same key, escaped
        ({"type": "object"}, b'{"a":1,"b":2,"a":1}'),  # undeclared names (open object)
        ({"type": "object"}, b'{"a":1,"b":{"c":1,"c":2}}'),  # nested
        ({"type": "array"}, b'[{"a":1},{"b":1,"b":1}]'),  # in an array item
        ({"type": "object"}, b"{" + b",".join(b'"k%d":1' % i for i in range(20)) + b',"k3":1}'),
        (MANY_KEYS, b'{"k1":1,"k2":2,"k1":3}'),
        (MANY_KEYS, b'{"k65":1,"k2":2,"k65":3}'),  # a name beyond the 64 slots
        ({"anyOf": [{"type": "object"}, {"type": "string"}]}, b'{"a":1,"a":2}'),
        (
            {"type": "object", "properties": {"a": {"type": "integer"}}},
            b'{"a":1,"x":1,"a":2}',  # one declared, one undeclared name between
        ),
    ],
)
def test_repeated_keys_are_never_proven(schema: Any, body: bytes) -> None:
    c = checker(schema)
    assert c.check(body) is False
    assert fastcheck.repeats_a_key(body) is True
    assert_sound(c, schema, body)


@needs_native
def test_distinct_keys_that_look_alike_are_proven() -> None:
    names = [f"k{i}" for i in range(20)] + ["k", "ka", "kb", "", "K0", "k0 "]
    body = orjson.dumps({name: 1 for name in names})
    assert checker({"type": "object"}).check(body) is True
    assert checker(MANY_KEYS).check(orjson.dumps({f"k{i}": i for i in range(70)})) is True
    assert fastcheck.repeats_a_key(body) is False
    # A failed anyOf branch leaves nothing behind for its parent's list of names: the first
    # branch lists x and y (undeclared names) before it fails on its required z, and the
    # parent then lists its own x and y.
    schema = {
        "type": "object",
        "additionalProperties": {
            "anyOf": [{"type": "object", "required": ["z"]}, {"type": "object"}, {}]
        },
    }
    assert checker(schema).check(b'{"a":{"x":1,"y":2},"x":"s","y":"t"}') is True
    assert checker(schema).check(b'{"a":{"x":1,"y":2},"x":"s","x":"t"}') is False


_KEY = st.sampled_from(["a", "b", "c", "ab", "\\u0061", "k0", "k1"])


def _objects(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(_KEY, inner).map(lambda p: f'"{p[0]}":{p[1]}')
    return st.one_of(
        st.lists(pair, max_size=12).map(lambda ps: "{" + ",".join(ps) + "}"),
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
    )


# Integers beyond 64 bits: simdjson refuses them, orjson and json take them.
_LEAF_TEXTS = ["1", '"s"', "null", "true", "18446744073709551616", "-9223372036854775809"]
_DOCS = st.recursive(st.sampled_from(_LEAF_TEXTS), _objects, max_leaves=20)


def _repeats(text: str) -> bool:
    found = False

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        found = found or len({k for k, _ in pairs}) != len(pairs)
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return found


@needs_native
@settings(max_examples=300, deadline=None)
@given(_DOCS)
def test_repeated_keys_native_and_fallback_agree(text: str) -> None:
    body = text.encode()
    expected = _repeats(text)
    assert fastcheck.repeats_a_key(body) is expected
    native = fastcheck._REPEATS
    try:
        fastcheck._REPEATS = None  # the standard library's parser
        assert fastcheck.repeats_a_key(body) is expected
    finally:
        fastcheck._REPEATS = native
    if expected:
        assert checker({}).check(body) is False


def test_repeated_keys_fallback_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastcheck, "_REPEATS", None)
    assert fastcheck.repeats_a_key(b'{"a":1,"b":[{"c":1}]}') is False
    assert fastcheck.repeats_a_key(b'{"a":1,"b":[{"c":1,"c":1}]}') is True
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000  # deeper than the standard parser goes
    assert fastcheck.repeats_a_key(deep) is True


@needs_native
def test_repeated_keys_native_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError):
        fastcheck._REPEATS("{}")  # type: ignore[misc,arg-type]
    assert fastcheck.repeats_a_key(b'{"a":1') is True  # not JSON: not proven either way
    # simdjson refuses integers beyond 64 bits, which orjson takes: the standard parser says.
    assert fastcheck.repeats_a_key(b'{"a":18446744073709551616,"b":1}') is False
    assert fastcheck.repeats_a_key(b'{"a":18446744073709551616,"a":1}') is True


def test_a_stale_extension_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An extension built from an older native/fastcheck proves bodies that repeat a key:
    without repeats_a_key it is left alone (an error logged), and the full path decides."""
    import importlib
    import types

    stale = types.ModuleType("bastion_fastcheck")
    stale.Checker = object  # type: ignore[attr-defined]
    monkeypatch.setattr(importlib, "import_module", lambda name: stale)
    with caplog.at_level("ERROR", logger="bastion.openapi.fastcheck"):
        assert fastcheck._load() is None
    assert "older than this Bastion" in caplog.text


@needs_native
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "nan", "inf", "1e400"])
def test_non_finite_numbers_are_not_proven(literal: str) -> None:
    for schema in ({}, {"type": "number"}, {"type": "array"}):
        c = checker(schema)
        for body in (literal.encode(), f"[{literal}]".encode()):
            assert c.check(body) is False
            assert_sound(c, schema, body)


def _nested(levels: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * levels + b"1" + b"]" * levels
    return b'{"a":' * levels + b"1" + b"}" * levels


@needs_native
@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("schema", [{}, True], ids=["empty", "true"])
def test_depth_limit_on_open_schemas(kind: str, schema: Any) -> None:
    c = checker(schema, max_depth=8)
    assert c.check(_nested(8, kind)) is True  # exactly max_depth
    assert c.check(_nested(9, kind)) is False
    assert c.check(_nested(7, kind)) is True
    assert c.check(b"1") is True  # a scalar: depth 0
    mixed = b'{"a":[{"b":[{"c":[[1]]}]}]}'  # 7 levels
    assert checker(schema, max_depth=7).check(mixed) is True
    assert checker(schema, max_depth=6).check(mixed) is False


@needs_native
def test_depth_limit_counts_through_schema_recursion() -> None:
    value = {
        "$defs": {"v": {"type": ["array", "integer"], "items": {"$ref": "#/$defs/v"}}},
        "$ref": "#/$defs/v",
    }
    c = checker(value, max_depth=5)
    assert c.check(_nested(5, "array")) is True
    assert c.check(_nested(6, "array")) is False
    t = checker(TREE, max_depth=3)  # object, children array, object
    assert t.check(b'{"name":"a","children":[{"name":"b"}]}') is True
    assert t.check(b'{"name":"a","children":[{"name":"b","children":[]}]}') is False


@needs_native
@pytest.mark.parametrize("levels", [129, 1000, 100_000])
@pytest.mark.parametrize("kind", ["array", "object"])
def test_very_deep_bodies_do_not_crash(levels: int, kind: str) -> None:
    body = _nested(levels, kind)
    for max_depth in (MAX_DEPTH, 1 << 20):  # the response filter passes 1 << 20
        for schema in ({}, {"anyOf": [{"type": "array"}, {"type": "object"}]}, TREE):
            assert checker(schema, max_depth=max_depth).check(body) is False


@needs_native
def test_integer_type_refuses_fractions_and_imprecise_tokens() -> None:
    c = checker({"type": "integer"})
    assert c.check(b"1") is True
    assert c.check(b"-9223372036854775808") is True
    assert c.check(b"18446744073709551615") is True
    assert c.check(b"1.5") is False
    # jsonschema-rs accepts these as integers; not proven is the allowed strict side.
    for body in (b"1.0", b"1e2", b"100000000000000000000", b"-9223372036854775809"):
        assert full_valid({"type": "integer"}, body)
        assert c.check(body) is False


#: (schema, body, jsonschema-rs's answer, which the checker must give too)
BOUNDS: list[tuple[dict[str, Any], str, bool]] = [
    ({"type": "number", "minimum": 1.5}, "1.5", True),
    ({"type": "number", "minimum": 1.5}, "1.4999999999999998", False),
    ({"type": "number", "minimum": 1.5}, "2", True),
    ({"type": "number", "minimum": 1.5}, "1", False),
    ({"type": "number", "maximum": 1.5}, "1.5", True),
    ({"type": "number", "maximum": 1.5}, "1.5000000000000002", False),
    ({"type": "number", "maximum": 1.5}, "1", True),
    ({"type": "number", "maximum": 1.5}, "2", False),
    ({"type": "number", "exclusiveMinimum": 1.5}, "1.5", False),
    ({"type": "number", "exclusiveMinimum": 1.5}, "1.5000000000000002", True),
    ({"type": "number", "exclusiveMaximum": 1.5}, "1.5", False),
    ({"type": "number", "exclusiveMaximum": 1.5}, "1.4999999999999998", True),
    ({"type": "integer", "minimum": 10}, "10", True),
    ({"type": "integer", "minimum": 10}, "9", False),
    ({"type": "integer", "maximum": 10}, "10", True),
    ({"type": "integer", "maximum": 10}, "11", False),
    ({"type": "integer", "exclusiveMinimum": 10}, "10", False),
    ({"type": "integer", "exclusiveMinimum": 10}, "11", True),
    ({"type": "integer", "exclusiveMaximum": 10}, "10", False),
    ({"type": "integer", "exclusiveMaximum": 10}, "9", True),
    ({"type": "integer", "maximum": 2.5}, "2", True),
    ({"type": "integer", "maximum": 2.5}, "3", False),
    ({"type": "number", "maximum": 10}, "10.0", True),
    ({"type": "number", "maximum": 10}, "10.000000000000002", False),
    ({"type": "number", "exclusiveMaximum": 10}, "9.999999999999998", True),
    ({"type": "number", "exclusiveMaximum": 10}, "10.0", False),
    ({"type": "number", "exclusiveMaximum": 10}, "10", False),
    ({"type": "number", "minimum": 0}, "-0.0", True),
    ({"type": "number", "minimum": 0}, "-5e-324", False),
    ({"type": "number", "exclusiveMinimum": 0}, "-0.0", False),
    ({"type": "number", "exclusiveMinimum": 0}, "5e-324", True),
    ({"type": "integer", "maximum": 9007199254740992}, "9007199254740992", True),
    ({"type": "integer", "maximum": 9007199254740992}, "9007199254740993", False),
    ({"type": "integer", "minimum": 9007199254740993}, "9007199254740992", False),
    ({"type": "integer", "exclusiveMinimum": 9007199254740992}, "9007199254740993", True),
    ({"type": "integer", "minimum": -(2**63)}, "-9223372036854775808", True),
    ({"type": "integer", "maximum": 2**64 - 1}, "18446744073709551615", True),
    ({"type": "integer", "exclusiveMaximum": 2**64 - 1}, "18446744073709551615", False),
    ({"type": "integer", "multipleOf": 3}, "9007199254740993", True),
    ({"type": "integer", "multipleOf": 3}, "9007199254740994", False),
    ({"type": "number", "maximum": 1e20}, "100000000000000000000", True),
    ({"type": "number", "maximum": 1e20}, "100000000000000000001", True),
    ({"type": "number", "exclusiveMaximum": 1e20}, "100000000000000000000", False),
]


@needs_native
@pytest.mark.parametrize(
    ("schema", "text", "expected"), BOUNDS, ids=[f"{json.dumps(s)}:{t}" for s, t, _ in BOUNDS]
)
def test_numbers_at_and_beyond_bounds(schema: dict[str, Any], text: str, expected: bool) -> None:
    body = text.encode()
    assert full_valid(schema, body) is expected, "test data"
    c = checker(schema)
    # Beyond 2**53 an integer and a float are compared exactly or not at all: a valid value
    # may stay unproven there; an invalid one must never be proven.
    integral = text.lstrip("-").isdigit()
    if expected and integral and abs(int(text)) > 2**53 and _float_bound(schema):
        assert assert_sound(c, schema, body) in (True, False)
    else:
        assert c.check(body) is expected
    assert c.check(f"[{text}]".encode()) is False  # the wrong type


def _float_bound(schema: dict[str, Any]) -> bool:
    return any(isinstance(v, float) for v in schema.values())


ASTRAL3 = "\U0001f600\U0001f4a9\U00010348"


@needs_native
@pytest.mark.parametrize(
    "body",
    [json.dumps(ASTRAL3, ensure_ascii=False).encode(), json.dumps(ASTRAL3).encode()],
    ids=["utf8", "escaped-surrogate-pairs"],
)
def test_string_lengths_count_code_points(body: bytes) -> None:
    assert len(orjson.loads(body)) == 3
    for schema, expected in [
        ({"type": "string", "maxLength": 3}, True),
        ({"type": "string", "maxLength": 2}, False),
        ({"type": "string", "minLength": 3}, True),
        ({"type": "string", "minLength": 4}, False),
        ({"type": "string", "not": {"minLength": 3, "pattern": "\U0001f600"}}, False),
        ({"type": "string", "not": {"minLength": 4, "pattern": "\U0001f600"}}, True),
    ]:
        assert full_valid(schema, body) is expected
        assert checker(schema).check(body) is expected, schema
    four = json.dumps(ASTRAL3 + "\U0001f600", ensure_ascii=False).encode()
    assert checker({"type": "string", "maxLength": 3}).check(four) is False


@needs_native
def test_escapes_decode_before_checks() -> None:
    enum = {"enum": ["é", "a/b", 'q"'], "type": "string"}
    c = checker(enum)
    for body in (b'"\\u00e9"', '"é"'.encode(), b'"a\\/b"', b'"q\\""'):
        assert c.check(body) is True, body
    assert c.check(b'"e\\u0301"') is False  # another normal form, another string
    pattern = checker({"type": "string", "pattern": "^[A-Z]{3}$"})
    assert pattern.check(b'"\\u0045UR"') is True
    assert pattern.check(b'"EUR\\n"') is False


# -- differential property tests ---------------------------------------------------------------

HINT = "(?:eyJ)|(?:[0-9]{3}-[0-9]{2}-[0-9]{4})"
KEY_HINT = "(?i:password|ssn)"
GUARD: dict[str, Any] = {
    "$defs": {
        "g": {
            "items": {"$ref": "#/$defs/g"},
            "additionalProperties": {"$ref": "#/$defs/g"},
            "not": {"type": "string", "minLength": 11, "pattern": HINT},
            "propertyNames": {"not": {"pattern": KEY_HINT}},
            "exclusiveMaximum": 10**12,
            "exclusiveMinimum": -(10**12),
        }
    },
    "$ref": "#/$defs/g",
}

#: name → (schema, formats, hand-written valid documents)
PROPERTY_SCHEMAS: dict[str, tuple[Any, bool, list[Any]]] = {
    "payment": (
        {
            "type": "object",
            "properties": {
                "amount": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "note": {"type": ["string", "null"], "maxLength": 20},
                "tags": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1, "maxLength": 8},
                    "maxItems": 3,
                },
            },
            "required": ["amount", "currency"],
            "additionalProperties": False,
        },
        False,
        [
            {"amount": 1, "currency": "EUR"},
            {"amount": 1_000_000, "currency": "USD", "note": None, "tags": []},
            {"amount": 250, "currency": "CHF", "note": "für Miete 😀", "tags": ["rent", "é"]},
        ],
    ),
    "order": (
        {
            "type": "object",
            "properties": {
                "lines": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "sku": {"type": "string", "pattern": "^[a-z0-9-]{2,10}$"},
                            "qty": {"type": "integer", "exclusiveMinimum": 0, "multipleOf": 1},
                            "price": {"type": "number", "minimum": 0, "exclusiveMaximum": 1e6},
                        },
                        "required": ["sku", "qty"],
                        "additionalProperties": False,
                    },
                },
                "status": {"enum": ["new", "paid", None]},
            },
            "required": ["lines"],
            "additionalProperties": False,
        },
        False,
        [
            {"lines": [{"sku": "ab", "qty": 1}]},
            {"lines": [{"sku": "abc-12", "qty": 3, "price": 9.99}], "status": "paid"},
            {"lines": [{"sku": "x1", "qty": 2, "price": 0}, {"sku": "y2", "qty": 5}]},
        ],
    ),
    "nullable anyOf": (
        {
            "anyOf": [
                {"type": "string", "maxLength": 5},
                {"type": "integer", "minimum": 0},
                {"type": "null"},
            ]
        },
        False,
        ["", "abcde", 0, 2**63, None],
    ),
    "allOf": (
        {
            "allOf": [
                {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
                {"type": "object", "properties": {"name": {"type": "string"}}, "maxProperties": 3},
            ]
        },
        False,
        [{"id": 1}, {"id": -4, "name": "x", "extra": [1, {"a": None}]}],
    ),
    "tree": (
        TREE,
        False,
        [{"name": "r"}, {"name": "r", "children": [{"name": "a", "children": [{"name": "b"}]}]}],
    ),
    "bounds": (
        {
            "type": "object",
            "properties": {
                "ratio": {"type": "number", "minimum": -1.5, "exclusiveMaximum": 2.5},
                "count": {"type": "integer", "exclusiveMinimum": -10, "maximum": 10},
                "big": {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1},
            },
            "additionalProperties": False,
        },
        False,
        [{}, {"ratio": -1.5, "count": 10, "big": 2**64 - 1}, {"ratio": 2.4999, "count": -9}],
    ),
    "tuple": (
        {
            "type": "array",
            "prefixItems": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}],
            "items": False,
            "minItems": 2,
        },
        False,
        [["a", 1], ["", -2.5, True]],
    ),
    "const enum": (
        {
            "type": "object",
            "properties": {
                "kind": {"const": "user"},
                "level": {"enum": [1, 2, 3]},
                "active": {"const": True},
            },
            "required": ["kind"],
            "additionalProperties": {"type": ["integer", "boolean"]},
        },
        False,
        [{"kind": "user"}, {"kind": "user", "level": 3, "active": True, "x": 5, "y": False}],
    ),
    "ref siblings": (
        {
            "$defs": {"name": {"type": "string", "minLength": 1}},
            "type": "object",
            "properties": {
                "first": {"$ref": "#/$defs/name", "maxLength": 10},
                "last": {"$ref": "#/$defs/name"},
            },
            "required": ["first"],
        },
        False,
        [{"first": "Ann"}, {"first": "Ann", "last": "Lee", "other": {"deep": [1]}}],
    ),
    "detector guard": (
        GUARD,
        False,
        [{"user": {"name": "ann", "tags": ["a", "b"]}}, ["short", 12, None, {"k": "eyJ"}]],
    ),
    "formats asserted": (
        {
            "type": "object",
            "properties": {
                "email": {"type": "string", "format": "email"},
                "id": {"type": "integer"},
                "names": {"type": "array", "items": {"type": "string"}},
            },
        },
        True,
        [{"id": 1}, {"id": 2, "names": ["a", "b"]}],
    ),
}

_CACHE: dict[str, tuple[FastChecker, Any]] = {}


def _compiled(name: str) -> tuple[FastChecker, Any]:
    if name not in _CACHE:
        schema, formats, _ = PROPERTY_SCHEMAS[name]
        validator = jsonschema_rs.validator_for(schema, validate_formats=formats)
        _CACHE[name] = (checker(schema, formats=formats), validator)
    return _CACHE[name]


def _names(schema: Any) -> set[str]:
    found: set[str] = set()
    stack = [schema]
    while stack:
        s = stack.pop()
        if isinstance(s, dict):
            if isinstance(s.get("properties"), dict):
                found.update(s["properties"])
            if isinstance(s.get("required"), list):
                found.update(s["required"])
            stack.extend(s.values())
        elif isinstance(s, list):
            stack.extend(s)
    return found


INTERESTING = [
    "",
    "EUR",
    "usd",
    "EURO",
    "ab",
    "abc-12",
    "new",
    "paid",
    "user",
    "Ann",
    "été",
    "😀😀😀",
    "a\u2028b",
    "a\rb",
    "tab\tx",
    "eyJhbGciOiJIUzI1NiJ9",
    "id 123-45-6789",
    "PassWord",
    "ann@example.com",
    "x" * 25,
]
#: Characters regex dialects and JSON escapes read differently most often.
ODD = '\r\n\u2028\u2029\u0085\u00a0\ufeff\t"\\/:[]éſ\u212a😀'
TEXT = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(ODD), max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, -1, 3, 10, -10, 2**53 + 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1.0, 2.5, -1.5, 2.4999999999999996, 1e20, 1e-300])
    | TEXT
    | st.sampled_from(INTERESTING)
)


_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {}


def _values(name: str) -> st.SearchStrategy[Any]:
    """JSON values whose keys are often the schema's own property names."""
    if name not in _STRATEGIES:
        keys = sorted(_names(PROPERTY_SCHEMAS[name][0]))
        key = st.sampled_from(keys) | st.text(max_size=6) if keys else st.text(max_size=6)
        _STRATEGIES[name] = st.recursive(
            SCALARS,
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=5),
            max_leaves=8,
        )
    return _STRATEGIES[name]


_AIMED: dict[str, st.SearchStrategy[Any]] = {}


def _aimed(name: str) -> st.SearchStrategy[Any]:
    if name not in _AIMED:
        schema = PROPERTY_SCHEMAS[name][0]
        _AIMED[name] = _from_schema(schema, schema, _values(name))
    return _AIMED[name]


def _from_schema(schema: Any, root: Any, fresh: st.SearchStrategy[Any], budget: int = 4) -> Any:
    """Values aimed at ``schema`` (the supported keywords only): mostly valid, often just at
    a bound, so that documents the checker proves are reached often."""
    if not isinstance(schema, dict) or budget <= 0:
        return fresh
    if "$ref" in schema:
        target = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return _from_schema({**target, **rest}, root, fresh, budget - 1)
    if "enum" in schema or "const" in schema:
        return st.sampled_from(schema.get("enum", [schema.get("const")]))
    if "anyOf" in schema:
        return st.one_of([_from_schema(s, root, fresh, budget) for s in schema["anyOf"]])
    if "allOf" in schema:
        parts = [_from_schema(s, root, fresh, budget) for s in schema["allOf"]]
        return st.tuples(*parts).map(
            lambda xs: (
                {k: v for x in xs for k, v in x.items()}
                if all(isinstance(x, dict) for x in xs)
                else xs[0]
            )
        )
    types = schema.get(
        "type", ["null", "boolean", "integer", "number", "string", "array", "object"]
    )
    types = [types] if isinstance(types, str) else types
    return st.one_of([_typed(t, schema, root, fresh, budget) for t in types])


def _typed(kind: str, schema: dict[str, Any], root: Any, fresh: Any, budget: int) -> Any:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if kind == "integer":
        bounds = [b for b in (low, high) if b is not None]
        edges = st.sampled_from([int(b) + d for b in bounds for d in (-1, 0, 1)] or [0])
        step = schema.get("multipleOf", 1)
        lo = None if low is None else -(-int(low) // step)
        hi = None if high is None else int(high) // step
        return edges | st.integers(min_value=lo, max_value=hi).map(lambda i: i * step)
    if kind == "number":
        edges = [float(b) for b in (low, high) if b is not None]
        near = st.sampled_from(edges or [0.0]).flatmap(
            lambda b: st.sampled_from(
                [math.nextafter(b, -math.inf), b, math.nextafter(b, math.inf)]
            )
        )
        inside = st.floats(
            min_value=None if low is None else float(low),
            max_value=None if high is None else float(high),
            allow_nan=False,
            allow_infinity=False,
        )
        return inside | near
    if kind == "string":
        if "pattern" in schema:
            text = st.from_regex(schema["pattern"])
        else:
            text = TEXT | st.sampled_from(INTERESTING)
        lo_len, hi_len = schema.get("minLength", 0), schema.get("maxLength", 1 << 30)
        exact = text.filter(lambda s: lo_len <= len(s) <= hi_len)
        # One character swapped for one the dialects (or the escapes) read differently.
        odd = st.tuples(exact, st.integers(min_value=0, max_value=8), st.sampled_from(ODD)).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
        )
        return exact | odd | text
    if kind == "array":
        prefix = [_from_schema(s, root, fresh, budget - 1) for s in schema.get("prefixItems", [])]
        item = schema.get("items", True)
        rest = fresh if item is True else _from_schema(item, root, fresh, budget - 1)
        size = st.integers(min_value=0, max_value=min(schema.get("maxItems", 3), 3))
        head = st.tuples(*prefix).flatmap(
            lambda p: st.integers(min_value=0, max_value=len(p)).map(lambda n: list(p[:n]))
        )
        tail = st.lists(rest, max_size=2) if item is not False else st.just([])
        return st.tuples(head, tail, size).map(lambda t: [*t[0], *t[1]][: max(t[2], 1)])
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    fields = {k: _from_schema(v, root, fresh, budget - 1) for k, v in props.items()}
    extra_schema = schema.get("additionalProperties", True)
    extra = (
        st.just({})
        if extra_schema is False
        else st.dictionaries(
            TEXT,
            fresh if extra_schema is True else _from_schema(extra_schema, root, fresh, 1),
            max_size=2,
        )
    )
    return st.tuples(
        st.fixed_dictionaries(
            {k: v for k, v in fields.items() if k in required},
            optional={k: v for k, v in fields.items() if k not in required},
        ),
        extra,
    ).map(lambda t: {**t[1], **t[0]})


def _mutate(draw: Callable[[st.SearchStrategy[Any]], Any], doc: Any, fresh: Any) -> Any:
    """``doc`` with one place changed: a value replaced, a key added or dropped."""
    action = draw(st.sampled_from(["descend", "descend", "replace", "add", "drop"]))
    if isinstance(doc, dict) and doc:
        key = draw(st.sampled_from(sorted(doc)))
        if action == "descend":
            return {**doc, key: _mutate(draw, doc[key], fresh)}
        if action == "drop":
            return {k: v for k, v in doc.items() if k != key}
        if action == "add":
            return {**doc, draw(st.text(max_size=6)): draw(fresh)}
    if isinstance(doc, list) and doc:
        i = draw(st.integers(min_value=0, max_value=len(doc) - 1))
        if action == "descend":
            return [*doc[:i], _mutate(draw, doc[i], fresh), *doc[i + 1 :]]
        if action == "drop":
            return doc[:i] + doc[i + 1 :]
        if action == "add":
            return [*doc, draw(fresh)]
    return draw(fresh)


def _bodies(doc: Any, draw: Callable[[st.SearchStrategy[Any]], Any]) -> list[bytes]:
    """``doc`` as orjson writes it, with every non-ASCII character escaped, and (an object)
    with a duplicate of one key in front."""
    bodies = [json.dumps(doc, ensure_ascii=True).encode()]  # every non-ASCII char escaped
    try:
        bodies.append(orjson.dumps(doc))
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        bodies.append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())
    if isinstance(doc, dict) and doc:
        # A duplicate key in front: orjson keeps the last occurrence (the generated one).
        key = draw(st.sampled_from(sorted(doc)))
        first = json.dumps({key: draw(SCALARS)})[1:-1].encode()
        bodies.append(b"{" + first + b"," + bodies[0][1:])
    return bodies


PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@needs_native
@pytest.mark.parametrize("name", list(PROPERTY_SCHEMAS))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_check_true_implies_full_path_valid(name: str, data: st.DataObject) -> None:
    _, formats, examples = PROPERTY_SCHEMAS[name]
    c, validator = _compiled(name)
    fresh = _values(name)
    mode = data.draw(st.sampled_from(["aimed", "aimed", "mutated", "example", "random"]))
    if mode == "random":
        doc = data.draw(fresh)
    else:
        base = _aimed(name) if mode != "example" else st.sampled_from(examples)
        doc = data.draw(base)
        if mode != "aimed":
            doc = _mutate(data.draw, doc, fresh)
    for body in _bodies(doc, data.draw):
        if c.check(body):
            parsed = orjson.loads(body)  # must not raise
            assert validator.is_valid(parsed), (
                f"UNSOUND: schema {name!r} formats={formats} body {body!r}"
            )
            assert depth(parsed) <= MAX_DEPTH


@needs_native
@pytest.mark.parametrize("name", list(PROPERTY_SCHEMAS))
def test_valid_documents_of_supported_schemas_are_proven(name: str) -> None:
    examples = PROPERTY_SCHEMAS[name][2]
    c, validator = _compiled(name)
    assert examples
    for doc in examples:
        assert validator.is_valid(doc), f"test data: {doc!r}"
        for body in (
            orjson.dumps(doc),
            json.dumps(doc).encode(),
            json.dumps(doc, indent=2).encode(),
        ):
            assert c.check(body) is True, f"{name}: valid but not proven: {body!r}"


# -- the response filter's detector hints ------------------------------------------------------

VALUE_HINT = {"type": "string", "not": {"minLength": 11, "pattern": HINT}}
KEY_GUARD = {"propertyNames": {"not": {"pattern": KEY_HINT}}}


@needs_native
@pytest.mark.parametrize(
    ("text", "proven"),
    [
        ('"hello"', True),
        ('"eyJ"', True),  # contains a hint but shorter than any detector's match
        ('"ab-123-45"', True),
        ('"a long and harmless sentence"', True),
        ('"token eyJhbGciOiJIUzI1NiJ9"', False),
        ('"eyJhbGciOiJ"', False),  # exactly minLength
        ('"xeyJhbGciO"', True),  # one short of minLength
        ('"ssn: 123-45-6789"', False),
        ('"123-45-6789"', False),
        ('"\\u0065yJhbGciOiJIUzI1NiJ9"', False),  # the hint behind an escape
        ("1", False),  # not a string: the inner schema holds, `not` fails
        ("null", False),
    ],
)
def test_value_hint(text: str, proven: bool) -> None:
    assert_both_say(VALUE_HINT, text.encode(), proven)


@needs_native
@pytest.mark.parametrize(
    ("text", "proven"),
    [
        ('{"name":"x","email":"y"}', True),
        ('{"pass":1,"word":2}', True),
        ("{}", True),
        ('"password"', True),  # propertyNames constrains objects only
        ('[{"password":1}]', True),  # and only at its own level
        ('{"password":"x"}', False),
        ('{"PassWord":"x"}', False),
        ('{"PASSWORD":1}', False),
        ('{"user_SSN":1}', False),
        ('{"name":"x","Ssn":1}', False),
        ('{"pass\\u0057ord":1}', False),  # an escaped key
        ('{"name":1,"name":2,"password":3}', False),
    ],
)
def test_key_hint_is_case_insensitive(text: str, proven: bool) -> None:
    assert_both_say(KEY_GUARD, text.encode(), proven)


@needs_native
@pytest.mark.parametrize(
    ("doc", "proven"),
    [
        ({"user": {"name": "ann", "tags": ["a"]}}, True),
        ([{"a": [{"b": "short"}]}], True),
        ({"a": [{"b": "eyJhbGciOiJIUzI1NiJ9"}]}, False),
        ({"a": {"Password": 1}}, False),
        ({"a": [[["id 123-45-6789"]]]}, False),
        ({"n": 10**12}, False),
        ({"n": 10**12 - 1}, True),
        ({"n": -(10**12)}, False),
    ],
)
def test_recursive_guard(doc: Any, proven: bool) -> None:
    assert_both_say(GUARD, orjson.dumps(doc), proven)


# -- bugs found in the first version (Rust: serde_json + regex), fixed: each stays pinned ---------

#: SOUNDNESS: cases where the first version's check() was True but jsonschema-rs refuses.
UNSOUND: list[tuple[str, Any, bytes]] = [
    # jsonschema-rs gives `.` its ECMA-262 meaning (no \n, \r, \u2028, \u2029; `(?s)` does not
    # change that); the regex crates only exclude \n. safe_pattern() now refuses `.`.
    ("dot-cr", {"type": "string", "pattern": "^.{1,64}$"}, b'"a\\rb"'),
    ("dot-u2028", {"type": "string", "pattern": "^.*$"}, b'"a\\u2028b"'),
    ("dot-u2029", {"type": "string", "pattern": "^a.b$"}, '"a\u2029b"'.encode()),
    ("dot-dotall", {"type": "string", "pattern": "(?s)^a.b$"}, b'"a\\nb"'),
    # POSIX classes: a class in the regex crate and RE2, literal characters to jsonschema-rs.
    ("posix-class", {"type": "string", "pattern": "^[[:alpha:]]+$"}, b'"abc"'),
    ("posix-key-not", {"propertyNames": {"not": {"pattern": "[[:digit:]]"}}}, b'{":]":1}'),
    # Possessive quantifiers in jsonschema-rs, nested repetition in the regex crate.
    ("possessive", {"type": "string", "pattern": "^a?+a$"}, b'"a"'),
    ("possessive-plus", {"type": "string", "pattern": "^a++a$"}, b'"aa"'),
    # Class set operations (&&, --, ~~): the regex crate only; literal to jsonschema-rs.
    ("set-op-not", {"type": "string", "not": {"pattern": "[a-c&&b]"}}, b'"a"'),
    # $ref: JSON-pointer escapes (~0, ~1, %xx) are not decoded before the $defs lookup.
    (
        "ref-tilde1",
        {"$defs": {"a~1b": {"type": "string"}, "a/b": {"type": "integer"}}, "$ref": "#/$defs/a~1b"},
        b'"x"',
    ),
    (
        "ref-tilde0",
        {"$defs": {"a~0b": {"type": "string"}, "a~b": {"type": "integer"}}, "$ref": "#/$defs/a~0b"},
        b'"x"',
    ),
    (
        "ref-percent",
        {"$defs": {"a%25": {"type": "string"}, "a%": {"type": "integer"}}, "$ref": "#/$defs/a%25"},
        b'"x"',
    ),
]


@pytest.mark.parametrize(("schema", "body"), [u[1:] for u in UNSOUND], ids=[u[0] for u in UNSOUND])
def test_unsound_cases_are_refused_by_the_full_path(schema: Any, body: bytes) -> None:
    """Ground truth for the test below: the full path refuses every one of these."""
    jsonschema_rs.validator_for(schema)  # the schema itself is accepted
    assert full_valid(schema, body) is False


@needs_native
@pytest.mark.parametrize(("schema", "body"), [u[1:] for u in UNSOUND], ids=[u[0] for u in UNSOUND])
def test_cases_once_unsound_are_not_proven(schema: Any, body: bytes) -> None:
    with warnings.catch_warnings():
        # As in production (warnings are not errors there): safe_pattern()'s re.compile()
        # warns about class set syntax, and the pattern is then kept.
        warnings.simplefilter("ignore", FutureWarning)
        c = fast_checker(schema, formats=False, max_depth=MAX_DEPTH)
    assert c is None or c.check(body) is False, "UNSOUND: proven, but jsonschema-rs refuses"


_CRASH = """
import orjson, sys
from bastion.openapi.fastcheck import fast_checker
schema = orjson.loads(sys.argv[1])
c = fast_checker(schema, formats=False, max_depth=32)
print("none" if c is None else c.check(b'"x"'))
"""

#: Cycles of $ref that never consume input: jsonschema-rs accepts them ('"x"' is valid);
#: the extension recursed without end (all_of → all_of …) and the process died (SIGSEGV).
CYCLES: list[Any] = [
    {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
    {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "string"}]}}, "$ref": "#/$defs/a"},
]


@needs_native
def test_ref_cycles_do_not_crash_the_process() -> None:
    for schema in CYCLES:
        assert full_valid(schema, b'"x"')
    # One process per schema (a crash ends it), run side by side.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CRASH, json.dumps(schema)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for schema in CYCLES
    ]
    died = []
    for schema, proc in zip(CYCLES, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        if proc.returncode != 0 or out.strip() not in ("none", "True", "False"):
            died.append(f"{json.dumps(schema)}: exit {proc.returncode} {err[-200:]}")
    assert not died, "the process died:\n" + "\n".join(died)


_ALIASES = """
import sys, orjson
from bastion.openapi.fastcheck import fast_checker
K, D = 250, 128
defs = {f"A{i}": {"$ref": f"#/$defs/A{i + 1}"} for i in range(K)}
defs[f"A{K}"] = {"type": "array", "items": {"$ref": "#/$defs/A0"}}
c = fast_checker({"$ref": "#/$defs/A0", "$defs": defs}, formats=False, max_depth=D)
print(c.check(b"[" * D + b"]" * D + b" " * 8000))
"""


@needs_native
def test_long_alias_chains_do_not_overflow_the_stack() -> None:
    """128 nested arrays, each through a chain of 250 $ref aliases: 32,000 nested frames
    without a frame limit (a segfault at -O3); with it, the body is merely not proven."""
    proc = subprocess.run(
        [sys.executable, "-c", _ALIASES], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-300:]
    assert proc.stdout.strip() == "False"


@needs_native
def test_programs_are_checked_when_built() -> None:
    """The extension does not trust the compiler: a same-value cycle or a combination with
    other keywords beside it (which it would ignore) is refused when the program is built."""
    import bastion_fastcheck

    for program in (
        {"root": 0, "nodes": [{"all_of": [0]}]},
        {"root": 0, "nodes": [{"any_of": [1]}, {"all_of": [0]}]},
        {"root": 0, "nodes": [{"types": 16, "all_of": [1]}, {}]},
        {"root": 0, "nodes": [{"enum": [1], "any_of": [1]}, {}]},
    ):
        with pytest.raises(ValueError, match="all_of/any_of"):
            bastion_fastcheck.Checker(json.dumps(program), 8)


def _variants(*kinds: str) -> dict[str, Any]:
    def shape(kind: str) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "args": {"type": "array", "items": {"$ref": "#/$defs/expr"}},
                "op": {"const": kind},
            },
            "required": ["op"],
            "additionalProperties": False,
        }

    return {"$defs": {"expr": {"anyOf": [shape(k) for k in kinds]}}, "$ref": "#/$defs/expr"}


def _expr(levels: int) -> bytes:
    doc: dict[str, Any] = {"args": [], "op": "not"}
    for _ in range(levels):
        doc = {"args": [doc], "op": "not"}  # the deciding key after the recursive one
    return orjson.dumps(doc)


def _best_time(c: FastChecker, body: bytes, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        c.check(body)  # proven or not: the budget may run out first (then the full path runs)
        best = min(best, time.perf_counter() - start)
    return best


@needs_native
def test_any_of_recursion_is_not_exponential() -> None:
    """anyOf parses the subtree again per branch; a budget of bytes parsed again (8 times the
    body + 4 KiB) bounds the work, after which the body is not proven (the full path decides)."""
    schema = _variants("and", "or", "not")
    c = checker(schema, max_depth=32)
    small, big = _expr(2), _expr(30)
    assert full_valid(schema, big)
    assert c.check(small) is True  # within the budget: proven
    t_small = _best_time(c, small, 3)
    t_big = _best_time(c, big, 1)
    # Exponential work would take minutes at 30 levels; the budget keeps it to milliseconds.
    assert t_big < 50 * t_small + 0.05, f"{t_small:.5f}s → {t_big:.3f}s"


#: Schemas whose subschemas include `true` / `{}` / annotations only: compile_program emits
#: the child index -2 (ANY). The first extension refused it (no fast path for
#: `additionalProperties: true`, free-form properties, `items: {}` …) and read a declared
#: property's -2 as "use additional".
OPEN_CHILDREN: list[tuple[str, Any, bytes]] = [
    ("items {}", {"type": "array", "items": {}}, b"[[[[1]]]]"),
    ("additionalProperties true", {"type": "object", "additionalProperties": True}, b'{"a":{}}'),
    (
        "declared free-form property",
        {"type": "object", "properties": {"meta": {}}, "additionalProperties": False},
        b'{"meta":{"x":[1]}}',
    ),
    (
        "annotation-only property",
        {"properties": {"m": {"description": "free"}}, "additionalProperties": False},
        b'{"m":1}',
    ),
    ("prefixItems true", {"prefixItems": [True, {"type": "string"}]}, b'[1,"a"]'),
    ("anyOf true", {"anyOf": [True, {"type": "string"}]}, b"1"),
]


@needs_native
@pytest.mark.parametrize(
    ("schema", "body"), [o[1:] for o in OPEN_CHILDREN], ids=[o[0] for o in OPEN_CHILDREN]
)
def test_open_subschemas_get_a_fast_path(schema: Any, body: bytes) -> None:
    assert compile_program(schema, formats=False) is not None
    assert full_valid(schema, body)
    c = fast_checker(schema, formats=False, max_depth=4)
    assert c is not None, "no fast path"
    assert c.check(body) is True
    assert c.check(_nested(5, "array")) is False


@needs_native
def test_declared_names_match_only_themselves_at_every_length() -> None:
    """Names are compared a word at a time (the first and last word overlap): a name that
    differs from a declared one in any single byte is undeclared, whatever its length."""
    names = ["", *("abcdefghijklmnopqrstuvwxyz"[:n] for n in range(1, 21))]
    for name in names:
        # A few names per node: up to 16 are compared one by one (more go to a hash map).
        declared = [name, name + "_", "x"]
        schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": {n: {"type": "integer"} for n in declared},
        }
        c = checker(schema)
        assert c.check(orjson.dumps(dict.fromkeys(declared, 1))) is True
        assert c.check(orjson.dumps({name: 1})) is True
        for i in range(len(name)):
            near = name[:i] + "#" + name[i + 1 :]
            assert c.check(orjson.dumps({near: 1})) is False, near
        assert c.check(orjson.dumps({name + "z": 1})) is False


@needs_native
def test_required_names_beyond_the_first_64_are_still_required() -> None:
    schema = {**MANY_KEYS, "required": ["k69", "k0"]}
    c = checker(schema)
    full = {f"k{i}": i for i in range(70)}
    assert c.check(orjson.dumps(full)) is True
    for missing in ("k69", "k0"):
        body = {k: v for k, v in full.items() if k != missing}
        assert c.check(orjson.dumps(body)) is False
        assert_sound(c, schema, orjson.dumps(body))
    assert c.check(b'{"k69":1,"k0":2,"k69":3}') is False
    assert c.check(b'{"k69":1,"k0":2}') is True
