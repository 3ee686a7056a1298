"""Migration 6: the API-key lifecycle — owner, rotation links and batched usage counts.

``rotated_from`` / ``replaced_by`` link a key and its successor (a rotated key keeps working
until its shortened ``expires_at``, the grace period). ``last_used_at`` and ``usage_count``
are written by the gateways in batches, never once per request. Existing keys get no owner,
no links and a count of 0.
"""

from bastion.store.schema import Migration

MIGRATION = Migration(
    version=6,
    name="api key lifecycle",
    statements=(
        "ALTER TABLE api_keys ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE api_keys ADD COLUMN rotated_from VARCHAR(128)",
        "ALTER TABLE api_keys ADD COLUMN replaced_by VARCHAR(128)",
        "ALTER TABLE api_keys ADD COLUMN last_used_at DOUBLE PRECISION",
        "ALTER TABLE api_keys ADD COLUMN usage_count BIGINT NOT NULL DEFAULT 0",
    ),
)
