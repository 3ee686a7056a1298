"""Config of the ratelimit layer: several GCRA limits per route."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bastion.config.types import RateSpec, StrictModel


class LimitConfig(RateSpec):
    """One limit. `key` says whose budget it is: the principal (the client IP when the route is
    anonymous), the client IP, or the route as a whole."""

    key: Literal["principal", "ip", "route"] = Field(default="principal")


class RateLimitConfig(StrictModel):
    """Per-route rate limits. No limits: none enforced (config check warns)."""

    limits: list[LimitConfig] = Field(default_factory=list)
    enforce: bool = Field(
        default=True,
        description="false: shadow mode, only record what would be refused (audit record: "
        "`bastion.findings.ratelimit_shadow`).",
    )
    headers: bool = Field(default=True, description="Send RateLimit and RateLimit-Policy headers.")
