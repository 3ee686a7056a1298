"""Databases at an older schema version, for the tests that upgrade them.

``sqlite_at`` builds a SQLite file with migrations 1..version applied (and recorded), the way
a Bastion of that version left it; ``postgres_at`` does the same through
``PostgresStore.upgrade`` with the migration list cut at ``version``.
"""

from __future__ import annotations

import sqlite3

import pytest

from bastion.store import migrations
from bastion.store.migrations import MIGRATIONS, SCHEMA_TABLE, statements_for
from bastion.store.postgres import PostgresStore


def sqlite_at(path: str, version: int) -> sqlite3.Connection:
    """An open connection to a new SQLite file at schema ``version`` (commit and close it)."""
    raw = sqlite3.connect(path)
    raw.execute(SCHEMA_TABLE)
    for m in MIGRATIONS:
        if m.version <= version:
            for stmt in statements_for(m, "sqlite"):
                raw.execute(stmt)
            raw.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (m.version, m.name))
    return raw


async def postgres_at(url: str, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bring the empty PostgreSQL schema at ``url`` to schema ``version``."""
    with monkeypatch.context() as patch:
        patch.setattr(
            migrations, "MIGRATIONS", tuple(m for m in MIGRATIONS if m.version <= version)
        )
        assert await PostgresStore(url).upgrade() == (0, version)
