"""Migration 3: the authorization server's signing keys and their rotation counter.

``signing_keys`` holds one row per key with its lifecycle state and times; ``material`` is the
key store's sealed blob or token reference (base64 text, never a plaintext private key) and is
cleared once the key is retired. A partial unique index lets at most one key be active.

``signing_key_generation`` is a one-row counter: every lifecycle change increments it with a
conditional update (compare-and-swap), so two auth-server processes that decide to rotate at
the same moment cannot both do it.
"""

from __future__ import annotations

from bastion.store.schema import Migration

MIGRATION = Migration(
    version=3,
    name="signing keys",
    statements=(
        "CREATE TABLE signing_keys ("
        " kid VARCHAR(128) PRIMARY KEY,"
        " alg VARCHAR(16) NOT NULL,"
        " key_store VARCHAR(16) NOT NULL,"
        " state VARCHAR(16) NOT NULL,"
        " public_jwk TEXT NOT NULL,"  # JSON object
        " material TEXT,"  # base64 of the sealed blob / token reference; NULL once retired
        " reason VARCHAR(32) NOT NULL DEFAULT '',"
        " created_at DOUBLE PRECISION NOT NULL,"
        " activate_at DOUBLE PRECISION NOT NULL,"
        " activated_at DOUBLE PRECISION,"
        " retired_at DOUBLE PRECISION,"
        " remove_at DOUBLE PRECISION,"
        " removed_at DOUBLE PRECISION,"
        " CHECK (state IN ('pending', 'active', 'retiring', 'retired')))",
        "CREATE INDEX signing_keys_state_idx ON signing_keys (state)",
        "CREATE UNIQUE INDEX signing_keys_one_active_idx ON signing_keys (state)"
        " WHERE state = 'active'",
        "CREATE TABLE signing_key_generation ("
        " id INTEGER PRIMARY KEY,"
        " generation BIGINT NOT NULL,"
        " CHECK (id = 1))",
        "INSERT INTO signing_key_generation (id, generation) VALUES (1, 0)",
    ),
)
