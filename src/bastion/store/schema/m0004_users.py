"""Migration 4: users of the authorization server, their recovery codes and login sessions.

* ``auth_users`` — one row per account. ``username`` is normalised (NFKC, lower-case) and
  unique; ``password_hash`` an argon2id PHC string; ``roles`` a JSON array; ``disabled`` (0/1) an
  administrator's lock. ``totp_secret`` is the confirmed RFC 6238 key (NULL: no TOTP) and
  ``totp_last_step`` the last time step whose code was accepted (replay protection).
  ``failed_logins`` / ``locked_until`` are the lockout counter and its end (epoch s).
* ``auth_recovery_codes`` — SHA-256 of each one-time recovery code; ``used_at`` is set once.
* ``auth_sessions`` — server-side login sessions by SHA-256 of the session id (the id itself
  is only in the browser's cookie); ``state`` is how far the login got, ``amr`` a JSON array,
  ``data`` a small JSON object (return_to, a pending TOTP secret during enrolment).
"""

from __future__ import annotations

from bastion.store.schema import Migration

MIGRATION = Migration(
    version=4,
    name="users, recovery codes, login sessions",
    statements=(
        "CREATE TABLE auth_users ("
        " id VARCHAR(64) PRIMARY KEY,"
        " username VARCHAR(128) NOT NULL,"
        " email TEXT,"
        " name TEXT,"
        " roles TEXT NOT NULL,"  # JSON array of strings
        " password_hash TEXT NOT NULL,"
        " disabled INTEGER NOT NULL DEFAULT 0,"
        " totp_secret TEXT,"
        " totp_last_step BIGINT,"
        " failed_logins INTEGER NOT NULL DEFAULT 0,"
        " locked_until DOUBLE PRECISION,"
        " created_at DOUBLE PRECISION NOT NULL,"
        " updated_at DOUBLE PRECISION NOT NULL,"
        " CHECK (disabled IN (0, 1)))",
        "CREATE UNIQUE INDEX auth_users_username_idx ON auth_users (username)",
        "CREATE TABLE auth_recovery_codes ("
        " user_id VARCHAR(64) NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,"
        " code_hash VARCHAR(64) NOT NULL,"
        " used_at DOUBLE PRECISION,"
        " PRIMARY KEY (user_id, code_hash))",
        "CREATE TABLE auth_sessions ("
        " id_hash VARCHAR(64) PRIMARY KEY,"
        " user_id VARCHAR(64) NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,"
        " state VARCHAR(16) NOT NULL,"
        " amr TEXT NOT NULL,"  # JSON array of strings
        " auth_time DOUBLE PRECISION NOT NULL,"
        " created_at DOUBLE PRECISION NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL,"
        " last_seen DOUBLE PRECISION NOT NULL,"
        " data TEXT NOT NULL,"  # JSON object
        " CHECK (state IN ('mfa', 'enroll', 'done')))",
        "CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id)",
        "CREATE INDEX auth_sessions_expires_idx ON auth_sessions (expires_at)",
    ),
)
