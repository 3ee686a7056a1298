"""Versioned schema of the state store, shared by the SQL backends.

Each :class:`Migration` is a numbered list of portable DDL statements. The few types that differ
between SQLite and PostgreSQL are written as placeholders (``{serial_pk}``) that
:func:`statements_for` fills in per dialect, and anything that only one dialect can express
(the append-only triggers of ``audit_log``) sits in ``dialect_statements``.

A database records what it has applied in ``schema_migrations``. Applying is idempotent: a
migration whose version is already recorded is skipped. A database whose highest version is
unknown to this code was written by a newer Bastion and must be refused, not written to.

Rules for adding a migration: add a module to :mod:`bastion.store.schema` with the next
version number, never edit or reorder a
released one, keep statements portable, and give every index and trigger an explicit name.
"""

from __future__ import annotations

from collections.abc import Mapping

from bastion.store.schema import Migration, discover

__all__ = ["LATEST_VERSION", "MIGRATIONS", "SCHEMA_TABLE", "Migration", "pending", "statements_for"]

#: Per-dialect spellings of the placeholders used in the statements below.
DIALECT_TYPES: Mapping[str, Mapping[str, str]] = {
    # AUTOINCREMENT: a seq is never reused, even after the highest row is deleted, which the
    # change feed relies on. SQLite serialises writers, so seq order is commit order.
    "sqlite": {"serial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    # Identity values are handed out at insert time, not at commit: a PostgreSQL backend must
    # serialise appends to `changes` (e.g. a transaction-level advisory lock) so that a reader
    # never sees seq N+1 committed before seq N.
    "postgresql": {"serial_pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"},
}

#: Created before anything else, outside the numbered migrations.
SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY,"
    " name VARCHAR(128) NOT NULL,"
    " applied_at DOUBLE PRECISION NOT NULL)"
)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="clients, api keys, revocations, change feed, audit log",
        statements=(
            "CREATE TABLE clients ("
            " id VARCHAR(128) PRIMARY KEY,"
            " name TEXT NOT NULL,"
            " created_at DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE api_keys ("
            " id VARCHAR(128) PRIMARY KEY,"
            " client_id VARCHAR(128) NOT NULL REFERENCES clients (id),"
            " secret_hash VARCHAR(128) NOT NULL,"
            " scopes TEXT NOT NULL,"  # JSON array of strings
            " name TEXT NOT NULL DEFAULT '',"
            " created_at DOUBLE PRECISION NOT NULL,"
            " expires_at DOUBLE PRECISION,"
            " revoked_at DOUBLE PRECISION)",
            "CREATE INDEX api_keys_client_idx ON api_keys (client_id)",
            "CREATE TABLE revocations ("
            " id {serial_pk},"
            " kind VARCHAR(16) NOT NULL,"
            " value VARCHAR(512) NOT NULL,"
            " issuer VARCHAR(512),"
            " not_before DOUBLE PRECISION,"
            " expires_at DOUBLE PRECISION NOT NULL,"
            " created_at DOUBLE PRECISION NOT NULL,"
            " CHECK (kind IN ('jti', 'subject')))",
            "CREATE INDEX revocations_expires_idx ON revocations (expires_at)",
            "CREATE TABLE changes ("
            " seq {serial_pk},"
            " kind VARCHAR(64) NOT NULL,"
            " payload TEXT NOT NULL,"  # JSON object
            " created_at DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE audit_log ("
            " id {serial_pk},"
            " ts VARCHAR(32) NOT NULL,"  # the record's @timestamp, ISO-8601 UTC: sorts as text
            " request_id VARCHAR(128),"
            " outcome VARCHAR(16),"
            " source_ip VARCHAR(64),"
            " user_id VARCHAR(256),"
            " record TEXT NOT NULL)",  # the whole redacted record as JSON
            "CREATE INDEX audit_log_ts_idx ON audit_log (ts)",
            "CREATE INDEX audit_log_request_idx ON audit_log (request_id)",
            "CREATE INDEX audit_log_outcome_idx ON audit_log (outcome, ts)",
            "CREATE INDEX audit_log_source_ip_idx ON audit_log (source_ip, ts)",
            "CREATE INDEX audit_log_user_idx ON audit_log (user_id, ts)",
        ),
        dialect_statements={
            # The audit log is append-only for the database too, not only for our code.
            "sqlite": (
                "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log"
                " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
                "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log"
                " BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
            ),
            # Added with the PostgreSQL backend, before any PostgreSQL database existed, so
            # no database applied version 1 without them. TRUNCATE is refused too.
            "postgresql": (
                "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
                "CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log"
                " FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
                "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log"
                " FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
            ),
        },
    ),
    # Later versions: one module each in bastion.store.schema.
    *discover(),
)

if len({m.version for m in MIGRATIONS}) != len(MIGRATIONS):  # pragma: no cover - programming error
    raise RuntimeError("two schema migrations share a version number")

#: The highest schema version this code knows.
LATEST_VERSION = MIGRATIONS[-1].version


def statements_for(migration: Migration, dialect: str) -> list[str]:
    """The SQL of ``migration`` for ``dialect`` (``sqlite`` or ``postgresql``), in order.

    Raises ``ValueError`` for an unknown dialect.
    """
    try:
        types = DIALECT_TYPES[dialect]
    except KeyError:
        raise ValueError(f"unknown SQL dialect {dialect!r}") from None
    rendered = [stmt.format_map(types) for stmt in migration.statements]
    rendered.extend(migration.dialect_statements.get(dialect, ()))
    return rendered


def pending(applied: set[int]) -> list[Migration]:
    """Migrations whose version is not in ``applied``, in version order."""
    return [m for m in MIGRATIONS if m.version not in applied]
