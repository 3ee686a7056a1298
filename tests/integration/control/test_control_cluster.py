"""The admin API's incident action reaching every node: two ``bastion gateway`` processes on
PostgreSQL and Redis, the admin API in this process on the same store, wired from the same
config file by ``build_from_config``. The nodes poll the change feed every 4 s, so a refusal
within 1 s can only come from the push. Besides the application's API key, a user's access
token issued to the application's client before the call (not the last of any refresh family
the server knows) is refused too, and a token issued to it after the call still works."""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from bastion.config.load import load_config
from bastion.control.serve import build_from_config
from bastion.store.postgres import PostgresStore
from tests.support.cluster import (
    PEPPER,
    Node,
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
from tests.unit.jwt_factory import JwksServer, jwks

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

ADMIN_ISSUER = "https://admin-idp.cluster.test"
ADMIN_AUDIENCE = "urn:bastion:admin"


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
def admin_key() -> Iterator[tuple[ECKey, str]]:
    key = ECKey.generate_key("P-256", parameters={"kid": "admin-1"})
    server = JwksServer(jwks(key)).start()
    try:
        yield key, server.url
    finally:
        server.stop()


def admin_token(key: ECKey) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ADMIN_ISSUER,
        "aud": ADMIN_AUDIENCE,
        "sub": "sec-1",
        "exp": now + 300,
        "iat": now,
        "jti": f"admin-{now}",
        "roles": ["owner"],
        "amr": ["pwd", "otp"],
        "auth_time": now - 5,
    }
    return jwt.encode({"alg": "ES256", "kid": "admin-1", "typ": "at+jwt"}, claims, key)


def status(port: int, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/x", headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_revoke_application_reaches_every_node_by_push(
    tmp_path: Path,
    upstream: int,
    admin_key: tuple[ECKey, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, jwks_url = admin_key
    schema = create_schema_sync("ctlcluster")
    prefix = new_prefix()
    nodes: list[Node] = []
    jwks_path, user_key = write_jwks(tmp_path)
    try:
        config = cluster_config(
            tmp_path,
            store=schema_url(schema),
            upstream_port=upstream,
            prefix=prefix,
            jwks=jwks_path,
            extra={
                "change_poll_interval": 4,
                "control": {
                    "issuer": ADMIN_ISSUER,
                    "jwks_url": jwks_url,
                    "audience": ADMIN_AUDIENCE,
                },
            },
        )
        upgraded = bastion(tmp_path, "db", "upgrade", "-c", str(config))
        assert upgraded.returncode == 0, upgraded.stderr
        nodes = [Node(tmp_path, config) for _ in range(2)]
        ports = [n.port() for n in nodes]
        monkeypatch.setenv("BASTION_TEST_PEPPER", PEPPER)
        cfg = load_config(config)

        async def scenario() -> None:
            store = PostgresStore(cfg.store)
            await store.open()
            api, closers = await build_from_config(cfg, store)
            auth = {"authorization": f"Bearer {admin_token(key)}"}
            transport = httpx.ASGITransport(app=api.app)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://a") as c:
                    r = await c.post(
                        "/admin/v1/applications",
                        headers=auth,
                        json={
                            "id": "acme",
                            "name": "Acme",
                            "owner": "team-a",
                            "contact": "ops@acme.test",
                            "environment": "production",
                            "risk_class": "partner",
                            "data_classification": "internal",
                            "allowed_scopes": ["read"],
                        },
                    )
                    assert r.status_code == 201, r.text
                    created = await c.post(
                        "/admin/v1/applications/acme/keys", headers=auth, json={"scopes": ["read"]}
                    )
                    assert created.status_code == 201, created.text
                    headers = {"Authorization": f"Bearer {created.json()['secret']}"}
                    before = int(time.time()) - 2
                    user_token = sign_token(user_key, sub="alice", client_id="acme", iat=before)
                    user = {"Authorization": f"Bearer {user_token}"}
                    deadline = time.monotonic() + 10
                    while [status(p, headers) for p in ports] != [200, 200]:
                        assert time.monotonic() < deadline, "the new key never worked"
                        await asyncio.sleep(0.05)
                    assert [status(p, user) for p in ports] == [200, 200]
                    start = time.monotonic()
                    r = await c.post(
                        "/admin/v1/incidents/revoke-application",
                        headers=auth,
                        json={"application": "acme", "reason": "leaked"},
                    )
                    assert r.status_code == 200, r.text
                    pending = set(ports)
                    while pending:
                        pending = {
                            p
                            for p in pending
                            if (status(p, headers), status(p, user)) != (401, 401)
                        }
                        assert time.monotonic() - start < 1.0, f"still accepted by {pending}"
                        await asyncio.sleep(0.005)
                    after = int(r.json()["tokens_issued_before"]) + 1
                    fresh = sign_token(user_key, sub="alice", client_id="acme", iat=after)
                    other = sign_token(user_key, sub="alice", client_id="web", iat=before)
                    for token in (fresh, other):
                        auth_header = {"Authorization": f"Bearer {token}"}
                        assert [status(p, auth_header) for p in ports] == [200, 200]
            finally:
                for closer in closers:
                    closer.close()
                await store.close()

        asyncio.run(scenario())
        codes = [n.stop() for n in nodes]
        assert codes == [0, 0], "".join(nodes[0].log + nodes[1].log)
    finally:
        for n in nodes:
            n.close()
        drop_prefix_sync(prefix)
        drop_schema_sync(schema)
