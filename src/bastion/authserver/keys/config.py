"""Config of the signing keys (``auth.keys`` in bastion.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bastion.config.types import Duration, Secret, StrictModel


class LocalKeyStoreConfig(StrictModel):
    """Private keys sealed with AES-256-GCM in the state store."""

    kek: Secret | None = Field(
        default=None,
        description=(
            "Key-encryption key: 32 random bytes, base64 or hex (e.g. the output of"
            " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`). Give it as"
            " '${BASTION_KEK}' or 'file:/run/secrets/kek', never inline. Required with a"
            " SQLite or PostgreSQL store; with `memory://` a random per-process key is used."
        ),
    )
    previous_keks: list[Secret] = Field(
        default_factory=list,
        max_length=4,
        description=(
            "Former key-encryption keys, to rotate the KEK: keys sealed under one of them still"
            " load, and each process's next refresh re-seals them under `kek`. Remove an entry"
            " once every process runs with the new `kek`."
        ),
    )


class Pkcs11KeyStoreConfig(StrictModel):
    """Keys generated and kept inside a PKCS#11 token (an HSM); the token signs."""

    library: str = Field(
        default="/usr/lib/softhsm/libsofthsm2.so",
        description="Path of the token's PKCS#11 module (.so).",
    )
    token_label: str = Field(min_length=1, description="Label of the token that holds the keys.")
    pin: Secret = Field(description="User PIN of the token, as '${ENV}' or 'file:/path'.")


class KeysConfig(StrictModel):
    """Signing keys of the authorization server: algorithm, where they live, how they rotate."""

    algorithm: Literal["ES256", "EdDSA", "PS256"] = Field(
        default="ES256", description="Algorithm of new signing keys."
    )
    store: Literal["local", "pkcs11"] = Field(
        default="local",
        description=(
            "Where private keys live: 'local' (AES-256-GCM sealed rows in the state store) or"
            " 'pkcs11' (generated in an HSM, never extractable)."
        ),
    )
    local: LocalKeyStoreConfig = Field(
        default_factory=LocalKeyStoreConfig, description="Settings of the 'local' key store."
    )
    pkcs11: Pkcs11KeyStoreConfig | None = Field(
        default=None, description="Settings of the 'pkcs11' key store (required with it)."
    )
    rotation_interval: Duration = Field(
        default=30 * 86400.0,
        ge=3600,
        description=(
            "How long a key signs before a scheduled rotation replaces it ('30d'). The next key"
            " is published two JWKS cache lifetimes before it takes over."
        ),
    )
    jwks_max_age: Duration = Field(
        default=300.0,
        gt=0,
        le=86400,
        description=(
            "Cache lifetime of the JWKS (Cache-Control: max-age). A new key is published at"
            " least twice this long before it signs."
        ),
    )
    clock_skew: Duration = Field(
        default=60.0,
        ge=0,
        le=600,
        description=(
            "Clock skew allowed to verifiers: a retiring key stays published this much longer"
            " than the longest-lived token it signed."
        ),
    )
    refresh_interval: Duration = Field(
        default=30.0,
        gt=0,
        le=600,
        description=(
            "How often each auth-server process re-reads the key set from the store (another"
            " process may have rotated). Signing stops, fail closed, when the set could not be"
            " re-read for twice this long."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> KeysConfig:
        if self.store == "pkcs11" and self.pkcs11 is None:
            raise ValueError("store 'pkcs11' needs a 'pkcs11' section (token_label, pin)")
        if self.rotation_interval <= 2 * self.jwks_max_age:
            raise ValueError("rotation_interval must be longer than two jwks_max_age")
        return self
