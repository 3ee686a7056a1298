"""``bastion keys create|list|rotate|revoke --token-file …``: the key commands through the admin
API in-process. The output is the store mode's; the API's rules apply. Attacks: a developer
reaching another team's key, a token file others can read, a token without MFA, a stale login
for a destructive change, a role that may not create, a garbage token, malformed input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bastion.cli import keys as cli_keys
from bastion.cli.main import main
from bastion.control.admin.records import Application
from tests.unit.control.harness import Harness, make_harness

URL = "http://admin.test"


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("NO_COLOR", "1")
    harness = make_harness()

    async def prepare() -> None:
        await harness.store.open()
        for app_id, owner in (("billing", "team-a"), ("crm", "team-b")):
            await harness.ctx.repo.create_application(
                Application(
                    app_id,
                    app_id,
                    1.0,
                    owner=owner,
                    environment="production",
                    risk_class="partner",
                    data_classification="internal",
                    allowed_scopes=("read", "write"),
                )
            )

    asyncio.run(prepare())
    monkeypatch.setattr(cli_keys, "TRANSPORT", lambda: httpx.ASGITransport(app=harness.api.app))
    return harness


def token_file(tmp_path: Path, token: str, name: str = "tok", mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_text(token + "\n")
    path.chmod(mode)
    return str(path)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(["keys", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def api(tf: str) -> list[str]:
    return ["--url", URL, "--token-file", tf]


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return orjson.loads(out)


def audit(h: Harness) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with h.client() as c:
            r = await c.get("/admin/v1/audit", headers=h.auth(h.token(roles=("auditor",))))
            assert r.status_code == 200, r.text
            items: list[dict[str, Any]] = r.json()["items"]
            return items

    return asyncio.run(go())


def test_owner_creates_lists_rotates_and_revokes_through_the_api(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tf = token_file(tmp_path, h.token(sub="olivia"))
    code, out, err = cli(
        capsys, "create", "--client", "billing", "--scope", "read", "--name", "ci", *api(tf)
    )
    assert code == 0, err
    [secret] = [w for w in out.split() if w.startswith("bsk_")]
    assert out.count(secret) == 1
    assert "shown only once" in out
    rows = cli_json(capsys, "list", *api(tf))
    assert len(rows) == 1
    first = rows[0]
    assert first["client_id"] == first["application"] == "billing"
    assert first["owner"] == "team-a"  # the API records the application's owner
    assert first["scopes"] == ["read"]
    assert first["state"] == "active"
    assert secret not in orjson.dumps(rows).decode()
    code, out, _ = cli(capsys, "list", "--client", "billing", *api(tf))
    assert code == 0
    assert first["id"] in out
    assert "billing" in out
    assert secret not in out

    rotated = cli_json(capsys, "rotate", first["id"], "--grace", "3d", *api(tf))
    new_secret = rotated["successor"]["key"]
    assert new_secret.startswith("bsk_")
    assert new_secret != secret
    assert rotated["previous"]["id"] == first["id"]
    assert rotated["previous"]["state"] == "rotating"
    assert rotated["previous"]["expires_at"] == pytest.approx(h.clock.now() + 3 * 86400)
    code, out, err = cli(capsys, "rotate", f"bsk_{rotated['successor']['id']}", *api(tf))
    assert code == 0, err
    assert "New API key" in out
    assert "keeps working until" in out

    code, out, err = cli(capsys, "revoke", first["id"], "--reason", "drill", *api(tf))
    assert code == 0, err
    assert out.strip() == f"revoked {first['id']}"
    live = cli_json(capsys, "list", "--live", *api(tf))
    assert first["id"] not in [r["id"] for r in live]
    assert len(live) == 2
    code, _, err = cli(capsys, "revoke", first["id"], *api(tf))
    assert code == 1
    assert len(err.strip().splitlines()) == 1

    entries = audit(h)
    changes = [e for e in entries if e["action"].startswith("keys.")]
    assert [e["action"] for e in changes] == [
        "keys.revoke",
        "keys.rotate",
        "keys.rotate",
        "keys.create",
    ]
    assert {e["actor"] for e in changes} == {"olivia"}  # the token's user, not cli:<os user>
    text = orjson.dumps(entries).decode()
    assert secret not in text
    assert new_secret not in text


def test_a_developer_manages_its_own_keys_only(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = token_file(tmp_path, h.token(sub="olivia"), "owner")
    theirs = cli_json(capsys, "create", "--client", "crm", *api(owner))
    dev = token_file(tmp_path, h.token(sub="dev-1", roles=("developer",), groups=["team-a"]), "dev")
    mine = cli_json(capsys, "create", "--client", "billing", "--scope", "read", *api(dev))
    assert mine["application"] == "billing"

    for command in ("rotate", "revoke"):
        code, out, err = cli(capsys, command, theirs["id"], *api(dev))
        assert code == 1
        assert "no such key" in err  # another team's key is not found, exactly like none
        assert "bsk_" not in out
    code, _, err = cli(capsys, "create", "--client", "crm", *api(dev))
    assert code == 1
    assert err.strip() == "error: no application 'crm'"
    code, _, err = cli(capsys, "list", "--client", "crm", *api(dev))
    assert code == 1
    # the developer lists its team's keys only
    assert [r["id"] for r in cli_json(capsys, "list", *api(dev))] == [mine["id"]]
    # the other team's key is untouched
    [still] = [r for r in cli_json(capsys, "list", *api(owner)) if r["id"] == theirs["id"]]
    assert still["state"] == "active"
    assert [e["action"] for e in audit(h) if e["action"].startswith("keys.")] == [
        "keys.create",
        "keys.create",
    ]


def test_refusals_say_why(h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = cli_json(
        capsys, "create", "--client", "billing", *api(token_file(tmp_path, h.token(), "ok"))
    )
    no_mfa = token_file(tmp_path, h.token(amr=["pwd"]), "no-mfa")
    code, out, err = cli(capsys, "create", "--client", "billing", *api(no_mfa))
    assert code == 1
    assert err.startswith("error: MFA required")
    assert "bsk_" not in out
    stale = token_file(tmp_path, h.token(auth_time=int(h.clock.now()) - 3600), "stale")
    code, _, err = cli(capsys, "revoke", key["id"], *api(stale))
    assert code == 1
    assert err.startswith("error: step-up required")
    auditor = token_file(tmp_path, h.token(roles=("auditor",)), "auditor")
    code, _, err = cli(capsys, "create", "--client", "billing", *api(auditor))
    assert code == 1
    assert err.strip() == "error: forbidden: your role may not create keys"
    assert cli_json(capsys, "list", *api(auditor))[0]["id"] == key["id"]  # reading is allowed
    security = token_file(tmp_path, h.token(roles=("security",)), "security")
    code, _, err = cli(capsys, "rotate", key["id"], *api(security))
    assert err.strip() == "error: forbidden: your role may not rotate keys"
    garbage = token_file(tmp_path, "not.a.token", "garbage")
    code, _, err = cli(capsys, "list", *api(garbage))
    assert code == 1
    assert err.startswith("error: not signed in")
    assert "not.a.token" not in err
    expired = h.token(exp=int(h.clock.now()) - 10)
    code, _, err = cli(capsys, "list", *api(token_file(tmp_path, expired, "expired")))
    assert err.startswith("error: not signed in")
    assert expired not in err
    # nothing changed; the refusals of the roles are in the trail as denied
    entries = audit(h)
    assert [e["action"] for e in entries if e["outcome"] == "success"] == ["keys.create"]
    assert {"keys.create", "keys.rotate"} <= {
        e["action"] for e in entries if e["outcome"] == "denied"
    }


def test_a_token_file_others_can_read_is_refused_before_any_call(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = h.token()
    tf = token_file(tmp_path, token, mode=0o644)
    for args in (["create", "--client", "billing"], ["list"], ["revoke", "abcdefghijklmnop"]):
        code, out, err = cli(capsys, *args, *api(tf))
        assert code == 2
        assert "chmod 600" in err
        assert token not in out + err
    code, _, err = cli(capsys, "list", *api(str(tmp_path / "missing")))
    assert code == 2
    assert "not found" in err
    assert audit(h) == []


def test_bad_input_exits_2(h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tf = token_file(tmp_path, h.token())
    cases: list[tuple[list[str], str]] = [
        (["create", "--client", "billing", "--ttl", "36h"], "--ttl"),
        (["create", "--client", "billing", "--ttl", "400d"], "expires_in_days"),
        (["create", "--client", "billing", "--ttl", "soon"], "--ttl"),
        (["create", "--client", "billing", "--owner", "eve"], "--owner"),
        (["create", "--client", "billing", "--scope", "admin"], "scopes"),
        (["rotate", "abcdefghijklmnop", "--ttl", "30d"], "--ttl"),
        (["rotate", "abcdefghijklmnop", "--grace", "90d"], "grace_days"),
        (["rotate", "abcdefghijklmnop", "--grace", "1h"], "--grace"),
        (["revoke", "../../users/x"], "not an API key id"),
    ]
    for args, said in cases:
        code, out, err = cli(capsys, *args, *api(tf))
        assert code == 2, (args, err)
        assert said in err, (args, err)
        assert len(err.strip().splitlines()) == 1
        assert "bsk_" not in out
    # an application id is one path segment, never a path
    code, _, err = cli(capsys, "create", "--client", "../keys/x/revoke", *api(tf))
    assert code == 1
    assert "not found" in err.lower()
    assert audit(h) == []


def test_where_the_api_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tf = token_file(tmp_path, "a.b.c")
    code, _, err = cli(capsys, "list", "--token-file", tf)
    assert code == 2
    assert "--url or -c" in err
    code, _, err = cli(capsys, "list", "--url", URL)
    assert code == 2
    assert "--token-file" in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("store: memory://\n")
    code, _, err = cli(capsys, "list", "-c", str(cfg), "--token-file", tf)
    assert code == 2
    assert "control" in err
    code, _, err = cli(capsys, "list", "--url", "http://127.0.0.1:9", "--token-file", tf)
    assert code == 1
    assert "unreachable" in err
    assert "a.b.c" not in err
    code, _, err = cli(capsys, "list")
    assert code == 2
    assert "-c FILE" in err
