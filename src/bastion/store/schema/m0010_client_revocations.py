"""Migration 10: the ``client`` revocation kind (every access token issued to one client).

``revocations.kind`` gains ``client``: every access token whose ``client_id`` claim is
``value`` and whose ``iat`` is before ``not_before`` is revoked (the incident action
"revoke an application" uses it, so tokens a stolen client already holds stop working at once).

Version 1 wrote ``CHECK (kind IN ('jti', 'subject'))`` without a name.

* SQLite cannot alter a CHECK constraint, so the table is rebuilt (new table, copy every row
  with its id, drop, rename, the index again under its old name). ``AUTOINCREMENT`` keeps its
  counter because the copied ids raise ``sqlite_sequence`` to the highest one.
* PostgreSQL named the constraint itself (``revocations_kind_check`` by its rules, but a
  database created by hand could differ), so a DO block drops every CHECK constraint on the
  table that mentions ``kind`` (the table has no other) and adds the new one under a fixed name.
"""

from __future__ import annotations

from bastion.store.schema import Migration

_KINDS = "CHECK (kind IN ('jti', 'subject', 'client'))"

MIGRATION = Migration(
    version=10,
    name="revocations: client kind",
    statements=(),
    dialect_statements={
        "sqlite": (
            "CREATE TABLE revocations_v10 ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " kind VARCHAR(16) NOT NULL,"
            " value VARCHAR(512) NOT NULL,"
            " issuer VARCHAR(512),"
            " not_before DOUBLE PRECISION,"
            " expires_at DOUBLE PRECISION NOT NULL,"
            " created_at DOUBLE PRECISION NOT NULL,"
            f" CONSTRAINT revocations_kind_check {_KINDS})",
            "INSERT INTO revocations_v10"
            " (id, kind, value, issuer, not_before, expires_at, created_at)"
            " SELECT id, kind, value, issuer, not_before, expires_at, created_at"
            " FROM revocations",
            "DROP TABLE revocations",
            "ALTER TABLE revocations_v10 RENAME TO revocations",
            "CREATE INDEX revocations_expires_idx ON revocations (expires_at)",
        ),
        "postgresql": (
            "DO $$ DECLARE c record; BEGIN"
            " FOR c IN SELECT conname FROM pg_constraint"
            " WHERE conrelid = 'revocations'::regclass AND contype = 'c'"
            " AND pg_get_constraintdef(oid) LIKE '%kind%'"
            " LOOP EXECUTE format('ALTER TABLE revocations DROP CONSTRAINT %I', c.conname);"
            " END LOOP; END $$",
            f"ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check {_KINDS}",
        ),
    },
)
