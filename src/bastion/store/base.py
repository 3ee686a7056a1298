"""The store protocol and the plain records it keeps.

Backends: :mod:`bastion.store.memory` (unit tests) and :mod:`bastion.store.sqlite`
(embedded default). SQL is kept portable for the PostgreSQL backend of distributed mode.
Every write that other nodes must learn about appends a row to the change feed *in the same
transaction* (``changes``), so a node that replays the feed never misses a revocation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """An application that calls the APIs."""

    id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key. ``secret_hash`` is HMAC-SHA256(pepper, secret) as hex; the secret itself is
    never stored. ``prefix`` is the public ``bsk_<id>`` part, safe to show.

    Lifecycle (schema version 6): ``owner`` names who answers for the key (a user id or an
    e-mail; empty: nobody). A rotated key points to its successor (``replaced_by``) and the
    successor back to it (``rotated_from``); ``last_used_at`` and ``usage_count`` are written
    in batches by the gateways (:meth:`Store.record_key_usage`), so they lag by seconds.
    """

    id: str
    client_id: str
    secret_hash: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    revoked_at: float | None = None
    name: str = ""
    owner: str = ""
    rotated_from: str | None = None
    replaced_by: str | None = None
    last_used_at: float | None = None
    usage_count: int = 0

    @property
    def prefix(self) -> str:
        return f"bsk_{self.id}"

    def state(self, now: float) -> str:
        """``revoked``, ``expired`` or ``active`` at time ``now``."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class Revocation:
    """A token revocation. ``kind`` is ``jti`` (one token, ``value`` = jti, denied until
    ``expires_at``), ``subject`` (every token of ``value`` = sub issued before ``not_before``) or
    ``client`` (every access token whose ``client_id`` claim is ``value`` issued before
    ``not_before``; ``expires_at`` is ``not_before`` plus the longest token lifetime)."""

    kind: str
    value: str
    issuer: str | None
    not_before: float | None
    expires_at: float
    created_at: float


@dataclass(frozen=True, slots=True)
class IpBlock:
    """A run-time block of an address or network (``cidr``, normalised text) until
    ``expires_at``; ``lifted_at`` is set when it was lifted early."""

    cidr: str
    reason: str
    created_at: float
    expires_at: float
    lifted_at: float | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change feed, in commit order (``seq`` strictly increasing)."""

    seq: int
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0


#: Changes with no table of their own, only announced on the feed (``Store.announce``).
ANNOUNCED_KINDS = frozenset({"config.changed"})


class Store(Protocol):
    """Durable state. All methods may raise :class:`~bastion.errors.StoreError`."""

    async def open(self) -> None:
        """Connect and apply (or verify) migrations."""

    async def close(self) -> None: ...

    async def put_client(self, client: ClientRecord) -> None:
        """Create a client; StoreError if the id exists."""

    async def get_client(self, client_id: str) -> ClientRecord | None: ...

    async def list_clients(self) -> list[ClientRecord]: ...

    async def put_api_key(self, key: ApiKeyRecord) -> None:
        """Create a key (its client must exist) and append an ``api_key.created`` change."""

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None: ...

    async def list_api_keys(self, client_id: str | None = None) -> list[ApiKeyRecord]: ...

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        """Mark revoked and append an ``api_key.revoked`` change; False if unknown or already revoked."""

    async def rotate_api_key(self, old_id: str, successor: ApiKeyRecord, old_until: float) -> bool:
        """Rotate ``old_id`` to ``successor`` in one transaction.

        The old key must be neither revoked, nor expired at ``successor.created_at``, nor
        rotated already; its expiry becomes ``min(expires_at, old_until)`` (rotation never
        extends a key's life) and ``replaced_by`` the successor's id. The successor (same
        client; ``rotated_from`` = ``old_id``) is inserted and one ``api_key.created`` change
        is appended with ``replaces`` and ``replaces_until`` (the old key's new expiry), so
        every node learns both at once. False, and nothing written, when the old key cannot be
        rotated; StoreError when the successor is refused (duplicate id, other client).
        """

    async def record_key_usage(self, usage: Mapping[str, tuple[int, float]]) -> None:
        """Add ``{key_id: (count, last_used_at)}`` to the keys' usage in one statement.

        Counts add up; ``last_used_at`` only moves forward. Unknown ids are ignored. No change
        is appended: usage is bookkeeping, not state other nodes act on.
        """

    async def add_revocation(self, rev: Revocation) -> None:
        """Store a token revocation and append a ``token.revoked`` / ``subject.revoked`` /
        ``client.revoked`` change."""

    async def active_revocations(self, now: float) -> list[Revocation]:
        """Revocations whose ``expires_at`` is after ``now``."""

    async def add_ip_block(self, block: IpBlock) -> None:
        """Store a block and append an ``ip.blocked`` change (``cidr``, ``until``, ``reason``)."""

    async def lift_ip_block(self, cidr: str, at: float) -> bool:
        """End every active block of exactly ``cidr`` and append an ``ip.unblocked`` change;
        False when none was active."""

    async def active_ip_blocks(self, now: float) -> list[IpBlock]:
        """Blocks neither lifted nor expired at ``now``, oldest first."""

    async def announce(self, kind: str, payload: dict[str, Any], at: float) -> None:
        """Append a change of a kind in :data:`ANNOUNCED_KINDS` (StoreError for another)."""

    async def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        """Changes with ``seq`` greater than ``seq``, oldest first."""

    async def last_change_seq(self) -> int: ...

    async def write_audit(self, records: list[dict[str, Any]]) -> None:
        """Append audit records (already redacted) in one transaction."""

    async def count_audit(self) -> int: ...
