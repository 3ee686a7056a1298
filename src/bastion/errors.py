"""One error tree for all of Bastion, rendered as RFC 9457 ``application/problem+json``.

Every error carries a stable machine ``code`` (documented, never renamed), an HTTP ``status`` and
a short public ``title``. ``detail`` is what a client may see; ``diagnosis`` is for logs, audit
records and the CLI only and never reaches a client.

::

    BastionError
    ├── ConfigError                       config.invalid            (CLI exit 2)
    ├── StoreError                        store.unavailable         503
    ├── RequestRejected                   (base of what the gateway answers itself)
    │   ├── BadRequest                    request.malformed         400
    │   │   └── InvalidRequest            openapi.invalid_request   400
    │   ├── NotFound                      route.not_found           404
    │   │   └── OperationUnknown          openapi.operation_unknown 404
    │   ├── MethodNotAllowed              request.method_not_allowed 405
    │   │   └── OperationMethodNotAllowed openapi.method_not_allowed 405 (+ Allow)
    │   ├── UnsupportedMediaType          openapi.unsupported_media_type 415
    │   ├── ResolverUnavailable           authz.resolver_unavailable 503
    │   ├── Forbidden                     access.forbidden          403
    │   ├── IpDenied                      transport.ip_denied       403
    │   ├── PayloadTooLarge               transport.body_too_large  413
    │   ├── UriTooLong                    transport.uri_too_long    414
    │   ├── HeadersTooLarge               transport.headers_too_large 431
    │   ├── RequestTimeout                transport.request_timeout 408
    │   ├── AuthenticationFailed          authn.failed              401 (+ WWW-Authenticate)
    │   ├── RateLimited                   ratelimit.exceeded        429 (+ Retry-After)
    │   ├── CorsRejected                  cors.origin_denied        403
    │   ├── UpstreamUnavailable           upstream.unavailable      502
    │   ├── UpstreamTimeout               upstream.timeout          504
    │   └── UpstreamError                 upstream.error            502
    │       ├── ResponseBlocked           response.blocked          502
    │       └── ResponseTooLarge          response.too_large        502
    └── InternalError                     internal.error            500
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://bastion.dev/problems/"


class BastionError(Exception):
    """Root of every error Bastion raises on purpose.

    ``detail`` is safe to show to a client; ``diagnosis`` is internal (logs, audit, CLI).
    """

    code: ClassVar[str] = "bastion.error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        diagnosis: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(diagnosis or detail or self.title)
        self.detail = detail
        self.diagnosis = diagnosis
        self.headers = headers or []
        self.extra = extra or {}

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 problem object for this error (public fields only)."""
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "code": self.code,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body

    def problem_bytes(self, instance: str | None = None) -> bytes:
        """The problem object serialised as JSON bytes."""
        return orjson.dumps(self.problem(instance))


class ConfigError(BastionError):
    """The configuration is invalid; ``problems`` lists one ``location: message`` per problem."""

    code = "config.invalid"
    status = 500
    title = "Invalid configuration"

    def __init__(self, problems: list[str]) -> None:
        super().__init__(diagnosis="; ".join(problems))
        self.problems = problems


class StoreError(BastionError):
    """The state store cannot be reached or refused an operation."""

    code = "store.unavailable"
    status = 503
    title = "Service unavailable"


class RequestRejected(BastionError):
    """Base of the errors the gateway answers itself instead of forwarding."""

    status = 400


class BadRequest(RequestRejected):
    code = "request.malformed"
    status = 400
    title = "Bad request"


class NotFound(RequestRejected):
    code = "route.not_found"
    status = 404
    title = "Not found"


class MethodNotAllowed(RequestRejected):
    """A method outside the gateway's allow-list (TRACE, CONNECT, WebDAV verbs …)."""

    code = "request.method_not_allowed"
    status = 405
    title = "Method not allowed"


class Forbidden(RequestRejected):
    code = "access.forbidden"
    status = 403
    title = "Forbidden"


class IpDenied(RequestRejected):
    code = "transport.ip_denied"
    status = 403
    title = "Forbidden"


class PayloadTooLarge(RequestRejected):
    code = "transport.body_too_large"
    status = 413
    title = "Payload too large"


class UriTooLong(RequestRejected):
    code = "transport.uri_too_long"
    status = 414
    title = "URI too long"


class HeadersTooLarge(RequestRejected):
    code = "transport.headers_too_large"
    status = 431
    title = "Request header fields too large"


class RequestTimeout(RequestRejected):
    """The request head or body did not arrive within the server's timeouts (slowloris)."""

    code = "transport.request_timeout"
    status = 408
    title = "Request timeout"


class AuthenticationFailed(RequestRejected):
    """Opaque to the client by design: the reason goes to ``diagnosis`` (audit), never ``detail``."""

    code = "authn.failed"
    status = 401
    title = "Unauthorized"


class RateLimited(RequestRejected):
    code = "ratelimit.exceeded"
    status = 429
    title = "Too many requests"


class CorsRejected(RequestRejected):
    code = "cors.origin_denied"
    status = 403
    title = "Forbidden"


class InvalidRequest(BadRequest):
    """A parameter or the body does not match the operation's OpenAPI schemas. ``detail`` names
    the parameter or JSON pointer and the rule, never the value sent."""

    code = "openapi.invalid_request"


class OperationUnknown(NotFound):
    """No operation of the route's OpenAPI document has this path (a shadow endpoint)."""

    code = "openapi.operation_unknown"


class OperationMethodNotAllowed(MethodNotAllowed):
    """The path is declared, the method is not (``Allow`` lists the declared ones)."""

    code = "openapi.method_not_allowed"


class UnsupportedMediaType(RequestRejected):
    """The body's Content-Type is not one the operation declares."""

    code = "openapi.unsupported_media_type"
    status = 415
    title = "Unsupported media type"


class ResolverUnavailable(RequestRejected):
    """An ownership resolver (SQL, HTTP) could not answer: the request is refused (fail closed)."""

    code = "authz.resolver_unavailable"
    status = 503
    title = "Service unavailable"


class UpstreamUnavailable(RequestRejected):
    code = "upstream.unavailable"
    status = 502
    title = "Bad gateway"


class UpstreamTimeout(RequestRejected):
    code = "upstream.timeout"
    status = 504
    title = "Gateway timeout"


class UpstreamError(RequestRejected):
    code = "upstream.error"
    status = 502
    title = "Bad gateway"


class ResponseBlocked(UpstreamError):
    """The upstream's response broke the route's response policy (undeclared properties or
    status, sensitive data, malformed JSON): the client gets none of it."""

    code = "response.blocked"


class ResponseTooLarge(UpstreamError):
    """A JSON response was larger than the route's response filter may hold to check it."""

    code = "response.too_large"


class InternalError(BastionError):
    code = "internal.error"
    status = 500
    title = "Internal server error"


def all_error_classes() -> list[type[BastionError]]:
    """Every concrete error class, for documentation and the code-stability test."""
    seen: list[type[BastionError]] = []
    stack: list[type[BastionError]] = [BastionError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
