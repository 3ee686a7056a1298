"""Migration 9: a password the user must change at the next login (invited users).

* ``auth_users.must_change_password`` — set when an administrator invites a user with a
  one-time password; the login then stops at a forced password-change page before the session
  is complete, and choosing a new password clears it.
* ``auth_sessions`` accepts the login state ``password`` (password accepted, a new one still
  due). A CHECK constraint cannot be altered in SQLite, so the table is rebuilt the portable
  way (new table, copy, drop, rename, indexes again), the same SQL on SQLite and PostgreSQL;
  nothing references it, and sessions survive the upgrade.
"""

from __future__ import annotations

from bastion.store.schema import Migration

MIGRATION = Migration(
    version=9,
    name="users: forced password change",
    statements=(
        "ALTER TABLE auth_users ADD COLUMN must_change_password BOOLEAN NOT NULL DEFAULT false",
        "CREATE TABLE auth_sessions_v9 ("
        " id_hash VARCHAR(64) PRIMARY KEY,"
        " user_id VARCHAR(64) NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,"
        " state VARCHAR(16) NOT NULL,"
        " amr TEXT NOT NULL,"
        " auth_time DOUBLE PRECISION NOT NULL,"
        " created_at DOUBLE PRECISION NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL,"
        " last_seen DOUBLE PRECISION NOT NULL,"
        " data TEXT NOT NULL,"
        " CHECK (state IN ('mfa', 'enroll', 'password', 'done')))",
        "INSERT INTO auth_sessions_v9"
        " (id_hash, user_id, state, amr, auth_time, created_at, expires_at, last_seen, data)"
        " SELECT id_hash, user_id, state, amr, auth_time, created_at, expires_at, last_seen, data"
        " FROM auth_sessions",
        "DROP TABLE auth_sessions",
        "ALTER TABLE auth_sessions_v9 RENAME TO auth_sessions",
        "CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id)",
        "CREATE INDEX auth_sessions_expires_idx ON auth_sessions (expires_at)",
    ),
)
