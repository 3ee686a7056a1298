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
#: Key under which it leaves the path parameters (name → raw string value).
PATH_PARAMS_ANNOTATION = "openapi.path_params"


class Validator(Protocol):
    """A compiled JSON Schema validator (``jsonschema_rs`` validators fit)."""

    def is_valid(self, instance: Any) -> bool: ...

    def iter_errors(self, instance: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Parameter:
    """A declared parameter; ``schema`` is fully resolved (no ``$ref`` left)."""

    name: str
    location: Location
    required: bool
    schema: dict[str, Any]
    validator: Validator | None = None


@dataclass(frozen=True, slots=True)
class MediaSchema:
    """A body schema for one media type (``application/json``, …), resolved and compiled."""

    media_type: str
    schema: dict[str, Any]
    validator: Validator | None = None


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
    owner_rule: dict[str, Any] | None  # x-bastion-owner, as written
    #: Responses by status key as in the document ("200", "2XX", "default") → media schemas.
    responses: dict[str, tuple[MediaSchema, ...]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    extensions: dict[str, Any] = field(default_factory=dict)  # every x-… of the operation

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

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """``(operation, path_params, path_known)``. ``path_known`` is True when some operation
        has this path with another method (→ 405 rather than 404). ``path`` is the raw request
        path relative to the document's server base path."""
        ...
