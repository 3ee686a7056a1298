"""Config of the CORS layer: an exact origin allow-list."""

from __future__ import annotations

import re
from typing import Self

from pydantic import Field, field_validator, model_validator

from bastion.config.types import Duration, StrictModel

# scheme://host[:port]: a DNS name or IPv4 address, or a bracketed IPv6 address; nothing else
# (no path, no user info, no wildcard: matching is exact, never by pattern or suffix).
_ORIGIN = re.compile(
    r"^[A-Za-z][A-Za-z0-9+.-]*://"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?$"
)
# RFC 9110 token: what a method or a header name may be.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def normalize_origin(origin: str) -> str:
    """An origin as browsers serialise it: scheme and host lower-cased, default port dropped.

    Used on both sides of the comparison; the result is still compared for exact equality.
    """
    o = origin.lower()
    scheme = o.partition("://")[0]
    port = _DEFAULT_PORTS.get(scheme)
    if port is not None and o.endswith(port):
        return o[: -len(port)]
    return o


class CorsConfig(StrictModel):
    """Cross-origin rules for a route. Empty `allow_origins`: no cross-origin access at all."""

    allow_origins: list[str] = Field(
        default_factory=list,
        description="Exact origins (scheme://host[:port]) allowed; '*' only without credentials.",
    )
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        description="Methods a preflight may ask for (compared case-sensitively, as browsers do).",
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: ["authorization", "content-type", "x-api-key", "x-request-id"],
        description="Request headers a preflight may ask for (case-insensitive).",
    )
    expose_headers: list[str] = Field(
        default_factory=list, description="Response headers scripts may read."
    )
    allow_credentials: bool = Field(default=False, description="Send Allow-Credentials: true.")
    max_age: Duration = Field(default=600, le=86400, description="Preflight cache lifetime.")

    @field_validator("allow_methods", "allow_headers", "expose_headers")
    @classmethod
    def _tokens(cls, v: list[str]) -> list[str]:
        for item in v:
            if item == "*":
                raise ValueError("'*' is not supported here: list the names exactly")
            if not _TOKEN.match(item):
                raise ValueError(f"{item!r} is not a valid method or header name")
        return v

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Self:
        if "*" in self.allow_origins and self.allow_credentials:
            raise ValueError(
                "allow_origins '*' together with allow_credentials is refused: "
                "any site could read authenticated responses"
            )
        for origin in self.allow_origins:
            if origin == "*":
                continue
            # Checked first: 'null' (sandboxed iframes, file: pages) would otherwise only be
            # reported as a malformed origin.
            if origin.strip().lower() == "null":
                raise ValueError("origin 'null' cannot be allowed")
            if not _ORIGIN.match(origin):
                raise ValueError(
                    f"origin {origin!r} must be exactly scheme://host[:port] "
                    "(no path, no trailing slash, no wildcard)"
                )
        return self
