"""Config of the audit log: sinks, queue bounds, extra redaction."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from bastion.config.types import Duration, StrictModel


class FileSink(StrictModel):
    """JSON lines in a file, rotated by size."""

    type: Literal["file"]
    path: str
    max_bytes: int = Field(default=100 * 1024 * 1024, gt=0, description="Rotate above this size.")
    backups: int = Field(default=10, ge=0, description="Rotated files kept (path.1 … path.N).")


class StdoutSink(StrictModel):
    """JSON lines on standard output."""

    type: Literal["stdout"]


class StoreSink(StrictModel):
    """Rows in the state store's `audit_log` table."""

    type: Literal["store"]


Sink = Annotated[FileSink | StdoutSink | StoreSink, Field(discriminator="type")]


class AuditConfig(StrictModel):
    """Global audit settings. One record per request, written off the request path."""

    sinks: list[Sink] = Field(default_factory=lambda: list[Sink]([StdoutSink(type="stdout")]))
    queue_size: int = Field(
        default=10_000,
        ge=10,
        description="Records buffered; when full, requests wait (nothing is dropped).",
    )
    batch_size: int = Field(default=500, ge=1)
    flush_interval: Duration = Field(default=0.2, gt=0, le=10)
    shutdown_timeout: Duration = Field(
        default=10,
        gt=0,
        le=300,
        description="At shutdown, how long to keep retrying a failing sink before giving up.",
    )
    redact_fields: list[str] = Field(
        default_factory=list, description="Extra field/header/parameter names to redact."
    )
