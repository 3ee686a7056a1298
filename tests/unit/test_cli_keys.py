"""``bastion keys create|list|rotate|revoke|report`` in-process, on a SQLite store: secrets
printed once, rotation with a grace period, one line and the right exit code per error."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from bastion.cli.main import main
from bastion.core.apikeys import hash_secret
from bastion.store import SqliteStore
from bastion.store.base import ApiKeyRecord, ClientRecord

PEPPER = "keys-cli-pepper-" + "q" * 32
DAY = 86400.0


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEYS_CLI_PEPPER", PEPPER)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("NO_COLOR", "1")
    path = tmp_path / "bastion.yaml"
    path.write_text(
        f"store: sqlite:///{tmp_path / 'state.db'}\n"
        "listeners:\n  - bind: 127.0.0.1:8080\n"
        "api_keys:\n  pepper: ${KEYS_CLI_PEPPER}\n"
        "routes:\n  - name: api\n    path_prefix: /api\n    upstream: http://127.0.0.1:9\n"
        "    authn: {methods: [api_key]}\n"
    )
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return orjson.loads(out)


def create(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> dict[str, Any]:
    created: dict[str, Any] = cli_json(
        capsys, "keys", "create", "-c", str(config), "--client", "billing", *extra
    )
    return created


def test_create_prints_the_key_once_and_list_never(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out, err = cli(
        capsys, "keys", "create", "-c", str(config), "--client", "billing", "--scope", "r",
        "--owner", "alice@example.com",
    )  # fmt: skip
    assert code == 0, err
    [full] = [w for w in out.split() if w.startswith("bsk_")]
    assert out.count(full) == 1
    assert "shown only once" in out
    rows = cli_json(capsys, "keys", "list", "-c", str(config))
    assert len(rows) == 1
    assert rows[0]["owner"] == "alice@example.com"
    assert rows[0]["client_id"] == rows[0]["application"] == "billing"
    assert rows[0]["state"] == "active"
    assert rows[0]["usage_count"] == 0
    assert "key" not in rows[0]
    code, table, _ = cli(capsys, "keys", "list", "-c", str(config))
    assert code == 0
    assert full not in table
    assert full.split("_", 2)[2] not in table
    assert rows[0]["id"] in table


def test_rotate_gives_a_new_key_and_a_grace_period(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    old = create(capsys, config, "--scope", "r", "--name", "ci")
    rotated = cli_json(capsys, "keys", "rotate", "-c", str(config), old["prefix"], "--grace", "1h")
    new, previous = rotated["successor"], rotated["previous"]
    assert new["key"] != old["key"]
    assert new["key"].startswith("bsk_" + new["id"] + "_")
    assert (new["scopes"], new["name"], new["rotated_from"]) == (["r"], "ci", old["id"])
    assert previous["id"] == old["id"]
    assert previous["state"] == "rotating"
    assert previous["replaced_by"] == new["id"]
    assert previous["expires_at"] == pytest.approx(new["created_at"] + 3600)
    assert "key" not in previous
    # The old key cannot be rotated a second time.
    code, _, err = cli(capsys, "keys", "rotate", "-c", str(config), old["id"])
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "rotating key cannot be rotated" in err
    # The table form prints the new secret once and the old key's end.
    code, out, err = cli(capsys, "keys", "rotate", "-c", str(config), new["id"], "--grace", "0s")
    assert code == 0, err
    assert out.count("bsk_") == 1
    assert f"the old key {new['id']} keeps working until" in out
    states = {r["id"]: r["state"] for r in cli_json(capsys, "keys", "list", "-c", str(config))}
    assert states[new["id"]] == "expired"
    live = cli_json(capsys, "keys", "list", "-c", str(config), "--live")
    assert new["id"] not in {r["id"] for r in live}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("rotate", "KEY", "--grace", "soon"), 2),
        (("rotate", "KEY", "--grace", "365d"), 2),
        (("rotate", "KEY", "--ttl", "400d"), 2),
        (("rotate", "not-a-key"), 2),
        (("rotate", "nosuchkey0000000"), 1),
        (("revoke", "nosuchkey0000000"), 1),
        (("revoke", "../../x"), 2),
        (("create", "--client", "billing", "--ttl", "181d"), 2),
        (("create", "--client", "billing", "--scope", "two words"), 2),
        (("create", "--client", "has space"), 2),
    ],
)
def test_errors_are_one_line_with_the_right_exit_code(
    capsys: pytest.CaptureFixture[str], config: Path, args: tuple[str, ...], code: int
) -> None:
    key = create(capsys, config)
    argv = [a.replace("KEY", key["id"]) for a in args]
    got, out, err = cli(capsys, "keys", argv[0], "-c", str(config), *argv[1:])
    assert got == code, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in out + err
    assert key["key"] not in out + err


def test_revoke_twice(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    key = create(capsys, config)
    code, out, _ = cli(capsys, "keys", "revoke", "-c", str(config), key["key"])  # whole key
    assert code == 0
    assert out.strip() == f"revoked {key['id']}"
    code, _, err = cli(capsys, "keys", "revoke", "-c", str(config), key["id"])
    assert code == 1
    assert key["id"] in err
    assert "already revoked" in err


def test_missing_pepper_is_a_config_error(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    config.write_text(
        config.read_text()
        .replace("api_keys:\n  pepper: ${KEYS_CLI_PEPPER}\n", "")
        .replace("{methods: [api_key]}", "{methods: [], unsafe_allow_anonymous: true}")
    )
    code, _, err = cli(capsys, "keys", "list", "-c", str(config))
    assert code == 2
    assert "pepper" in err


def _seed(path: str) -> None:
    """Keys aged by hand: the CLI runs on the real clock."""

    async def go() -> None:
        store = SqliteStore(path)
        await store.open()
        now = time.time()
        await store.put_client(ClientRecord("legacy", "Legacy", now - 200 * DAY))
        await store.put_api_key(
            ApiKeyRecord(
                id="o" * 16,
                client_id="legacy",
                secret_hash=hash_secret(PEPPER.encode(), "x"),
                scopes=(),
                created_at=now - 100 * DAY,
                expires_at=now + 80 * DAY,
                owner="bob",
                last_used_at=now - DAY,
            )
        )
        await store.close()

    asyncio.run(go())


def test_report(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    fresh = create(capsys, config)  # no owner, never used, new
    _seed(str(tmp_path / "state.db"))
    report = cli_json(capsys, "keys", "report", "-c", str(config))
    assert [k["id"] for k in report["old_keys"]] == ["o" * 16]
    assert report["unused_keys"] == []
    assert [k["id"] for k in report["keys_without_owner"]] == [fresh["id"]]
    assert sorted(report["applications_without_contact"]) == ["billing", "legacy"]
    code, out, err = cli(capsys, "keys", "report", "-c", str(config))
    assert code == 0, err
    assert "Keys older than 90 days (rotate them): 1" in out
    assert "Applications without a contact: 2" in out
    assert fresh["key"] not in out


def test_report_reads_owners_and_contacts_of_the_admin_api_applications(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    fresh = create(capsys, config)  # no key owner
    _seed(str(tmp_path / "state.db"))
    with sqlite3.connect(tmp_path / "state.db") as raw:
        raw.execute(
            "INSERT INTO control_applications (client_id, owner, contact, environment,"
            " risk_class, data_classification, allowed_scopes, created_at, updated_at)"
            " VALUES ('billing', 'team-billing', 'billing@example.com', 'production',"
            " 'partner', 'confidential', '[]', 1.0, 1.0)"
        )
    report = cli_json(capsys, "keys", "report", "-c", str(config))
    assert report["applications_without_contact"] == ["legacy"]
    assert fresh["id"] not in {k["id"] for k in report["keys_without_owner"]}


def _audit_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(tmp_path / "state.db")
    try:
        return conn.execute(
            "SELECT actor, action, target_type, target_id, outcome, before_state, after_state"
            " FROM admin_audit ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


def test_changes_are_in_the_admin_audit_trail_without_secrets(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "ops-anna")
    created = create(capsys, config, "--scope", "r")
    kid = created["id"]
    rotated = cli_json(capsys, "keys", "rotate", "-c", str(config), kid, "--grace", "1d")
    successor = rotated["successor"]["id"]
    code, _, err = cli(capsys, "keys", "revoke", "-c", str(config), successor)
    assert code == 0, err
    cli_json(capsys, "keys", "list", "-c", str(config))  # reading is not audited
    rows = _audit_rows(tmp_path)
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("cli:ops-anna", "keys.create", "api_key", kid, "success"),
        ("cli:ops-anna", "keys.rotate", "api_key", kid, "success"),
        ("cli:ops-anna", "keys.revoke", "api_key", successor, "success"),
    ]
    assert rows[0][5] is None
    assert orjson.loads(rows[1][6])["successor"]["id"] == successor
    assert orjson.loads(rows[2][5])["state"] == "active"
    assert orjson.loads(rows[2][6])["state"] == "revoked"
    dump = repr(rows)
    for secret in (created["key"], rotated["successor"]["key"]):
        assert secret not in dump
        assert secret.split("_", 2)[-1][-20:] not in dump  # not even the secret part
    assert "hash" not in dump
    # Append-only for the CLI user too: the table refuses changes.
    conn = sqlite3.connect(tmp_path / "state.db")
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE admin_audit SET actor = 'cli:mallory'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM admin_audit")
    finally:
        conn.close()


def test_a_failed_audit_write_still_shows_the_secret_and_exits_1(
    capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.control.admin.repo import SqlControlRepo
    from bastion.errors import StoreError

    async def refuse(self: object, entry: object) -> None:
        raise StoreError(diagnosis="disk full")

    monkeypatch.setattr(SqlControlRepo, "append_audit", refuse)
    code, out, err = cli(capsys, "keys", "create", "-c", str(config), "--client", "billing")
    assert code == 1
    assert "bsk_" in out  # the key exists: its only copy is printed
    assert "audit entry was not written" in err
    assert "Traceback" not in err


def test_store_mode_revoke_json_reason_and_a_missing_config(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    key = create(capsys, config)
    row = cli_json(capsys, "keys", "revoke", "-c", str(config), key["id"], "--reason", "leaked")
    assert row["id"] == key["id"]
    assert row["state"] == "revoked"
    assert "key" not in row
    [*_, last] = _audit_rows(tmp_path)
    assert orjson.loads(last[6])["reason"] == "leaked"
    for args in (["list"], ["create", "--client", "billing"], ["revoke", key["id"]]):
        code, _, err = cli(capsys, "keys", *args)
        assert code == 2
        assert err.strip() == (
            "error: name the config with -c FILE (or call the admin API: --token-file)"
        )
    # --url alone is not the admin-API mode: it needs the token
    code, _, err = cli(capsys, "keys", "list", "-c", str(config), "--url", "http://a")
    assert code == 2
    assert "--token-file" in err
