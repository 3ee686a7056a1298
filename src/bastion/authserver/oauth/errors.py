"""OAuth protocol errors, rendered exactly as RFC 6749 §5.2 says.

An :class:`OAuthError` carries its registered ``error`` code and HTTP status; its body is
``{"error": …, "error_description": …}`` with ``Cache-Control: no-store``. ``invalid_client``
is 401 with a ``WWW-Authenticate`` challenge (RFC 6749 §5.2). Descriptions are short, fixed
phrases: they never echo client input, a token or a secret.
"""

from __future__ import annotations

from bastion.authserver.http import NO_STORE, Response, json_response

#: error code -> HTTP status (RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 8707 §2, RFC 6750 §3.1).
STATUS = {
    "invalid_request": 400,
    "invalid_client": 401,
    "invalid_grant": 400,
    "unauthorized_client": 400,
    "unsupported_grant_type": 400,
    "invalid_scope": 400,
    "invalid_target": 400,
    "unsupported_token_type": 400,
    "invalid_token": 401,
    "insufficient_scope": 403,
    "temporarily_unavailable": 503,
    "server_error": 500,
    "slow_down": 429,
}


class OAuthError(Exception):
    """A protocol error answered to the client. ``error`` must be a key of :data:`STATUS`."""

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        status: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status if status is not None else STATUS[error]
        self.headers = headers

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body

    def response(self) -> Response:
        return json_response(self.status, self.body(), extra=(*NO_STORE, *self.headers))


def invalid_client(description: str = "client authentication failed") -> OAuthError:
    """401 with the Basic challenge every client_secret_basic client understands."""
    return OAuthError(
        "invalid_client",
        description,
        headers=(("www-authenticate", 'Basic realm="bastion", charset="UTF-8"'),),
    )
