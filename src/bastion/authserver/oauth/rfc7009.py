"""Token revocation (RFC 7009) for refresh tokens and our JWT access tokens.

The client authenticates; a token it was not issued is refused with ``unauthorized_client``
(§2.1). Revoking a refresh token revokes its whole family and the last access token issued from
it (§2.1: "SHOULD also invalidate all access tokens based on the same authorization grant").
Revoking an access token denies its ``jti`` until it expires: stored (the change feed carries
it to every gateway node), applied here, pushed through Redis. An unknown, malformed or expired
token is answered 200 like a revoked one (§2.2): the client cannot tell the difference and has
nothing more to do.
"""

from __future__ import annotations

from bastion.authserver.http import BASE_HEADERS, NO_STORE, Request, Response
from bastion.authserver.oauth.context import OAuthContext
from bastion.authserver.oauth.errors import OAuthError
from bastion.authserver.oauth.grants import param, required
from bastion.authserver.oauth.refresh import PREFIX as REFRESH_PREFIX
from bastion.authserver.oauth.rfc9068 import InvalidAccessToken
from bastion.authserver.oauth.token import require_form


def _ok() -> Response:
    return Response(200, b"", [*BASE_HEADERS, *NO_STORE])


def _not_yours() -> OAuthError:
    return OAuthError("unauthorized_client", "the token was not issued to this client")


async def revoke(ctx: OAuthContext, request: Request) -> Response:
    form = require_form(request)
    client = await ctx.clients.authenticate(request.headers, form)
    token = required(form, "token")
    hint = param(form, "token_type_hint")
    if hint is not None and hint not in ("access_token", "refresh_token"):
        raise OAuthError("unsupported_token_type", "unknown token_type_hint")
    if token.startswith(REFRESH_PREFIX):
        found = await ctx.refresh.lookup(token)
        if found is None:
            return _ok()
        family = found[0]
        if family.client_id != client.id:
            raise _not_yours()
        revoked = await ctx.repo.revoke_family(family.id, ctx.clock.now(), "revoked")
        if revoked is not None and revoked.access_jti and revoked.access_exp:
            await ctx.revoke_access_token(revoked.access_jti, revoked.access_exp)
        return _ok()
    if token.count(".") == 2:
        try:
            claims = await ctx.verifier.verify(token)
        except InvalidAccessToken:
            return _ok()
        if claims.get("client_id") != client.id:
            raise _not_yours()
        await ctx.revoke_access_token(str(claims["jti"]), float(claims["exp"]))
    return _ok()
