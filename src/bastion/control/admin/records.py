"""Plain records of the admin API: applications and admin audit entries. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RISK_CLASSES = ("public", "partner", "internal")
DATA_CLASSES = ("public", "internal", "confidential")


@dataclass(frozen=True, slots=True)
class Application:
    """An application: the ``clients`` row its API keys reference plus its metadata. A client
    made before the control plane (``bastion keys create``) has ``owner`` None and no
    metadata; only owners and admins see or touch it until someone gives it an owner."""

    id: str
    name: str
    created_at: float
    owner: str | None = None
    contact: str = ""
    environment: str = ""
    risk_class: str | None = None
    data_classification: str | None = None
    allowed_scopes: tuple[str, ...] = ()
    updated_at: float | None = None

    def public(self) -> dict[str, Any]:
        """The JSON shape of the admin API (``Application`` in the OpenAPI document)."""
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "contact": self.contact,
            "environment": self.environment,
            "risk_class": self.risk_class,
            "data_classification": self.data_classification,
            "allowed_scopes": list(self.allowed_scopes),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change (or refused attempt) made through the admin API. ``before``/``after`` are
    already stripped of secrets; ``id`` is 0 until the repository stored it."""

    at: float
    actor: str
    action: str
    target_type: str
    target_id: str
    outcome: str
    source_ip: str | None = None
    request_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    id: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": {"type": self.target_type, "id": self.target_id},
            "outcome": self.outcome,
            "source_ip": self.source_ip,
            "request_id": self.request_id,
            "before": self.before,
            "after": self.after,
        }


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of ``GET /admin/v1/audit``; entries come newest first, ``before_id`` is the
    paging cursor (entries with a smaller id), ``limit`` is already bounded by the caller."""

    limit: int
    before_id: int | None = None
    actor: str | None = None
    action: str | None = None
    target_id: str | None = None
    outcome: str | None = None
    since: float | None = None
    until: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
