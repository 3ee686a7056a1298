"""Registering a client: the rules a registration must meet, as one pure function.

Rules (RFC 9700 §2.1, §4.1; OAuth 2.1 §2): redirect URIs are absolute ``https`` URIs, or
``http`` on a loopback host (RFC 8252 §7.3), with no fragment; the code flow needs at least one;
``client_credentials`` needs a confidential client; ``private_key_jwt`` needs a JWKS with public
keys only; grant types come from the registry. Secrets are made by the server, never chosen.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from bastion.authserver.config import is_loopback
from bastion.authserver.oauth.client_auth import new_client_secret, secret_record
from bastion.authserver.oauth.records import AUTH_METHODS, GRANT_TYPES, OAuthClient

CLIENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
SCOPE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}", re.ASCII)  # RFC 6749 §3.3 scope-token
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


class RegistrationError(ValueError):
    """The registration breaks a rule; the message says which."""


def check_redirect_uri(uri: str) -> None:
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        raise RegistrationError(f"redirect URI {uri!r} must not have a fragment")
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and is_loopback(host):
        return
    raise RegistrationError(f"redirect URI {uri!r} must be https (http only on a loopback host)")


def new_client(
    *,
    client_id: str,
    name: str,
    auth_method: str,
    grant_types: tuple[str, ...],
    scopes: tuple[str, ...],
    redirect_uris: tuple[str, ...],
    audiences: tuple[str, ...],
    jwks: dict[str, Any] | None,
    pepper: bytes,
    now: float,
    introspect: bool = False,
) -> tuple[OAuthClient, str | None]:
    """A checked registration and its secret (None for ``none`` and ``private_key_jwt``).

    Raises RegistrationError with the rule that was broken.
    """
    if CLIENT_ID_RE.fullmatch(client_id) is None:
        raise RegistrationError("client id: 1-128 of A-Z a-z 0-9 . _ -, starting alphanumeric")
    if auth_method not in AUTH_METHODS:
        raise RegistrationError(f"auth method must be one of {', '.join(AUTH_METHODS)}")
    if not grant_types:
        raise RegistrationError("at least one grant type is needed")
    for grant in grant_types:
        if grant not in GRANT_TYPES:
            raise RegistrationError(
                f"grant type {grant!r} is not supported ({', '.join(GRANT_TYPES)})"
            )
    if "client_credentials" in grant_types and auth_method == "none":
        raise RegistrationError("a public client (auth method none) cannot use client_credentials")
    if "refresh_token" in grant_types and "authorization_code" not in grant_types:
        raise RegistrationError("refresh_token comes with authorization_code")
    if "authorization_code" in grant_types and not redirect_uris:
        raise RegistrationError("authorization_code needs at least one redirect URI")
    if introspect and auth_method == "none":
        raise RegistrationError("a public client (auth method none) cannot introspect")
    for uri in redirect_uris:
        check_redirect_uri(uri)
    for scope in scopes:
        if SCOPE_RE.fullmatch(scope) is None:
            raise RegistrationError(f"scope {scope!r} is not a valid scope token")
    if auth_method == "private_key_jwt":
        keys = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(keys, list) or not keys:
            raise RegistrationError("private_key_jwt needs a JWKS with at least one key")
        for key in keys:
            if not isinstance(key, dict) or _PRIVATE_MEMBERS & set(key):
                raise RegistrationError("the JWKS must hold public keys only")
    elif jwks is not None:
        raise RegistrationError("a JWKS is only for private_key_jwt clients")
    secret = new_client_secret() if auth_method.startswith("client_secret") else None
    client = OAuthClient(
        id=client_id,
        name=name or client_id,
        auth_method=auth_method,
        secrets=(secret_record(pepper, secret, now),) if secret else (),
        jwks=jwks,
        redirect_uris=tuple(dict.fromkeys(redirect_uris)),
        grant_types=tuple(dict.fromkeys(grant_types)),
        scopes=tuple(sorted(set(scopes))),
        audiences=tuple(dict.fromkeys(audiences)),
        created_at=now,
        updated_at=now,
        introspect=introspect,
    )
    return client, secret
