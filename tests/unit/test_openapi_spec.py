"""Compiling OpenAPI documents: loading, $ref resolution, 3.0 vs 3.1, errors with locations,
the path matcher and base paths."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import ConfigError
from bastion.openapi.matcher import PathMatcher, TemplateError
from bastion.openapi.spec import OpenApiSpec, SpecOptions, compile_document, load_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openapi"
BANK = FIXTURES / "bank.yaml"
LEGACY = FIXTURES / "legacy30.yaml"


def doc(paths: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths, **extra}


def ok(**extra: Any) -> dict[str, Any]:
    return {"responses": {"200": {"description": "ok"}}, **extra}


def problems(document: Any, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        compile_document(document, source="api.yaml", **kw)
    return info.value.problems


@pytest.fixture(scope="module")
def bank() -> OpenApiSpec:
    return load_spec(str(BANK))


# -- loading --------------------------------------------------------------------------------------
def test_bank_document_compiles(bank: OpenApiSpec) -> None:
    assert bank.title == "Bank"
    assert bank.base_path == "/v1"
    ids = {op.operation_id for op in bank.operations}
    assert {"health", "getAccount", "updateAccount", "createInvoice", "getFile"} <= ids
    patch = next(op for op in bank.operations if op.operation_id == "updateAccount")
    assert patch.security == ({"bearer": ("write",)}, {"key": ("accounts:write",)})
    health = next(op for op in bank.operations if op.operation_id == "health")
    assert health.security == ()
    get = next(op for op in bank.operations if op.operation_id == "getAccount")
    assert get.security == ({"bearer": ("read",)},)  # the document's default
    assert get.owner_rules[0].param == "path.account_id"
    assert get.response_schemas(200) is not None
    assert get.response_schemas(404) is None


def test_json_document_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "api.json"
    path.write_text('{"openapi": "3.1.0", "info": {"title": "j", "version": "1"}, "paths": {}}')
    assert load_spec(str(path)).title == "j"


def test_yaml_dates_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "api.yaml"
    path.write_text(
        "openapi: 3.1.0\ninfo: {title: d, version: '1'}\npaths:\n  /x:\n    post:\n"
        "      requestBody:\n        content:\n          application/json:\n"
        "            schema: {type: string, enum: [2024-01-01]}\n"
        "      responses: {'200': {description: ok}}\n"
    )
    plan = load_spec(str(path)).lookup("POST", "/x")[0]
    assert plan is not None
    assert plan.bodies["application/json"].validator is not None
    assert plan.bodies["application/json"].validator.is_valid("2024-01-01")


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "api.yaml"
    path.write_text("openapi: 3.1.0\npaths:\n  /x: [\n")
    with pytest.raises(ConfigError) as info:
        load_spec(str(path))
    assert "line" in info.value.problems[0]
    assert str(path) in info.value.problems[0]


def test_missing_file_and_bad_scheme() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec("/nonexistent/api.yaml")
    with pytest.raises(ConfigError, match="file path or an https"):
        load_spec("ftp://example.com/api.yaml")


def test_swagger_2_is_refused() -> None:
    assert problems({"swagger": "2.0", "paths": {}}) == [
        "api.yaml: openapi: only 3.0.x and 3.1.x are supported, not Swagger 2.0"
    ]


def test_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "api.yaml"
    path.write_text("openapi: 3.1.0\n" + "# padding\n" * 200)
    with pytest.raises(ConfigError, match="larger than 1024 bytes"):
        load_spec(str(path), SpecOptions(max_bytes=1024))


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("location", "ftp://elsewhere.example/api.yaml")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", "application/yaml")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def spec_server() -> Iterator[str]:
    _Handler.body = BANK.read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_url_loading_needs_https_or_unsafe_loopback(spec_server: str) -> None:
    with pytest.raises(ConfigError, match="unsafe_allow_http_spec"):
        load_spec(spec_server + "/bank.yaml")
    spec = load_spec(spec_server + "/bank.yaml", SpecOptions(unsafe_allow_http=True))
    assert spec.title == "Bank"
    with pytest.raises(ConfigError, match="only https"):
        load_spec(spec_server + "/redirect", SpecOptions(unsafe_allow_http=True))
    with pytest.raises(ConfigError, match="only https"):
        load_spec("http://example.com/api.yaml", SpecOptions(unsafe_allow_http=True))


def test_url_document_may_not_reference_files(spec_server: str) -> None:
    _Handler.body = LEGACY.read_bytes()
    with pytest.raises(ConfigError, match="would be remote: refused"):
        load_spec(spec_server + "/legacy.yaml", SpecOptions(unsafe_allow_http=True))


def test_a_pinned_document_must_match_its_sha256(spec_server: str, tmp_path: Path) -> None:
    import hashlib

    from bastion.gateway.layers.openapi.config import OpenApiConfig

    digest = hashlib.sha256(BANK.read_bytes()).hexdigest()
    pinned = SpecOptions(unsafe_allow_http=True, sha256=digest)
    assert load_spec(spec_server + "/bank.yaml", pinned).title == "Bank"
    assert load_spec(str(BANK), pinned).title == "Bank"
    # Whoever serves the URL changes the document (say, drops every security requirement).
    _Handler.body = BANK.read_bytes().replace(b"bearer: [read]", b"{}")
    try:
        with pytest.raises(ConfigError) as info:
            load_spec(spec_server + "/bank.yaml", pinned)
    finally:
        _Handler.body = BANK.read_bytes()
    [message] = info.value.problems
    assert message.endswith(f"not the spec_sha256 {digest}")
    changed = tmp_path / "bank.yaml"
    changed.write_bytes(BANK.read_bytes() + b"\n")
    with pytest.raises(ConfigError, match="spec_sha256"):
        load_spec(str(changed), pinned)
    cfg = OpenApiConfig(spec=str(BANK), spec_sha256=digest.upper())
    assert cfg.spec_options().sha256 == digest
    for bad in ("abc", "g" * 64, digest + "0"):
        with pytest.raises(ValueError, match="64 hexadecimal digits"):
            OpenApiConfig(spec=str(BANK), spec_sha256=bad)


def test_config_check_warns_about_an_unpinned_url(spec_server: str) -> None:
    import hashlib

    openapi = {"spec": spec_server + "/bank.yaml", "unsafe_allow_http_spec": True}
    found = check({"openapi": openapi, "authz": {"resolvers": [INVOICES]}})
    assert any(f.startswith("routes[0].openapi.spec_sha256: ") for f in found)
    digest = hashlib.sha256(BANK.read_bytes()).hexdigest()
    pinned = {**openapi, "spec_sha256": digest}
    found = check({"openapi": pinned, "authz": {"resolvers": [INVOICES]}})
    assert not any(f.startswith("routes[0].openapi.spec_sha256: ") for f in found)


# -- $ref -----------------------------------------------------------------------------------------
def test_relative_file_refs_and_openapi_30_conversion() -> None:
    spec = load_spec(str(LEGACY))
    assert spec.base_path == "/api"  # server variables take their defaults
    plan = spec.lookup("POST", "/pets")[0]
    assert plan is not None
    body = plan.bodies["application/json"]
    schema = body.schema
    props = schema["properties"]
    assert props["nickname"]["type"] == ["string", "null"]
    assert props["weight"]["exclusiveMinimum"] == 0
    assert "minimum" not in props["weight"]
    assert props["name"]["examples"] == ["Rex"]
    assert "example" not in props["name"]
    assert props["id"] is False  # readOnly refused in requests
    v = body.validator
    assert v is not None
    assert v.is_valid({"name": "Rex", "nickname": None, "owner": None})
    assert v.is_valid({"name": "Rex", "owner": {"name": "Ann"}})
    assert not v.is_valid({"name": "Rex", "owner": {"name": "Ann", "x": 1}})  # closed via allOf
    assert not v.is_valid({"name": "Rex", "weight": 0})  # exclusive
    # The response schema is converted but neither closed nor stripped.
    response = plan.operation.responses["201"][0]
    assert response.schema["properties"]["id"] == {"type": "integer", "readOnly": True}
    assert "additionalProperties" not in response.schema
    get = spec.lookup("GET", "/pets/1")[0]
    assert get is not None
    pet_id = get.params[0][0]
    assert pet_id.validator is not None
    assert not pet_id.validator.is_valid(0)
    assert not pet_id.validator.is_valid(2**63)  # int64 bounds from the format


def test_recursive_schema_keeps_defs(bank: OpenApiSpec) -> None:
    plan = bank.lookup("POST", "/folders")[0]
    assert plan is not None
    media = plan.bodies["application/json"]
    assert media.schema["$ref"] == "#/$defs/Folder"
    assert "Folder" in media.schema["$defs"]
    v = media.validator
    assert v is not None
    tree = {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}
    assert v.is_valid(tree)
    tree["children"][0]["children"][0]["evil"] = True  # type: ignore[index]
    assert not v.is_valid(tree)


def test_ref_problems_have_locations() -> None:
    found = problems(
        doc(
            {
                "/a": {
                    "post": ok(
                        requestBody={
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Missing"}
                                }
                            }
                        }
                    )
                },
                "/b": {"get": ok(parameters=[{"$ref": "https://evil.example/p.yaml#/x"}])},
            }
        )
    )
    assert found == [
        "api.yaml: paths['/a'].post.requestBody.content['application/json'].schema.$ref: "
        "$ref '#/components/schemas/Missing' does not resolve: no 'components'",
        "api.yaml: paths['/b'].get.parameters[0]: "
        "remote $ref 'https://evil.example/p.yaml#/x' refused (only local files)",
    ]


def test_parameter_ref_cycle_is_an_error() -> None:
    document = doc(
        {"/a": {"get": ok(parameters=[{"$ref": "#/components/parameters/A"}])}},
        components={
            "parameters": {
                "A": {"$ref": "#/components/parameters/B"},
                "B": {"$ref": "#/components/parameters/A"},
            }
        },
    )
    assert problems(document) == ["api.yaml: paths['/a'].get.parameters[0]: $ref cycle"]


def test_ref_siblings_in_31_are_kept() -> None:
    document = doc(
        {
            "/a": {
                "post": ok(
                    requestBody={
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "id": {"$ref": "#/components/schemas/Id", "readOnly": True},
                                        "n": {"$ref": "#/components/schemas/Id", "maxLength": 2},
                                    },
                                }
                            }
                        }
                    }
                )
            }
        },
        components={"schemas": {"Id": {"type": "string"}}},
    )
    plan = compile_document(document).lookup("POST", "/a")[0]
    assert plan is not None
    v = plan.bodies["application/json"].validator
    assert v is not None
    assert v.is_valid({"n": "ab"})
    assert not v.is_valid({"n": "abc"})
    assert not v.is_valid({"id": "x"})


def test_expansion_bomb_is_refused() -> None:
    schemas: dict[str, Any] = {"L0": {"type": "string"}}
    for i in range(1, 30):
        ref = {"$ref": f"#/components/schemas/L{i - 1}"}
        schemas[f"L{i}"] = {"type": "object", "properties": {"a": ref, "b": ref}}
    document = doc(
        {
            "/a": {
                "post": ok(
                    requestBody={
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/L29"}}
                        }
                    }
                )
            }
        },
        components={"schemas": schemas},
    )
    assert any("nodes once $refs are inlined" in p for p in problems(document))


# -- document errors ------------------------------------------------------------------------------
def test_every_problem_is_reported_once_with_its_location() -> None:
    document = doc(
        {
            "/users/{id}": {"get": ok(operationId="dup")},
            "/teams/{team}": {
                "get": ok(
                    operationId="dup",
                    parameters=[
                        {"name": "team", "in": "path", "schema": {"type": "string"}},
                        {"name": "extra", "in": "path", "required": True, "schema": {}},
                        {"name": "q", "in": "query", "schema": {"type": "strnig"}},
                        {
                            "name": "m",
                            "in": "path",
                            "required": True,
                            "style": "matrix",
                            "schema": {},
                        },
                    ],
                )
            },
            "/x": {"get": ok(security=[{"oauth": ["read"]}], **{"x-bastion-roles": []})},
            "/y/{a}": {
                "get": ok(parameters=[{"name": "a", "in": "path", "required": True, "schema": {}}])
            },
            "/y/{b}": {"get": ok()},
        }
    )
    found = problems(document)
    assert (
        "api.yaml: paths['/users/{id}'].get: path parameter 'id' is in the path but not declared"
        in found
    )
    assert (
        "api.yaml: paths['/teams/{team}'].get.parameters[0]: a path parameter must have required: true"
        in found
    )
    assert (
        "api.yaml: paths['/teams/{team}'].get: path parameter 'extra' is declared but not in the path"
        in found
    )
    assert any(
        p.startswith("api.yaml: paths['/teams/{team}'].get.parameters[2]: invalid schema at /type")
        for p in found
    )
    assert (
        "api.yaml: paths['/teams/{team}'].get.parameters[3]: style 'matrix' is not supported for path parameters"
        in found
    )
    assert (
        "api.yaml: paths['/teams/{team}'].get.operationId: 'dup' is also the operationId of GET /users/{id}"
        in found
    )
    assert (
        "api.yaml: paths['/x'].get.security[0]: 'oauth' is not in components.securitySchemes"
        in found
    )
    assert (
        "api.yaml: paths['/x'].get.x-bastion-roles: must be a non-empty list of role names" in found
    )
    assert "api.yaml: paths['/y/{b}']: same path as '/y/{a}'" in found


def test_owner_rule_problems() -> None:
    document = doc(
        {
            "/a/{id}": {
                "get": ok(
                    parameters=[{"name": "id", "in": "path", "required": True, "schema": {}}],
                    **{
                        "x-bastion-owner": [
                            {"param": "path.nope", "equals": "principal.sub"},
                            {"param": "path.id", "equals": "principal.password"},
                            {"param": "body.x", "resolver": "r"},
                            {"param": "path.id"},
                        ]
                    },
                )
            }
        }
    )
    found = problems(document)
    owner = "api.yaml: paths['/a/{id}'].get.x-bastion-owner: "
    assert owner + "[0]: param 'path.nope': the operation declares no such parameter" in found
    assert any(p.startswith(owner + "[1]: equals must be principal.sub") for p in found)
    assert owner + "[2]: param 'body.x': the operation declares no request body" in found
    assert owner + "[3]: a rule needs equals, in or resolver" in found


def test_invalid_regex_pattern_is_an_error() -> None:
    document = doc(
        {
            "/a": {
                "get": ok(
                    parameters=[
                        {"name": "q", "in": "query", "schema": {"type": "string", "pattern": "("}}
                    ]
                )
            }
        }
    )
    assert any("invalid schema" in p for p in problems(document))


# -- matching -------------------------------------------------------------------------------------
def test_literal_paths_win_over_templates(bank: OpenApiSpec) -> None:
    plan, params, _ = bank.lookup("GET", "/accounts/me")
    assert plan is not None
    assert plan.operation.operation_id == "getMyAccount"
    assert params == {}
    plan, params, _ = bank.lookup("GET", "/accounts/acc-1")
    assert plan is not None
    assert plan.operation.operation_id == "getAccount"
    assert params == {"account_id": "acc-1"}


def test_percent_decoding_and_partial_segments(bank: OpenApiSpec) -> None:
    assert bank.lookup("GET", "/accounts/a%20b")[1] == {"account_id": "a b"}
    # An encoded literal is the literal (the upstream decodes it too), never the template.
    plan = bank.lookup("GET", "/accounts/m%65")[0]
    assert plan is not None
    assert plan.operation.operation_id == "getMyAccount"
    plan, params, _ = bank.lookup("GET", "/files/report.json")
    assert plan is not None
    assert params == {"name": "report"}
    assert bank.lookup("GET", "/files/report.txt")[0] is None


def test_unknown_path_and_method(bank: OpenApiSpec) -> None:
    assert bank.lookup("GET", "/nope") == (None, {}, ())
    assert bank.lookup("GET", "/accounts/") == (None, {}, ())  # empty segment ≠ {account_id}
    assert bank.lookup("DELETE", "/accounts/1") == (None, {}, ("GET", "HEAD", "PATCH"))
    assert bank.match("DELETE", "/accounts/1") == (None, {}, True)
    assert bank.match("GET", "/nope") == (None, {}, False)
    head = bank.lookup("HEAD", "/health")[0]
    assert head is not None
    assert head.operation.method == "GET"


STATIC_PROBES = [
    "/health",
    "/health/",
    "/accounts/me",
    "/accounts/m%65",
    "/accounts/acc-1",
    "/accounts",
    "/folders",
    "/files/report.json",
    "/",
    "",
    "//health",
    "/HEALTH",
    "/nope",
]


@pytest.mark.parametrize("path", STATIC_PROBES)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PATCH", "DELETE"])
def test_paths_without_expressions_are_one_dict_lookup_with_the_matchers_answer(
    bank: OpenApiSpec, method: str, path: str
) -> None:
    """The shortcut for literal templates finds what the path tree finds (same plan, params,
    Allow list), for every method, with and without percent-encoding."""
    plan, params, allowed = bank.lookup(method, path)
    methods, tree_params = bank._matcher.match(path)
    if methods is None:
        assert (plan, params, allowed) == (None, {}, ())
        return
    expected = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
    assert plan is expected
    assert params == (tree_params if plan is not None else {})
    assert bool(allowed) == (plan is None)
    if "{" not in path and "%" not in path and path in bank._static:
        assert bank._static[path] == methods  # the shortcut was taken, and agrees


def test_matcher_backtracks_from_literal_to_template() -> None:
    m: PathMatcher[str] = PathMatcher()
    m.add("/users/me", "me")
    m.add("/users/{id}/posts", "posts")
    m.add("/users/{uid}", "user")
    assert m.match("/users/me") == ("me", {})
    assert m.match("/users/me/posts") == ("posts", {"id": "me"})
    assert m.match("/users/7") == ("user", {"uid": "7"})
    assert m.match("/users/7/other") == (None, {})
    with pytest.raises(TemplateError):
        m.add("/users/{other}", "x")
    with pytest.raises(TemplateError):
        m.add("/bad/{x", "x")


def test_base_path_default_is_empty() -> None:
    assert compile_document(doc({})).base_path == ""
    assert compile_document(doc({}, servers=[{"url": "/api/"}])).base_path == "/api"
    assert problems(doc({}, servers=[{"url": "https://{host}/v1", "variables": {"host": {}}}])) == [
        "api.yaml: servers[0].url: a server variable has no default"
    ]


# -- bastion config check -------------------------------------------------------------------------
def check(route: dict[str, Any]) -> list[str]:
    from bastion.config import parse_config
    from bastion.config.check import check_config

    cfg = parse_config(
        {
            "listeners": [{"bind": "127.0.0.1:8080"}],
            "api_keys": {"pepper": "p" * 40},
            "routes": [
                {
                    "name": "bank",
                    "upstream": "http://127.0.0.1:1",
                    "authn": {"methods": ["api_key"]},
                    "ratelimit": {"limits": [{"rate": 5}]},
                    **route,
                }
            ],
        },
        {},
    )
    return [str(f) for f in check_config(cfg)]


INVOICES = {"name": "invoices", "type": "http", "url": "http://127.0.0.1:9", "path": "/o/{id}"}


def test_config_check_flags_missing_owner_rules_and_security(tmp_path: Path) -> None:
    path = tmp_path / "api.yaml"
    path.write_text(
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\n"
        "components: {securitySchemes: {k: {type: apiKey, in: header, name: k}}}\n"
        "paths:\n"
        "  /users/{userId}:\n"
        "    get:\n"
        "      operationId: getUser\n"
        "      security: [{k: []}]\n"
        "      parameters: [{name: userId, in: path, required: true, schema: {type: string}}]\n"
        "      responses: {'200': {description: ok}}\n"
        "  /files/{key}:\n"
        "    get:\n"
        "      parameters:\n"
        "        - {name: key, in: path, required: true, schema: {type: string, format: uuid}}\n"
        "      responses: {'200': {description: ok}}\n"
    )
    found = check({"openapi": {"spec": str(path)}})
    where = "routes[0].openapi.spec: "
    assert found == [
        where + "GET /users/{userId} (getUser): path parameter 'userId' looks like an object id "
        "but the operation has no x-bastion-owner rule (BOLA)",
        where + "GET /files/{key}: path parameter 'key' looks like an object id but the operation "
        "has no x-bastion-owner rule (BOLA)",
        where + "GET /files/{key}: no security requirement (neither the operation nor the "
        "document declares one); only an authenticated caller is required",
    ]


def test_config_check_flags_requirements_no_credential_meets(tmp_path: Path) -> None:
    path = tmp_path / "api.yaml"
    path.write_text(
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\n"
        "components:\n"
        "  securitySchemes:\n"
        "    basic: {type: http, scheme: basic}\n"
        "    oauth: {type: oauth2, flows: {}}\n"
        "    key: {type: apiKey, in: header, name: k}\n"
        "paths:\n"
        "  /a:\n"
        "    get:\n"
        "      security: [{basic: []}, {oauth: [], key: []}, {key: []}]\n"
        "      responses: {'200': {description: ok}}\n"
    )
    never = (
        "(JWTs: oauth2, openIdConnect, http bearer; API keys: apiKey, http bearer): that "
        "requirement is never met"
    )
    where = "routes[0].openapi.spec: GET /a: no credential Bastion verifies presents "
    assert check({"openapi": {"spec": str(path)}}) == [
        f"{where}'basic' {never}",
        f"{where}'oauth', 'key' {never}",
    ]


def test_config_check_is_quiet_for_the_bank_and_flags_weakened_settings() -> None:
    assert check({"openapi": {"spec": str(BANK)}, "authz": {"resolvers": [INVOICES]}}) == []
    weak = {
        "openapi": {
            "spec": str(BANK),
            "enforce": False,
            "additional_properties": "as_declared",
            "undeclared_query": "allow",
        },
        "authz": {
            "enforce": False,
            "resolvers": [{**INVOICES, "url": "http://10.0.0.5:8080"}],
        },
    }
    found = check(weak)
    for key in (
        "openapi.enforce",
        "openapi.additional_properties",
        "openapi.undeclared_query",
        "authz.enforce",
        "authz.resolvers[0].url",
    ):
        assert any(f.startswith(f"routes[0].{key}: ") for f in found), key


def test_config_check_errors_for_broken_specs_and_unknown_resolvers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        check({"openapi": {"spec": str(BANK)}})
    assert info.value.problems[0].startswith(
        "routes[0].authz.resolvers: x-bastion-owner of getInvoice names resolver 'invoices'"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("openapi: 3.1.0\npaths:\n  /a/{id}:\n    get: {responses: {}}\n")
    with pytest.raises(ConfigError) as info:
        check({"openapi": {"spec": str(bad)}})
    assert info.value.problems == [
        f"routes[0].openapi.spec: {bad}: paths['/a/{{id}}'].get: path parameter 'id' is in the "
        "path but not declared"
    ]
