"""The openapi layer: operation matching, every parameter location with coercion, bodies,
mass assignment, readOnly, content types, malformed JSON, shadow mode, 404 vs 405."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from bastion.core.exchange import Exchange, Headers, Reply, RequestView
from bastion.gateway.layers.openapi.config import OpenApiConfig
from bastion.gateway.layers.openapi.layer import OpenApiLayer, too_deep
from bastion.openapi.model import (
    BODY_ANNOTATION,
    OPERATION_ANNOTATION,
    PARAMS_ANNOTATION,
    PATH_PARAMS_ANNOTATION,
)
from bastion.openapi.spec import OpenApiSpec, load_spec

BANK = Path(__file__).resolve().parents[1] / "fixtures" / "openapi" / "bank.yaml"
JSON = [("content-type", "application/json")]


@pytest.fixture(scope="module")
def spec() -> OpenApiSpec:
    return load_spec(str(BANK))


def layer(spec: OpenApiSpec, **cfg: Any) -> OpenApiLayer:
    return OpenApiLayer(OpenApiConfig(spec=str(BANK), **cfg), spec)


def exchange(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | dict[str, Any] = b"",
) -> Exchange:
    path, _, query = target.partition("?")
    raw = orjson.dumps(body) if isinstance(body, dict) else body
    view = RequestView(method, path, query, Headers(list(headers or [])), "203.0.113.9", body=raw)
    return Exchange(view, "rid", time.monotonic(), time.time())


async def run(
    spec: OpenApiSpec, method: str, target: str, **kw: Any
) -> tuple[Exchange, Reply | None]:
    cfg = kw.pop("cfg", {})
    ex = exchange(method, target, **kw)
    return ex, await layer(spec, **cfg).on_request(ex)


def refused(reply: Reply | None, status: int, code: str) -> dict[str, Any]:
    assert reply is not None
    body: dict[str, Any] = orjson.loads(reply.body)
    assert (reply.status, body["code"]) == (status, code), body
    return body


# -- matching -------------------------------------------------------------------------------------
async def test_declared_operation_is_annotated(spec: OpenApiSpec) -> None:
    ex, reply = await run(spec, "GET", "/v1/accounts/acc-1")
    assert reply is None
    assert ex.annotations[OPERATION_ANNOTATION].operation_id == "getAccount"
    assert ex.annotations[PATH_PARAMS_ANNOTATION] == {"account_id": "acc-1"}
    assert ex.annotations[PARAMS_ANNOTATION]["path"] == {"account_id": "acc-1"}
    assert "shadow_endpoint" not in ex.annotations


async def test_undeclared_path_is_404_and_a_shadow_endpoint(spec: OpenApiSpec) -> None:
    ex, reply = await run(spec, "GET", "/v1/internal/debug")
    refused(reply, 404, "openapi.operation_unknown")
    assert ex.annotations["shadow_endpoint"] is True
    assert ex.reason == "openapi.operation_unknown"
    # Outside the document's base path is as unknown.
    ex, reply = await run(spec, "GET", "/v2/health")
    refused(reply, 404, "openapi.operation_unknown")
    ex, reply = await run(spec, "GET", "/v1health")
    refused(reply, 404, "openapi.operation_unknown")


async def test_matrix_parameters_are_refused(spec: OpenApiSpec) -> None:
    """/accounts/me;x is /accounts/me to many servers; here it would match a template."""
    assert spec.lookup("GET", "/accounts/me;x")[0] is not None  # {account_id} = "me;x"
    ex, reply = await run(spec, "GET", "/v1/accounts/me;x")
    refused(reply, 404, "openapi.operation_unknown")
    assert ex.annotations["shadow_endpoint"] is True
    assert ex.diagnosis == "';' in the path"


async def test_undeclared_method_is_405_with_allow(spec: OpenApiSpec) -> None:
    ex, reply = await run(spec, "DELETE", "/v1/accounts/acc-1")
    refused(reply, 405, "openapi.method_not_allowed")
    assert reply is not None
    assert ("allow", "GET, HEAD, PATCH") in reply.headers
    assert ex.annotations["shadow_endpoint"] is True


async def test_route_prefix_is_stripped_when_the_route_strips_it(spec: OpenApiSpec) -> None:
    lay = OpenApiLayer(
        OpenApiConfig(spec=str(BANK), base_path=""), spec, route_prefix="/bank/", strip_prefix=True
    )
    ex = exchange("GET", "/bank/health")
    assert await lay.on_request(ex) is None
    assert ex.annotations[OPERATION_ANNOTATION].operation_id == "health"


# -- parameters -----------------------------------------------------------------------------------
async def test_path_parameter_is_validated(spec: OpenApiSpec) -> None:
    body = refused(
        (await run(spec, "GET", "/v1/accounts/" + "a" * 33))[1], 400, "openapi.invalid_request"
    )
    assert body["detail"] == "path.account_id: longer than 32 characters"
    assert "aaaa" not in orjson.dumps(body).decode()  # the value is never echoed
    ex, reply = await run(spec, "GET", "/v1/orgs/x/accounts")
    assert (
        refused(reply, 400, "openapi.invalid_request")["detail"] == "path.org_id: must be integer"
    )
    ex, reply = await run(spec, "GET", "/v1/orgs/42/accounts")
    assert reply is None
    assert ex.annotations[PARAMS_ANNOTATION]["path"] == {"org_id": 42}


async def test_query_parameters_are_coerced(spec: OpenApiSpec) -> None:
    ex, reply = await run(
        spec,
        "GET",
        "/v1/orgs/1/accounts?limit=10&status=open,closed&tag=a&tag=b&filter[min]=3&filter[name]=x&active=true",
    )
    assert reply is None
    assert ex.annotations[PARAMS_ANNOTATION]["query"] == {
        "limit": 10,
        "status": ["open", "closed"],
        "tag": ["a", "b"],
        "filter": {"min": 3, "name": "x"},
        "active": True,
    }


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=101", "query.limit: greater than 100"),
        ("limit=0", "query.limit: less than 1"),
        ("limit=ten", "query.limit: must be integer"),
        ("limit=1&limit=2", "query.limit: given more than once"),
        ("status=open,open,closed,open", "query.status: more than 3 items"),
        ("status=pending", "query.status/0: not one of the allowed values"),
        ("filter[min]=x", "query.filter/min: must be integer"),
        ("filter[admin]=1", "query.filter/admin: not declared"),
        ("active=yes", "query.active: must be boolean"),
        ("debug=1", "query.debug: not declared"),
    ],
)
async def test_bad_query_parameters(spec: OpenApiSpec, query: str, detail: str) -> None:
    reply = (await run(spec, "GET", f"/v1/orgs/1/accounts?{query}"))[1]
    assert refused(reply, 400, "openapi.invalid_request")["detail"] == detail


async def test_undeclared_query_may_be_allowed(spec: OpenApiSpec) -> None:
    reply = (
        await run(spec, "GET", "/v1/orgs/1/accounts?debug=1", cfg={"undeclared_query": "allow"})
    )[1]
    assert reply is None


async def test_header_cookie_and_content_parameters(spec: OpenApiSpec) -> None:
    headers = [
        ("x-tenant", "acme"),
        ("x-trace", "1, 2"),
        ("x-trace", "3"),
        ("cookie", 'theme=dark; session="abcd1234"'),
    ]
    where = orjson.dumps({"city": "Oslo"}).decode()
    ex, reply = await run(spec, "GET", f"/v1/search?q=x&where={where}", headers=headers)
    assert reply is None
    params = ex.annotations[PARAMS_ANNOTATION]
    assert params["header"] == {"x-tenant": "acme", "x-trace": [1, 2, 3]}
    assert params["cookie"] == {"session": "abcd1234"}
    assert params["query"] == {"q": "x", "where": {"city": "Oslo"}}


@pytest.mark.parametrize(
    ("headers", "query", "detail"),
    [
        ([], "", "header.x-tenant: required"),
        ([("x-tenant", "a-very-long-tenant")], "", "header.x-tenant: longer than 8 characters"),
        ([("x-tenant", "a"), ("x-tenant", "b")], "", "header.x-tenant: given more than once"),
        ([("x-tenant", "a"), ("x-trace", "1,x")], "", "header.x-trace/1: must be integer"),
        (
            [("x-tenant", "a"), ("cookie", "session=ab")],
            "",
            "cookie.session: shorter than 4 characters",
        ),
        ([("x-tenant", "a")], "where={bad", "query.where: malformed JSON"),
        ([("x-tenant", "a")], 'where={"city":1}', "query.where/city: must be string"),
        ([("x-tenant", "a")], 'where={"zip":"1"}', "query.where/zip: not declared"),
    ],
)
async def test_bad_header_cookie_content_parameters(
    spec: OpenApiSpec, headers: list[tuple[str, str]], query: str, detail: str
) -> None:
    reply = (await run(spec, "GET", f"/v1/search?{query}", headers=headers))[1]
    assert refused(reply, 400, "openapi.invalid_request")["detail"] == detail


async def test_coercion_falls_back_to_the_string() -> None:
    """A value that parses as a number is still accepted where the schema wants a string."""
    from bastion.openapi.spec import compile_document

    document = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/x": {
                "get": {
                    "parameters": [
                        {
                            "name": "code",
                            "in": "query",
                            "schema": {"type": ["integer", "string"], "pattern": "^0"},
                        }
                    ],
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }
    spec = compile_document(document)
    lay = OpenApiLayer(OpenApiConfig(spec="x"), spec)
    ex = exchange("GET", "/x?code=007")
    assert await lay.on_request(ex) is None
    assert ex.annotations[PARAMS_ANNOTATION]["query"] == {"code": 7}
    ex = exchange("GET", "/x?code=0x")
    assert await lay.on_request(ex) is None
    assert ex.annotations[PARAMS_ANNOTATION]["query"] == {"code": "0x"}


# -- bodies ---------------------------------------------------------------------------------------
async def test_valid_json_body_is_parsed_for_later_layers(spec: OpenApiSpec) -> None:
    invoice = {
        "account_id": "a1",
        "amount_cents": 500,
        "currency": "EUR",
        "lines": [{"sku": "x", "qty": 2}],
        "metadata": {"po": "7"},
    }
    ex, reply = await run(spec, "POST", "/v1/invoices", headers=JSON, body=invoice)
    assert reply is None
    assert ex.annotations[BODY_ANNOTATION] == invoice


async def test_mass_assignment_is_refused(spec: OpenApiSpec) -> None:
    """An undeclared property (is_admin) in a body: the classic mass-assignment attack."""
    attack = {"account_id": "a1", "amount_cents": 500, "is_admin": True}
    _ex, reply = await run(spec, "POST", "/v1/invoices", headers=JSON, body=attack)
    assert refused(reply, 400, "openapi.invalid_request")["detail"] == "body/is_admin: not declared"
    nested = {"account_id": "a1", "amount_cents": 5, "lines": [{"sku": "x", "price": 0}]}
    reply = (await run(spec, "POST", "/v1/invoices", headers=JSON, body=nested))[1]
    assert (
        refused(reply, 400, "openapi.invalid_request")["detail"]
        == "body/lines/0/price: not declared"
    )
    # additionalProperties with a schema stays as declared.
    ok = {"account_id": "a1", "amount_cents": 5, "metadata": {"anything": "goes"}}
    assert (await run(spec, "POST", "/v1/invoices", headers=JSON, body=ok))[1] is None
    bad = {"account_id": "a1", "amount_cents": 5, "metadata": {"n": 1}}
    reply = (await run(spec, "POST", "/v1/invoices", headers=JSON, body=bad))[1]
    assert (
        refused(reply, 400, "openapi.invalid_request")["detail"]
        == "body/metadata/n: must be string"
    )


@pytest.mark.parametrize("native", [True, False])
async def test_a_repeated_key_is_refused(
    spec: OpenApiSpec, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orjson keeps a repeated key's last value, some upstream parsers the first: a body
    whose validation (or ownership rule) saw one value and whose upstream uses the other."""
    from bastion.openapi import fastcheck

    if native and os.environ.get("BASTION_EXPECT_FASTCHECK") == "1":
        assert fastcheck.available()  # else the native case would run the fallback again
    if not native:  # the full path alone: jsonschema-rs and the standard library's parser
        monkeypatch.setattr(fastcheck, "_CHECKER", None)
        monkeypatch.setattr(fastcheck, "_REPEATS", None)
    attacks = [
        b'{"account_id":"a2","account_id":"a1","amount_cents":500}',
        b'{"account_id":"a1","amount_cents":500,"amount_cents":5}',  # both valid
        b'{"account_id":"a1","amount_cents":5,"metadata":{"po":"1","po":"2"}}',  # nested
        b'{"account_id":"a1","amount_c\\u0065nts":-1,"amount_cents":5}',  # escaped
    ]
    for body in attacks:
        reply = (await run(spec, "POST", "/v1/invoices", headers=JSON, body=body))[1]
        detail = refused(reply, 400, "openapi.invalid_request")["detail"]
        assert detail == "body: an object repeats a key", body
    ok = b'{"account_id":"a1","amount_cents":5,"metadata":{"po":"1","pa":"2"}}'
    assert (await run(spec, "POST", "/v1/invoices", headers=JSON, body=ok))[1] is None


async def test_open_bodies_when_configured(spec: OpenApiSpec) -> None:
    from bastion.gateway.layers.openapi.config import OpenApiConfig as Cfg

    open_spec = load_spec(
        str(BANK), Cfg(spec=str(BANK), additional_properties="as_declared").spec_options()
    )
    lay = OpenApiLayer(Cfg(spec=str(BANK)), open_spec)
    ex = exchange(
        "POST", "/v1/invoices", JSON, {"account_id": "a1", "amount_cents": 5, "is_admin": True}
    )
    assert await lay.on_request(ex) is None


async def test_read_only_property_is_refused(spec: OpenApiSpec) -> None:
    reply = (
        await run(spec, "PATCH", "/v1/accounts/a1", headers=JSON, body={"id": "a2", "name": "x"})
    )[1]
    assert refused(reply, 400, "openapi.invalid_request")["detail"] == "body/id: read-only"
    # id is required in responses only.
    assert (await run(spec, "PATCH", "/v1/accounts/a1", headers=JSON, body={"name": "x"}))[
        1
    ] is None


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"account_id": "a1"}, "body/amount_cents: required"),
        ({"account_id": "a1", "amount_cents": 10**7}, "body/amount_cents: greater than 1000000"),
        (
            {"account_id": "a1", "amount_cents": 1, "currency": "euro"},
            "body/currency: does not match the pattern",
        ),
        (
            {"account_id": "a1", "amount_cents": 1, "lines": [{"sku": "a"}] * 4},
            "body/lines: more than 3 items",
        ),
        ({"account_id": 7, "amount_cents": 1}, "body/account_id: must be string"),
    ],
)
async def test_schema_limits(spec: OpenApiSpec, body: dict[str, Any], detail: str) -> None:
    reply = (await run(spec, "POST", "/v1/invoices", headers=JSON, body=body))[1]
    assert refused(reply, 400, "openapi.invalid_request")["detail"] == detail


async def test_malformed_json_and_missing_body(spec: OpenApiSpec) -> None:
    reply = (await run(spec, "POST", "/v1/invoices", headers=JSON, body=b'{"account_id": '))[1]
    assert refused(reply, 400, "openapi.invalid_request")["detail"] == "body: malformed JSON"
    reply = (await run(spec, "POST", "/v1/invoices", headers=JSON))[1]
    assert refused(reply, 400, "openapi.invalid_request")["detail"] == "body: required"
    reply = (await run(spec, "GET", "/v1/health", headers=JSON, body=b"{}"))[1]
    assert (
        refused(reply, 400, "openapi.invalid_request")["detail"]
        == "body: the operation takes no request body"
    )


async def test_content_type_must_be_declared(spec: OpenApiSpec) -> None:
    body = {"account_id": "a1", "amount_cents": 5}
    reply = (
        await run(spec, "POST", "/v1/invoices", headers=[("content-type", "text/plain")], body=body)
    )[1]
    problem = refused(reply, 415, "openapi.unsupported_media_type")
    assert problem["detail"] == "content-type: not declared (declared: application/json)"
    reply = (await run(spec, "POST", "/v1/invoices", body=body))[1]
    refused(reply, 415, "openapi.unsupported_media_type")
    charset = [("content-type", "Application/JSON; charset=utf-8")]
    assert (await run(spec, "POST", "/v1/invoices", headers=charset, body=body))[1] is None


async def test_form_and_binary_bodies(spec: OpenApiSpec) -> None:
    form = [("content-type", "application/x-www-form-urlencoded")]
    ex, reply = await run(spec, "POST", "/v1/upload", headers=form, body=b"title=a+b&count=3")
    assert reply is None
    assert ex.annotations[BODY_ANNOTATION] == {"title": "a b", "count": 3}
    reply = (await run(spec, "POST", "/v1/upload", headers=form, body=b"title=a&role=admin"))[1]
    assert refused(reply, 400, "openapi.invalid_request")["detail"] == "body/role: not declared"
    reply = (await run(spec, "POST", "/v1/upload", headers=form, body=b"title=a&title=b"))[1]
    refused(reply, 400, "openapi.invalid_request")
    binary = [("content-type", "application/octet-stream")]
    assert (await run(spec, "POST", "/v1/upload", headers=binary, body=b"\x00\x01"))[1] is None


async def test_recursive_body_depth_is_bounded(spec: OpenApiSpec) -> None:
    tree: dict[str, Any] = {"name": "leaf"}
    for _ in range(40):
        tree = {"name": "n", "children": [tree]}
    reply = (await run(spec, "POST", "/v1/folders", headers=JSON, body=tree))[1]
    assert refused(reply, 400, "openapi.invalid_request")["detail"] == "body: nested deeper than 32"
    reply = (
        await run(spec, "POST", "/v1/folders", headers=JSON, body=tree, cfg={"max_body_depth": 100})
    )[1]
    assert reply is None
    assert too_deep([[[]]], 2)
    assert not too_deep([[[]]], 3)
    # A scalar body nests nothing: refused by the schema, not a crash in the depth check.
    for scalar in (b"1", b"null", b'"x"'):
        reply = (await run(spec, "POST", "/v1/folders", headers=JSON, body=scalar))[1]
        refused(reply, 400, "openapi.invalid_request")
    assert not too_deep(1, 1)


# -- shadow mode ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "target", "body", "code"),
    [
        ("GET", "/v1/internal/debug", b"", "openapi.operation_unknown"),
        ("DELETE", "/v1/accounts/a1", b"", "openapi.method_not_allowed"),
        (
            "POST",
            "/v1/invoices",
            b'{"account_id": "a", "amount_cents": 1, "is_admin": true}',
            "openapi.invalid_request",
        ),
        ("GET", "/v1/orgs/1/accounts?limit=1000", b"", "openapi.invalid_request"),
    ],
)
async def test_shadow_mode_changes_nothing_but_annotates(
    spec: OpenApiSpec, method: str, target: str, body: bytes, code: str
) -> None:
    ex, reply = await run(spec, method, target, headers=JSON, body=body, cfg={"enforce": False})
    assert reply is None
    assert ex.annotations["openapi_shadow"].startswith(code + ": ")
    assert (ex.decision, ex.reason, ex.status) == ("allow", "", 0)
    assert ex.request.body == body


@pytest.mark.parametrize(
    "query", ["a=1&b=2&a=3", "a", "a=&=b", "x%20y=1+2&z=%E2%82%AC&&w=%ZZ", "k=v=w", "a[b]=1;c=2"]
)
def test_query_parsing_matches_the_standard_library(query: str) -> None:
    from urllib.parse import parse_qsl

    from bastion.gateway.layers.openapi.layer import parse_query

    expected: dict[str, list[str]] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        expected.setdefault(k, []).append(v)
    assert parse_query(query) == expected


async def test_too_many_query_fields(spec: OpenApiSpec) -> None:
    reply = (await run(spec, "GET", "/v1/orgs/1/accounts?" + "&".join(["a=1"] * 1001)))[1]
    assert (
        refused(reply, 400, "openapi.invalid_request")["detail"]
        == "query: more than 1000 parameters"
    )


def test_config_validation() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="base_path"):
        OpenApiConfig(spec="x", base_path="v1")
    with pytest.raises(ValidationError, match="spec must be"):
        OpenApiConfig(spec=" ")
    assert OpenApiConfig(spec="x", base_path="/v1/").base_path == "/v1"


# -- the synchronous contract ---------------------------------------------------------------------
SYNC_CASES: list[tuple[str, str, list[tuple[str, str]], bytes | dict[str, Any]]] = [
    ("GET", "/v1/accounts/acc-1", [], b""),
    ("GET", "/v1/internal/debug", [], b""),
    ("DELETE", "/v1/accounts/acc-1", [], b""),
    ("GET", "/v1/health?x=1", [], b""),
    ("PATCH", "/v1/accounts/acc-1", JSON, {"name": "n"}),
    ("PATCH", "/v1/accounts/acc-1", JSON, {"name": "n", "is_admin": True}),
    ("PATCH", "/v1/accounts/acc-1", JSON, b"{not json"),
    ("PATCH", "/v1/accounts/acc-1", [("content-type", "text/plain")], b"x"),
    ("PATCH", "/v1/accounts/acc-1", [], b""),
]


@pytest.mark.parametrize(("method", "target", "headers", "body"), SYNC_CASES)
async def test_check_decides_without_io_as_on_request_does(
    spec: OpenApiSpec,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | dict[str, Any],
) -> None:
    from bastion.gateway.layers.base import Layer

    lay = layer(spec)
    assert type(lay).on_request is Layer.on_request  # never needs I/O: check only
    ex1, ex2 = exchange(method, target, headers, body), exchange(method, target, headers, body)
    sync = lay.check(ex1)
    awaited = await lay.on_request(ex2)
    assert (sync is None) == (awaited is None)
    if sync is not None and awaited is not None:
        assert (sync.status, sync.body) == (awaited.status, awaited.body)
    assert ex1.annotations.keys() == ex2.annotations.keys()
    assert (ex1.reason, ex1.diagnosis) == (ex2.reason, ex2.diagnosis)


def test_content_type_spellings_and_a_bounded_memo(spec: OpenApiSpec) -> None:
    lay = layer(spec)
    body = {"name": "n"}
    for ct in ("application/json", "Application/JSON; charset=utf-8", " application/json "):
        ex = exchange("PATCH", "/v1/accounts/acc-1", [("content-type", ct)], body)
        assert lay.check(ex) is None, ct
    for i in range(600):  # client-chosen values: the memo stays bounded, answers stay right
        ex = exchange("PATCH", "/v1/accounts/acc-1", [("content-type", f"text/x-{i}")], body)
        refused(lay.check(ex), 415, "openapi.unsupported_media_type")
    assert len(lay._media_types) <= 256
    ex = exchange("PATCH", "/v1/accounts/acc-1", [("content-type", "application/json")], body)
    assert lay.check(ex) is None
