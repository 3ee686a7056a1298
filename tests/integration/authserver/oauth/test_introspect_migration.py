"""Migration 8 on SQLite and PostgreSQL: databases at version 7 whose clients carry the old
``introspect`` marker in ``grant_types`` come out with the permission in its own column and no
marker left; clients without the marker (even with look-alike text elsewhere) gain nothing."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from bastion.authserver.oauth.repo import open_oauth_repo
from bastion.store import PostgresStore, SqliteStore
from bastion.store.base import Store
from bastion.store.migrations import LATEST_VERSION
from tests.support.schema_at import postgres_at, sqlite_at

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

MARKER = "urn:bastion:permission:introspect"
#: (id, grant_types JSON as the version-7 repository wrote it, scopes JSON)
V7_CLIENTS = (
    ("rs", f'["client_credentials","{MARKER}"]', "[]"),
    ("web", f'["authorization_code","refresh_token","{MARKER}"]', '["read"]'),
    ("only", f'["{MARKER}"]', "[]"),
    ("app", '["client_credentials"]', "[]"),
    # Look-alikes must not gain the permission: the marker's text in scopes, and a grant type
    # that merely starts like it.
    ("sly", '["client_credentials"]', f'["{MARKER}"]'),
    ("near", f'["client_credentials","{MARKER}-not"]', "[]"),
)
EXPECTED = {
    "rs": (True, ("client_credentials",)),
    "web": (True, ("authorization_code", "refresh_token")),
    "only": (True, ()),
    "app": (False, ("client_credentials",)),
    "sly": (False, ("client_credentials",)),
    "near": (False, ("client_credentials", f"{MARKER}-not")),
}
INSERT = (
    "INSERT INTO oauth_clients (id, name, auth_method, secrets, jwks, redirect_uris,"
    " grant_types, scopes, audiences, created_at, updated_at)"
    " VALUES ({p1}, {p1}, 'client_secret_basic', '[]', NULL, '[]', {p2}, {p3}, '[]', 1.0, 1.0)"
)


async def check_clients(store: Store) -> None:
    repo = open_oauth_repo(store)
    got = {c.id: (c.introspect, c.grant_types) for c in await repo.list_clients()}
    assert got == EXPECTED
    # The permission is a real column now: it can be withdrawn and granted without the marker.
    assert await repo.set_client_introspect("rs", False, 5.0)
    assert await repo.set_client_introspect("app", True, 5.0)
    rs, app = await repo.get_client("rs"), await repo.get_client("app")
    assert rs is not None
    assert app is not None
    assert (rs.introspect, rs.grant_types) == (False, ("client_credentials",))
    assert (app.introspect, app.grant_types) == (True, ("client_credentials",))


async def test_a_version_7_sqlite_file_moves_the_marker_into_the_column(tmp_path: Path) -> None:
    path = str(tmp_path / "v7.db")
    raw = sqlite_at(path, 7)
    for row in V7_CLIENTS:
        raw.execute(INSERT.format(p1="?1", p2="?2", p3="?3"), row)
    raw.commit()
    raw.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert LATEST_VERSION >= 8
        rows = await store.read(
            "dump",
            lambda c: c.execute("SELECT grant_types FROM oauth_clients").fetchall(),
        )
        assert not any(f'"{MARKER}"' in r[0] for r in rows)
        await check_clients(store)
    finally:
        await store.close()


async def test_a_version_7_postgresql_database_moves_the_marker_into_the_column(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.postgres import pg_schema

    async with pg_schema("introspect7") as url:
        await postgres_at(url, 7, monkeypatch)
        conn = await asyncpg.connect(url)
        try:
            for row in V7_CLIENTS:
                await conn.execute(INSERT.format(p1="$1::text", p2="$2", p3="$3"), *row)
        finally:
            await conn.close()
        assert await PostgresStore(url).upgrade() == (7, LATEST_VERSION)
        store = PostgresStore(url)
        await store.open()
        try:
            await check_clients(store)
        finally:
            await store.close()
