"""Config of users, login and MFA (``auth.users`` in bastion.yaml)."""

from __future__ import annotations

from pydantic import Field, field_validator

from bastion.config.types import Duration, RateSpec, Secret, StrictModel

#: PCI DSS v4.0 8.3.4: lock after not more than 10 attempts, for at least 30 minutes.
MAX_LOCKOUT_THRESHOLD = 10
MIN_LOCKOUT_DURATION = 1800.0


class PasswordHashConfig(StrictModel):
    """argon2id parameters (RFC 9106). The floor is OWASP's minimum (m=19 MiB, t=2, p=1); the
    default is RFC 9106's second recommended option (m=64 MiB, t=3, p=4). A stored hash made
    with other parameters is re-made at the user's next successful login."""

    time_cost: int = Field(default=3, ge=2, le=20, description="argon2id passes (t).")
    memory_cost: int = Field(
        default=65536, ge=19456, le=4_194_304, description="argon2id memory in KiB (m)."
    )
    parallelism: int = Field(default=4, ge=1, le=16, description="argon2id lanes (p).")
    max_concurrent: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Hashes computed at once per process; more wait. Bounds memory "
        "(max_concurrent x memory_cost) and CPU under a flood of logins.",
    )


class UsersConfig(StrictModel):
    """Users, login and MFA of the authorization server."""

    lockout_threshold: int = Field(
        default=10,
        ge=1,
        le=MAX_LOCKOUT_THRESHOLD,
        description="Failed logins (passwords and MFA codes) before the account is locked.",
    )
    lockout_duration: Duration = Field(
        default=MIN_LOCKOUT_DURATION,
        ge=MIN_LOCKOUT_DURATION,
        le=30 * 86400,
        description="How long a locked account stays locked (at least 30m, PCI DSS 8.3.4).",
    )
    login_rate: RateSpec = Field(
        default=RateSpec(rate=20, per=60, burst=10),
        description="Per client IP: login and MFA form submissions allowed (GCRA).",
    )
    mfa_required_roles: tuple[str, ...] = Field(
        default=("admin",),
        description="Users with any of these roles must enrol TOTP and cannot switch it off.",
    )
    password_hash: PasswordHashConfig = Field(default_factory=PasswordHashConfig)
    password_min_length: int = Field(
        default=12, ge=8, le=128, description="Shortest password accepted when one is set."
    )
    session_lifetime: Duration = Field(
        default=8 * 3600, gt=0, le=7 * 86400, description="Absolute lifetime of a login session."
    )
    session_idle_timeout: Duration = Field(
        default=3600, gt=0, le=86400, description="A login session unused this long ends."
    )
    mfa_step_timeout: Duration = Field(
        default=300,
        ge=30,
        le=1800,
        description="Time to enter the second factor (or enrol) after the password.",
    )
    totp_issuer: str = Field(
        default="Bastion",
        min_length=1,
        max_length=64,
        description="Issuer name shown in authenticator apps.",
    )
    totp_valid_window: int = Field(
        default=1, ge=0, le=2, description="TOTP steps accepted either side of now (clock drift)."
    )
    totp_encryption_key: Secret | None = Field(
        default=None,
        description="Secret (at least 32 bytes; ${ENV} or file:) under which TOTP keys are "
        "stored AES-256-GCM encrypted. Unset: derived from auth.client_secret_pepper (so "
        "changing the pepper then also voids every TOTP enrolment). TOTP keys stored in plain "
        "text are refused.",
    )
    recovery_codes: int = Field(
        default=10, ge=4, le=20, description="One-time recovery codes made at TOTP enrolment."
    )
    default_page: str = Field(
        default="/account",
        description="Where a login goes when its return_to is missing or not allowed.",
    )

    @field_validator("totp_encryption_key")
    @classmethod
    def _key_length(cls, value: Secret | None) -> Secret | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("totp_encryption_key must be at least 32 bytes")
        return value

    @field_validator("default_page")
    @classmethod
    def _local_page(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith("//") or "\\" in value:
            raise ValueError("default_page must be a local path starting with one '/'")
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
            raise ValueError("default_page must be printable ASCII without spaces")
        return value
