"""Config of the transport layer: size limits, HSTS, trusted proxies, IP rules, header hygiene."""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network
from typing import Self

from pydantic import Field, field_validator, model_validator

from bastion.config.types import StrictModel

ONE_YEAR = 31_536_000

DEFAULT_STRIPPED = (
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-runtime",
    "x-version",
    "x-generator",
    "x-backend-server",
    "via",
)

# Removing these would change how the response is framed or delivered (desync, smuggling).
NEVER_STRIPPED = frozenset(
    {"content-length", "transfer-encoding", "connection", "content-type", "content-encoding"}
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class HstsConfig(StrictModel):
    """Strict-Transport-Security sent on every HTTPS response."""

    max_age: int = Field(default=ONE_YEAR, ge=ONE_YEAR, description="Seconds; at least one year.")
    include_subdomains: bool = Field(default=True, description="Add `includeSubDomains`.")
    preload: bool = Field(default=False, description="Add `preload` (only if you have submitted).")

    def header_value(self) -> str:
        v = f"max-age={self.max_age}"
        if self.include_subdomains:
            v += "; includeSubDomains"
        if self.preload:
            v += "; preload"
        return v

    @model_validator(mode="after")
    def _preload_needs_subdomains(self) -> Self:
        if self.preload and not self.include_subdomains:
            raise ValueError("preload requires include_subdomains (browsers' preload rules)")
        return self


class TransportConfig(StrictModel):
    """Per-route transport rules (global defaults under `defaults.transport`)."""

    max_body_bytes: int = Field(
        default=1_048_576, gt=0, description="Largest request body accepted (413 above)."
    )
    trusted_proxies: int = Field(
        default=0,
        ge=0,
        le=10,
        description="How many reverse proxies in front of Bastion append to X-Forwarded-For. "
        "0: the socket address is the client.",
    )
    hsts: HstsConfig = Field(default_factory=HstsConfig)
    ip_allow: list[IPv4Network | IPv6Network] = Field(
        default_factory=list, description="If not empty, only these CIDRs may call the route."
    )
    ip_deny: list[IPv4Network | IPv6Network] = Field(
        default_factory=list, description="CIDRs refused (403); checked before `ip_allow`."
    )
    strip_response_headers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STRIPPED),
        description="Upstream response headers removed (version disclosure).",
    )

    @field_validator("strip_response_headers")
    @classmethod
    def _strippable(cls, v: list[str]) -> list[str]:
        names = [h.strip().lower() for h in v]
        for name in names:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a header name")
            if name in NEVER_STRIPPED:
                raise ValueError(f"{name!r} frames the response and cannot be stripped")
        return names
