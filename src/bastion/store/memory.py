"""An in-memory :class:`~bastion.store.base.Store` for unit tests and ``memory://``.

It follows the same contract as the SQL backends (``tests/unit/test_store_contract.py`` runs the
same suite against both): duplicate ids and keys of unknown clients are refused with
:class:`~bastion.errors.StoreError`, each write that other nodes must learn about appends to the
change feed atomically, and audit rows are kept as JSON text, as the ``audit_log`` table does.
Nothing survives the process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from bastion.errors import StoreError
from bastion.store.base import (
    ANNOUNCED_KINDS,
    ApiKeyRecord,
    Change,
    ClientRecord,
    IpBlock,
    Revocation,
)
from bastion.store.rows import rotation_change


class MemoryStore:
    """Process-local state. Usable without ``open()``; every call after ``close()`` raises
    StoreError, as does every call while :meth:`set_unavailable` is on (to test fail-closed code).
    """

    def __init__(self) -> None:
        self._clients: dict[str, ClientRecord] = {}
        self._keys: dict[str, ApiKeyRecord] = {}
        self._revocations: list[Revocation] = []
        self._ip_blocks: list[IpBlock] = []
        self._changes: list[Change] = []
        self._audit: list[str] = []
        self._closed = False
        self._unavailable = False

    def set_unavailable(self, unavailable: bool) -> None:
        """Make every following call raise StoreError (True) or work again (False)."""
        self._unavailable = unavailable

    @property
    def audit_rows(self) -> list[str]:
        """The stored audit records as JSON text, oldest first (a copy)."""
        return list(self._audit)

    def _check(self) -> None:
        if self._closed:
            raise StoreError(diagnosis="memory store: closed")
        if self._unavailable:
            raise StoreError(diagnosis="memory store: unavailable (set_unavailable)")

    def _append_change(self, kind: str, payload: dict[str, Any], at: float) -> None:
        seq = self._changes[-1].seq + 1 if self._changes else 1
        self._changes.append(Change(seq=seq, kind=kind, payload=payload, at=at))

    async def open(self) -> None:
        """Nothing to connect to; kept for the protocol."""
        self._check()

    async def close(self) -> None:
        """Refuse every later call."""
        self._closed = True

    async def put_client(self, client: ClientRecord) -> None:
        """Create a client; StoreError if the id exists."""
        self._check()
        if client.id in self._clients:
            raise StoreError(diagnosis=f"client {client.id!r} already exists")
        self._clients[client.id] = client

    async def get_client(self, client_id: str) -> ClientRecord | None:
        self._check()
        return self._clients.get(client_id)

    async def list_clients(self) -> list[ClientRecord]:
        """Every client, by creation time then id."""
        self._check()
        return sorted(self._clients.values(), key=lambda c: (c.created_at, c.id))

    async def put_api_key(self, key: ApiKeyRecord) -> None:
        """Create a key of an existing client and append an ``api_key.created`` change."""
        self._check()
        if key.client_id not in self._clients:
            raise StoreError(diagnosis=f"api key {key.id!r}: unknown client {key.client_id!r}")
        if key.id in self._keys:
            raise StoreError(diagnosis=f"api key {key.id!r} already exists")
        self._keys[key.id] = dataclasses.replace(key, scopes=tuple(key.scopes))
        self._append_change(
            "api_key.created", {"key_id": key.id, "client_id": key.client_id}, key.created_at
        )

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        self._check()
        return self._keys.get(key_id)

    async def list_api_keys(self, client_id: str | None = None) -> list[ApiKeyRecord]:
        """Keys (of one client, or all), by creation time then id."""
        self._check()
        keys = [k for k in self._keys.values() if client_id is None or k.client_id == client_id]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        """Mark revoked and append an ``api_key.revoked`` change; False if unknown or revoked."""
        self._check()
        key = self._keys.get(key_id)
        if key is None or key.revoked_at is not None:
            return False
        self._keys[key_id] = dataclasses.replace(key, revoked_at=at)
        self._append_change("api_key.revoked", {"key_id": key_id, "at": at}, at)
        return True

    async def rotate_api_key(self, old_id: str, successor: ApiKeyRecord, old_until: float) -> bool:
        """Shorten ``old_id`` to ``old_until``, link it to ``successor`` and insert that, with
        one ``api_key.created`` change; False (nothing written) if ``old_id`` cannot rotate."""
        self._check()
        old = self._keys.get(old_id)
        if old is None or not rotatable(old, successor.created_at):
            return False
        if successor.client_id != old.client_id:
            raise StoreError(diagnosis=f"api key {successor.id!r}: successor of another client")
        if successor.id in self._keys:
            raise StoreError(diagnosis=f"api key {successor.id!r} already exists")
        until = old_until if old.expires_at is None else min(old.expires_at, old_until)
        self._keys[old_id] = dataclasses.replace(old, expires_at=until, replaced_by=successor.id)
        self._keys[successor.id] = dataclasses.replace(
            successor, scopes=tuple(successor.scopes), rotated_from=old_id
        )
        self._append_change(
            "api_key.created", rotation_change(successor, old_id, until), successor.created_at
        )
        return True

    async def record_key_usage(self, usage: Mapping[str, tuple[int, float]]) -> None:
        """Add the counts and move ``last_used_at`` forward; unknown ids are ignored."""
        self._check()
        for key_id, (count, last) in usage.items():
            key = self._keys.get(key_id)
            if key is None:
                continue
            seen = last if key.last_used_at is None else max(key.last_used_at, last)
            self._keys[key_id] = dataclasses.replace(
                key, usage_count=key.usage_count + count, last_used_at=seen
            )

    async def add_revocation(self, rev: Revocation) -> None:
        """Store a revocation and append its ``token.revoked`` / ``subject.revoked`` /
        ``client.revoked`` change."""
        self._check()
        kind, payload = revocation_change(rev)
        self._revocations.append(rev)
        self._append_change(kind, payload, rev.created_at)

    async def active_revocations(self, now: float) -> list[Revocation]:
        """Revocations whose ``expires_at`` is after ``now``, oldest first."""
        self._check()
        return [r for r in self._revocations if r.expires_at > now]

    async def add_ip_block(self, block: IpBlock) -> None:
        """Store a block and append its ``ip.blocked`` change."""
        self._check()
        self._ip_blocks.append(block)
        self._append_change("ip.blocked", ip_block_change(block), block.created_at)

    async def lift_ip_block(self, cidr: str, at: float) -> bool:
        """Lift the active blocks of ``cidr``; append ``ip.unblocked`` if there were any."""
        self._check()
        lifted = False
        for i, b in enumerate(self._ip_blocks):
            if b.cidr == cidr and b.lifted_at is None and b.expires_at > at:
                self._ip_blocks[i] = dataclasses.replace(b, lifted_at=at)
                lifted = True
        if lifted:
            self._append_change("ip.unblocked", {"cidr": cidr, "at": at}, at)
        return lifted

    async def active_ip_blocks(self, now: float) -> list[IpBlock]:
        """Blocks neither lifted nor expired at ``now``, oldest first."""
        self._check()
        return [b for b in self._ip_blocks if b.lifted_at is None and b.expires_at > now]

    async def announce(self, kind: str, payload: dict[str, Any], at: float) -> None:
        """Append a change of a kind in ``ANNOUNCED_KINDS``."""
        self._check()
        check_announced(kind, payload)
        self._append_change(kind, dict(payload), at)

    async def changes_since(self, seq: int, limit: int = 1000) -> list[Change]:
        """Changes with a ``seq`` greater than ``seq``, oldest first, at most ``limit``."""
        self._check()
        if limit <= 0:
            return []
        return [c for c in self._changes if c.seq > seq][:limit]

    async def last_change_seq(self) -> int:
        """The newest ``seq`` (0 when the feed is empty)."""
        self._check()
        return self._changes[-1].seq if self._changes else 0

    async def write_audit(self, records: list[dict[str, Any]]) -> None:
        """Append audit records (already redacted), all or none."""
        self._check()
        try:
            rows = [orjson.dumps(r).decode() for r in records]
        except TypeError as exc:
            raise StoreError(diagnosis=f"audit record not serialisable: {exc}") from exc
        self._audit.extend(rows)

    async def count_audit(self) -> int:
        self._check()
        return len(self._audit)


def rotatable(key: ApiKeyRecord, at: float) -> bool:
    """Whether ``key`` may be rotated at ``at``: not revoked, not expired, not rotated yet."""
    return (
        key.revoked_at is None
        and key.replaced_by is None
        and (key.expires_at is None or key.expires_at > at)
    )


def check_announced(kind: str, payload: dict[str, Any]) -> str:
    """The payload of an announced change as JSON; StoreError for a kind that has a table of
    its own (it must be written with its record) or a payload that is not JSON."""
    if kind not in ANNOUNCED_KINDS:
        raise StoreError(diagnosis=f"change kind {kind!r} cannot be announced on its own")
    try:
        return orjson.dumps(payload).decode()
    except TypeError as exc:
        raise StoreError(diagnosis=f"change payload not serialisable: {exc}") from exc


def ip_block_change(block: IpBlock) -> dict[str, Any]:
    """The payload of the ``ip.blocked`` change announcing ``block``."""
    return {"cidr": block.cidr, "until": block.expires_at, "reason": block.reason}


def revocation_change(rev: Revocation) -> tuple[str, dict[str, Any]]:
    """The change kind and payload announcing ``rev``; StoreError if it is malformed.

    A ``jti`` revocation names one token; a ``subject`` (``client``) revocation needs
    ``not_before``: every token of the subject (every access token issued to the client, by its
    ``client_id`` claim) issued before it is revoked. All carry ``expires_at`` so a node knows
    when it may forget them.
    """
    if rev.kind == "jti":
        return "token.revoked", {
            "jti": rev.value,
            "expires_at": rev.expires_at,
            "issuer": rev.issuer,
        }
    if rev.kind == "subject":
        if rev.not_before is None:
            raise StoreError(diagnosis="subject revocation without not_before")
        return "subject.revoked", {
            "subject": rev.value,
            "issuer": rev.issuer,
            "not_before": rev.not_before,
            "expires_at": rev.expires_at,
        }
    if rev.kind == "client":
        if rev.not_before is None:
            raise StoreError(diagnosis="client revocation without not_before")
        return "client.revoked", {
            "client_id": rev.value,
            "issuer": rev.issuer,
            "not_before": rev.not_before,
            "expires_at": rev.expires_at,
        }
    raise StoreError(diagnosis=f"unknown revocation kind {rev.kind!r}")
