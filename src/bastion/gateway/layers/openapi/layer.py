"""The openapi layer: a request must be a declared operation with valid parameters and body.

Per request, synchronously (:meth:`OpenApiLayer.check`; it never needs I/O): strip the route
prefix (with ``strip_prefix``) and the document's base path, find the operation (404
``openapi.operation_unknown`` for an undeclared path, 405
``openapi.method_not_allowed`` + ``Allow`` for an undeclared method — both marked
``ex.annotations["shadow_endpoint"]``), then check path, query, header and cookie parameters
(coerced from strings to the schema's types) and the body: its Content-Type must be declared
(415), JSON must parse (400) and match the schema (400). A JSON body the native fast path
(``bastion.openapi.fastcheck``) proves valid is not parsed into Python objects at all, unless
an ownership rule reads it; any other takes the full path (orjson, jsonschema-rs). Undeclared
query parameters are refused unless the config allows them. Request-body objects are closed
and ``readOnly`` properties refused by the compiled schemas themselves (see
``bastion.openapi.schema``).

What later layers get in ``ex.annotations``: the :class:`~bastion.openapi.model.Operation`,
the path parameters, every coerced parameter and the parsed body (only when the full path
parsed it, or an ownership rule needs it; keys in ``bastion.openapi.model``). With
``enforce: false`` nothing is refused: ``ex.annotations["openapi_shadow"]`` says what would
have been.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote_plus

import orjson

from bastion.core.exchange import Exchange, Headers, Reply
from bastion.errors import (
    BastionError,
    InvalidRequest,
    OperationMethodNotAllowed,
    OperationUnknown,
    UnsupportedMediaType,
)
from bastion.gateway.layers.base import Layer
from bastion.gateway.layers.openapi.config import OpenApiConfig
from bastion.gateway.layers.openapi.describe import describe, first_error, segment
from bastion.openapi.compiler import is_json
from bastion.openapi.fastcheck import FastChecker, fast_checker, repeats_a_key
from bastion.openapi.model import (
    BODY_ANNOTATION,
    OPERATION_ANNOTATION,
    PARAMS_ANNOTATION,
    PATH_PARAMS_ANNOTATION,
)
from bastion.openapi.params import MISSING, ParamError, coerce, schema_types
from bastion.openapi.spec import OpenApiSpec, OperationPlan

__all__ = ["OpenApiLayer"]

log = logging.getLogger("bastion.openapi")

MAX_QUERY_FIELDS = 1000
#: Content-Type values remembered with their media type (cleared when full).
MAX_MEDIA_TYPES = 256
FORM = "application/x-www-form-urlencoded"
_ARRAY = frozenset({"array"})


def parse_query(query: str) -> dict[str, list[str]]:
    """Name → every value, decoded as ``urllib.parse.parse_qsl(keep_blank_values=True)`` does
    (``+`` is a space, ``%xx`` UTF-8 with replacement); ValueError past
    ``MAX_QUERY_FIELDS`` fields. Decoding is skipped for the (usual) plain parts."""
    parts = query.split("&")
    if len(parts) > MAX_QUERY_FIELDS:
        raise ValueError("too many fields")
    multi: dict[str, list[str]] = {}
    for part in parts:
        if not part:
            continue
        k, _, v = part.partition("=")
        if "%" in k or "+" in k:
            k = unquote_plus(k)
        if "%" in v or "+" in v:
            v = unquote_plus(v)
        values = multi.get(k)
        if values is None:
            multi[k] = [v]
        else:
            values.append(v)
    return multi


def parse_cookies(headers: Headers) -> dict[str, list[str]]:
    """Cookie name → every value sent (RFC 6265 ``name=value; …``, quotes removed)."""
    out: dict[str, list[str]] = {}
    for line in headers.get_all("cookie"):
        for part in line.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name:
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                out.setdefault(name, []).append(value)
    return out


def form_document(
    multi: dict[str, list[str]], types: dict[str, frozenset[str] | None]
) -> dict[str, Any] | None:
    """A form body as the object its schema describes (values coerced per property type;
    array properties keep every value); None when a non-array field is repeated."""
    doc: dict[str, Any] = {}
    for key, values in multi.items():
        prop = types.get(key)
        if prop == _ARRAY:
            doc[key] = values
        elif len(values) > 1:
            return None
        else:
            doc[key] = coerce(values[0], prop)
    return doc


def too_deep(value: Any, limit: int) -> bool:
    """Whether objects/arrays in ``value`` nest deeper than ``limit`` (iterative walk)."""
    if type(value) is not dict and type(value) is not list:
        return False  # a scalar body nests nothing
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        for c in children:
            if type(c) is dict or type(c) is list:
                stack.append((c, depth + 1))
    return False


class OpenApiLayer(Layer):
    """Enforces one route's OpenAPI document. ``route_prefix``/``strip_prefix`` are the
    route's, so the path matched is the one the upstream receives."""

    name = "openapi"

    def __init__(
        self,
        config: OpenApiConfig,
        spec: OpenApiSpec,
        *,
        route_prefix: str = "/",
        strip_prefix: bool = False,
    ) -> None:
        self._spec = spec
        self._enforce = config.enforce
        self._base = config.base_path if config.base_path is not None else spec.base_path
        self._strip = route_prefix.rstrip("/") if strip_prefix else ""
        self._allow_undeclared_query = config.undeclared_query == "allow"
        self._max_depth = config.max_body_depth
        for weakened, setting in (
            (config.additional_properties != "closed", "additional_properties: as_declared"),
            (config.undeclared_query != "refuse", "undeclared_query: allow"),
            (config.unsafe_allow_http_spec, "unsafe_allow_http_spec: true"),
            (not config.enforce, "enforce: false (shadow mode)"),
        ):
            if weakened:
                log.warning("openapi %s for %s", setting, config.spec)
        # Content-Type value → (media type, whether it is JSON).
        self._media_types: dict[str, tuple[str, bool]] = {}
        # Form bodies: property name → types, per declared form schema (by identity).
        self._form_types: dict[int, dict[str, frozenset[str] | None]] = {}
        # JSON bodies: the fast path's checker (see bastion.openapi.fastcheck), per declared
        # schema (by identity), and whether an ownership rule reads the parsed body.
        self._fast: dict[int, tuple[FastChecker, bool]] = {}
        for plan in spec.plans:
            reads_body = any(r.location == "body" for r in plan.operation.owner_rules)
            for media in plan.bodies.values():
                if is_json(media.media_type) and media.validator is not None:
                    fast = fast_checker(
                        media.schema, formats=config.validate_formats, max_depth=self._max_depth
                    )
                    if fast is not None:
                        self._fast[id(media)] = (fast, reads_body)
                props = media.schema.get("properties") if isinstance(media.schema, dict) else None
                if isinstance(props, dict):
                    self._form_types[id(media)] = {k: schema_types(v) for k, v in props.items()}

    @property
    def spec(self) -> OpenApiSpec:
        """The compiled document this layer enforces."""
        return self._spec

    def _refuse(self, ex: Exchange, err: BastionError) -> Reply | None:
        if self._enforce:
            return ex.deny(err)
        ex.record_finding("openapi_shadow", f"{err.code}: {err.detail or err.diagnosis or ''}")
        return None

    def check(self, ex: Exchange) -> Reply | None:
        """Match the operation, check parameters and body; answer 400/404/405/415 or continue.
        Never needs I/O."""
        req = ex.request
        path = req.path
        strip = self._strip
        if strip and path.startswith(strip):
            path = path[len(strip) :] or "/"
        base = self._base
        if base:
            if not path.startswith(base) or (len(path) > len(base) and path[len(base)] != "/"):
                ex.record_finding("shadow_endpoint", True)
                return self._refuse(ex, OperationUnknown(diagnosis="outside the base path"))
            path = path[len(base) :] or "/"
        if ";" in path:
            # Matrix parameters: many servers drop ";…" from a segment before routing, so
            # /admin;x/users could reach /admin/users while matching a template here.
            ex.record_finding("shadow_endpoint", True)
            return self._refuse(ex, OperationUnknown(diagnosis="';' in the path"))
        plan, path_params, allowed = self._spec.lookup(req.method, path)
        if plan is None:
            ex.record_finding("shadow_endpoint", True)
            if allowed:
                err: BastionError = OperationMethodNotAllowed(
                    diagnosis=f"{req.method} not declared for this path",
                    headers=[("allow", ", ".join(allowed))],
                )
            else:
                err = OperationUnknown(diagnosis="no operation has this path")
            return self._refuse(ex, err)
        ann = ex.annotations
        ann[OPERATION_ANNOTATION] = plan.operation
        ann[PATH_PARAMS_ANNOTATION] = path_params
        problem = None
        if req.query or plan.params:
            problem = self._parameters(ex, plan, path_params)
        if problem is None and (req.body or plan.operation.request_body_required):
            problem = self._body(ex, plan)
        if problem is None:
            return None
        return self._refuse(ex, problem)

    def _parameters(
        self, ex: Exchange, plan: OperationPlan, path_params: dict[str, str]
    ) -> BastionError | None:
        req = ex.request
        multi: dict[str, list[str]] = {}
        if req.query:
            try:
                multi = parse_query(req.query)
            except ValueError:
                return InvalidRequest(f"query: more than {MAX_QUERY_FIELDS} parameters")
            if not self._allow_undeclared_query:
                names, prefixes = plan.query_names, plan.query_prefixes
                for key in multi:
                    if key not in names and not (prefixes and key.startswith(prefixes)):
                        return InvalidRequest(f"query.{segment(key)}: not declared")
        if not plan.params:
            return None
        values: dict[str, dict[str, Any]] = {"path": {}, "query": {}, "header": {}, "cookie": {}}
        cookies: dict[str, list[str]] | None = None
        for param, codec in plan.params:
            loc = param.location
            raw: str | None = None
            try:
                if loc == "path":
                    raw = path_params.get(param.name)
                    value = MISSING if raw is None else codec.from_string(raw)
                elif loc == "query":
                    if codec.reads_name:
                        sent = multi.get(param.name)
                        if sent is None:
                            value = MISSING
                        else:
                            value = codec.from_query(multi)
                            raw = sent[0] if len(sent) == 1 else None
                    else:
                        value = codec.from_query(multi) if multi else MISSING
                else:
                    if loc == "header":
                        sent = req.headers.get_all(param.name)
                    else:
                        if cookies is None:
                            cookies = parse_cookies(req.headers)
                        sent = cookies.get(param.name, [])
                    if not sent:
                        value = MISSING
                    elif len(sent) > 1 and codec.kind != "array":
                        raise ParamError("given more than once")
                    else:
                        raw = ",".join(sent)
                        value = codec.from_string(raw)
            except ParamError as exc:
                return InvalidRequest(f"{codec.label}: {exc}")
            if value is MISSING:
                if param.required:
                    return InvalidRequest(f"{codec.label}: required")
                continue
            validator = param.validator
            if validator is not None and not validator.is_valid(value):
                # A value coerced from a string may be meant as the string ("007", "true").
                if codec.kind == "value" and raw is not None and validator.is_valid(raw):
                    value = raw
                else:
                    err = first_error(validator, value)
                    detail = describe(err, codec.label) if err else f"{codec.label}: invalid"
                    return InvalidRequest(detail)
            values[loc][param.name] = value
        ex.annotations[PARAMS_ANNOTATION] = values
        return None

    def _body(self, ex: Exchange, plan: OperationPlan) -> BastionError | None:
        req = ex.request
        body = req.body
        if not body:
            if plan.operation.request_body_required:
                return InvalidRequest("body: required")
            return None
        if not plan.bodies:
            return InvalidRequest("body: the operation takes no request body")
        content_type = req.headers.get("content-type")
        if content_type is None:
            return UnsupportedMediaType("content-type: required")
        known = self._media_types.get(content_type)
        if known is None:
            media_type = content_type.split(";", 1)[0].strip().lower()
            known = (media_type, is_json(media_type))
            if len(self._media_types) >= MAX_MEDIA_TYPES:
                self._media_types.clear()  # bounded: the header is client input
            self._media_types[content_type] = known
        media_type, json_body = known
        media = plan.body_for(media_type)
        if media is None:
            declared = ", ".join(sorted(plan.bodies))
            return UnsupportedMediaType(f"content-type: not declared (declared: {declared})")
        if json_body:
            fast = self._fast.get(id(media))
            if fast is not None and fast[0].check(body):
                # Proven valid without Python objects; parsed only for an ownership rule.
                if fast[1]:
                    ex.annotations[BODY_ANNOTATION] = orjson.loads(body)
                return None
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                return InvalidRequest("body: malformed JSON")
            if plan.body_nesting > self._max_depth and too_deep(doc, self._max_depth):
                return InvalidRequest(f"body: nested deeper than {self._max_depth}")
        elif media_type == FORM:
            try:
                text = body.decode("utf-8")
                multi = parse_query(text)
            except (UnicodeDecodeError, ValueError):
                return InvalidRequest("body: malformed form")
            doc = form_document(multi, self._form_types.get(id(media), {}))
            if doc is None:
                return InvalidRequest("body: a form field is given more than once")
        else:
            return None  # binary, multipart …: the media type is declared; nothing to parse
        ex.annotations[BODY_ANNOTATION] = doc
        validator = media.validator
        if validator is not None and not validator.is_valid(doc):
            err = first_error(validator, doc)
            return InvalidRequest(describe(err, "body", plan.read_only) if err else "body: invalid")
        if json_body and repeats_a_key(body):
            # orjson kept the last value (the one validated); the upstream's parser may take
            # the first. Asked last: a body refused anyway costs no second parse.
            return InvalidRequest("body: an object repeats a key")
        return None
