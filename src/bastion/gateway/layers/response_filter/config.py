"""Config of the response_filter layer: schema allow-list and sensitive-data masking of responses."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from bastion.config.types import StrictModel
from bastion.core.sensitive import detector_names

DEFAULT_MAX_BODY_BYTES = 1_048_576


class ResponseFilterConfig(StrictModel):
    """What the gateway does to JSON responses before they reach the client (excessive data
    exposure). Only `application/json` and `+json` bodies are held and filtered; others stream."""

    enabled: bool | None = Field(
        default=None,
        description="Unset: on for routes with an `openapi.spec` (schema allow-list and "
        "detectors), off elsewhere. `true` on a route without a spec: the detectors alone, no "
        "allow-list. `false`: off.",
    )
    enforce: bool = Field(
        default=True,
        description="false: shadow mode — what would be removed, masked or blocked is recorded "
        "in the audit record (`bastion.findings.response_filter`) and the response passes "
        "unchanged (the client's Accept-Encoding too).",
    )
    undeclared: Literal["remove", "report", "block"] = Field(
        default="remove",
        description="Properties the response schema does not declare (recursively; "
        "`additionalProperties` honoured, a property declared in any `allOf`/`anyOf`/`oneOf` "
        "branch kept, `writeOnly` ones never returned): `remove` them, `report` them only (in the audit record), or "
        "`block` the response (502 `response.blocked`).",
    )
    sensitive: Literal["mask", "remove", "block"] = Field(
        default="mask",
        description="Values the detectors flag, fields named like secrets and "
        "`x-bastion-sensitive` fields the caller may not see: `mask` them (strings become "
        "`[REDACTED]` or `****1234` for cards, numbers null), `remove` them, or `block` the "
        "response (502).",
    )
    undeclared_status: Literal["report", "block"] = Field(
        default="block",
        description="A response whose status, or content type for that status, the operation "
        "does not declare: `block` it (502 `response.blocked`), or `report` it and apply only "
        "the detectors. A body sent without a Content-Type for a status that declares no "
        "content is undeclared too. Declare `default` or `4XX` responses in the document to "
        "let error bodies through.",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        le=64 * 1_048_576,
        description="Largest JSON body held in memory to be filtered.",
    )
    oversize: Literal["pass", "block"] = Field(
        default="block",
        description="A JSON body over `max_body_bytes`: `block` it (502 `response.too_large`) or "
        "`pass` it through unfiltered (logged as a warning at start-up).",
    )
    detectors: list[str] = Field(
        default_factory=lambda: list(detector_names()),
        description="Detectors that run: card_number (Luhn and issuer prefix), us_ssn, iban "
        "(mod-97), private_key, jwt, bastion_api_key, password_hash, field_name (keys named "
        "like password, secret, ssn, card_number, cvv, api_key, token …). Default: all.",
    )
    sensitive_fields: list[str] = Field(
        default_factory=list,
        description="More field names treated as sensitive (`dob`, `date_of_birth` …; matched "
        "by words, so `dateOfBirth` counts too).",
    )
    sensitive_roles: list[str] = Field(
        default_factory=list,
        description="Roles that may see `x-bastion-sensitive` fields whose schema lists no "
        "`x-bastion-sensitive-roles` of its own. Empty: nobody.",
    )

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, v: list[str]) -> list[str]:
        known = detector_names()
        unknown = [d for d in v if d not in known]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; use some of {list(known)}")
        return v

    @field_validator("sensitive_fields", "sensitive_roles")
    @classmethod
    def _no_blank_names(cls, v: list[str]) -> list[str]:
        if any(not name.strip() for name in v):
            raise ValueError("names must not be empty")
        return v
