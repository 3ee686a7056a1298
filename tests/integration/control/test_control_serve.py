"""``bastion control serve`` as a user runs it: a real process on loopback, a SQLite file, the
authorization server's signing keys (local KEK) and user directory in the same file. Tokens are
signed in this test by the same KeyManager the authorization server uses."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.authserver.keys.signing import open_key_manager
from bastion.authserver.users.service import open_user_service
from bastion.config.load import load_config
from bastion.store.base import ApiKeyRecord
from bastion.store.sqlite import SqliteStore
from tests.support.cluster import BASTION
from tests.support.control import free_port, write_control_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]


@pytest.fixture
def config(tmp_path: Path) -> tuple[Path, int]:
    port = free_port()
    return write_control_config(tmp_path, port), port


async def _prepare(path: Path) -> tuple[str, str, str]:
    """An owner in the directory, a key of a legacy client, and two tokens (MFA and not)."""
    cfg = load_config(path)
    assert cfg.auth is not None
    store = SqliteStore(cfg.store.removeprefix("sqlite:///"))
    await store.open()
    try:
        users = await open_user_service(cfg.auth.users, store, issuer=cfg.auth.issuer)
        owner = await users.create_user("olivia", "a-long-enough-password", roles=("owner",))
        manager = await open_key_manager(cfg.auth.keys, store, token_max_lifetime=3600)
        try:
            now = int(time.time())
            claims: dict[str, Any] = {
                "iss": cfg.auth.issuer,
                "aud": "urn:bastion:admin",
                "sub": owner.id,
                "exp": now + 300,
                "iat": now,
                "jti": secrets.token_urlsafe(8),
                "client_id": "bastion-cli",
                "amr": ["pwd", "otp"],
                "auth_time": now - 30,
            }
            good = await manager.sign(claims, typ="at+jwt")
            weak = await manager.sign({**claims, "amr": ["pwd"], "jti": "weak"}, typ="at+jwt")
        finally:
            manager.close()
    finally:
        await store.close()
    return owner.id, good, weak


def _wait(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"control serve exited: {proc.communicate()[1]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("control serve did not listen")


async def test_control_serve_end_to_end(config: tuple[Path, int]) -> None:
    path, port = config
    _, good, weak = await _prepare(path)
    proc = subprocess.Popen(
        [*BASTION, "control", "serve", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        _wait(port, proc)
        base = f"http://127.0.0.1:{port}/admin/v1"
        auth = {"authorization": f"Bearer {good}"}
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            doc = await c.get("/openapi.json")
            assert doc.json()["openapi"] == "3.1.0"
            assert (
                await c.get("/me", headers={"authorization": f"Bearer {weak}"})
            ).status_code == 401
            assert (await c.get("/me")).status_code == 401
            r = await c.post(
                "/applications",
                headers=auth,
                json={
                    "id": "billing",
                    "name": "Billing",
                    "owner": "team-a",
                    "contact": "billing@example.test",
                    "environment": "production",
                    "risk_class": "partner",
                    "data_classification": "internal",
                    "allowed_scopes": ["read"],
                },
            )
            assert r.status_code == 201, r.text
            key = await c.post(
                "/applications/billing/keys", headers=auth, json={"scopes": ["read"]}
            )
            assert key.status_code == 201, key.text
            secret = key.json()["secret"]
            r = await c.post(
                "/incidents/revoke-application",
                headers=auth,
                json={"application": "billing", "reason": "drill"},
            )
            assert r.status_code == 200, r.text
            assert r.json()["revoked_keys"] == [key.json()["id"]]
            audit = await c.get("/audit", headers=auth)
            assert [e["action"] for e in audit.json()["items"]] == [
                "incident.revoke_app",
                "keys.create",
                "apps.create",
            ]
            assert secret not in audit.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert secret not in err
    store = SqliteStore(str(path.parent / "bastion.db"))
    await store.open()
    try:
        rec = await store.get_api_key(key.json()["id"])
        assert isinstance(rec, ApiKeyRecord)
        assert rec.revoked_at is not None
    finally:
        await store.close()
