"""The authorization server's stored records: plain frozen values, no behaviour beyond reading.

Nothing here holds a secret in clear: client secrets, authorization codes and refresh tokens
appear only as hashes (see :mod:`bastion.store.schema.m0002_oauth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Client authentication methods (RFC 8414 ``token_endpoint_auth_methods_supported``).
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
#: Grants the server implements; no implicit, no password grant (OAuth 2.1).
GRANT_TYPES = ("client_credentials", "authorization_code", "refresh_token")


@dataclass(frozen=True, slots=True)
class ClientSecret:
    """One stored client secret: HMAC-SHA256 under the pepper, hex. ``expires_at`` None: no end."""

    hash: str
    created_at: float
    expires_at: float | None = None

    def valid(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """A registered OAuth client. ``auth_method`` ``none`` marks a public client (PKCE only).
    ``introspect``: may call ``/introspect`` (RFC 7662) — resource servers, granted explicitly."""

    id: str
    name: str
    auth_method: str
    secrets: tuple[ClientSecret, ...] = ()
    jwks: dict[str, Any] | None = None
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("client_credentials",)
    scopes: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0
    introspect: bool = False

    @property
    def public(self) -> bool:
        return self.auth_method == "none"


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    """An issued authorization code (by SHA-256), bound to client, redirect URI and PKCE."""

    code_hash: str
    client_id: str
    redirect_uri: str
    scope: str
    subject: str
    nonce: str | None
    code_challenge: str
    auth_time: float
    amr: tuple[str, ...]
    acr: str
    created_at: float
    expires_at: float
    used_at: float | None = None
    family_id: str | None = None
    access_jti: str | None = None
    access_exp: float | None = None


@dataclass(frozen=True, slots=True)
class RefreshFamily:
    """All refresh tokens descending from one grant. ``generation`` counts rotations; only the
    token of the current generation refreshes, the previous one only within the grace window."""

    id: str
    client_id: str
    subject: str
    scope: str
    audience: tuple[str, ...]
    auth_time: float
    amr: tuple[str, ...]
    acr: str
    created_at: float
    expires_at: float
    last_used_at: float
    generation: int = 0
    rotated_at: float | None = None
    retry_response: str | None = None
    access_jti: str | None = None
    access_exp: float | None = None
    revoked_at: float | None = None
    revoked_reason: str | None = None
