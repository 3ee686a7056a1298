"""``bastion keys … --token-file`` against ``bastion control serve``, both real processes on
loopback, the API found through ``-c FILE``'s ``control.bind``. Users are in the authorization
server's directory (their current roles count); tokens are signed by its KeyManager in this
test. Attacks: a developer rotating or revoking another team's key, a token file others can
read, a token issued without MFA."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bastion.authserver.keys.signing import open_key_manager
from bastion.authserver.users.service import open_user_service
from bastion.config.load import load_config
from bastion.store.sqlite import SqliteStore
from tests.integration.control.test_control_serve import _wait
from tests.support.cluster import BASTION
from tests.support.control import free_port, write_control_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]


async def _tokens(path: Path) -> dict[str, str]:
    """An owner and a developer of team-a in the directory; their tokens (and one without
    MFA), as the authorization server would sign them."""
    cfg = load_config(path)
    assert cfg.auth is not None
    store = SqliteStore(cfg.store.removeprefix("sqlite:///"))
    await store.open()
    try:
        users = await open_user_service(cfg.auth.users, store, issuer=cfg.auth.issuer)
        owner = await users.create_user("olivia", "a-long-enough-password", roles=("owner",))
        dev = await users.create_user("dave", "a-long-enough-password", roles=("developer",))
        manager = await open_key_manager(cfg.auth.keys, store, token_max_lifetime=3600)
        try:
            now = int(time.time())

            async def sign(sub: str, **extra: Any) -> str:
                claims: dict[str, Any] = {
                    "iss": cfg.auth.issuer if cfg.auth else "",
                    "aud": "urn:bastion:admin",
                    "sub": sub,
                    "exp": now + 300,
                    "iat": now,
                    "jti": secrets.token_urlsafe(8),
                    "client_id": "bastion-cli",
                    "amr": ["pwd", "otp"],
                    "auth_time": now - 30,
                    **extra,
                }
                return await manager.sign(claims, typ="at+jwt")

            return {
                "owner": await sign(owner.id),
                "owner_no_mfa": await sign(owner.id, amr=["pwd"]),
                "dev": await sign(dev.id, groups=["team-a"]),
                "owner_id": owner.id,
                "dev_id": dev.id,
            }
        finally:
            manager.close()
    finally:
        await store.close()


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, int]:
    port = free_port()
    path = write_control_config(tmp_path, port)
    return path, port


def _run(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [*BASTION, "keys", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _token_file(directory: Path, name: str, token: str, mode: int = 0o600) -> str:
    path = directory / name
    path.write_text(token)
    path.chmod(mode)
    return str(path)


async def test_keys_cli_through_control_serve(served: tuple[Path, int], tmp_path: Path) -> None:
    path, port = served
    tokens = await _tokens(path)
    owner_tf = _token_file(tmp_path, "owner", tokens["owner"])
    dev_tf = _token_file(tmp_path, "dev", tokens["dev"])
    proc = subprocess.Popen(
        [*BASTION, "control", "serve", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    secrets_seen: list[str] = []
    try:
        _wait(port, proc)
        base = f"http://127.0.0.1:{port}/admin/v1"
        auth = {"authorization": f"Bearer {tokens['owner']}"}
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            for app_id, team in (("billing", "team-a"), ("crm", "team-b")):
                r = await c.post(
                    "/applications",
                    headers=auth,
                    json={
                        "id": app_id,
                        "name": app_id,
                        "owner": team,
                        "contact": f"{app_id}@example.test",
                        "environment": "production",
                        "risk_class": "partner",
                        "data_classification": "internal",
                        "allowed_scopes": ["read"],
                    },
                )
                assert r.status_code == 201, r.text
        api = ["-c", str(path), "--token-file"]

        code, out, err = _run("create", "--client", "crm", "--scope", "read", *api, owner_tf)
        assert code == 0, err
        [crm_secret] = [w for w in out.split() if w.startswith("bsk_")]
        secrets_seen.append(crm_secret)
        code, out, err = _run("list", "--json", *api, owner_tf)
        assert code == 0, err
        [crm_key] = orjson.loads(out)
        assert crm_key["application"] == "crm"
        assert crm_key["owner"] == "team-b"

        # the developer of team-a: another team's key is "no such key", and stays as it was
        for command in ("rotate", "revoke"):
            code, out, err = _run(command, crm_key["id"], *api, dev_tf)
            assert code == 1
            assert err.strip() == (
                "error: no such key"
                if command == "rotate"
                else f"error: no active key with id {crm_key['id']!r} (no such key)"
            )
            assert "bsk_" not in out
        code, out, err = _run("create", "--client", "billing", "--json", *api, dev_tf)
        assert code == 0, err
        mine = orjson.loads(out)
        secrets_seen.append(mine["key"])
        code, out, err = _run("list", "--json", *api, dev_tf)
        assert [k["id"] for k in orjson.loads(out)] == [mine["id"]]
        code, out, err = _run("rotate", mine["id"], "--grace", "2d", "--json", *api, dev_tf)
        assert code == 0, err
        secrets_seen.append(orjson.loads(out)["successor"]["key"])

        # a token file others can read is refused before anything is sent
        loose = _token_file(tmp_path, "loose", tokens["owner"], 0o644)
        code, out, err = _run("revoke", mine["id"], *api, loose)
        assert code == 2
        assert "chmod 600" in err
        assert tokens["owner"] not in out + err
        # a token issued without MFA
        weak = _token_file(tmp_path, "weak", tokens["owner_no_mfa"])
        code, _, err = _run("revoke", mine["id"], *api, weak)
        assert code == 1
        assert err.startswith("error: MFA required")

        code, out, err = _run("revoke", crm_key["id"], "--reason", "drill", *api, owner_tf)
        assert code == 0, err
        assert out.strip() == f"revoked {crm_key['id']}"

        # the operator's bootstrap path reads the same store
        code, out, err = _run("list", "--json", "-c", str(path))
        assert code == 0, err
        states = {k["id"]: k["state"] for k in orjson.loads(out)}
        assert states[crm_key["id"]] == "revoked"
        assert states[mine["id"]] == "rotating"

        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            audit = await c.get("/audit", headers=auth)
        assert audit.status_code == 200, audit.text
        changes = [
            (e["actor"], e["action"], e["target"]["id"])
            for e in audit.json()["items"]
            if e["action"].startswith("keys.") and e["outcome"] == "success"
        ]
        assert changes == [
            (tokens["owner_id"], "keys.revoke", crm_key["id"]),
            (tokens["dev_id"], "keys.rotate", mine["id"]),
            (tokens["dev_id"], "keys.create", mine["id"]),
            (tokens["owner_id"], "keys.create", crm_key["id"]),
        ]
        for secret in secrets_seen:
            assert secret not in audit.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err
    for secret in secrets_seen:
        assert secret not in err
