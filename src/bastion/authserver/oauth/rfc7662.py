"""Token introspection (RFC 7662) for our JWT access tokens and our refresh tokens.

Only authenticated confidential clients registered with the ``introspect`` permission may
introspect (§2.1: the endpoint must be protected; a public client has no credential; and
RFC 7662 §4: introspection is for the protected resources, not for every client — a client
that could introspect would learn the subject, scope and audience of any token it gets hold
of). Others get 403 ``unauthorized_client``. Access tokens are checked like a resource server would —
signature by one of our published keys, ``typ: at+jwt``, issuer, expiry — and against the
revocation list, so a revoked JWT is reported inactive at once. A refresh token is reported
only to the client it was issued to (others learn ``active: false``) and only while its family
is live and it is the current generation. A client registered with audiences (a resource
server) learns about an access token only if it is one of the token's audiences or the token's
own client: a token meant for another API is inactive to it. Anything else is
``{"active": false}`` (§2.2) with no hint why.
"""

from __future__ import annotations

from typing import Any

from bastion.authserver.http import Request, Response, json_response
from bastion.authserver.oauth.context import OAuthContext
from bastion.authserver.oauth.errors import OAuthError, invalid_client
from bastion.authserver.oauth.grants import param, required
from bastion.authserver.oauth.refresh import PREFIX as REFRESH_PREFIX
from bastion.authserver.oauth.rfc9068 import InvalidAccessToken
from bastion.authserver.oauth.token import require_form

INACTIVE: dict[str, Any] = {"active": False}
_CLAIMS = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti")


async def introspect(ctx: OAuthContext, request: Request) -> Response:
    form = require_form(request)
    client = await ctx.clients.authenticate(request.headers, form)
    if client.public:
        raise invalid_client("public clients cannot introspect")
    if not client.introspect:
        raise OAuthError("unauthorized_client", "this client may not introspect", status=403)
    token = required(form, "token")
    param(form, "token_type_hint")  # a hint only (§2.1): both kinds are recognised by shape
    if token.startswith(REFRESH_PREFIX):
        return json_response(200, await _refresh(ctx, client.id, token))
    if token.count(".") == 2:
        try:
            claims = await ctx.verifier.verify(token)
        except InvalidAccessToken:
            return json_response(200, INACTIVE)
        if client.audiences and claims.get("client_id") != client.id:
            aud = claims.get("aud")
            auds = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
            if auds.isdisjoint(client.audiences):
                return json_response(200, INACTIVE)
        body = {"active": True, "token_type": "Bearer"}
        body.update({k: claims[k] for k in _CLAIMS if k in claims})
        return json_response(200, body)
    return json_response(200, INACTIVE)


async def _refresh(ctx: OAuthContext, client_id: str, token: str) -> dict[str, Any]:
    found = await ctx.refresh.lookup(token)
    if found is None:
        return INACTIVE
    family, generation = found
    now = ctx.clock.now()
    if (
        family.client_id != client_id
        or generation != family.generation
        or not ctx.refresh.live(family, now)
    ):
        return INACTIVE
    return {
        "active": True,
        "token_type": "refresh_token",
        "scope": family.scope,
        "client_id": family.client_id,
        "sub": family.subject,
        "iss": ctx.issuer,
        "exp": int(min(family.expires_at, family.last_used_at + ctx.config.refresh.idle_timeout)),
        "iat": int(family.rotated_at or family.created_at),
    }
