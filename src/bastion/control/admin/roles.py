"""The admin roles and what each may do: one table, pinned by the RBAC matrix test.

* ``owner`` — everything, and the only role that may grant or take away ``owner``;
* ``admin`` — everything except granting or removing ``owner``;
* ``security`` — reads everything and may revoke (keys, users, applications in an incident,
  IP blocks) but may not create or change applications, keys or users;
* ``auditor`` — reads everything, including the audit trail, and changes nothing;
* ``developer`` — reads, creates, rotates and revokes the keys of the applications it owns
  (``owner`` of the application is the developer's ``sub`` or one of its ``groups``), and
  reads those applications; nothing else.

A token's ``roles`` claim may hold other roles (the gateway's); only these five count here.
Decisions are pure: :func:`allowed` takes the roles and an operation id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

OWNER = "owner"
ADMIN = "admin"
SECURITY = "security"
AUDITOR = "auditor"
DEVELOPER = "developer"
ADMIN_ROLES: tuple[str, ...] = (OWNER, ADMIN, SECURITY, AUDITOR, DEVELOPER)

#: Operations that read only.
READS = frozenset(
    {
        "me.get",
        "apps.list",
        "apps.get",
        "keys.list",
        "users.list",
        "users.get",
        "audit.list",
    }
)

#: Operation id -> roles allowed. ``developer`` entries are further limited to owned
#: applications by the operation itself (object-level check).
PERMISSIONS: Mapping[str, frozenset[str]] = {
    "me.get": frozenset(ADMIN_ROLES),
    "apps.list": frozenset(ADMIN_ROLES),
    "apps.get": frozenset(ADMIN_ROLES),
    "apps.create": frozenset({OWNER, ADMIN}),
    "apps.update": frozenset({OWNER, ADMIN}),
    "keys.list": frozenset(ADMIN_ROLES),
    "keys.create": frozenset({OWNER, ADMIN, DEVELOPER}),
    "keys.rotate": frozenset({OWNER, ADMIN, DEVELOPER}),
    "keys.revoke": frozenset({OWNER, ADMIN, SECURITY, DEVELOPER}),
    "users.list": frozenset({OWNER, ADMIN, SECURITY, AUDITOR}),
    "users.get": frozenset({OWNER, ADMIN, SECURITY, AUDITOR}),
    "users.invite": frozenset({OWNER, ADMIN}),
    "users.set_roles": frozenset({OWNER, ADMIN}),
    "users.disable": frozenset({OWNER, ADMIN, SECURITY}),
    "users.enable": frozenset({OWNER, ADMIN}),
    "users.reset_mfa": frozenset({OWNER, ADMIN}),
    "incident.revoke_app": frozenset({OWNER, ADMIN, SECURITY}),
    "incident.block_ip": frozenset({OWNER, ADMIN, SECURITY}),
    "audit.list": frozenset({OWNER, ADMIN, SECURITY, AUDITOR}),
}

#: Operations that need a recent login (step-up): they take access away or widen it.
DESTRUCTIVE = frozenset(
    {
        "keys.rotate",
        "keys.revoke",
        "users.set_roles",
        "users.disable",
        "users.reset_mfa",
        "incident.revoke_app",
        "incident.block_ip",
    }
)


def admin_roles(claimed: Iterable[str]) -> frozenset[str]:
    """The admin roles among ``claimed`` (anything else is ignored)."""
    return frozenset(r for r in claimed if r in ADMIN_ROLES)


def allowed(roles: Iterable[str], operation: str) -> bool:
    """May a principal with ``roles`` call ``operation``? Unknown operations: never."""
    permitted = PERMISSIONS.get(operation)
    if permitted is None:
        return False
    return not permitted.isdisjoint(roles)


def needs_ownership(roles: Iterable[str], operation: str) -> bool:
    """True when only the ``developer`` role lets ``roles`` call ``operation``, so the
    application it touches must be one the principal owns. Decided per operation: an auditor
    who is also a developer reads every application but writes keys of its own only."""
    held = set(roles)
    if DEVELOPER not in held:
        return False
    return not any(allowed({role}, operation) for role in held - {DEVELOPER})


def may_grant(actor_roles: frozenset[str], before: Iterable[str], after: Iterable[str]) -> bool:
    """May ``actor_roles`` change a user's roles from ``before`` to ``after``? Granting or
    removing ``owner`` takes an owner; everything else an admin or owner."""
    touched_owner = (OWNER in set(before)) != (OWNER in set(after))
    if touched_owner:
        return OWNER in actor_roles
    return bool(actor_roles & {OWNER, ADMIN})
