"""The compiled form of an OpenAPI document that layers use per request (plain values).

Contract between the spec compiler (``spec.py``) and the layers (``openapi``, ``authz``,
``response_filter``). Everything here is immutable and built once at start-up; validators are
compiled ``jsonschema-rs`` validators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Location = Literal["path", "query", "header", "cookie"]

#: Key under which the ``openapi`` layer leaves the matched operation for later layers.
OPERATION_ANNOTATION = "openapi.operation"
#: Key under which it leaves the path parameters (name → string value, percent-decoded).
PATH_PARAMS_ANNOTATION = "openapi.path_params"
#: Key under which it leaves every validated parameter, coerced to its schema's type:
#: ``{"path": {...}, "query": {...}, "header": {...}, "cookie": {...}}`` (header names lower-case).
PARAMS_ANNOTATION = "openapi.params"
#: Key under which it leaves the parsed JSON (or form) request body, when there is one.
BODY_ANNOTATION = "openapi.body"


class Validator(Protocol):
    """A compiled JSON Schema validator (``jsonschema_rs`` validators fit)."""

    def is_valid(self, instance: Any) -> bool: ...

    def iter_errors(self, instance: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Parameter:
    """A declared parameter; ``schema`` is self-contained JSON Schema 2020-12 (see
    :class:`MediaSchema`)."""

    name: str
    location: Location
    required: bool
    schema: dict[str, Any]
    validator: Validator | None = None


@dataclass(frozen=True, slots=True)
class MediaSchema:
    """A body schema for one media type (``application/json``, …), resolved and compiled.

    ``schema`` is JSON Schema 2020-12 with every ``$ref`` inlined, except in recursive schemas:
    there ``{"$ref": "#/$defs/<name>"}`` remains, its target in the root schema's ``$defs``.
    OpenAPI 3.0 keywords are converted (``nullable`` → a ``"null"`` type). Request schemas are
    as enforced: objects closed (``additionalProperties``/``unevaluatedProperties: false``) unless
    the document says otherwise, ``readOnly`` properties replaced by ``false``. Response schemas
    are as written (only converted).
    """

    media_type: str
    schema: dict[str, Any] | bool  # as built, a mapping; true/false are schemas too
    validator: Validator | None = None


@dataclass(frozen=True, slots=True)
class OwnerRule:
    """One parsed ``x-bastion-owner`` rule: the object id at ``location.name`` must belong to
    the caller. ``expected`` is ``principal.sub``, ``principal.client_id`` or ``claims.<path>``;
    ``match`` says whether the id (or the resolver's owner) must equal it or be in it (a list
    claim). With ``resolver``, the object's owners are looked up and compared instead of the
    id itself."""

    location: Literal["path", "query", "header", "cookie", "body"]
    name: str  # parameter name; for body a dotted path into the JSON body
    expected: str
    match: Literal["equals", "in"]
    resolver: str | None = None

    @property
    def param(self) -> str:
        """``path.account_id``: the rule's ``param`` as written."""
        return f"{self.location}.{self.name}"


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation (method + path template) of the document."""

    method: str  # upper case
    path_template: str  # as in the document, e.g. /accounts/{account_id}/invoices
    operation_id: str | None
    parameters: tuple[Parameter, ...]
    request_body: tuple[MediaSchema, ...]  # empty: the operation takes no body
    request_body_required: bool
    #: Effective security requirements (operation's, else the document's). None: none declared;
    #: () : explicitly public (``security: []``). Each requirement maps scheme name → scopes.
    security: tuple[dict[str, tuple[str, ...]], ...] | None
    roles: frozenset[str] | None  # x-bastion-roles
    owner_rule: Any  # x-bastion-owner as written (a mapping, or a list of them), else None
    #: Responses by status key as in the document ("200", "2XX", "default") → media schemas.
    responses: dict[str, tuple[MediaSchema, ...]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    extensions: dict[str, Any] = field(default_factory=dict)  # every x-… of the operation
    owner_rules: tuple[OwnerRule, ...] = ()  # x-bastion-owner, parsed; all must pass
    #: Per security scheme of the document: the principal kinds (``jwt``, ``api_key``) that
    #: can present it (see :func:`credential_kinds`). A scheme not here: none can.
    scheme_kinds: dict[str, frozenset[str]] = field(default_factory=dict)

    def response_schemas(self, status: int) -> tuple[MediaSchema, ...] | None:
        """Schemas declared for ``status``: exact code, then ``NXX``, then ``default``; None if
        the status is not declared at all."""
        for key in (str(status), f"{status // 100}XX", "default"):
            if key in self.responses:
                return self.responses[key]
        return None


class CompiledSpec(Protocol):
    """A whole compiled document."""

    @property
    def title(self) -> str: ...

    @property
    def operations(self) -> tuple[Operation, ...]: ...

    @property
    def base_path(self) -> str:
        """Path of ``servers[0].url`` without a trailing '/' ('' when none)."""
        ...

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """``(operation, path_params, path_known)``. ``path_known`` is True when some operation
        has this path with another method (→ 405 rather than 404). ``path`` is the raw request
        path relative to the document's server base path."""
        ...


JWT_KIND, API_KEY_KIND = "jwt", "api_key"  # Principal.kind of a JWT, of an API key
_JWT_ONLY = frozenset({JWT_KIND})
ALL_KINDS = frozenset({JWT_KIND, API_KEY_KIND})  # every kind of principal


def credential_kinds(scheme: Any) -> frozenset[str]:
    """The principal kinds that can present a security scheme object of the document.

    ``oauth2`` and ``openIdConnect``: a JWT. ``apiKey``: an API key. ``http`` ``bearer``: a
    JWT when ``bearerFormat`` says JWT, else a JWT or an API key (both arrive as bearer tokens).
    Anything else (``http`` basic, ``mutualTLS``): no credential Bastion verifies, so no kind.
    """
    if not isinstance(scheme, dict):
        return frozenset()
    kind = scheme.get("type")
    if kind in ("oauth2", "openIdConnect"):
        return _JWT_ONLY
    if kind == "apiKey":
        return frozenset({API_KEY_KIND})
    if kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
        fmt = scheme.get("bearerFormat")
        return _JWT_ONLY if isinstance(fmt, str) and fmt.strip().upper() == "JWT" else ALL_KINDS
    return frozenset()
