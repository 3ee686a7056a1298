"""Migration 7: the control plane's applications metadata and the admin audit trail.

* ``control_applications`` — the metadata of an application (owner, contact, environment, risk
  class, data classification, allowed scopes as a JSON array), one row per ``clients`` row: an
  application *is* the client its API keys reference, its name stays in ``clients.name``.
* ``admin_audit`` — one row per change made through the admin API (and per refused attempt by
  an authenticated caller): actor, action, target, outcome, before/after (JSON, secrets
  removed), time, source IP, request id. Append-only for the database too: triggers refuse
  UPDATE and DELETE (and TRUNCATE on PostgreSQL), as for ``audit_log``.
"""

from bastion.store.schema import Migration

MIGRATION = Migration(
    version=7,
    name="control plane: applications, admin audit trail",
    statements=(
        "CREATE TABLE control_applications ("
        " client_id VARCHAR(128) PRIMARY KEY REFERENCES clients (id),"
        " owner VARCHAR(256) NOT NULL,"
        " contact TEXT NOT NULL DEFAULT '',"
        " environment VARCHAR(32) NOT NULL,"
        " risk_class VARCHAR(16) NOT NULL,"
        " data_classification VARCHAR(16) NOT NULL,"
        " allowed_scopes TEXT NOT NULL,"  # JSON array of strings
        " created_at DOUBLE PRECISION NOT NULL,"
        " updated_at DOUBLE PRECISION NOT NULL,"
        " CHECK (risk_class IN ('public', 'partner', 'internal')),"
        " CHECK (data_classification IN ('public', 'internal', 'confidential')))",
        "CREATE INDEX control_applications_owner_idx ON control_applications (owner)",
        "CREATE TABLE admin_audit ("
        " id {serial_pk},"
        " at DOUBLE PRECISION NOT NULL,"
        " actor VARCHAR(256) NOT NULL,"
        " action VARCHAR(64) NOT NULL,"
        " target_type VARCHAR(32) NOT NULL,"
        " target_id VARCHAR(256) NOT NULL,"
        " outcome VARCHAR(16) NOT NULL,"
        " source_ip VARCHAR(64),"
        " request_id VARCHAR(128),"
        " before_state TEXT,"  # JSON object or NULL
        " after_state TEXT)",  # JSON object or NULL
        "CREATE INDEX admin_audit_at_idx ON admin_audit (at)",
        "CREATE INDEX admin_audit_actor_idx ON admin_audit (actor, id)",
        "CREATE INDEX admin_audit_target_idx ON admin_audit (target_id, id)",
        "CREATE INDEX admin_audit_action_idx ON admin_audit (action, id)",
    ),
    dialect_statements={
        "sqlite": (
            "CREATE TRIGGER admin_audit_no_update BEFORE UPDATE ON admin_audit"
            " BEGIN SELECT RAISE(ABORT, 'admin_audit is append-only'); END",
            "CREATE TRIGGER admin_audit_no_delete BEFORE DELETE ON admin_audit"
            " BEGIN SELECT RAISE(ABORT, 'admin_audit is append-only'); END",
        ),
        "postgresql": (
            "CREATE FUNCTION admin_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'admin_audit is append-only'; END $$",
            "CREATE TRIGGER admin_audit_no_update BEFORE UPDATE OR DELETE ON admin_audit"
            " FOR EACH ROW EXECUTE FUNCTION admin_audit_append_only()",
            "CREATE TRIGGER admin_audit_no_truncate BEFORE TRUNCATE ON admin_audit"
            " FOR EACH STATEMENT EXECUTE FUNCTION admin_audit_append_only()",
        ),
    },
)
