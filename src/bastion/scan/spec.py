"""The OpenAPI document as the scanner sees it: operations with their schemas *as written*.

Reuses :mod:`bastion.openapi` to read and compile the document (``$ref`` resolution, OpenAPI
3.0 → JSON Schema 2020-12 conversion), with request bodies left open: the gateway closes them
to enforce the contract, the scanner must see what the author wrote (the contract audit flags
bodies that allow undeclared properties). The raw document is kept for the audit's rules on
``servers`` and ``securitySchemes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.errors import ConfigError
from bastion.openapi.loader import SpecProblem, fetch_url, parse_text, read_file
from bastion.openapi.model import MediaSchema, Operation, Parameter
from bastion.openapi.spec import OpenApiSpec, SpecOptions, compile_document
from bastion.scan.errors import ScanUsageError

__all__ = ["ScanOperation", "ScanSpec", "load_scan_spec", "scan_spec_from_document"]

_ADMIN_WORDS = re.compile(r"(?i)(^|[^a-z])(admin|administrat|internal|manage|staff|superuser|sudo)")
_JSON = re.compile(r"(?i)^application/([a-z0-9.+-]*\+)?json")


@dataclass(frozen=True, slots=True)
class ScanOperation:
    """One operation: its compiled form (:attr:`operation`) and what checks ask most often."""

    operation: Operation
    summary: str = ""
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)  # the operation object as written

    @property
    def method(self) -> str:
        return self.operation.method

    @property
    def path(self) -> str:
        """The path template as written, e.g. ``/api/invoices/{invoice_id}``."""
        return self.operation.path_template

    @property
    def label(self) -> str:
        """``GET /api/invoices/{invoice_id}``: what findings name as their operation."""
        return f"{self.method} {self.path}"

    @property
    def operation_id(self) -> str | None:
        return self.operation.operation_id

    @property
    def tags(self) -> tuple[str, ...]:
        return self.operation.tags

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        return self.operation.parameters

    def params_in(self, location: str) -> tuple[Parameter, ...]:
        """Declared parameters in ``path``, ``query``, ``header`` or ``cookie``."""
        return tuple(p for p in self.operation.parameters if p.location == location)

    @property
    def json_body(self) -> MediaSchema | None:
        """The JSON request body schema (``application/json`` or ``…+json``), if any."""
        for media in self.operation.request_body:
            if _JSON.match(media.media_type):
                return media
        return None

    @property
    def body_schema(self) -> dict[str, Any] | None:
        """The JSON request body's schema (JSON Schema 2020-12, ``$ref``s inlined; properties
        marked ``readOnly`` appear as ``false``), or None."""
        media = self.json_body
        return _as_mapping(media.schema) if media is not None else None

    def response_schema(self, status: int) -> dict[str, Any] | None:
        """The JSON schema declared for ``status`` (exact, ``NXX``, ``default``), or None."""
        for media in self.operation.response_schemas(status) or ():
            if _JSON.match(media.media_type):
                return _as_mapping(media.schema)
        return None

    @property
    def security(self) -> tuple[dict[str, tuple[str, ...]], ...] | None:
        """Effective security requirements; None: none declared, ``()``: explicitly public."""
        return self.operation.security

    @property
    def is_public(self) -> bool:
        """True when the document says anyone may call it (``security: []`` or an empty
        requirement ``{}`` among the alternatives)."""
        sec = self.operation.security
        return sec is not None and (len(sec) == 0 or any(len(r) == 0 for r in sec))

    @property
    def is_admin_like(self) -> bool:
        """Whether the spec, tags or path mark it as administrative (BFLA candidates)."""
        op = self.operation
        if op.roles and any("admin" in r.lower() for r in op.roles):
            return True
        if any(_ADMIN_WORDS.search(t) for t in op.tags):
            return True
        scopes = {s for req in op.security or () for ss in req.values() for s in ss}
        if any(_ADMIN_WORDS.search(s) for s in scopes):
            return True
        text = " ".join((op.path_template, op.operation_id or "", self.summary))
        return bool(_ADMIN_WORDS.search(text))


@dataclass(frozen=True, slots=True)
class ScanSpec:
    """A compiled document for scanning."""

    compiled: OpenApiSpec
    document: dict[str, Any]
    operations: tuple[ScanOperation, ...]
    source: str

    @property
    def title(self) -> str:
        return self.compiled.title

    @property
    def base_path(self) -> str:
        """Path of ``servers[0].url`` ('' when none): prefixed to every operation path."""
        return self.compiled.base_path

    @property
    def security_schemes(self) -> dict[str, Any]:
        comps = self.document.get("components")
        schemes = comps.get("securitySchemes") if isinstance(comps, dict) else None
        return schemes if isinstance(schemes, dict) else {}

    def match(self, method: str, path: str) -> tuple[ScanOperation | None, dict[str, str]]:
        """The operation for a concrete ``path`` (relative to the base path) and its path
        parameters; ``(None, {})`` when the document has no such operation."""
        op, params, _known = self.compiled.match(method.upper(), path)
        if op is None:
            return None, {}
        for sop in self.operations:
            if sop.operation is op:
                return sop, params
        return None, {}

    def documented_methods(self, path: str) -> frozenset[str]:
        """Methods the document declares for the concrete ``path`` (empty: unknown path)."""
        _plan, _params, allowed = self.compiled.lookup("\x00", path)
        return frozenset(allowed)


def scan_spec_from_document(
    doc: Any, source: str = "<inline>", root_id: str | None = None, from_url: bool = False
) -> ScanSpec:
    """Compile a parsed document; ScanUsageError (one line per problem) when it is invalid."""
    options = SpecOptions(
        close_request_bodies=False, validate_formats=False, unsafe_allow_http=True
    )
    try:
        compiled = compile_document(
            doc, source=source, root_id=root_id, from_url=from_url, options=options
        )
    except ConfigError as exc:
        raise ScanUsageError(
            f"{source}: invalid OpenAPI document: "
            + "; ".join(exc.problems[:5])
            + (f" (and {len(exc.problems) - 5} more)" if len(exc.problems) > 5 else "")
        ) from None
    paths = doc.get("paths") if isinstance(doc.get("paths"), dict) else {}
    ops: list[ScanOperation] = []
    for op in compiled.operations:
        item = paths.get(op.path_template) if isinstance(paths, dict) else None
        raw = item.get(op.method.lower()) if isinstance(item, dict) else None
        raw = raw if isinstance(raw, dict) else {}
        ops.append(
            ScanOperation(
                op,
                summary=str(raw.get("summary", "")),
                description=str(raw.get("description", "")),
                raw=raw,
            )
        )
    return ScanSpec(compiled, doc, tuple(ops), source)


def load_scan_spec(source: str, *, timeout: float = 10.0) -> ScanSpec:
    """Read ``source`` (a file, or an ``http(s)://`` URL: a scan may read the spec from the
    target itself, plain HTTP included) and compile it. ScanUsageError on any problem."""
    try:
        if source.startswith(("https://", "http://")):
            data = fetch_url(
                source, timeout=timeout, max_bytes=10 * 1024 * 1024, unsafe_allow_http=True
            )
            root_id, from_url = source, True
        elif "://" in source:
            raise SpecProblem(f"{source}: use a file path or an http(s):// URL")
        else:
            path = Path(source).expanduser().resolve()
            data = read_file(path, 10 * 1024 * 1024)
            root_id, from_url = str(path), False
        doc = parse_text(data, source)
    except SpecProblem as exc:
        raise ScanUsageError(f"spec: {exc}") from None
    except OSError as exc:
        raise ScanUsageError(f"spec: {source}: {exc.strerror or exc}") from None
    if not isinstance(doc, dict):
        raise ScanUsageError(f"spec: {source}: an OpenAPI document must be a mapping")
    return scan_spec_from_document(doc, source, root_id, from_url)


def _as_mapping(schema: dict[str, Any] | bool) -> dict[str, Any]:
    """A boolean schema as the mapping that means the same (``{}`` or ``{"not": {}}``)."""
    if isinstance(schema, bool):
        return {} if schema else {"not": {}}
    return schema
