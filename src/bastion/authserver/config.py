"""Config of the authorization server (``auth`` in bastion.yaml).

``AuthConfig`` composes the protocol settings owned here with ``keys`` (signing keys) and
``users`` (accounts, login, MFA). Lifetimes are bounded by the standards we follow: access tokens
at most one hour (RFC 9068 tokens are not revocable everywhere at once, so they must be short),
authorization codes at most ten minutes (RFC 6749 §4.1.2).
"""

from __future__ import annotations

import ipaddress
from typing import Self
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import Field, SecretStr, field_validator, model_validator

from bastion.authserver.keys.config import KeysConfig
from bastion.authserver.users.config import UsersConfig
from bastion.config.types import Duration, RateSpec, Secret, StrictModel

_TOTP_KEY_INFO = b"bastion totp key from client_secret_pepper v1"

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (plain HTTP is tolerated there)."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RefreshConfig(StrictModel):
    """Refresh tokens: rotation on every use, families, idempotent retry."""

    grace: Duration = Field(
        default=30,
        ge=0,
        le=300,
        description="After a rotation, the previous refresh token presented again by the same "
        "client gets the same response (idempotent retry, FAPI 2.0) for this long; later it "
        "counts as reuse and revokes the whole family. Confidential clients only: for a "
        "public client (auth_method none) any second use is reuse.",
    )
    idle_timeout: Duration = Field(
        default=14 * 86400, gt=0, description="A family unused for this long expires."
    )
    absolute_lifetime: Duration = Field(
        default=30 * 86400,
        gt=0,
        description="A family expires this long after the login that started it, however "
        "often it is used.",
    )

    @model_validator(mode="after")
    def _idle_within_absolute(self) -> Self:
        if self.idle_timeout > self.absolute_lifetime:
            raise ValueError("idle_timeout cannot be longer than absolute_lifetime")
        return self


class AuthConfig(StrictModel):
    """The authorization server: OAuth 2.1, OpenID Connect, signing keys, users."""

    issuer: str = Field(
        description="The issuer identifier (`iss` of every token, RFC 8414): an https URL "
        "without query or fragment; plain http only for a loopback host."
    )
    bind: str = Field(
        default="127.0.0.1:9000", description="host:port the authorization server listens on."
    )
    tls_cert: str | None = Field(default=None, description="PEM certificate chain (HTTPS).")
    tls_key: str | None = Field(default=None, description="PEM private key (HTTPS).")
    client_secret_pepper: Secret = Field(
        description="Server-side secret (≥ 32 bytes) under which client secrets are stored as "
        "HMAC-SHA256. Changing it invalidates every client secret."
    )
    access_token_ttl: Duration = Field(
        default=300, gt=0, le=3600, description="Lifetime of access tokens (at most 1h)."
    )
    id_token_ttl: Duration = Field(
        default=300, gt=0, le=3600, description="Lifetime of OpenID Connect ID tokens."
    )
    code_ttl: Duration = Field(
        default=60, gt=0, le=600, description="Lifetime of authorization codes (single use)."
    )
    default_audience: str | None = Field(
        default=None,
        description="`aud` of access tokens for clients registered without an audience.",
    )
    refresh: RefreshConfig = Field(default_factory=RefreshConfig)
    token_rate_limit: RateSpec = Field(
        default_factory=lambda: RateSpec(rate=100, per=1.0, burst=200),
        description="Requests to /token, /introspect and /revoke allowed per client IP.",
    )
    trusted_proxies: int = Field(
        default=0,
        ge=0,
        le=10,
        description="How many reverse proxies (the gateway included) in front of the "
        "authorization server append to X-Forwarded-For; the client IP for throttling and "
        "security events is the hop the nearest of them wrote. 0: the socket address is the "
        "client and X-Forwarded-For is ignored.",
    )
    client_cache_ttl: Duration = Field(
        default=5,
        ge=0,
        le=60,
        description="How long a process keeps a client's registration in memory; a deleted "
        "client or a retired secret stops working within this time.",
    )
    max_body_bytes: int = Field(
        default=16_384, ge=1024, le=1_048_576, description="Larger request bodies get 413."
    )
    keys: KeysConfig = Field(default_factory=KeysConfig)
    users: UsersConfig = Field(default_factory=UsersConfig)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.query or parts.fragment or not parts.hostname:
            raise ValueError("issuer must be a URL with a host and no query or fragment")
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname)):
            raise ValueError("issuer must be https (plain http only on a loopback host)")
        return v.rstrip("/")

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("bind must be host:port with a port between 0 and 65535")
        return v

    @field_validator("client_secret_pepper")
    @classmethod
    def _pepper(cls, v: Secret) -> Secret:
        if len(v.get_secret_value().encode()) < 32:
            raise ValueError("client_secret_pepper must be at least 32 bytes")
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        return self

    @model_validator(mode="after")
    def _totp_key(self) -> Self:
        """Never TOTP keys in plain text: without ``users.totp_encryption_key``, one derived
        from the pepper (a server-side secret every deployment has) seals them. Every process
        that loads this config (server, CLI, control API) derives the same key."""
        if self.users.totp_encryption_key is None:
            derived = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=_TOTP_KEY_INFO
            ).derive(self.client_secret_pepper.get_secret_value().encode())
            users = self.users.model_copy(update={"totp_encryption_key": SecretStr(derived.hex())})
            object.__setattr__(self, "users", users)  # frozen model: set once, while validating
        return self

    @property
    def host(self) -> str:
        return self.bind.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.bind.rpartition(":")[2])
