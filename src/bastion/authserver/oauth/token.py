"""The token endpoint (RFC 6749 §3.2): authenticate the client, dispatch on ``grant_type``.

``POST /token`` with ``application/x-www-form-urlencoded`` only. Errors are RFC 6749 §5.2
bodies; a success is the grant's JSON with ``Cache-Control: no-store`` (§5.1). This is the hot
path of the server: nothing here touches the store for ``client_credentials`` (registrations
are cached, the access token is a JWT).
"""

from __future__ import annotations

from bastion.authserver.http import BASE_HEADERS, NO_STORE, Request, Response
from bastion.authserver.oauth.context import OAuthContext
from bastion.authserver.oauth.errors import OAuthError
from bastion.authserver.oauth.grants import GRANTS, required

FORM = "application/x-www-form-urlencoded"
JSON_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", "application/json"),
    *BASE_HEADERS,
    *NO_STORE,
)


def require_form(request: Request) -> dict[str, list[str]]:
    """The form body of a POST; ``invalid_request`` for any other content type."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != FORM:
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    return request.form()


async def token_endpoint(ctx: OAuthContext, request: Request) -> Response:
    form = require_form(request)
    client = await ctx.clients.authenticate(request.headers, form)
    grant = GRANTS.get(required(form, "grant_type"))
    if grant is None:
        raise OAuthError("unsupported_grant_type", "grant type not supported")
    return Response(200, await grant(ctx, client, form), list(JSON_HEADERS))
