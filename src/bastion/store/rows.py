"""Rows of the SQL backends: how records map to columns, shared by SQLite and PostgreSQL.

Both backends store the same columns (``store/migrations.py``), so the conversions live here
once. Audit rows are made safe for the stricter engine: PostgreSQL refuses a NUL character in
text and a value longer than its ``VARCHAR(n)``, and one such record would otherwise fail its
whole batch on every retry. The full record is kept intact in the ``record`` JSON column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from bastion.store.base import ApiKeyRecord

#: ``audit_log`` columns after ``id``, in insert order, with their size limit (None: TEXT).
AUDIT_COLUMNS: tuple[tuple[str, int | None], ...] = (
    ("ts", 32),
    ("request_id", 128),
    ("outcome", 16),
    ("source_ip", 64),
    ("user_id", 256),
    ("record", None),
)


#: ``api_keys`` columns in the order of :func:`key_from_row` and :func:`key_params`.
KEY_COLUMNS = (
    "id",
    "client_id",
    "secret_hash",
    "scopes",
    "name",
    "created_at",
    "expires_at",
    "revoked_at",
    "owner",
    "rotated_from",
    "replaced_by",
    "last_used_at",
    "usage_count",
)


def key_from_row(row: Sequence[Any]) -> ApiKeyRecord:
    """An :class:`ApiKeyRecord` from a row of :data:`KEY_COLUMNS`; ValueError when ``scopes``
    is not JSON."""
    (
        kid,
        client_id,
        secret_hash,
        scopes,
        name,
        created,
        expires,
        revoked,
        owner,
        rotated_from,
        replaced_by,
        last_used,
        usage,
    ) = row
    return ApiKeyRecord(
        id=kid,
        client_id=client_id,
        secret_hash=secret_hash,
        scopes=tuple(orjson.loads(scopes)),
        created_at=created,
        expires_at=expires,
        revoked_at=revoked,
        name=name,
        owner=owner,
        rotated_from=rotated_from,
        replaced_by=replaced_by,
        last_used_at=last_used,
        usage_count=int(usage),
    )


def key_params(key: ApiKeyRecord) -> tuple[Any, ...]:
    """The column values of ``key`` in :data:`KEY_COLUMNS` order (scopes as JSON)."""
    return (
        key.id,
        key.client_id,
        key.secret_hash,
        orjson.dumps(list(key.scopes)).decode(),
        key.name,
        key.created_at,
        key.expires_at,
        key.revoked_at,
        key.owner,
        key.rotated_from,
        key.replaced_by,
        key.last_used_at,
        key.usage_count,
    )


def rotation_change(successor: ApiKeyRecord, old_id: str, old_until: float) -> dict[str, Any]:
    """The payload of the ``api_key.created`` change of a rotation: the successor, the key it
    replaces and that key's last moment of validity (applied by every node's key index)."""
    return {
        "key_id": successor.id,
        "client_id": successor.client_id,
        "replaces": old_id,
        "replaces_until": old_until,
    }


def audit_row(record: dict[str, Any]) -> tuple[str | None, ...]:
    """The indexed columns of one ECS record plus the record as JSON text.

    Raises TypeError when the record cannot be serialised (the caller turns it into a
    StoreError before anything is written).
    """
    values = (
        str(record.get("@timestamp", "")),
        _dig(record, "http", "request", "id"),
        _dig(record, "event", "outcome"),
        _dig(record, "source", "ip"),
        _dig(record, "user", "id"),
    )
    out: list[str | None] = [
        _column(v, size) for v, (_, size) in zip(values, AUDIT_COLUMNS, strict=False)
    ]
    out.append(orjson.dumps(record).decode())  # JSON escapes NUL as \u0000
    return tuple(out)


def _column(value: str | None, size: int | None) -> str | None:
    if value is None:
        return None
    value = value.replace("\x00", "\ufffd")
    return value if size is None else value[:size]


def _dig(record: dict[str, Any], *path: str) -> str | None:
    node: Any = record
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return None if node is None else str(node)
