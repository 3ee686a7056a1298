"""Two ``bastion gateway`` processes sharing PostgreSQL and Redis, started as an operator would:
``bastion db upgrade`` first, then the nodes. One exact rate limit across both nodes, and a
revocation made on the command line reaching both nodes by push, long before their change-feed
poll would have found it."""

from __future__ import annotations

import asyncio
import http.client
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from bastion.events.redis_bus import publish_control, redis_client
from bastion.store.base import Revocation
from bastion.store.migrations import LATEST_VERSION
from bastion.store.postgres import PostgresStore
from tests.support.cluster import (
    REDIS_URL,
    Node,
    bastion,
    burst,
    cluster_config,
    drop_prefix_sync,
    new_prefix,
    sign_token,
    write_jwks,
)
from tests.support.loop_thread import LoopThread
from tests.support.postgres import create_schema_sync, drop_schema_sync, schema_url
from tests.support.upstream import TestUpstream

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

RATE = 100  # the /burst route's limit per second (burst 100)


@pytest.fixture
def upstream() -> Iterator[int]:
    thread = LoopThread()
    up = thread.call(TestUpstream().start())
    try:
        yield up.port
    finally:
        thread.call(up.aclose())
        thread.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = create_schema_sync("cluster")
    try:
        yield schema_url(name)
    finally:
        drop_schema_sync(name)


@pytest.fixture
def cluster(tmp_path: Path, upstream: int, pg_url: str) -> Iterator[dict[str, Any]]:
    """Two nodes; ``change_poll_interval`` 4 s, so anything faster than that was pushed."""
    jwks, signing_key = write_jwks(tmp_path)
    prefix = new_prefix()
    config = cluster_config(
        tmp_path,
        store=pg_url,
        upstream_port=upstream,
        prefix=prefix,
        jwks=jwks,
        extra={"change_poll_interval": 4},
    )
    # A node refuses a database without the schema, and says what to run.
    refused = bastion(tmp_path, "keys", "list", "-c", str(config))
    assert refused.returncode == 1
    assert "bastion db upgrade" in refused.stderr
    upgraded = bastion(tmp_path, "db", "upgrade", "-c", str(config))
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"from version 0 to {LATEST_VERSION}" in upgraded.stdout
    again = bastion(tmp_path, "db", "upgrade", "-c", str(config))
    assert f"schema is current (version {LATEST_VERSION})" in again.stdout
    nodes = [Node(tmp_path, config) for _ in range(2)]
    try:
        ports = [n.port() for n in nodes]
        yield {
            "dir": tmp_path,
            "config": config,
            "ports": ports,
            "prefix": prefix,
            "store": pg_url,
            "key": signing_key,
            "nodes": nodes,
        }
        codes = [n.stop() for n in nodes]
        assert codes == [0, 0], "".join(nodes[0].log + nodes[1].log)
        for n in nodes:
            assert "Traceback" not in "".join(n.log)
    finally:
        for n in nodes:
            n.close()
        drop_prefix_sync(prefix)


def status(port: int, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/x", headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_until_refused(
    ports: list[int], headers: dict[str, str], limit: float, refusal: int = 401
) -> float:
    """Seconds until every node answers ``refusal`` (AssertionError after ``limit`` s)."""
    start = time.monotonic()
    pending = set(ports)
    while pending:
        pending = {p for p in pending if status(p, headers) != refusal}
        elapsed = time.monotonic() - start
        assert elapsed < limit, f"still accepted by {sorted(pending)} after {elapsed:.2f}s"
        if pending:
            time.sleep(0.005)
    return time.monotonic() - start


def test_two_nodes_share_one_exact_limit(cluster: dict[str, Any]) -> None:
    replies = asyncio.run(burst(cluster["ports"], "/burst/x", total=500, connections=24))
    assert {r.status for r in replies} <= {200, 429}
    admitted = sum(r.status == 200 for r in replies)
    # GCRA admits the burst plus one request per emission interval of the time the load
    # lasted on the server. That time lies between the last request sent minus the first
    # answer received, and the last answer received minus the first request sent.
    first_sent = min(r.sent for r in replies)
    first_received = min(r.received for r in replies)
    last_sent = max(r.sent for r in replies)
    last_received = max(r.received for r in replies)
    assert last_received - first_sent < 3.0, "the burst was too slow to measure a 100/s limit"
    low = RATE + RATE * (last_sent - first_received)
    high = RATE + RATE * (last_received - first_sent)
    assert 0.98 * low <= admitted <= 1.02 * high, (admitted, low, high)
    # Two separate in-memory limiters would have admitted about twice the burst.
    assert admitted < 1.5 * RATE + RATE * (last_received - first_sent)


def test_revoked_key_is_refused_by_every_node_by_push(cluster: dict[str, Any]) -> None:
    created = bastion(
        cluster["dir"], "keys", "create", "-c", str(cluster["config"]), "--client", "acme",
        "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = orjson.loads(created.stdout)
    headers = {"Authorization": f"Bearer {key['key']}"}
    assert [status(p, headers) for p in cluster["ports"]] == [200, 200]
    revoked = bastion(cluster["dir"], "keys", "revoke", "-c", str(cluster["config"]), key["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert "warning" not in revoked.stderr
    # The change feed polls every 4 s: refusal within 1 s can only come from the push.
    wait_until_refused(cluster["ports"], headers, limit=1.0)


def test_ip_block_reaches_every_node_by_push_and_lifts(cluster: dict[str, Any]) -> None:
    created = bastion(
        cluster["dir"], "keys", "create", "-c", str(cluster["config"]), "--client", "ops",
        "--json",
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {orjson.loads(created.stdout)['key']}"}
    assert [status(p, headers) for p in cluster["ports"]] == [200, 200]
    config = str(cluster["config"])
    # Another network first: nobody here is refused.
    other = bastion(cluster["dir"], "ip", "block", "-c", config, "198.51.100.0/24", "--for", "1h")
    assert other.returncode == 0, other.stderr
    time.sleep(0.3)
    assert [status(p, headers) for p in cluster["ports"]] == [200, 200]
    # The test client's own address: every node refuses it within the push time, 403.
    blocked = bastion(
        cluster["dir"], "ip", "block", "-c", config, "127.0.0.1", "--for", "10m",
        "--reason", "test",
    )  # fmt: skip
    assert blocked.returncode == 0, blocked.stderr
    assert "warning" not in blocked.stderr
    wait_until_refused(cluster["ports"], headers, limit=1.0, refusal=403)
    listed = bastion(cluster["dir"], "ip", "list", "-c", config, "--json")
    assert {b["cidr"] for b in orjson.loads(listed.stdout)} == {"198.51.100.0/24", "127.0.0.1/32"}
    # A node that starts now loads the block from the store.
    late = Node(cluster["dir"], cluster["config"])
    try:
        assert status(late.port(), headers) == 403
    finally:
        assert late.stop() == 0
        late.close()
    lifted = bastion(cluster["dir"], "ip", "unblock", "-c", config, "127.0.0.1")
    assert lifted.returncode == 0, lifted.stderr
    deadline = time.monotonic() + 1.0
    while [status(p, headers) for p in cluster["ports"]] != [200, 200]:
        assert time.monotonic() < deadline, "the block was not lifted on every node within 1 s"
        time.sleep(0.01)


def test_config_push_reloads_every_node(cluster: dict[str, Any]) -> None:
    config = Path(cluster["config"])
    ports = cluster["ports"]
    original = config.read_text()
    assert [status(p, {}) for p in ports] == [401, 401]  # /api needs a credential
    # An invalid file is refused by the CLI and never announced.
    config.write_text(original + "\nbogus: 1\n")
    refused = bastion(cluster["dir"], "config", "push", "-c", str(config))
    assert refused.returncode == 2
    assert "bogus" in refused.stderr
    # A valid edit: /api becomes anonymous. Feed polls are 4 s apart: within 1 s is the push.
    doc = yaml.safe_load(original)
    doc["routes"][0]["authn"] = {"methods": [], "unsafe_allow_anonymous": True}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    pushed = bastion(cluster["dir"], "config", "push", "-c", str(config))
    assert pushed.returncode == 0, pushed.stderr
    assert "announced" in pushed.stdout
    deadline = time.monotonic() + 1.0
    while [status(p, {}) for p in ports] != [200, 200]:
        assert time.monotonic() < deadline, "not every node reloaded within 1 s"
        time.sleep(0.01)
    # SIGHUP reloads one node from its file, without announcing anything to the others.
    config.write_text(original)
    cluster["nodes"][0].proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 2.0
    while status(ports[0], {}) != 401:
        assert time.monotonic() < deadline, "SIGHUP did not reload the node"
        time.sleep(0.01)
    assert status(ports[1], {}) == 200
    assert bastion(cluster["dir"], "config", "push", "-c", str(config)).returncode == 0
    deadline = time.monotonic() + 1.0
    while [status(p, {}) for p in ports] != [401, 401]:
        assert time.monotonic() < deadline, "not every node reloaded back within 1 s"
        time.sleep(0.01)


def test_revoked_token_is_refused_by_every_node_by_push(cluster: dict[str, Any]) -> None:
    jti = "tok-" + new_prefix().strip(":")
    token = sign_token(cluster["key"], jti=jti)
    headers = {"Authorization": f"Bearer {token}"}
    assert [status(p, headers) for p in cluster["ports"]] == [200, 200]

    async def revoke() -> None:
        # What a writer does: commit to the store, then push.
        store = PostgresStore(cluster["store"])
        await store.open()
        rev = Revocation("jti", jti, None, None, time.time() + 300, time.time())
        try:
            await store.add_revocation(rev)
        finally:
            await store.close()
        client = redis_client(REDIS_URL, timeout=1.0)
        try:
            event = {"type": "token.revoked", "jti": jti, "expires_at": rev.expires_at}
            await publish_control(client, cluster["prefix"], event)
        finally:
            await client.aclose()

    asyncio.run(revoke())
    wait_until_refused(cluster["ports"], headers, limit=1.0)
    other = sign_token(cluster["key"])
    assert [status(p, {"Authorization": f"Bearer {other}"}) for p in cluster["ports"]] == [200, 200]
