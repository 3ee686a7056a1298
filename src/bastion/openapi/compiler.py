"""Walks an OpenAPI 3.0/3.1 document and builds its operations (used by ``spec.py``).

Every problem is collected as ``location: message``, so a document with several mistakes is
reported whole, once, at start-up.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs

from bastion.openapi.loader import Documents, SpecProblem, Where
from bastion.openapi.matcher import TemplateError, parse_template
from bastion.openapi.model import (
    Location,
    MediaSchema,
    Operation,
    Parameter,
    credential_kinds,
)
from bastion.openapi.owner import parse_owner_rules
from bastion.openapi.params import ParamCodec, codec_for
from bastion.openapi.schema import BuildOptions, Schema, SchemaBuilder, nesting_bound

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_LOCATIONS: tuple[Location, ...] = ("path", "query", "header", "cookie")
#: OpenAPI: header parameters with these names are ignored (the protocol sets them).
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})


def is_json(media_type: str) -> bool:
    """``application/json`` and every ``+json`` type."""
    return media_type == "application/json" or media_type.endswith("+json")


class DocumentCompiler:
    """State of one compilation; :meth:`operation` builds one operation."""

    def __init__(
        self,
        docs: Documents,
        *,
        openapi30: bool,
        close_objects: bool,
        validate_formats: bool,
        problems: list[str],
    ) -> None:
        self.docs = docs
        self.problems = problems
        self._formats = validate_formats
        self.requests = SchemaBuilder(
            docs, BuildOptions(openapi30, close_objects, strip_read_only=True), problems
        )
        self.responses = SchemaBuilder(docs, BuildOptions(openapi30), problems)
        root = docs.root
        components = root.get("components") if isinstance(root.get("components"), dict) else {}
        schemes = components.get("securitySchemes") if isinstance(components, dict) else None
        self.schemes = {str(k) for k in schemes} if isinstance(schemes, dict) else set()
        self.scheme_kinds: dict[str, frozenset[str]] = {}
        for key, raw in schemes.items() if isinstance(schemes, dict) else ():
            name = str(key)
            where: Where = (docs.root_id, ("components", "securitySchemes", name))
            try:
                scheme, _ = docs.deref(raw, where)
            except SpecProblem as exc:
                self.problem(where, str(exc))
                continue
            self.scheme_kinds[name] = credential_kinds(scheme)
        self.doc_security = self.security(root.get("security"), (docs.root_id, ("security",)))

    def problem(self, where: Where, message: str) -> None:
        self.problems.append(f"{self.docs.loc(where)}: {message}")

    def validator(self, schema: Schema, where: Where) -> Any:
        """The compiled validator, or None (problem recorded) for an invalid schema."""
        try:
            jsonschema_rs.meta.validate(schema)
        except jsonschema_rs.ValidationError as exc:
            pointer = "/" + "/".join(str(p) for p in exc.instance_path)
            self.problem(where, f"invalid schema at {pointer}: {exc.message.splitlines()[0]}")
            return None
        try:
            return jsonschema_rs.validator_for(schema, validate_formats=self._formats)
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
            self.problem(where, f"invalid schema: {str(exc).splitlines()[0]}")
            return None

    def security(self, value: Any, where: Where) -> tuple[dict[str, tuple[str, ...]], ...] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            self.problem(where, "security must be a list of requirement objects")
            return ()
        out: list[dict[str, tuple[str, ...]]] = []
        for i, req in enumerate(value):
            at: Where = (where[0], (*where[1], i))
            if not isinstance(req, dict):
                self.problem(at, "a security requirement must be a mapping")
                continue
            item: dict[str, tuple[str, ...]] = {}
            for scheme, scopes in req.items():
                if str(scheme) not in self.schemes:
                    self.problem(at, f"{scheme!r} is not in components.securitySchemes")
                if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                    self.problem(at, f"scopes of {scheme!r} must be a list of strings")
                    continue
                item[str(scheme)] = tuple(scopes)
            out.append(item)
        return tuple(out)

    # -- parameters ---------------------------------------------------------------------------
    def _param(self, raw: Any, where: Where) -> tuple[dict[str, Any], Where] | None:
        try:
            p, at = self.docs.deref(raw, where)
        except SpecProblem as exc:
            self.problem(where, str(exc))
            return None
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
            self.problem(at, "a parameter needs a name")
            return None
        if p.get("in") not in _LOCATIONS:
            self.problem(at, "in must be path, query, header or cookie")
            return None
        if ("schema" in p) == ("content" in p):
            self.problem(at, "a parameter needs exactly one of schema and content")
            return None
        if p["in"] == "path" and p.get("required") is not True:
            self.problem(at, "a path parameter must have required: true")
        return p, at

    def parameters(
        self, item_params: Any, op_params: Any, item_where: Where, op_where: Where
    ) -> dict[tuple[str, str], tuple[dict[str, Any], Where]]:
        """Path-item and operation parameters merged by (in, name); the operation wins."""
        merged: dict[tuple[str, str], tuple[dict[str, Any], Where]] = {}
        for raw_list, base in ((item_params, item_where), (op_params, op_where)):
            if raw_list is None:
                continue
            at_list: Where = (base[0], (*base[1], "parameters"))
            if not isinstance(raw_list, list):
                self.problem(at_list, "parameters must be a list")
                continue
            level: set[tuple[str, str]] = set()
            for i, raw in enumerate(raw_list):
                found = self._param(raw, (at_list[0], (*at_list[1], i)))
                if found is None:
                    continue
                p, at = found
                name = p["name"].lower() if p["in"] == "header" else p["name"]
                key = (p["in"], name)
                if key in level:
                    self.problem(at, f"{p['in']} parameter {p['name']!r} is declared twice")
                level.add(key)
                merged[key] = (p, at)
        return merged

    def _param_schema(self, p: dict[str, Any], at: Where) -> tuple[Schema, bool]:
        if "schema" in p:
            return self.requests.build(p["schema"], (at[0], (*at[1], "schema"))), False
        content = p["content"]
        if not isinstance(content, dict) or len(content) != 1:
            self.problem(at, "content of a parameter must have exactly one media type")
            return {}, False
        media, entry = next(iter(content.items()))
        schema = entry.get("schema", {}) if isinstance(entry, dict) else {}
        built = self.requests.build(schema, (at[0], (*at[1], "content", str(media), "schema")))
        return built, is_json(str(media).lower())

    # -- bodies -------------------------------------------------------------------------------
    def content(self, content: Any, where: Where, *, request: bool) -> tuple[MediaSchema, ...]:
        if content is None:
            return ()
        if not isinstance(content, dict):
            self.problem(where, "content must map media types to media type objects")
            return ()
        builder = self.requests if request else self.responses
        out: list[MediaSchema] = []
        for media, entry in content.items():
            at: Where = (where[0], (*where[1], str(media)))
            if "/" not in str(media):
                self.problem(at, "not a media type (type/subtype)")
                continue
            raw = entry.get("schema", {}) if isinstance(entry, dict) else {}
            schema = builder.build(raw, (at[0], (*at[1], "schema")))
            media_type = str(media).split(";", 1)[0].strip().lower()
            out.append(MediaSchema(media_type, schema, self.validator(schema, at)))
        return tuple(out)

    def request_body(self, raw: Any, where: Where) -> tuple[tuple[MediaSchema, ...], bool]:
        if raw is None:
            return (), False
        try:
            body, at = self.docs.deref(raw, where)
        except SpecProblem as exc:
            self.problem(where, str(exc))
            return (), False
        if not isinstance(body, dict):
            self.problem(at, "requestBody must be a mapping")
            return (), False
        media = self.content(body.get("content"), (at[0], (*at[1], "content")), request=True)
        return media, body.get("required") is True

    def responses_of(self, raw: Any, where: Where) -> dict[str, tuple[MediaSchema, ...]]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem(where, "responses must be a mapping")
            return {}
        out: dict[str, tuple[MediaSchema, ...]] = {}
        for status, entry in raw.items():
            at: Where = (where[0], (*where[1], str(status)))
            try:
                resp, rat = self.docs.deref(entry, at)
            except SpecProblem as exc:
                self.problem(at, str(exc))
                continue
            content = resp.get("content") if isinstance(resp, dict) else None
            out[str(status).upper()] = self.content(
                content, (rat[0], (*rat[1], "content")), request=False
            )
        return out

    # -- one operation ------------------------------------------------------------------------
    def operation(
        self, template: str, method: str, op: Any, item: dict[str, Any], item_where: Where
    ) -> tuple[Operation, tuple[tuple[Parameter, ParamCodec], ...], float] | None:
        """The operation, its parameter codecs and the nesting bound of its JSON bodies."""
        where: Where = (item_where[0], (*item_where[1], method))
        self.requests.read_only_names = set()
        if not isinstance(op, dict):
            self.problem(where, "an operation must be a mapping")
            return None
        try:
            _, template_names = parse_template(template)
        except TemplateError:
            template_names = []  # reported once for the path
        merged = self.parameters(item.get("parameters"), op.get("parameters"), item_where, where)
        declared_path = {name for (loc, name) in merged if loc == "path"}
        for name in template_names:
            if name not in declared_path:
                self.problem(where, f"path parameter {name!r} is in the path but not declared")
        for name in sorted(declared_path - set(template_names)):
            self.problem(where, f"path parameter {name!r} is declared but not in the path")
        params: list[tuple[Parameter, ParamCodec]] = []
        for (loc, name), (p, at) in merged.items():
            if loc == "header" and name in _IGNORED_HEADERS:
                continue
            schema, json_content = self._param_schema(p, at)
            try:
                codec = codec_for(p, schema, json_content=json_content)
            except SpecProblem as exc:
                self.problem(at, str(exc))
                continue
            required = p.get("required") is True
            param = Parameter(name, loc, required, schema, self.validator(schema, at))  # type: ignore[arg-type]
            params.append((param, codec))
        body, body_required = self.request_body(
            op.get("requestBody"), (where[0], (*where[1], "requestBody"))
        )
        security = (
            self.security(op["security"], (where[0], (*where[1], "security")))
            if "security" in op
            else self.doc_security
        )
        roles = op.get("x-bastion-roles")
        if roles is not None and (
            not isinstance(roles, list)
            or not roles
            or not all(isinstance(r, str) and r for r in roles)
        ):
            self.problem(
                (where[0], (*where[1], "x-bastion-roles")), "must be a non-empty list of role names"
            )
            roles = None
        owner = op.get("x-bastion-owner")
        rules, owner_problems = parse_owner_rules(owner, set(merged), bool(body))
        for message in owner_problems:
            self.problem((where[0], (*where[1], "x-bastion-owner")), message)
        operation_id = op.get("operationId")
        tags = op.get("tags")
        operation = Operation(
            method=method.upper(),
            path_template=template,
            operation_id=operation_id if isinstance(operation_id, str) else None,
            parameters=tuple(p for p, _ in params),
            request_body=body,
            request_body_required=body_required,
            security=security,
            roles=frozenset(roles) if roles is not None else None,
            owner_rule=owner,
            responses=self.responses_of(op.get("responses"), (where[0], (*where[1], "responses"))),
            tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
            extensions={str(k): v for k, v in op.items() if str(k).startswith("x-")},
            owner_rules=rules,
            scheme_kinds=self.scheme_kinds,
        )
        bound = max((nesting_bound(m.schema) for m in body if is_json(m.media_type)), default=0.0)
        return operation, tuple(params), bound
