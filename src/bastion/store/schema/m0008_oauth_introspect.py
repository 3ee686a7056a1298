"""Migration 8: the ``introspect`` permission of OAuth clients gets a column of its own.

Until now the permission to call ``/introspect`` was kept as a marker
(``urn:bastion:permission:introspect``) appended to the ``grant_types`` JSON array of
``oauth_clients``. This adds ``oauth_clients.introspect BOOLEAN NOT NULL DEFAULT false`` and
moves every existing marker into it, in the same migration (one transaction): a client that
could introspect before still can, one that could not still cannot, and no marker is left in
``grant_types``.

The marker was only ever written by the OAuth repository with ``orjson`` (no spaces) and always
as the array's last element, so removing ``,"urn:…"`` and then a lone ``"urn:…"`` with
``REPLACE`` (portable SQL, SQLite and PostgreSQL) leaves exactly the grant types.
"""

from __future__ import annotations

from bastion.store.schema import Migration

MIGRATION = Migration(
    version=8,
    name="oauth clients: introspect permission column",
    statements=(
        "ALTER TABLE oauth_clients ADD COLUMN introspect BOOLEAN NOT NULL DEFAULT false",
        "UPDATE oauth_clients SET introspect = true"
        " WHERE grant_types LIKE '%\"urn:bastion:permission:introspect\"%'",
        "UPDATE oauth_clients SET grant_types = REPLACE(REPLACE(grant_types,"
        " ',\"urn:bastion:permission:introspect\"', ''),"
        " '\"urn:bastion:permission:introspect\"', '')"
        " WHERE grant_types LIKE '%\"urn:bastion:permission:introspect\"%'",
    ),
)
