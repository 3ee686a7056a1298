"""Failure behaviour of distributed mode, with the real servers stopped and restarted.

* Redis down: rate limits fall back to each node's share (never unlimited), and come back.
* PostgreSQL down: API keys keep authenticating from the node's cache (Redis vouches that no
  revocation was missed), audit records spool to a local file and all reach the database when
  it returns, and an admin write fails with a clear store error.
* Both down: once the revocation state cannot be confirmed for ``revocation_max_staleness``,
  keys and tokens are refused; both back, they are accepted again.

Marked ``disruptive``: they run after every other test, and always restart what they stopped.
"""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.config.load import load_config
from bastion.core.apikeys import hash_secret, new_api_key
from bastion.gateway.serve import RunningGateway, start_gateway
from bastion.gateway.services import GatewayServices
from bastion.store.base import ApiKeyRecord, ClientRecord
from bastion.store.postgres import PostgresStore
from tests.support.cluster import (
    PEPPER,
    bastion,
    cluster_config,
    drop_prefix_sync,
    new_prefix,
    sign_token,
    write_jwks,
)
from tests.support.loop_thread import LoopThread
from tests.support.postgres import create_schema_sync, drop_schema_sync, schema_url
from tests.support.upstream import TestUpstream

pytestmark = [
    pytest.mark.integration,
    pytest.mark.disruptive,
    pytest.mark.usefixtures("hang_guard"),
]

PG_VERSION = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
               "--save", "", "--appendonly", "no"]  # fmt: skip


def _until(check: Callable[[], bool], timeout: float, what: str | Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what if isinstance(what, str) else what()}"
            )
        time.sleep(0.05)


def _redis_up() -> bool:
    r = subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True, text=True)
    return r.stdout.strip() == "PONG"


def _pg_up() -> bool:
    r = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True)
    return r.returncode == 0


def stop_redis() -> None:
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], capture_output=True)
    _until(lambda: not _redis_up(), 10, "Redis to stop")


def start_redis() -> None:
    if not _redis_up():
        subprocess.run(REDIS_START, capture_output=True, check=True)
    _until(_redis_up, 10, "Redis to start")


def _pg_ctl(action: str) -> None:
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, "main", action]
    subprocess.run([*cmd, "-m", "fast"] if action == "stop" else cmd, capture_output=True)


def stop_postgres() -> None:
    _pg_ctl("stop")
    _until(lambda: not _pg_up(), 30, "PostgreSQL to stop")


def start_postgres() -> None:
    if not _pg_up():
        _pg_ctl("start")
    _until(_pg_up, 30, "PostgreSQL to start")


@contextlib.contextmanager
def down(*services: str) -> Iterator[None]:
    """Stop the named servers ("redis", "postgres"); always start them again."""
    try:
        if "redis" in services:
            stop_redis()
        if "postgres" in services:
            stop_postgres()
        yield
    finally:
        start_postgres()
        start_redis()


class Gateway:
    """One in-process node on PostgreSQL + Redis, with a test upstream, on a loop thread."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.schema = create_schema_sync("failover")
        self.prefix = new_prefix()
        self.thread = LoopThread()
        self.upstream = self.thread.call(TestUpstream().start())
        jwks, self.signing_key = write_jwks(tmp)
        limited = {
            "name": "limited",
            "path_prefix": "/limited",
            "upstream": f"http://127.0.0.1:{self.upstream.port}",
            "authn": {"methods": ["api_key"]},
            "ratelimit": {"limits": [{"rate": 10, "per": "10s"}]},
        }
        path = cluster_config(
            tmp,
            store=schema_url(self.schema),
            upstream_port=self.upstream.port,
            prefix=self.prefix,
            jwks=jwks,
            extra={"change_poll_interval": 0.2},
        )
        doc = yaml.safe_load(path.read_text())
        doc["routes"].append(limited)
        doc["cluster"].update(
            {"revocation_max_staleness": 1.5, "redis_retry": 0.3, "redis_timeout": 0.2}
        )
        path.write_text(yaml.safe_dump(doc))
        self.config_path = path
        self.thread.call(PostgresStore(schema_url(self.schema)).upgrade())
        config = load_config(path, {"BASTION_TEST_PEPPER": PEPPER})
        self.services = GatewayServices.create(config)
        self.running: RunningGateway = self.thread.call(start_gateway(config, self.services))
        self.port = self.running.addresses[0][1]
        self.requests = 0

    def key(self, client: str = "acme") -> str:
        key_id, secret, full = new_api_key()
        now = time.time()
        rec = ApiKeyRecord(key_id, client, hash_secret(PEPPER.encode(), secret), (), now, None)

        async def put() -> None:
            store = self.services.store
            if await store.get_client(client) is None:
                await store.put_client(ClientRecord(client, client, now))
            await store.put_api_key(rec)

        self.thread.call(put())
        return full

    def get(self, path: str, credential: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {credential}"})
            resp = conn.getresponse()
            resp.read()
            self.requests += 1
            return resp.status
        finally:
            conn.close()

    def call(self, coro: Any) -> Any:
        return self.thread.call(coro)

    def close(self) -> None:
        try:
            self.thread.call(self.running.aclose())
            self.thread.call(self.upstream.aclose())
        finally:
            self.thread.stop()
            drop_schema_sync(self.schema)
            drop_prefix_sync(self.prefix)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    start_postgres()
    start_redis()
    g = Gateway(tmp_path)
    try:
        yield g
    finally:
        g.close()


def test_redis_down_limits_fall_back_to_the_node_share_then_recover(gw: Gateway) -> None:
    shared = gw.key("shared")
    assert [gw.get("/limited/x", shared) for _ in range(12)].count(200) == 10
    with down("redis"):
        local = gw.key("local")
        statuses = [gw.get("/limited/x", local) for _ in range(12)]
        assert statuses.count(200) == 5, statuses  # 1/nodes of the limit: never unlimited
        assert statuses.count(429) == 7
        assert gw.get("/api/x", gw.key()) == 200  # authentication goes on (store current)
        assert gw.get("/api/x", sign_token(gw.signing_key)) == 200
    time.sleep(0.4)  # redis_retry
    again = gw.key("again")
    assert [gw.get("/limited/x", again) for _ in range(12)].count(200) == 10
    backend = gw.services.ratelimit_backend
    assert not getattr(backend, "degraded", True)


def test_postgres_down_keys_keep_working_audit_spools_and_drains(gw: Gateway) -> None:
    key = gw.key()
    assert gw.get("/api/x", key) == 200
    with down("postgres"):
        start = time.monotonic()
        while time.monotonic() - start < 3.0:  # twice the staleness bound: Redis vouches
            assert gw.get("/api/x", key) == 200
            time.sleep(0.1)
        spool = gw.services.store.spool  # type: ignore[attr-defined]
        _until(lambda: spool.pending, 5, "audit records to spool")
        unknown, _, _ = new_api_key()  # a well-formed id: the store is what fails
        revoke = bastion(gw.tmp, "keys", "revoke", "-c", str(gw.config_path), unknown)
        assert revoke.returncode == 1
        assert "postgresql" in revoke.stderr
        assert "Traceback" not in revoke.stderr
    gw.call(gw.services.auditor.flush())

    stored: list[int] = []

    def all_stored() -> bool:
        stored.append(gw.call(gw.services.store.count_audit()))
        return stored[-1] == gw.requests

    _until(
        all_stored,
        15,
        lambda: f"the spool to drain ({gw.requests} requests, stored: {sorted(set(stored))})",
    )
    assert not spool.pending
    assert list((gw.tmp / "spool").glob("*.spool")) == []


def test_store_and_redis_down_refuse_keys_and_tokens_until_one_returns(gw: Gateway) -> None:
    key = gw.key()
    token = sign_token(gw.signing_key)
    assert gw.get("/api/x", key) == 200
    assert gw.get("/api/x", token) == 200
    with down("redis", "postgres"):
        time.sleep(1.7)  # past revocation_max_staleness
        assert gw.get("/api/x", key) == 401
        assert gw.get("/api/x", token) == 401
    _until(lambda: gw.get("/api/x", key) == 200, 10, "the key to be accepted again")
    assert gw.get("/api/x", token) == 200
