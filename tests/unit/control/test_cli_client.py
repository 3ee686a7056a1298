"""``bastion control apps|users|incident|audit`` against the admin API in-process. Attacks: a
token file others can read, a role that may not act, an API that does not answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest

from bastion.cli import control as cli_control
from bastion.cli.main import main
from tests.unit.control.harness import Harness, make_harness

APP = [
    "--name", "Billing", "--owner", "team-a", "--contact", "ops@example.test",
    "--environment", "production", "--risk-class", "partner",
    "--data-classification", "internal", "--scope", "read",
]  # fmt: skip


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Harness:
    harness = make_harness()
    asyncio.run(harness.store.open())
    monkeypatch.setattr(cli_control, "TRANSPORT", lambda: httpx.ASGITransport(app=harness.api.app))
    return harness


def token_file(tmp_path: Path, token: str, mode: int = 0o600) -> Path:
    path = tmp_path / "admin-token"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(["control", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_create_list_revoke_block_and_audit(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tf = str(token_file(tmp_path, h.token()))
    common = ["--url", "http://admin.test", "--token-file", tf]
    code, out, err = cli(capsys, "apps", "create", "billing", *APP, *common)
    assert code == 0, err
    assert "billing" in out
    code, out, _ = cli(capsys, "apps", "list", *common, "--json")
    assert [a["id"] for a in orjson.loads(out)] == ["billing"]
    code, out, _ = cli(capsys, "incident", "revoke-app", "billing", "--reason", "leak", *common)
    assert code == 0
    assert "revoked 0 key(s) of billing" in out
    code, out, _ = cli(
        capsys, "incident", "block-ip", "203.0.113.7", "--for", "2h", *common, "--json"
    )
    assert code == 0
    assert orjson.loads(out)["cidr"] == "203.0.113.7/32"
    code, out, _ = cli(capsys, "audit", *common, "--json")
    assert [e["action"] for e in orjson.loads(out)] == [
        "incident.block_ip",
        "incident.revoke_app",
        "apps.create",
    ]
    code, out, _ = cli(capsys, "audit", *common)
    assert "apps.create" in out


def test_a_token_file_others_can_read_is_refused(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = h.token()
    tf = str(token_file(tmp_path, token, 0o644))
    code, out, err = cli(capsys, "apps", "list", "--url", "http://admin.test", "--token-file", tf)
    assert code == 2
    assert "chmod 600" in err
    assert token not in out + err
    code, _, err = cli(
        capsys, "apps", "list", "--url", "http://a", "--token-file", str(tmp_path / "none")
    )
    assert code == 2
    assert "not found" in err


def test_refusals_are_one_line_with_the_code(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tf = str(token_file(tmp_path, h.token(roles=("auditor",))))
    code, _, err = cli(
        capsys, "apps", "create", "billing", *APP, "--url", "http://a", "--token-file", tf
    )
    assert code == 1
    assert err.strip() == "error: 403 access.forbidden: Forbidden"
    stale = str(token_file(tmp_path, h.token(auth_time=1)))
    code, _, err = cli(
        capsys, "incident", "revoke-app", "x", "--url", "http://a", "--token-file", stale
    )
    assert code == 1
    assert "admin.step_up_required" in err


def test_unreachable_api_and_missing_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tf = str(token_file(tmp_path, "a.b.c"))
    port_closed = "http://127.0.0.1:9"
    code, _, err = cli(capsys, "users", "list", "--url", port_closed, "--token-file", tf)
    assert code == 1
    assert "unreachable" in err
    assert "a.b.c" not in err
    code, _, err = cli(capsys, "users", "list", "--token-file", tf)
    assert code == 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text("store: memory://\n")
    code, _, err = cli(capsys, "users", "list", "-c", str(cfg), "--token-file", tf)
    assert code == 2
    assert "control" in err


def test_bad_duration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tf = str(token_file(tmp_path, "a.b.c"))
    code, _, err = cli(
        capsys,
        "incident",
        "block-ip",
        "203.0.113.7",
        "--for",
        "soon",
        "--url",
        "http://a",
        "--token-file",
        tf,
    )
    assert code == 2
    assert "--for" in err


def test_user_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.control.harness import with_users

    h = make_harness()

    async def setup() -> str:
        await h.store.open()
        users = await with_users(h)
        owner = await users.create_user("olivia", "a-long-enough-password", roles=("owner",))
        return owner.id

    owner_id = asyncio.run(setup())
    monkeypatch.setattr(cli_control, "TRANSPORT", lambda: httpx.ASGITransport(app=h.api.app))
    tf = str(token_file(tmp_path, h.token(sub=owner_id)))
    common = ["--url", "http://admin.test", "--token-file", tf]
    code, out, err = cli(capsys, "users", "invite", "dora", "--role", "auditor", *common)
    assert code == 0, err
    assert "one-time password (shown once): " in out
    assert "must replace it at the first login" in out
    code, out, _ = cli(capsys, "users", "list", *common, "--json")
    dora = next(u for u in orjson.loads(out) if u["username"] == "dora")
    assert "one_time_password" not in dora
    for args in (
        ("users", "roles", dora["id"], "--role", "security"),
        ("users", "disable", dora["id"], "--reason", "left"),
        ("users", "enable", dora["id"]),
        ("users", "reset-mfa", dora["id"]),
    ):
        code, out, err = cli(capsys, *args, *common, "--json")
        assert code == 0, (args, err)
    assert orjson.loads(out)["roles"] == ["security"]
    assert orjson.loads(out)["disabled"] is False


def test_top_level_aliases_apps_users_incident(
    h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bastion apps|users|incident`` are the same commands as ``bastion control …``, with
    the same token-file rules (an others-readable file is refused through the alias too)."""

    def top(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    tf = str(token_file(tmp_path, h.token()))
    common = ["--url", "http://admin.test", "--token-file", tf]
    code, out, err = top("apps", "create", "billing", *APP, *common)
    assert code == 0, err
    code, out, _ = top("apps", "list", *common, "--json")
    assert [a["id"] for a in orjson.loads(out)] == ["billing"]
    code, out, _ = top("incident", "revoke-app", "billing", "--reason", "leak", *common)
    assert code == 0
    assert "revoked 0 key(s) of billing" in out
    code, out, err = top("users", "list", *common)
    assert code == 1  # no user directory in this harness: the API's 404, one line
    assert "admin.not_found" in err
    (tmp_path / "admin-token").chmod(0o644)
    code, _, err = top("apps", "list", *common)
    assert code == 2
    assert "Traceback" not in err
