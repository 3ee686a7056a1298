"""The API-key lifecycle against real PostgreSQL (and Redis): usage counts arrive in batches,
never one write per request, and are flushed when a gateway stops; a rotation with no grace
period reaches every node by push."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from bastion.config import parse_config
from bastion.control.keys import KeyService
from bastion.gateway.services import GatewayServices
from bastion.store import PostgresStore, SqliteStore
from bastion.store.base import ApiKeyRecord
from bastion.store.migrations import LATEST_VERSION
from tests.integration.test_cluster import pg_url, status, upstream, wait_until_refused
from tests.support.cluster import Node, bastion, cluster_config, drop_prefix_sync, new_prefix
from tests.support.postgres import pg_schema
from tests.support.schema_at import postgres_at, sqlite_at

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

__all__ = ["pg_url", "upstream"]  # fixtures, re-used from the cluster tests

PEPPER = "usage-pepper-" + "w" * 32


class CountingPostgresStore(PostgresStore):
    """A real PostgreSQL store that records each usage batch it writes."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches: list[dict[str, tuple[int, float]]] = []

    async def record_key_usage(self, usage: Mapping[str, tuple[int, float]]) -> None:
        self.batches.append(dict(usage))
        await super().record_key_usage(usage)


@pytest.fixture
async def pg() -> AsyncIterator[str]:
    async with pg_schema("keylife") as url:
        await PostgresStore(url).upgrade()
        yield url


async def test_usage_reaches_postgresql_in_one_batch_not_per_request(pg: str) -> None:
    cfg = parse_config(
        {
            "store": pg,
            "listeners": [{"bind": "127.0.0.1:0"}],
            "api_keys": {"pepper": PEPPER, "usage_flush_interval": 300},
            "routes": [
                {
                    "name": "api",
                    "path_prefix": "/api",
                    "upstream": "http://127.0.0.1:9",
                    "authn": {"methods": ["api_key"]},
                }
            ],
        },
        {},
    )
    store = CountingPostgresStore(pg)
    services = GatewayServices.create(cfg, store=store)
    await services.start()
    issued = await KeyService(store, PEPPER.encode()).create("acme", create_application=True)
    assert services.api_keys is not None
    for _ in range(300):
        principal, reason = await services.api_keys.verify(issued.secret)
        assert principal is not None, reason
    assert store.batches == []  # 300 requests, not one write
    await services.aclose()  # shutdown flushes the batch
    assert len(store.batches) == 1
    assert store.batches[0][issued.key.id][0] == 300
    check = PostgresStore(pg)
    await check.open()
    try:
        rec = await check.get_api_key(issued.key.id)
    finally:
        await check.close()
    assert rec is not None
    assert rec.usage_count == 300
    assert rec.last_used_at is not None
    assert rec.last_used_at >= issued.key.created_at


async def test_concurrent_flushes_of_overlapping_batches_do_not_deadlock(pg: str) -> None:
    store = PostgresStore(pg, max_connections=8)
    await store.open()
    try:
        keys = KeyService(store, PEPPER.encode())
        ids = [(await keys.create("acme", create_application=i == 0)).key.id for i in range(40)]
        forward = {k: (1, 100.0 + i) for i, k in enumerate(ids)}
        backward = dict(reversed(list(forward.items())))
        rounds = 15
        await asyncio.gather(
            *(store.record_key_usage(forward if r % 2 else backward) for r in range(rounds * 2))
        )
        for i, key_id in enumerate(ids):
            rec = await store.get_api_key(key_id)
            assert rec is not None
            assert rec.usage_count == rounds * 2
            assert rec.last_used_at == 100.0 + i
    finally:
        await store.close()


_V5_KEY = (
    "INSERT INTO api_keys (id, client_id, secret_hash, scopes, name, created_at, expires_at)"
    " VALUES ('k5k5k5k5k5k5k5k5', 'acme', 'ab', '[\"r\"]', 'old', 10.0, 20.0)"
)


def _check_upgraded_key(rec: ApiKeyRecord | None) -> None:
    assert rec is not None
    assert (rec.scopes, rec.name, rec.created_at, rec.expires_at) == (("r",), "old", 10.0, 20.0)
    assert (rec.owner, rec.rotated_from, rec.replaced_by) == ("", None, None)
    assert (rec.last_used_at, rec.usage_count) == (None, 0)


async def test_a_version_5_sqlite_file_keeps_its_keys_through_migration_6(tmp_path: Path) -> None:
    path = str(tmp_path / "v5.db")
    raw = sqlite_at(path, 5)
    raw.execute("INSERT INTO clients VALUES ('acme', 'Acme', 1.0)")
    raw.execute(_V5_KEY)
    raw.commit()
    raw.close()
    store = SqliteStore(path)
    await store.open()
    try:
        _check_upgraded_key(await store.get_api_key("k5k5k5k5k5k5k5k5"))
        await store.record_key_usage({"k5k5k5k5k5k5k5k5": (2, 15.0)})
        rec = await store.get_api_key("k5k5k5k5k5k5k5k5")
        assert rec is not None
        assert rec.usage_count == 2
    finally:
        await store.close()


async def test_a_version_5_postgresql_database_keeps_its_keys_through_migration_6(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with pg_schema("keylife5") as url:
        await postgres_at(url, 5, monkeypatch)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("INSERT INTO clients VALUES ('acme', 'Acme', 1.0)")
            await conn.execute(_V5_KEY)
        finally:
            await conn.close()
        assert await PostgresStore(url).upgrade() == (5, LATEST_VERSION)
        store = PostgresStore(url)
        await store.open()
        try:
            _check_upgraded_key(await store.get_api_key("k5k5k5k5k5k5k5k5"))
        finally:
            await store.close()


@pytest.fixture
def nodes(tmp_path: Path, upstream: int, pg_url: str) -> Iterator[dict[str, Any]]:
    """Two gateway nodes on PostgreSQL and Redis; the change feed polls every 4 s, so what
    arrives sooner was pushed; usage is flushed every 300 s, so what arrives was flushed at
    shutdown."""
    prefix = new_prefix()
    config = cluster_config(
        tmp_path,
        store=pg_url,
        upstream_port=upstream,
        prefix=prefix,
        extra={
            "change_poll_interval": 4,
            "api_keys": {"pepper": "${BASTION_TEST_PEPPER}", "usage_flush_interval": 300},
        },
    )
    upgraded = bastion(tmp_path, "db", "upgrade", "-c", str(config))
    assert upgraded.returncode == 0, upgraded.stderr
    started = [Node(tmp_path, config) for _ in range(2)]
    try:
        yield {
            "dir": tmp_path,
            "config": config,
            "ports": [n.port() for n in started],
            "nodes": started,
            "store": pg_url,
        }
    finally:
        for n in started:
            n.close()
        drop_prefix_sync(prefix)


def _cli_json(cluster: dict[str, Any], *args: str) -> Any:
    result = bastion(cluster["dir"], "keys", *args, "-c", str(cluster["config"]), "--json")
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def test_rotation_reaches_every_node_and_usage_is_flushed_at_shutdown(
    nodes: dict[str, Any],
) -> None:
    ports = nodes["ports"]
    old = _cli_json(nodes, "create", "--client", "acme")
    old_headers = {"Authorization": f"Bearer {old['key']}"}
    assert [status(p, old_headers) for p in ports] == [200, 200]
    rotated = _cli_json(nodes, "rotate", old["id"], "--grace", "0s")
    new_headers = {"Authorization": f"Bearer {rotated['successor']['key']}"}
    # Refused everywhere long before a change-feed poll: the rotation was pushed.
    wait_until_refused(ports, old_headers, limit=1.0)
    for _ in range(5):
        assert [status(p, new_headers) for p in ports] == [200, 200]
    # Before the nodes stop nothing was written (the flush interval is 300 s) ...
    listed = {r["id"]: r for r in _cli_json(nodes, "list")}
    assert listed[rotated["successor"]["id"]]["usage_count"] == 0
    # ... and SIGTERM flushes each node's batch.
    assert [n.stop() for n in nodes["nodes"]] == [0, 0]
    listed = {r["id"]: r for r in _cli_json(nodes, "list")}
    assert listed[rotated["successor"]["id"]]["usage_count"] == 10
    assert listed[old["id"]]["usage_count"] >= 2  # and any accepted before the push landed
    assert listed[old["id"]]["state"] == "expired"
    # The report reads PostgreSQL too (application contacts from the admin API's table).
    report = _cli_json(nodes, "report")
    assert report["applications_without_contact"] == ["acme"]
    assert [k["id"] for k in report["keys_without_owner"]] == [rotated["successor"]["id"]]
