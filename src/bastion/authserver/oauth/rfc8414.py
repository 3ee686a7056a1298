"""Authorization server metadata (RFC 8414 §2, OpenID Connect Discovery §3) and the JWKS.

The metadata document is built once from the config: it only names what the server really
does (code flow with S256 PKCE, three grants, four client authentication methods, the ``iss``
authorization response parameter of RFC 9207). ``/jwks`` answers the published keys (pending,
active, retiring) with ``Cache-Control: max-age`` set by the key manager, whose rotation
schedule assumes caches live that long.
"""

from __future__ import annotations

from typing import Any

import orjson

from bastion.authserver.http import BASE_HEADERS, Response
from bastion.authserver.oauth.client_auth import ASSERTION_ALGS
from bastion.authserver.oauth.context import OAuthContext
from bastion.authserver.oauth.grants import GRANTS
from bastion.authserver.oauth.records import AUTH_METHODS

SCOPES = ("openid", "profile", "email")
_CONFIDENTIAL = [m for m in AUTH_METHODS if m != "none"]


def metadata(ctx: OAuthContext) -> dict[str, Any]:
    alg = ctx.config.keys.algorithm
    return {
        "issuer": ctx.issuer,
        "authorization_endpoint": ctx.url("/authorize"),
        "token_endpoint": ctx.url("/token"),
        "jwks_uri": ctx.url("/jwks"),
        "introspection_endpoint": ctx.url("/introspect"),
        "revocation_endpoint": ctx.url("/revoke"),
        "userinfo_endpoint": ctx.url("/userinfo"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANTS),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
        "introspection_endpoint_auth_methods_supported": _CONFIDENTIAL,
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "scopes_supported": list(SCOPES),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [alg],
        "userinfo_signing_alg_values_supported": [],
        "authorization_response_iss_parameter_supported": True,
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "amr",
            "acr",
            "azp",
            "name",
            "preferred_username",
            "email",
        ],
    }


def metadata_response(ctx: OAuthContext) -> Response:
    """The document, serialised once; public and cacheable for an hour."""
    return Response(
        200,
        orjson.dumps(metadata(ctx)),
        [
            ("content-type", "application/json"),
            *BASE_HEADERS,
            ("cache-control", "public, max-age=3600"),
            ("access-control-allow-origin", "*"),
        ],
    )


async def jwks(ctx: OAuthContext) -> Response:
    body = orjson.dumps(await ctx.signer.jwks())
    return Response(
        200,
        body,
        [
            ("content-type", "application/jwk-set+json"),
            *BASE_HEADERS,
            ("cache-control", f"public, max-age={int(ctx.signer.jwks_max_age)}"),
            ("access-control-allow-origin", "*"),
        ],
    )
