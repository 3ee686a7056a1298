"""OpenID Connect Core 1.0: the ID token (§2, §3.1.3.6) and the UserInfo endpoint (§5.3).

An ID token is issued only when the ``openid`` scope was granted; it is a JWT (``typ: JWT``)
signed by the same active key as access tokens, for the client (``aud`` = ``azp`` = client id),
carrying ``auth_time``, ``amr`` and ``acr`` from the login and the ``nonce`` of the request.
``/userinfo`` takes one of our access tokens with the ``openid`` scope (RFC 6750 bearer) and
answers the claims its scopes allow: ``profile`` (name, preferred_username), ``email``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.authserver.http import Request, Response, json_response
from bastion.authserver.oauth.rfc9068 import InvalidAccessToken

if TYPE_CHECKING:
    from bastion.authserver.oauth.context import OAuthContext


def id_token_claims(
    ctx: OAuthContext,
    *,
    client_id: str,
    subject: str,
    auth_time: float,
    amr: tuple[str, ...],
    acr: str,
    nonce: str | None,
) -> dict[str, Any]:
    now = int(ctx.clock.now())
    claims: dict[str, Any] = {
        "iss": ctx.issuer,
        "sub": subject,
        "aud": client_id,
        "azp": client_id,
        "exp": now + int(ctx.config.id_token_ttl),
        "iat": now,
        "auth_time": int(auth_time),
        "amr": list(amr),
        "acr": acr,
    }
    if nonce is not None:
        claims["nonce"] = nonce
    return claims


def _bearer_error(status: int, error: str | None) -> Response:
    """RFC 6750 §3: the challenge says what went wrong, the body says nothing more."""
    challenge = 'Bearer realm="bastion"'
    if error:
        challenge += f', error="{error}"'
    return Response(status, b"", [("www-authenticate", challenge), ("cache-control", "no-store")])


async def userinfo(ctx: OAuthContext, request: Request) -> Response:
    """GET/POST /userinfo with ``Authorization: Bearer <access token>``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _bearer_error(401, None)
    try:
        claims = await ctx.verifier.verify(token.strip())
    except InvalidAccessToken:
        return _bearer_error(401, "invalid_token")
    scopes = set(str(claims.get("scope", "")).split())
    if "openid" not in scopes:
        return _bearer_error(403, "insufficient_scope")
    subject = str(claims["sub"])
    body: dict[str, Any] = {"sub": subject}
    user = await ctx.users.get_user(subject) if ctx.users is not None else None
    if user is None or user.disabled:
        return _bearer_error(401, "invalid_token")
    if "profile" in scopes:
        body["preferred_username"] = user.username
        if user.name:
            body["name"] = user.name
    if "email" in scopes and user.email:
        body["email"] = user.email
    return json_response(200, body)
