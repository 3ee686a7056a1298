"""Config of the proxy step: timeouts, pool sizes, header policy."""

from __future__ import annotations

from pydantic import Field

from bastion.config.types import Duration, StrictModel


class ProxyConfig(StrictModel):
    """How a route forwards to its upstream."""

    connect_timeout: Duration = Field(default=5, gt=0, description="502 if no connection in time.")
    read_timeout: Duration = Field(
        default=30, gt=0, description="504 if the upstream is silent this long."
    )
    max_connections: int = Field(
        default=256,
        gt=0,
        description="Most open connections to the upstream, per route and worker.",
    )
    idle_timeout: Duration = Field(
        default=60, gt=0, description="Idle pooled connections closed after this."
    )
    preserve_host: bool = Field(
        default=False, description="Send the client's Host instead of the upstream's."
    )
    hide_credentials: bool = Field(
        default=True,
        description="Remove Authorization / X-API-Key from authenticated requests before "
        "forwarding; the upstream gets x-bastion-subject, -client-id, -scopes instead.",
    )
    max_response_header_bytes: int = Field(
        default=65536, gt=0, description="Larger upstream response heads are refused (502)."
    )
    unsafe_expose_upstream_errors: bool = Field(
        default=False,
        description="Pass upstream 5xx bodies to clients (they may hold stack traces).",
    )
