"""``bastion up`` with a ``control`` section: the gateway, the authorization server and the
admin API in one process, on one event bus. A key revoked through the admin API is refused
by that process's gateway at once, although its change-feed poll is 60 s and there is no Redis:
the revocation travelled on the shared bus."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.control.test_control_serve import _prepare, _wait
from tests.integration.test_cluster import status, upstream
from tests.support.cluster import BASTION
from tests.support.control import free_port, write_control_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

__all__ = ["upstream"]  # the fixture, imported for this module's tests


@pytest.fixture
def up_config(tmp_path: Path, upstream: int) -> tuple[Path, int, int]:
    gateway, admin = free_port(), free_port()
    path = write_control_config(
        tmp_path,
        admin,
        f"""
change_poll_interval: 60
cluster:
  revocation_max_staleness: 120
listeners:
  - bind: 127.0.0.1:{gateway}
routes:
  - name: api
    path_prefix: /api
    upstream: http://127.0.0.1:{upstream}
    authn: {{methods: [api_key]}}
""",
    )
    return path, gateway, admin


async def test_up_serves_the_admin_api_on_the_gateways_bus(
    up_config: tuple[Path, int, int],
) -> None:
    path, gateway, admin = up_config
    _, good, weak = await _prepare(path)
    proc = subprocess.Popen(
        [*BASTION, "up", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        _wait(admin, proc)
        _wait(gateway, proc)
        auth = {"authorization": f"Bearer {good}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin}/admin/v1") as c:
            assert (await c.get("/openapi.json")).json()["openapi"] == "3.1.0"
            weak_me = await c.get("/me", headers={"authorization": f"Bearer {weak}"})
            assert weak_me.json()["code"] == "admin.mfa_required"
            app = {
                "id": "billing",
                "name": "Billing",
                "owner": "team-a",
                "contact": "billing@example.test",
                "environment": "production",
                "risk_class": "partner",
                "data_classification": "internal",
                "allowed_scopes": ["read"],
            }
            assert (await c.post("/applications", headers=auth, json=app)).status_code == 201
            key = await c.post("/applications/billing/keys", headers=auth, json={})
            assert key.status_code == 201, key.text
            headers = {"Authorization": f"Bearer {key.json()['secret']}"}
            deadline = time.monotonic() + 10
            while status(gateway, headers) != 200:  # a new key: first lookup goes to the store
                assert time.monotonic() < deadline, "the gateway never accepted the new key"
                time.sleep(0.05)
            revoked = await c.post(f"/keys/{key.json()['id']}/revoke", headers=auth, json={})
            assert revoked.status_code == 200, revoked.text
        # At once: the change feed would take up to 60 s, and there is no Redis.
        assert status(gateway, headers) == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert key.json()["secret"] not in err
