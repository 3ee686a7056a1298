"""Load an OpenAPI 3.0/3.1 document once at start-up and compile it for per-request use.

:func:`load_spec` reads a file or URL; :func:`compile_document` takes an already parsed
document. Either returns an :class:`OpenApiSpec` (a :class:`~bastion.openapi.model.
CompiledSpec`) or raises :class:`~bastion.errors.ConfigError` listing every problem as
``location: message`` — bad YAML, an unresolved ``$ref``, an invalid schema, duplicate
``operationId``s, a templated path parameter that is not declared, an unsupported style.

At run time :meth:`OpenApiSpec.lookup` costs one dict lookup for a path without template
expressions (``/orders``), else a walk down the path tree (a dict lookup per literal segment),
and a dict lookup for the method; every schema is already a compiled ``jsonschema-rs``
validator.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bastion.errors import ConfigError
from bastion.openapi.compiler import METHODS, DocumentCompiler
from bastion.openapi.loader import (
    DEFAULT_MAX_BYTES,
    Documents,
    SpecProblem,
    fetch_url,
    parse_text,
    read_file,
)
from bastion.openapi.matcher import PathMatcher, TemplateError, parse_template, shape
from bastion.openapi.model import MediaSchema, Operation, Parameter
from bastion.openapi.params import ParamCodec

__all__ = ["OpenApiSpec", "OperationPlan", "SpecOptions", "compile_document", "load_spec"]


@dataclass(frozen=True, slots=True)
class SpecOptions:
    """How a document is read and compiled. Two specs compiled with different options are
    different specs (cache by ``(source, options)``)."""

    #: Close request-body objects that do not state additionalProperties (mass assignment).
    close_request_bodies: bool = True
    #: Check ``format`` (date-time, uuid, email, ipv4 …) in request values.
    validate_formats: bool = True
    fetch_timeout: float = 10.0
    max_bytes: int = DEFAULT_MAX_BYTES
    unsafe_allow_http: bool = False
    #: SHA-256 (hex, lower case) the document's bytes must have; None: not pinned.
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class OperationPlan:
    """An operation with what the ``openapi`` layer needs to check a request against it."""

    operation: Operation
    params: tuple[tuple[Parameter, ParamCodec], ...]
    query_names: frozenset[str]
    query_prefixes: tuple[str, ...]
    bodies: dict[str, MediaSchema]  # media type (lower-case, may be a wildcard) → schema
    body_nesting: float  # deepest nesting a valid JSON body can have (inf: unbounded)
    read_only: frozenset[str] = field(default_factory=frozenset)

    def body_for(self, media_type: str) -> MediaSchema | None:
        """The declared body for ``media_type``: exact, then ``type/*``, then ``*/*``."""
        bodies = self.bodies
        found = bodies.get(media_type)
        if found is None and bodies:
            found = bodies.get(media_type.split("/", 1)[0] + "/*") or bodies.get("*/*")
        return found


class OpenApiSpec:
    """A compiled document: operations, path matcher, base path. Immutable once built."""

    def __init__(
        self,
        title: str,
        version: str,
        base_path: str,
        matcher: PathMatcher[dict[str, OperationPlan]],
        plans: list[OperationPlan],
        source: str,
    ) -> None:
        self._title = title
        self.version = version
        self._base_path = base_path
        self._matcher = matcher
        # Paths whose template has no expression, as written: one dict lookup finds what the
        # matcher would (its greedy descent takes the literal segment first at every level).
        self._static: dict[str, dict[str, OperationPlan]] = {}
        for plan in plans:
            template = plan.operation.path_template
            if "{" not in template and "%" not in template:
                self._static.setdefault(template, {})[plan.operation.method] = plan
        self._plans = tuple(plans)
        self._operations = tuple(p.operation for p in plans)
        self.source = source

    @property
    def title(self) -> str:
        return self._title

    @property
    def operations(self) -> tuple[Operation, ...]:
        return self._operations

    @property
    def plans(self) -> tuple[OperationPlan, ...]:
        return self._plans

    @property
    def base_path(self) -> str:
        return self._base_path

    def lookup(
        self, method: str, path: str
    ) -> tuple[OperationPlan | None, dict[str, str], tuple[str, ...]]:
        """``(plan, path params, methods of the path)``: the methods are empty when the path
        is unknown, and name what ``Allow`` should say when the method is not declared. HEAD
        uses the GET operation when the document declares no HEAD."""
        methods = self._static.get(path) if "%" not in path else None
        if methods is not None:
            params: dict[str, str] = {}
        else:
            methods, params = self._matcher.match(path)
            if methods is None:
                return None, {}, ()
        plan = methods.get(method)
        if plan is None and method == "HEAD":
            plan = methods.get("GET")
        if plan is None:
            return None, {}, _allow(methods)
        return plan, params, ()

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """See :meth:`bastion.openapi.model.CompiledSpec.match`."""
        plan, params, allowed = self.lookup(method, path)
        if plan is None:
            return None, {}, bool(allowed)
        return plan.operation, params, True


def _allow(methods: dict[str, OperationPlan]) -> tuple[str, ...]:
    names = set(methods)
    if "GET" in names:
        names.add("HEAD")
    return tuple(sorted(names))


def _base_path(root: dict[str, Any], compiler: DocumentCompiler) -> str:
    servers = root.get("servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        return ""
    server = servers[0]
    url = server.get("url")
    where = (compiler.docs.root_id, ("servers", 0, "url"))
    if not isinstance(url, str):
        compiler.problem(where, "must be a string")
        return ""
    variables = server.get("variables") if isinstance(server.get("variables"), dict) else {}
    for name, var in (variables or {}).items():
        default = var.get("default") if isinstance(var, dict) else None
        if default is not None:
            url = url.replace("{" + str(name) + "}", str(default))
    if "{" in url:
        compiler.problem(where, "a server variable has no default")
        return ""
    path = urlsplit(url).path.rstrip("/")
    return path if not path or path.startswith("/") else "/" + path


def compile_document(
    doc: Any,
    *,
    source: str = "<inline>",
    root_id: str | None = None,
    from_url: bool = False,
    options: SpecOptions | None = None,
) -> OpenApiSpec:
    """Compile a parsed document. ``root_id`` (an absolute file path or URL) anchors relative
    ``$ref``s; ``source`` labels problems. ConfigError lists every problem found."""
    options = options or SpecOptions()
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise ConfigError([f"{source}: an OpenAPI document must be a mapping"])
    version = doc.get("openapi")
    if not isinstance(version, str) or not version.startswith(("3.0.", "3.1.")):
        found = "Swagger 2.0" if "swagger" in doc else repr(version)
        raise ConfigError([f"{source}: openapi: only 3.0.x and 3.1.x are supported, not {found}"])
    root = root_id or str(Path(source).resolve())
    docs = Documents(root, doc, label=source, from_url=from_url, max_bytes=options.max_bytes)
    compiler = DocumentCompiler(
        docs,
        openapi30=version.startswith("3.0."),
        close_objects=options.close_request_bodies,
        validate_formats=options.validate_formats,
        problems=problems,
    )
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    title = str((info or {}).get("title", ""))
    base_path = _base_path(doc, compiler)
    matcher: PathMatcher[dict[str, OperationPlan]] = PathMatcher()
    plans: list[OperationPlan] = []
    shapes: dict[str, str] = {}
    ids: dict[str, str] = {}
    paths = doc.get("paths", {})
    if not isinstance(paths, dict):
        compiler.problem((root, ("paths",)), "paths must be a mapping")
        paths = {}
    for raw_template, raw_item in paths.items():
        template = str(raw_template)
        where = (root, ("paths", template))
        try:
            parse_template(template)
        except TemplateError as exc:
            compiler.problem(where, str(exc))
            continue
        if shape(template) in shapes:
            compiler.problem(where, f"same path as {shapes[shape(template)]!r}")
            continue
        shapes[shape(template)] = template
        try:
            item, item_where = docs.deref(raw_item, where)
        except SpecProblem as exc:
            compiler.problem(where, str(exc))
            continue
        if not isinstance(item, dict):
            compiler.problem(where, "a path item must be a mapping")
            continue
        methods: dict[str, OperationPlan] = {}
        for method in METHODS:
            if method not in item:
                continue
            built = compiler.operation(template, method, item[method], item, item_where)
            if built is None:
                continue
            op, params, nesting = built
            if op.operation_id is not None:
                if op.operation_id in ids:
                    compiler.problem(
                        (item_where[0], (*item_where[1], method, "operationId")),
                        f"{op.operation_id!r} is also the operationId of {ids[op.operation_id]}",
                    )
                ids[op.operation_id] = f"{op.method} {template}"
            methods[op.method] = _plan(op, params, nesting, compiler)
        if methods:
            matcher.add(template, methods)
            plans.extend(methods.values())
    if problems:
        raise ConfigError(problems)
    return OpenApiSpec(title, version, base_path, matcher, plans, source)


def _plan(
    op: Operation,
    params: tuple[tuple[Parameter, ParamCodec], ...],
    nesting: float,
    compiler: DocumentCompiler,
) -> OperationPlan:
    names: set[str] = set()
    prefixes: list[str] = []
    for p, codec in params:
        if p.location == "query":
            exact, pre = codec.query_keys()
            names |= exact
            prefixes.extend(pre)
    bodies = {m.media_type: m for m in op.request_body}
    read_only = frozenset(compiler.requests.read_only_names)
    return OperationPlan(
        op, params, frozenset(names), tuple(prefixes), bodies, nesting, read_only=read_only
    )


def load_spec(source: str, options: SpecOptions | None = None) -> OpenApiSpec:
    """Read ``source`` (a file path, or an ``https://`` URL) and compile it.

    Relative file paths are relative to the working directory. Raises ConfigError."""
    options = options or SpecOptions()
    try:
        if source.startswith(("https://", "http://")):
            data = fetch_url(
                source,
                timeout=options.fetch_timeout,
                max_bytes=options.max_bytes,
                unsafe_allow_http=options.unsafe_allow_http,
            )
            root_id, from_url = source, True
        elif "://" in source:
            raise SpecProblem(f"{source}: use a file path or an https:// URL")
        else:
            path = Path(source).expanduser().resolve()
            data = read_file(path, options.max_bytes)
            root_id, from_url = str(path), False
        if options.sha256 is not None:
            digest = hashlib.sha256(data).hexdigest()
            if not hmac.compare_digest(digest, options.sha256):
                raise SpecProblem(
                    f"{source}: the document's SHA-256 is {digest}, not the spec_sha256 "
                    f"{options.sha256}"
                )
        doc = parse_text(data, source)
    except SpecProblem as exc:
        raise ConfigError([str(exc)]) from None
    return compile_document(doc, source=source, root_id=root_id, from_url=from_url, options=options)
