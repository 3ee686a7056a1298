"""Config of the authn layer (per route) and of the trusted token issuers (global)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, HttpUrl, model_validator

from bastion.config.types import Duration, RateSpec, Secret, StrictModel

ASYMMETRIC_ALGS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
)
HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})

Method = Literal["jwt", "api_key"]


class IssuerConfig(StrictModel):
    """A token issuer the gateway trusts. Keys come from `jwks_url`, `jwks_file` or, for HMAC
    algorithms only, a shared `hmac_secret` — never both kinds (no algorithm confusion)."""

    issuer: str = Field(description="Exact `iss` value.")
    jwks_url: HttpUrl | None = Field(
        default=None, description="JWKS endpoint, refreshed in the background."
    )
    jwks_file: str | None = Field(default=None, description="A local JWKS file (read at start-up).")
    hmac_secret: Secret | None = Field(
        default=None, description="Shared secret for HS256/384/512 (at least 32 bytes)."
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["ES256"],
        description="Allowed `alg` values; 'none' is never allowed.",
    )
    audiences: list[str] = Field(
        default_factory=list, description="Accepted `aud` values. Empty: any (config check warns)."
    )
    leeway: Duration = Field(default=60, le=300, description="Clock skew allowed on exp/nbf/iat.")
    max_token_bytes: int = Field(
        default=8192, ge=256, le=65536, description="Longer tokens are refused unread."
    )
    jwks_refresh: Duration = Field(
        default=300, ge=1, description="Background JWKS refresh interval."
    )
    jwks_stale_max: Duration = Field(
        default=3600,
        ge=0,
        description="How long keys may be used after the JWKS endpoint fails; then fail closed.",
    )
    unknown_kid_cooldown: Duration = Field(
        default=30, ge=0, description="Minimum time between two refetches caused by unknown `kid`s."
    )
    jwks_timeout: Duration = Field(default=5, gt=0, description="Timeout of one JWKS fetch.")
    unsafe_allow_http_jwks: bool = Field(
        default=False, description="Accept a plain-HTTP jwks_url (loopback/test only)."
    )
    require_at_jwt: bool = Field(
        default=False,
        description="Accept only RFC 9068 access tokens (header typ `at+jwt`): refuses the "
        "issuer's ID tokens and other JWTs it signs with the same keys. Turn it on for issuers "
        "that type their access tokens (Bastion's own authorization server always does, and "
        "`bastion up` sets it for it); off, typ `JWT` or no typ is accepted too.",
    )

    @model_validator(mode="after")
    def _check_keys_and_algs(self) -> Self:
        algs = set(self.algorithms)
        if not algs:
            raise ValueError("algorithms must not be empty")
        if any(a.lower() == "none" for a in algs):
            raise ValueError("algorithm 'none' is never allowed")
        unknown = algs - ASYMMETRIC_ALGS - HMAC_ALGS
        if unknown:
            raise ValueError(f"unknown algorithms: {sorted(unknown)}")
        sources = [s for s in (self.jwks_url, self.jwks_file, self.hmac_secret) if s is not None]
        if len(sources) != 1:
            raise ValueError("set exactly one of jwks_url, jwks_file, hmac_secret")
        if self.hmac_secret is not None:
            if algs - HMAC_ALGS:
                raise ValueError("with hmac_secret only HS256/HS384/HS512 are allowed")
            if len(self.hmac_secret.get_secret_value().encode()) < 32:
                raise ValueError("hmac_secret must be at least 32 bytes")
        elif algs & HMAC_ALGS:
            raise ValueError("HMAC algorithms need hmac_secret; they are never used with a JWKS")
        if (
            self.jwks_url is not None
            and self.jwks_url.scheme != "https"
            and not self.unsafe_allow_http_jwks
        ):
            raise ValueError("jwks_url must be https (or set unsafe_allow_http_jwks)")
        return self


class AuthnConfig(StrictModel):
    """Per-route authentication."""

    methods: list[Method] = Field(
        default_factory=lambda: list[Method](["jwt", "api_key"]),
        description="Accepted credentials. Empty needs `unsafe_allow_anonymous: true`.",
    )
    issuers: list[str] | None = Field(
        default=None, description="Issuers accepted on this route (default: all configured)."
    )
    audience: str | None = Field(
        default=None, description="`aud` this route requires (overrides the issuer's list)."
    )
    required_scopes: list[str] = Field(
        default_factory=list, description="Scopes every caller of the route must hold."
    )
    failed_attempts_limit: RateSpec = Field(
        default_factory=lambda: RateSpec(rate=20, per=60.0),
        description="Failed authentications allowed per client IP (credential stuffing).",
    )
    verify_limit: RateSpec = Field(
        default_factory=lambda: RateSpec(rate=100, per=1.0, burst=200),
        description="Signature verifications (token-cache misses) allowed per client IP.",
    )
    unsafe_allow_anonymous: bool = Field(
        default=False, description="Allow a route with no authentication at all."
    )

    @model_validator(mode="after")
    def _anonymous_is_explicit(self) -> Self:
        if not self.methods and not self.unsafe_allow_anonymous:
            raise ValueError(
                "methods is empty: set unsafe_allow_anonymous: true for a public route"
            )
        return self


class ApiKeysConfig(StrictModel):
    """Global API-key settings: the pepper and the key lifecycle (docs/keys-lifecycle.md)."""

    pepper: Secret | None = Field(
        default=None,
        description="Server-side secret (≥ 32 bytes) under which key secrets are HMACed. "
        "Required when a route accepts api_key.",
    )
    default_ttl: Duration = Field(
        default=180 * 86400, gt=0, description="Lifetime of a new key (at most `max_age`)."
    )
    max_age: Duration = Field(
        default=180 * 86400,
        gt=0,
        description="No key is accepted once it is older than this, whatever its expiry says.",
    )
    warn_age: Duration = Field(
        default=90 * 86400,
        gt=0,
        description="From this age a key is listed in the `warning` state and in "
        "`bastion keys report`: time to rotate it.",
    )
    rotation_grace: Duration = Field(
        default=7 * 86400,
        ge=0,
        le=90 * 86400,
        description="How long a rotated key keeps working next to its successor.",
    )
    usage_flush_interval: Duration = Field(
        default=5,
        gt=0,
        le=300,
        description="How often a gateway writes its batched key usage (last used, count).",
    )

    @model_validator(mode="after")
    def _pepper_strength(self) -> Self:
        if self.pepper is not None and len(self.pepper.get_secret_value().encode()) < 32:
            raise ValueError("pepper must be at least 32 bytes")
        if self.default_ttl > self.max_age:
            raise ValueError("default_ttl must not exceed max_age")
        if self.warn_age >= self.max_age:
            raise ValueError("warn_age must be shorter than max_age")
        return self
