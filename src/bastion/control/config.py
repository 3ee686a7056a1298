"""The ``control:`` section of ``bastion.yaml``: where the admin API listens and whose tokens
it trusts."""

from __future__ import annotations

from pydantic import Field, HttpUrl, field_validator

from bastion.config.types import StrictModel


class ControlConfig(StrictModel):
    """The admin API (`bastion control serve`). Tokens come from our authorization server: with
    an `auth` section in the same file its signing keys are read from the shared store;
    otherwise `jwks_url` names the issuer's JWKS."""

    bind: str = Field(default="127.0.0.1:9100", description="host:port the admin API listens on.")
    tls_cert: str | None = Field(default=None, description="PEM certificate chain (HTTPS).")
    tls_key: str | None = Field(default=None, description="PEM private key (HTTPS).")
    audience: str = Field(
        default="urn:bastion:admin",
        min_length=1,
        max_length=512,
        description="The `aud` an admin token must carry; a token for another API is refused.",
    )
    issuer: str | None = Field(
        default=None,
        description="The `iss` of admin tokens. None: `auth.issuer` of this file.",
    )
    jwks_url: HttpUrl | None = Field(
        default=None,
        description="The issuer's JWKS, when the authorization server is not in this file "
        "(its keys are then fetched and cached for `jwks_cache_ttl`).",
    )
    allowed_clients: list[str] = Field(
        default_factory=list,
        description="OAuth client ids whose tokens are accepted (the CLI's, the console's). "
        "Empty: any client the authorization server lets ask for `audience`.",
    )
    jwks_cache_ttl: float = Field(
        default=60.0, gt=0, le=3600, description="Seconds a fetched JWKS is used (s)."
    )

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("bind must be host:port with a port between 0 and 65535")
        return v

    @property
    def host(self) -> str:
        return self.bind.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.bind.rpartition(":")[2])
