"""Migration 5: run-time IP blocks (``bastion ip block``), pushed to every gateway node."""

from bastion.store.schema import Migration

MIGRATION = Migration(
    version=5,
    name="ip blocks",
    statements=(
        "CREATE TABLE ip_blocks ("
        " id {serial_pk},"
        " cidr VARCHAR(64) NOT NULL,"
        " reason TEXT NOT NULL DEFAULT '',"
        " created_at DOUBLE PRECISION NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL,"
        " lifted_at DOUBLE PRECISION)",
        "CREATE INDEX ip_blocks_active_idx ON ip_blocks (expires_at, lifted_at)",
        "CREATE INDEX ip_blocks_cidr_idx ON ip_blocks (cidr)",
    ),
)
