"""Config of the CORS layer: an exact origin allow-list."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from bastion.config.types import Duration, StrictModel


class CorsConfig(StrictModel):
    """Cross-origin rules for a route. Empty `allow_origins`: no cross-origin access at all."""

    allow_origins: list[str] = Field(
        default_factory=list,
        description="Exact origins (scheme://host[:port]) allowed; '*' only without credentials.",
    )
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        description="Methods a preflight may ask for.",
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
            if origin != origin.strip() or "://" not in origin or origin.endswith("/"):
                raise ValueError(
                    f"origin {origin!r} must be exactly scheme://host[:port] (no path, no slash)"
                )
            if origin.lower() == "null":
                raise ValueError("origin 'null' cannot be allowed")
        return self
