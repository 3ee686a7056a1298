"""The response_filter layer on plain values: allow-list, masking, blocking, shadow mode, sizes.

Operations are built by hand (the ``bastion.openapi.model`` contract) or compiled from a small
document with the real compiler; the layer's hooks are called as the front end calls them.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jsonschema_rs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config import parse_config
from bastion.core.exchange import Exchange, Headers, Principal, Reply, RequestView
from bastion.errors import ConfigError
from bastion.gateway.layers.response_filter.config import ResponseFilterConfig
from bastion.gateway.layers.response_filter.layer import ANNOTATION, ResponseFilterLayer
from bastion.gateway.layers.response_filter.plan import build_plan, fast_schema
from bastion.gateway.layers.response_filter.walk import MAX_PATHS, BodyFilter
from bastion.gateway.runtime import build_chain
from bastion.gateway.services import GatewayServices
from bastion.openapi.model import OPERATION_ANNOTATION, MediaSchema, Operation
from bastion.openapi.spec import compile_document
from bastion.store.memory import MemoryStore

CARD = "4111111111111111"
SSN = "123-45-6789"
BCRYPT = "$2b$12$" + "a" * 53

ITEM = {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}
ORDER = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "readOnly": True},
        "note": {"type": "string"},
        "total": {"type": "integer"},
        "items": {"type": "array", "items": ITEM},
    },
}


def operation(
    schema: Any,
    status: str = "200",
    media: str = "application/json",
    *,
    responses: dict[str, tuple[MediaSchema, ...]] | None = None,
) -> Operation:
    return Operation(
        method="GET",
        path_template="/orders/{id}",
        operation_id="getOrder",
        parameters=(),
        request_body=(),
        request_body_required=False,
        security=None,
        roles=None,
        owner_rule=None,
        responses=responses if responses is not None else {status: (MediaSchema(media, schema),)},
    )


def layer(**cfg: Any) -> ResponseFilterLayer:
    return ResponseFilterLayer(ResponseFilterConfig(**cfg))


def exchange(op: Operation | None = None, roles: tuple[str, ...] = ()) -> Exchange:
    view = RequestView("GET", "/orders/1", "", Headers([("accept-encoding", "gzip")]), "10.0.0.1")
    ex = Exchange(view, "rid", 0.0, 0.0)
    if op is not None:
        ex.annotations[OPERATION_ANNOTATION] = op
    ex.principal = Principal("jwt", "alice", roles=frozenset(roles))
    return ex


def respond(
    lay: ResponseFilterLayer,
    body: Any,
    *,
    op: Operation | None = None,
    status: int = 200,
    content_type: str = "application/json",
    roles: tuple[str, ...] = (),
    headers: list[tuple[str, str]] | None = None,
) -> tuple[bytes | Reply | None, Exchange]:
    """Run the response hooks as the front end does; None: streamed untouched."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    ex = exchange(op, roles)
    h = Headers([("content-type", content_type), *(headers or [])])
    limit = lay.wants_response_body(ex, status, h)
    if limit == 0:
        return None, ex
    if len(raw) > limit:
        return lay.on_response_body_too_large(ex, status, h), ex
    return lay.on_response_body(ex, status, h, raw), ex


def doc(result: bytes | Reply | None) -> Any:
    assert isinstance(result, bytes), result
    return orjson.loads(result)


def problem(result: bytes | Reply | None) -> str:
    assert isinstance(result, Reply), result
    assert result.status == 502
    return str(orjson.loads(result.body)["code"])


ORDER_BODY = {
    "id": "o1",
    "note": "thanks",
    "total": 1299,
    "internal_margin": 0.31,
    "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2, "cost_cents": 150}],
}


def test_undeclared_properties_are_removed_recursively_through_arrays() -> None:
    out, ex = respond(layer(), ORDER_BODY, op=operation(ORDER))
    assert doc(out) == {
        "id": "o1",
        "note": "thanks",
        "total": 1299,
        "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}],
    }
    note = ex.annotations[ANNOTATION]
    assert note["undeclared"] == ["/internal_margin", "/items/1/cost_cents"]
    assert note["undeclared_count"] == 2
    assert "0.31" not in repr(note)
    assert "150" not in repr(note)


def test_report_keeps_the_body_byte_for_byte_and_block_refuses_it() -> None:
    raw = orjson.dumps(ORDER_BODY)
    out, ex = respond(layer(undeclared="report"), raw, op=operation(ORDER))
    assert out == raw
    assert ex.annotations[ANNOTATION]["undeclared_count"] == 2
    out, ex = respond(layer(undeclared="block"), raw, op=operation(ORDER))
    assert problem(out) == "response.blocked"
    assert isinstance(out, Reply)
    assert b"thanks" not in out.body
    assert ex.reason == "response.blocked"
    assert "/internal_margin" in ex.diagnosis


def test_a_clean_body_is_sent_as_the_upstream_wrote_it() -> None:
    raw = b'{"id": "o1",  "note": "ok", "items": []}'  # odd spacing survives
    lay = layer()
    out, ex = respond(lay, raw, op=operation(ORDER))
    assert out is raw
    assert ANNOTATION not in ex.annotations
    assert lay._prepare(operation(ORDER).responses["200"][0])[0].fast is not None


@pytest.mark.parametrize(
    ("additional", "expected"),
    [
        (True, {"meta": {"x": {"a": 1, "b": 2}}}),
        (False, {"meta": {}}),
        ({"type": "object", "properties": {"a": {"type": "integer"}}}, {"meta": {"x": {"a": 1}}}),
    ],
)
def test_additional_properties_are_honoured(additional: Any, expected: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"meta": {"type": "object", "additionalProperties": additional}},
    }
    out, _ = respond(layer(), {"meta": {"x": {"a": 1, "b": 2}}}, op=operation(schema))
    assert doc(out) == expected


def test_compositions_keep_a_property_declared_in_any_branch() -> None:
    schema = {
        "allOf": [
            {"type": "object", "properties": {"id": {"type": "string"}}},
            {
                "oneOf": [
                    {"properties": {"card_last4": {"type": "string"}}},
                    {"properties": {"iban_country": {"type": "string"}}},
                ]
            },
        ],
        "anyOf": [{"properties": {"kind": {"type": "string"}}}],
    }
    body = {"id": "1", "card_last4": "1111", "iban_country": "DE", "kind": "x", "secret_x": 1}
    out, ex = respond(layer(), body, op=operation(schema))
    assert doc(out) == {"id": "1", "card_last4": "1111", "iban_country": "DE", "kind": "x"}
    assert ex.annotations[ANNOTATION]["undeclared"] == ["/secret_x"]
    # An alternative that accepts anything makes the object open: nothing is removed.
    open_schema = {"anyOf": [{"type": "object", "properties": {"id": {}}}, {}]}
    out, _ = respond(layer(), {"id": 1, "extra": 2}, op=operation(open_schema))
    assert doc(out) == {"id": 1, "extra": 2}


def test_write_only_properties_never_leave() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "invite_code": {"type": "string", "writeOnly": True},
        },
    }
    out, ex = respond(layer(), {"name": "a", "invite_code": "x"}, op=operation(schema))
    assert doc(out) == {"name": "a"}
    assert ex.annotations[ANNOTATION]["undeclared"] == ["/invite_code"]


USER = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "phone": {
            "type": "string",
            "x-bastion-sensitive": True,
            "x-bastion-sensitive-roles": ["support"],
        },
        "dob": {"type": "string", "x-bastion-sensitive": True},
        "access_token": {"type": "string", "x-bastion-sensitive": False},
    },
}
USER_BODY = {
    "name": "Bob",
    "phone": "+1 555 0100",
    "dob": "1990-01-01",
    "access_token": "opaque-123",
}


@pytest.mark.parametrize(
    ("roles", "cfg", "phone", "dob"),
    [
        ((), {}, "[REDACTED]", "[REDACTED]"),
        (("support",), {}, "+1 555 0100", "[REDACTED]"),
        (("admin",), {"sensitive_roles": ["admin"]}, "[REDACTED]", "1990-01-01"),
        (("support", "admin"), {"sensitive_roles": ["admin"]}, "+1 555 0100", "1990-01-01"),
    ],
)
def test_x_bastion_sensitive_is_masked_unless_the_role_may_see_it(
    roles: tuple[str, ...], cfg: dict[str, Any], phone: str, dob: str
) -> None:
    out, ex = respond(layer(**cfg), USER_BODY, op=operation(USER), roles=roles)
    body = doc(out)
    assert (body["phone"], body["dob"]) == (phone, dob)
    assert body["access_token"] == "opaque-123"  # x-bastion-sensitive: false exempts a field
    if phone.startswith("["):
        assert {"path": "/phone", "by": "x-bastion-sensitive"} in ex.annotations[ANNOTATION][
            "sensitive"
        ]


@pytest.mark.parametrize(
    ("note", "masked"),
    [
        (f"card {CARD}", "****1111"),
        ("4111 1111 1111 1111", "****1111"),
        ("4111111111111112", None),  # Luhn fails: left alone
        ("order 1234567812345670", None),  # Luhn-valid order number: no card network
        (f"ssn {SSN}", "[REDACTED]"),
        ("000-12-3456", None),
        (BCRYPT, "[REDACTED]"),
        ("GB82 WEST 1234 5698 7654 32", "[REDACTED]"),
    ],
)
def test_detectors_mask_values_in_declared_fields(note: str, masked: str | None) -> None:
    out, ex = respond(layer(), {"id": "o1", "note": note}, op=operation(ORDER))
    assert doc(out)["note"] == (masked or note)
    assert (ANNOTATION in ex.annotations) is (masked is not None)


def test_numbers_are_nulled_and_shapes_kept() -> None:
    schema = {
        "type": "object",
        "properties": {
            "total": {"type": "integer"},
            "secret": {"type": "object"},
            "pins": {"type": "array", "items": {"type": "integer"}},
        },
    }
    body = {"total": 4111111111111111, "secret": {"a": "x", "b": 5, "c": True, "d": [1, "y"]}}
    out, ex = respond(layer(), {**body, "pins": [1, 5555555555554444]}, op=operation(schema))
    assert doc(out) == {
        "total": None,
        "secret": {"a": "[REDACTED]", "b": None, "c": True, "d": [None, "[REDACTED]"]},
        "pins": [1, None],
    }
    by = {m["path"]: m["by"] for m in ex.annotations[ANNOTATION]["sensitive"]}
    assert by == {"/total": "card_number", "/secret": "field_name", "/pins/1": "card_number"}


def test_a_declared_field_named_like_a_secret_is_still_masked() -> None:
    schema = {"type": "object", "properties": {"name": {}, "password": {"type": "string"}}}
    out, ex = respond(layer(), {"name": "a", "password": "hunter2"}, op=operation(schema))
    assert doc(out) == {"name": "a", "password": "[REDACTED]"}
    assert ex.annotations[ANNOTATION]["sensitive"] == [{"path": "/password", "by": "field_name"}]


def test_sensitive_remove_and_block() -> None:
    body = {"id": "o1", "note": SSN, "password": "hunter2"}
    out, _ = respond(
        layer(sensitive="remove"),
        body,
        op=operation({**ORDER, "properties": {**ORDER["properties"], "password": {}}}),
    )
    assert doc(out) == {"id": "o1"}
    out, ex = respond(layer(sensitive="block"), body, op=operation(ORDER))
    assert problem(out) == "response.blocked"
    assert isinstance(out, Reply)
    assert b"6789" not in out.body
    assert b"hunter2" not in out.body
    assert "us_ssn" in ex.diagnosis
    assert SSN not in ex.diagnosis


def test_undeclared_status_is_blocked_or_reported() -> None:
    body = {"error": "gone", "ssn": SSN}
    out, ex = respond(layer(), body, op=operation(ORDER), status=410)
    assert problem(out) == "response.blocked"
    assert ex.annotations[ANNOTATION]["undeclared_response"] == "status 410 is not declared"
    out, ex = respond(layer(undeclared_status="report"), body, op=operation(ORDER), status=410)
    assert doc(out) == {"error": "gone", "ssn": "[REDACTED]"}  # detectors still run
    # NXX and default keys declare statuses too.
    assert doc(respond(layer(), {"id": "x"}, op=operation(ORDER, status="2XX"), status=201)[0]) == {
        "id": "x"
    }


def test_undeclared_content_type_is_an_undeclared_response() -> None:
    out, _ = respond(layer(), b"<html>debug</html>", op=operation(ORDER), content_type="text/html")
    assert problem(out) == "response.blocked"
    out, _ = respond(
        layer(undeclared_status="report"), b"<html/>", op=operation(ORDER), content_type="text/html"
    )
    assert out is None  # reported, and not JSON: streamed
    csv = operation({"type": "string"}, media="text/csv")
    assert respond(layer(), b"a,b\n", op=csv, content_type="text/csv")[0] is None
    problem_json = respond(
        layer(), {"id": "x"}, op=operation(ORDER), content_type="application/problem+json"
    )
    assert doc(problem_json[0]) == {"id": "x"}  # a +json type matches an application/json schema


@pytest.mark.parametrize("raw", [b"{not json", b'{"a": 1', b"\xff\xfe", b"[1, 2] x"])
def test_malformed_upstream_json_is_blocked_unless_shadow(raw: bytes) -> None:
    out, ex = respond(layer(), raw, op=operation(ORDER))
    assert problem(out) == "response.blocked"
    assert ex.annotations[ANNOTATION]["blocked"] == "the upstream sent malformed JSON"
    out, ex = respond(layer(enforce=False), raw, op=operation(ORDER))
    assert out == raw
    assert ex.annotations[ANNOTATION]["would_block"] == "the upstream sent malformed JSON"
    assert respond(layer(), b"  ", op=operation(ORDER))[0] == b"  "  # no body: nothing to check


def test_shadow_mode_changes_nothing_and_records_everything() -> None:
    raw = orjson.dumps({**ORDER_BODY, "note": f"card {CARD}", "password": "x"})
    out, ex = respond(
        layer(enforce=False, undeclared="block", sensitive="block"), raw, op=operation(ORDER)
    )
    assert out == raw
    note = ex.annotations[ANNOTATION]
    assert note["enforced"] is False
    assert note["undeclared_count"] == 3
    assert {m["by"] for m in note["sensitive"]} == {"card_number", "field_name"}
    assert ex.decision == "allow"
    for status, ct in ((410, "application/json"), (200, "text/html")):
        assert respond(
            layer(enforce=False), raw, op=operation(ORDER), status=status, content_type=ct
        )[0] in (raw, None)


def test_oversize_blocks_or_passes() -> None:
    big = {"id": "o1", "note": "x" * 2000}
    out, ex = respond(layer(max_body_bytes=1024), big, op=operation(ORDER))
    assert problem(out) == "response.too_large"
    assert ex.reason == "response.too_large"
    out, ex = respond(layer(max_body_bytes=1024, oversize="pass"), big, op=operation(ORDER))
    assert out is None
    assert ex.annotations[ANNOTATION]["unfiltered_over_bytes"] == 1024
    # An undeclared status is blocked whatever its size.
    out, _ = respond(
        layer(max_body_bytes=1024, oversize="pass"), big, op=operation(ORDER), status=418
    )
    assert problem(out) == "response.blocked"


async def test_compressed_json_cannot_be_checked_so_identity_is_asked_for() -> None:
    lay = layer()
    ex = exchange()
    assert await lay.on_request(ex) is None
    assert ex.request.headers.get_all("accept-encoding") == ["identity"]
    out, _ = respond(lay, b"\x1f\x8b...", headers=[("content-encoding", "gzip")])
    assert problem(out) == "response.blocked"


def test_without_an_operation_only_the_detectors_run() -> None:
    body = {"user": {"ssn": SSN, "nick": "bob", "token": "abc"}, "note": f"{CARD}"}
    out, _ = respond(layer(), body)
    assert doc(out) == {
        "user": {"ssn": "[REDACTED]", "nick": "bob", "token": "[REDACTED]"},
        "note": "****1111",
    }
    assert respond(layer(), b"plain text", content_type="text/plain")[0] is None
    out, _ = respond(layer(detectors=["us_ssn"]), body)
    assert doc(out)["user"]["token"] == "abc"
    assert doc(out)["note"] == CARD


def test_keys_that_may_be_data_never_reach_the_record() -> None:
    schema = {
        "type": "object",
        "properties": {"by_card": {"type": "object", "additionalProperties": True}},
    }
    body = {"by_card": {CARD: {"total": 5}, "bob@example.test": {"ssn": SSN}}, CARD: 1}
    out, ex = respond(layer(), body, op=operation(schema))
    assert doc(out) == {"by_card": {"bob@example.test": {"ssn": "[REDACTED]"}}}
    note = ex.annotations[ANNOTATION]
    # A card number as a key is removed with its entry and recorded as [REDACTED]; the keys
    # of a map are recorded as *; an undeclared name is recorded unless a detector flags it.
    assert note["sensitive"] == [
        {"path": "/by_card/[REDACTED]", "by": "card_number"},
        {"path": "/by_card/*/ssn", "by": "field_name"},
    ]
    assert note["undeclared"] == ["/[REDACTED]"]
    assert CARD not in repr(note)
    assert "bob@" not in repr(note)


def test_paths_recorded_are_bounded_and_counts_complete() -> None:
    body = {"items": [{"sku": "a", "ssn": SSN} for _ in range(50)]}
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": ITEM}}}
    _out, ex = respond(layer(undeclared="report"), body, op=operation(schema))
    note = ex.annotations[ANNOTATION]
    assert len(note["undeclared"]) == MAX_PATHS
    assert note["undeclared_count"] == 50
    assert note["sensitive_count"] == 50
    assert SSN not in orjson.dumps(note).decode()


def test_recursive_schemas_and_the_real_compiler() -> None:
    spec = compile_document(
        {
            "openapi": "3.0.3",
            "info": {"title": "t", "version": "1"},
            "paths": {
                "/nodes": {
                    "get": {
                        "responses": {
                            "200": {
                                "description": "ok",
                                "content": {
                                    "application/json": {
                                        "schema": {"$ref": "#/components/schemas/Node"}
                                    }
                                },
                            }
                        }
                    }
                }
            },
            "components": {
                "schemas": {
                    "Node": {
                        "type": "object",
                        "nullable": True,
                        "properties": {
                            "name": {"type": "string"},
                            "children": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/Node"},
                            },
                        },
                    }
                }
            },
        }
    )
    op = spec.operations[0]
    lay = ResponseFilterLayer(ResponseFilterConfig(), spec.operations)
    tree = {"name": "a", "x": 1, "children": [{"name": "b", "children": [{"name": "c", "y": 2}]}]}
    out, ex = respond(lay, tree, op=op)
    assert doc(out) == {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}
    assert ex.annotations[ANNOTATION]["undeclared"] == ["/x", "/children/0/children/0/y"]
    clean = orjson.dumps({"name": "a", "children": [{"name": "b", "children": []}]})
    assert respond(lay, clean, op=op)[0] is clean  # the fast path handles recursion too


def test_bad_marks_are_refused_at_start_up() -> None:
    bad = operation({"type": "object", "properties": {"a": {"x-bastion-sensitive": "yes"}}})
    with pytest.raises(ConfigError, match="x-bastion-sensitive must be true or false"):
        ResponseFilterLayer(ResponseFilterConfig(), [bad])
    roles = operation(
        {"type": "object", "properties": {"a": {"x-bastion-sensitive-roles": "admin"}}}
    )
    with pytest.raises(ConfigError, match=re.escape("GET /orders/{id} responses.200")):
        ResponseFilterLayer(ResponseFilterConfig(), [roles])


def test_config_refuses_unknown_detectors() -> None:
    with pytest.raises(ValueError, match="unknown detector"):
        ResponseFilterConfig(detectors=["cards"])
    with pytest.raises(ValueError, match="must not be empty"):
        ResponseFilterConfig(sensitive_fields=[" "])


def test_layer_is_built_with_a_spec_or_when_enabled_explicitly() -> None:
    def chain(route: dict[str, Any]) -> tuple[str, ...]:
        cfg = parse_config(
            {
                "store": "memory://",
                "listeners": [{"bind": "127.0.0.1:0"}],
                "routes": [
                    {
                        "name": "r",
                        "upstream": "http://127.0.0.1:9",
                        "authn": {"methods": [], "unsafe_allow_anonymous": True},
                        **route,
                    }
                ],
            },
            {},
        )
        return build_chain(cfg.routes[0], GatewayServices.create(cfg, store=MemoryStore())).names

    assert "response_filter" not in chain({})
    assert chain({"response_filter": {"enabled": True}})[-1] == "response_filter"
    assert "response_filter" not in chain({"response_filter": {"enabled": False}})


# -- the fast path never hides a finding --------------------------------------------------------
_KEYS = st.sampled_from(["id", "note", "total", "items", "sku", "qty", "password", "meta", "x"])
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10, max_value=10),
    st.sampled_from([4111111111111111, 5555555555554444, 1234567812345670]),
    st.sampled_from(["", "ok", CARD, SSN, BCRYPT, "SKU-0001", "eyJhbGciOiJub25lIn0.eyJhIjoxfQ."]),
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4)


_JSON = st.recursive(_LEAVES, _containers, max_leaves=12)
_SCHEMAS = [
    ORDER,
    {"type": "object", "properties": {"meta": {"type": "object", "additionalProperties": True}}},
    {"type": "array", "items": ITEM},
    {"type": "object", "properties": {"note": {"x-bastion-sensitive": False}, "id": {}}},
    {"type": "object", "properties": {"password": {"type": "string"}, "id": {}, "qty": {}}},
    {"anyOf": [ORDER, {"type": "object", "properties": {"x": {"type": "array"}}}]},
    True,
]


@settings(max_examples=300, deadline=None)
@given(value=_JSON, which=st.integers(min_value=0, max_value=len(_SCHEMAS) - 1))
def test_fast_path_passes_only_what_the_walk_leaves_alone(value: Any, which: int) -> None:
    lay = layer()
    plan, _ = build_plan(_SCHEMAS[which])
    schema = fast_schema(plan, lay._scanner)
    assert schema is not None
    if jsonschema_rs.Draft202012Validator(schema).is_valid(value):
        walk = BodyFilter(
            lay._scanner,
            remove_undeclared=True,
            action="mask",
            roles=frozenset(),
            default_roles=frozenset(),
        )
        walk.run(orjson.loads(orjson.dumps(value)), plan)
        assert not walk.findings, (value, walk.findings)


# -- cached head decisions and the clean fast path ------------------------------------------------
ACK_ITEM = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sku": {"type": "string", "maxLength": 32},
        "quantity": {"type": "integer", "minimum": 0},
        "ok": {"type": "boolean"},
    },
}
ACK = {  # the gateway benchmark's response schema (bench/bastion_target.py)
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "status", "items"],
    "properties": {
        "id": {"type": "string", "maxLength": 64},
        "status": {"type": "string", "enum": ["accepted", "rejected"]},
        "items": {"type": "array", "items": ACK_ITEM},
    },
}


def ack(n: int = 20) -> dict[str, Any]:
    items = [{"sku": f"SKU-{i:04d}", "quantity": i % 5 + 1, "ok": True} for i in range(n)]
    return {"id": "ord_0123456789abcdef", "status": "accepted", "items": items}


def test_the_benchmark_body_is_clean_and_sent_as_is_every_time() -> None:
    lay, op = layer(), operation(ACK)
    raw = orjson.dumps(ack())
    for _ in range(3):  # the head decision is cached after the first response
        out, ex = respond(lay, raw, op=op)
        assert out is raw
        assert ANNOTATION not in ex.annotations
    assert len(lay._heads) == 1


@pytest.mark.parametrize(
    ("where", "planted", "expected"),
    [
        ("id", CARD, "****1111"),
        ("id", f"ord {SSN}", "[REDACTED]"),
        ("sku", "DE89370400440532013000", "[REDACTED]"),
        ("sku", BCRYPT[:32], None),  # too short for a bcrypt hash: no finding, kept
        ("quantity", 4111111111111111, None),  # a card as a number: nulled
        ("quantity", 4.111111111111111e15, None),
    ],
)
def test_a_secret_planted_in_a_benchmark_like_body_is_still_masked(
    where: str, planted: Any, expected: Any
) -> None:
    body = ack()
    target = body if where == "id" else body["items"][7]
    target[where] = planted
    out, ex = respond(layer(), body, op=operation(ACK))
    result = doc(out)
    got = result[where] if where == "id" else result["items"][7][where]
    if where == "sku" and expected is None:
        assert got == planted
        assert ANNOTATION not in ex.annotations
        return
    assert got == expected
    assert result["items"][6] == ack()["items"][6]  # the rest untouched
    assert ex.annotations[ANNOTATION]["sensitive_count"] == 1


def test_an_undeclared_property_in_a_benchmark_like_body_is_still_removed() -> None:
    body = ack()
    body["items"][19]["cost_cents"] = 150
    body["internal"] = {"margin": 0.31}
    out, ex = respond(layer(), body, op=operation(ACK))
    assert doc(out) == ack()
    assert ex.annotations[ANNOTATION]["undeclared"] == ["/items/19/cost_cents", "/internal"]


def test_cached_head_decisions_still_record_and_check_every_response() -> None:
    lay, op = layer(undeclared_status="report"), operation(ACK)
    raw = orjson.dumps(ack(2))
    for _ in range(2):
        out, ex = respond(lay, raw, op=op, status=418)  # undeclared status: recorded each time
        assert out is raw
        assert ex.annotations[ANNOTATION]["undeclared_response"] == "status 418 is not declared"
        # A Content-Encoding is read per response, not cached with the head.
        out, ex = respond(lay, raw, op=op, headers=[("content-encoding", "gzip")])
        assert problem(out) == "response.blocked"
        assert ex.diagnosis == "response_filter: gzip-encoded JSON cannot be checked"
        out, _ = respond(lay, raw, op=op, headers=[("content-encoding", " Identity ")])
        assert out is raw
    blocking, shadow = layer(), layer(enforce=False)
    for _ in range(2):
        out, ex = respond(blocking, raw, op=op, status=418)
        assert problem(out) == "response.blocked"
        out, ex = respond(shadow, raw, op=op, status=418)
        assert out is None  # shadow: streamed, and what would have happened is recorded
        note = ex.annotations[ANNOTATION]
        assert note["would_block"] == "undeclared response: status 418 is not declared"
        out, ex = respond(shadow, raw, op=op, headers=[("content-encoding", "br")])
        assert out is None
        assert ex.annotations[ANNOTATION]["would_block"] == "br-encoded JSON cannot be checked"


def test_the_head_memo_is_bounded_and_keyed_by_the_operation_itself() -> None:
    from bastion.gateway.layers.response_filter.layer import MAX_HEADS

    lay = layer(undeclared_status="report")
    raw = orjson.dumps(ack(1))
    for i in range(MAX_HEADS + 10):  # upstream-chosen content types
        respond(lay, raw, op=operation(ACK), content_type=f"application/x{i}+json")
    assert len(lay._heads) <= MAX_HEADS
    # Two operations alive at once never share a decision (one declares 200, one 201).
    a, b = operation(ACK), operation(ACK, status="201")
    assert respond(lay, raw, op=a)[0] is raw
    _, ex = respond(lay, raw, op=b)
    assert ex.annotations[ANNOTATION]["undeclared_response"] == "status 200 is not declared"
    # The last decision is reused only for the same operation, status and Content-Type.
    for _ in range(2):
        assert respond(lay, raw, op=a)[0] is raw
        out, ex = respond(lay, raw, op=a, content_type="text/plain")
        assert out is None
        assert ex.annotations[ANNOTATION]["undeclared_response"] == "text/plain for 200"
        _, ex = respond(lay, raw, op=a, status=201)
        assert ex.annotations[ANNOTATION]["undeclared_response"] == "status 201 is not declared"
        assert ANNOTATION not in respond(lay, raw, op=a)[1].annotations


def test_check_asks_for_identity_once() -> None:
    lay = layer()
    for sent in ([], [("accept-encoding", "gzip, br")], [("accept-encoding", "gzip")] * 2):
        view = RequestView("GET", "/", "", Headers([("host", "x"), *sent]), "10.0.0.1")
        ex = Exchange(view, "rid", 0.0, 0.0)
        assert lay.check(ex) is None
        assert ex.request.headers.items == [("host", "x"), ("accept-encoding", "identity")]


_WALK_SCHEMAS = [
    *_SCHEMAS,
    ACK,
    {"type": "array", "items": ORDER},
    {
        "type": "object",
        "properties": {
            "meta": {"type": "object", "additionalProperties": ITEM},
            "items": {"type": "array", "prefixItems": [ITEM, {"type": "array"}], "items": ORDER},
            "note": {"x-bastion-sensitive": True, "x-bastion-sensitive-roles": ["auditor"]},
            "x": {"type": "object", "x-bastion-sensitive": True, "properties": {"id": {}}},
        },
    },
]


@settings(max_examples=400, deadline=None)
@given(
    value=_JSON,
    which=st.integers(min_value=0, max_value=len(_WALK_SCHEMAS) - 1),
    roles=st.sampled_from([(), ("auditor",)]),
    cfg=st.sampled_from([{}, {"undeclared": "report"}, {"sensitive": "remove"}]),
)
def test_subtrees_proven_clean_are_skipped_without_changing_the_result(
    value: Any, which: int, roles: tuple[str, ...], cfg: dict[str, str]
) -> None:
    """The walk asks, for each object and array below the root, a validator of the values it
    would leave alone; skipping those must give the same body and the same findings."""
    lay = layer(**cfg)
    compiled = lay._prepare(MediaSchema("application/json", _WALK_SCHEMAS[which]))[0]
    results = []
    for clean in (None, lay._clean_check):
        walk = BodyFilter(
            lay._scanner,
            remove_undeclared=lay._remove_undeclared,
            action=lay._action,
            roles=frozenset(roles),
            default_roles=frozenset(),
            clean=clean,
        )
        out = walk.run(orjson.loads(orjson.dumps(value)), compiled.plan)
        f = walk.findings
        results.append((orjson.dumps(out), f.removed, f.masked, f.removed_count, f.masked_count))
    assert results[0] == results[1]


def test_a_large_array_with_one_planted_secret_is_walked_where_it_matters() -> None:
    lay, op = layer(), operation(ACK)
    body = ack(300)
    body["items"][150]["sku"] = CARD
    body["items"][299]["cost_cents"] = 1
    out, ex = respond(lay, body, op=op)
    expected = ack(300)
    expected["items"][150]["sku"] = "****1111"
    assert doc(out) == expected
    note = ex.annotations[ANNOTATION]
    assert note["undeclared"] == ["/items/299/cost_cents"]
    assert note["sensitive"] == [{"path": "/items/150/sku", "by": "card_number"}]


@pytest.mark.parametrize("native", [True, False])
def test_a_repeated_key_never_lets_an_unchecked_value_out(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orjson keeps a repeated key's last value; a client's parser may read the first. The
    walk checks what orjson kept, so a body that repeats a key is sent as the checked
    document, one value per key, never as the upstream wrote it."""
    from bastion.openapi import fastcheck

    if native and os.environ.get("BASTION_EXPECT_FASTCHECK") == "1":
        assert fastcheck.available()  # else the native case would run the fallback again
    if not native:  # jsonschema-rs's fast validator, the standard library's parser
        monkeypatch.setattr(fastcheck, "_CHECKER", None)
        monkeypatch.setattr(fastcheck, "_REPEATS", None)
    lay, op = layer(), operation(ORDER)
    for raw in (
        b'{"id":"o1","note":"card %b","note":"thanks"}' % CARD.encode(),
        b'{"id":"o1","items":[{"sku":"A","sku":"B"}]}',  # clean values, repeated key
    ):
        out, ex = respond(lay, raw, op=op)
        assert isinstance(out, bytes)
        assert out != raw
        assert CARD.encode() not in out
        assert orjson.loads(out) == orjson.loads(raw)  # the values orjson kept, and checked
        assert out.count(b'"note"') <= 1
        assert out.count(b'"sku"') <= 1
        note = ex.annotations[ANNOTATION]
        assert (note["repeated_keys"], note["enforced"]) == (True, True)
    # Shadow mode changes nothing and records it.
    raw = b'{"id":"o1","note":"a","note":"b"}'
    out, ex = respond(layer(enforce=False), raw, op=op)
    assert out is raw
    assert ex.annotations[ANNOTATION] == {"enforced": False, "repeated_keys": True}
    # The benchmark's body, which repeats nothing, is still sent as it is; so is a body with
    # an integer beyond 64 bits (simdjson refuses it, orjson reads it as a float): not rounded.
    clean = orjson.dumps(ack())
    assert respond(layer(), clean, op=operation(ACK))[0] is clean
    big = b'{"id":"o1","total":123456789012345678901234567890}'
    out, ex = respond(layer(), big, op=op)
    assert out is big
    assert ANNOTATION not in ex.annotations


def _bodyless_op() -> Operation:
    """200 declared without content (a DELETE's acknowledgement, say)."""
    return operation(None, responses={"200": ()})


def _respond_unlabelled(
    lay: ResponseFilterLayer, raw: bytes, *, limit_over: bool = False
) -> tuple[bytes | Reply | None, Exchange]:
    """The response hooks for a body sent without a Content-Type."""
    ex = exchange(_bodyless_op())
    h = Headers([])
    limit = lay.wants_response_body(ex, 200, h)
    if limit == 0:
        return None, ex
    if limit_over or len(raw) > limit:
        return lay.on_response_body_too_large(ex, 200, h), ex
    return lay.on_response_body(ex, 200, h, raw), ex


def test_a_body_where_the_status_declares_none_is_an_undeclared_response() -> None:
    """Before, no Content-Type and no declared content meant the body streamed unscanned."""
    leak = b'{"ssn":"123-45-6789","note":"card 4111111111111111"}'
    # Nothing sent: nothing to say.
    out, ex = _respond_unlabelled(layer(), b"")
    assert out == b""
    assert ANNOTATION not in ex.annotations
    # Something sent all the same: blocked by default (undeclared_status: block) ...
    out, ex = _respond_unlabelled(layer(), leak)
    assert problem(out) == "response.blocked"
    assert ex.diagnosis == "response_filter: undeclared response: a body for status 200, " + (
        "which declares none"
    )
    out, ex = _respond_unlabelled(layer(), leak, limit_over=True)
    assert problem(out) == "response.blocked"
    # ... recorded and passed in shadow mode ...
    out, ex = _respond_unlabelled(layer(enforce=False), leak)
    assert out == leak
    assert ex.annotations[ANNOTATION]["would_block"].startswith("undeclared response: a body")
    assert _respond_unlabelled(layer(enforce=False), leak, limit_over=True)[0] is None
    # ... and with undeclared_status: report, a JSON body still meets the detectors.
    out, ex = _respond_unlabelled(layer(undeclared_status="report"), leak)
    assert isinstance(out, bytes)
    assert b"123-45-6789" not in out
    assert b"4111111111111111" not in out
    note = ex.annotations[ANNOTATION]
    assert note["undeclared_response"] == "a body for status 200, which declares none"
    assert note["sensitive_count"] == 2
    text = b"plain text, not JSON"
    assert _respond_unlabelled(layer(undeclared_status="report"), text)[0] == text
    # A status that declares JSON, answered without a Content-Type: with report, the same.
    reporting = layer(undeclared_status="report")
    out, ex = respond(reporting, leak, op=operation(ORDER), content_type="")
    assert isinstance(out, bytes)
    assert b"4111111111111111" not in out
    assert ex.annotations[ANNOTATION]["undeclared_response"] == "no content type for 200"
    assert respond(reporting, text, op=operation(ORDER), content_type="")[0] == text


def test_an_array_where_the_schema_declares_none_keeps_no_property() -> None:
    """A string declared, an array of objects sent: before, the array's items counted as
    'any items' and the objects in it went out whole."""
    schema = {
        "type": "object",
        "properties": {"owner": {"type": "string"}, "n": {"type": ["integer", "null"]}},
    }
    body = {
        "owner": ["alice", {"ssn_hash": "x", "cost": 5}, [{"margin": 0.3}]],
        "n": [{"internal": 1}],
    }
    out, ex = respond(layer(), body, op=operation(schema))
    assert doc(out) == {"owner": ["alice", {}, [{}]], "n": [{}]}
    note = ex.annotations[ANNOTATION]
    assert note["undeclared_count"] == 4
    assert "/owner/2/0/margin" in note["undeclared"]
    # The same where the schema describes an object without saying `type: object`.
    typeless = {"properties": {"owner": {"properties": {"name": {"type": "string"}}}}}
    out, _ = respond(layer(), {"owner": [{"name": "a", "cost": 5}]}, op=operation(typeless))
    assert doc(out) == {"owner": [{}]}
    out, _ = respond(layer(), {"owner": {"name": "a", "cost": 5}}, op=operation(typeless))
    assert doc(out) == {"owner": {"name": "a"}}
    # An array declared without `items` still allows any items (the schema says so).
    free = {"type": "object", "properties": {"tags": {"type": "array"}}}
    assert doc(respond(layer(), {"tags": [{"a": 1}]}, op=operation(free))[0]) == {
        "tags": [{"a": 1}]
    }
