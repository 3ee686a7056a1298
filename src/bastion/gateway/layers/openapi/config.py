"""Config of the openapi layer: which document a route enforces, and how strictly."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from bastion.config.types import Duration, StrictModel
from bastion.openapi.spec import SpecOptions


class OpenApiConfig(StrictModel):
    """OpenAPI enforcement: requests must match a declared operation and its schemas (a
    positive security model). No `spec`: neither the openapi nor the authz layer runs."""

    spec: str | None = Field(
        default=None,
        description="OpenAPI 3.0 or 3.1 document (YAML or JSON): a file path (relative to the "
        "working directory) or an https:// URL, read and compiled once at start-up.",
    )
    spec_sha256: str | None = Field(
        default=None,
        description="SHA-256 (hex) of the document's bytes: start-up refuses a document that "
        "does not match. Pins a spec fetched from a URL (config check warns when one is not "
        "pinned); for a file, covers the file named by `spec`, not the files it references.",
    )
    enforce: bool = Field(
        default=True,
        description="false: shadow mode — what would be refused is recorded in the audit "
        "record (`bastion.findings.openapi_shadow`) and the request continues unchanged.",
    )
    base_path: str | None = Field(
        default=None,
        description="Prefix of the document's paths in the request path as the route forwards "
        "it (after strip_prefix); '' for none. Default: the path of the document's "
        "servers[0].url.",
    )
    additional_properties: Literal["closed", "as_declared"] = Field(
        default="closed",
        description="`closed`: request-body objects refuse properties they do not declare "
        "unless the schema says additionalProperties (mass assignment). `as_declared`: JSON "
        "Schema's open default applies (config check warns).",
    )
    undeclared_query: Literal["refuse", "allow"] = Field(
        default="refuse",
        description="`refuse`: a query parameter the operation does not declare is a 400. "
        "`allow`: undeclared query parameters pass unchecked (config check warns).",
    )
    validate_formats: bool = Field(
        default=True,
        description="Check `format` (date-time, uuid, email, ipv4 …) of request values.",
    )
    max_body_depth: int = Field(
        default=32,
        ge=1,
        le=512,
        description="Deepest nesting of objects and arrays accepted in a JSON body (checked "
        "only where the schema itself allows deeper values).",
    )
    fetch_timeout: Duration = Field(
        default=10, gt=0, le=120, description="Timeout of fetching a spec from a URL."
    )
    max_spec_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="Largest document (and each file it references) read.",
    )
    unsafe_allow_http_spec: bool = Field(
        default=False, description="Accept an http:// spec URL on a loopback host (tests only)."
    )

    @field_validator("base_path")
    @classmethod
    def _base_path(cls, v: str | None) -> str | None:
        if v is None or v in ("", "/"):
            return "" if v is not None else v
        if not v.startswith("/") or "?" in v or "#" in v:
            raise ValueError("base_path must start with '/' and contain no '?' or '#'")
        return v.rstrip("/")

    @field_validator("spec_sha256")
    @classmethod
    def _sha256(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("spec_sha256 must be 64 hexadecimal digits")
        return v

    @model_validator(mode="after")
    def _spec_given(self) -> Self:
        if self.spec is not None and not self.spec.strip():
            raise ValueError("spec must be a file path or an https:// URL")
        return self

    def spec_options(self) -> SpecOptions:
        """How to compile this route's document."""
        return SpecOptions(
            close_request_bodies=self.additional_properties == "closed",
            validate_formats=self.validate_formats,
            fetch_timeout=self.fetch_timeout,
            max_bytes=self.max_spec_bytes,
            unsafe_allow_http=self.unsafe_allow_http_spec,
            sha256=self.spec_sha256,
        )
