"""``bastion auth keys list|rotate`` on a SQLite store: output, emergency rotation, no secrets.

Most tests drive the Typer app with the config loader replaced by a config object; the last two
run ``bastion`` itself on a real config file, with the KEK from the environment or a file."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from bastion.authserver.keys import KeysConfig, KeyStoreError
from bastion.cli import auth_keys
from bastion.cli.common import CliFailure
from bastion.cli.main import main

pytestmark = pytest.mark.integration


def _cfg(tmp_path: Path, kek: bytes, *, auth: bool = True) -> Any:
    keys = KeysConfig.model_validate({"local": {"kek": base64.b64encode(kek).decode()}})
    section = SimpleNamespace(access_token_ttl=300.0, id_token_ttl=600.0, keys=keys)
    return SimpleNamespace(
        store=f"sqlite:///{tmp_path / 'state.db'}", auth=section if auth else None
    )


def _invoke(monkeypatch: pytest.MonkeyPatch, cfg: Any, *args: str) -> Any:
    monkeypatch.setattr(auth_keys, "load", lambda path: cfg)
    return CliRunner().invoke(auth_keys.keys_app, [*args, "-c", "bastion.yaml"])


def _listed(monkeypatch: pytest.MonkeyPatch, cfg: Any, *extra: str) -> list[dict[str, Any]]:
    result = _invoke(monkeypatch, cfg, "list", "--json", *extra)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = orjson.loads(result.output)
    return rows


def test_rotate_list_and_emergency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kek = os.urandom(32)
    cfg = _cfg(tmp_path, kek)
    assert _listed(monkeypatch, cfg) == []  # nothing until a server or a rotation starts

    result = _invoke(monkeypatch, cfg, "rotate")
    assert result.exit_code == 0, result.output
    assert "is published; it signs from" in result.output
    rows = _listed(monkeypatch, cfg)
    assert [r["state"] for r in rows] == ["active", "pending"]
    assert [r["reason"] for r in rows] == ["initial", "manual"]
    assert rows[1]["activate_at"] - rows[1]["created_at"] == 600  # 2 x jwks_max_age
    assert all("material" not in r for r in rows)

    table = _invoke(monkeypatch, cfg, "list")
    assert table.exit_code == 0
    assert "pending" in table.output

    result = _invoke(monkeypatch, cfg, "rotate", "--emergency")
    assert result.exit_code == 0, result.output
    assert "no longer validate" in result.output
    published = _listed(monkeypatch, cfg)
    assert [(r["state"], r["reason"]) for r in published] == [("active", "emergency")]
    everything = _listed(monkeypatch, cfg, "--all")
    assert sorted(r["reason"] for r in everything) == ["compromised", "compromised", "emergency"]
    assert kek.hex() not in result.output


def test_rotate_with_a_wrong_kek_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _invoke(monkeypatch, _cfg(tmp_path, os.urandom(32)), "rotate").exit_code == 0
    result = _invoke(monkeypatch, _cfg(tmp_path, os.urandom(32)), "rotate", "--emergency")
    assert result.exit_code != 0
    assert isinstance(result.exception, KeyStoreError)
    assert "wrong key-encryption key" in str(result.exception)


def test_list_needs_no_kek(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _invoke(monkeypatch, _cfg(tmp_path, os.urandom(32)), "rotate").exit_code == 0
    cfg = _cfg(tmp_path, os.urandom(32))
    cfg.auth.keys = KeysConfig()  # no KEK at all
    assert len(_listed(monkeypatch, cfg)) == 2


def test_without_auth_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _invoke(monkeypatch, _cfg(tmp_path, os.urandom(32), auth=False), "list")
    assert isinstance(result.exception, CliFailure)
    assert result.exception.code == 2
    assert "no 'auth' section" in str(result.exception)


def _config_file(tmp_path: Path, kek_ref: str) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(
        f"store: sqlite:///{tmp_path / 'state.db'}\n"
        "auth:\n"
        "  issuer: http://127.0.0.1:9000\n"
        "  client_secret_pepper: ${BASTION_TEST_PEPPER}\n"
        "  keys:\n"
        "    local:\n"
        f"      kek: {kek_ref}\n",
        encoding="utf-8",
    )
    return path


def _main(*argv: str) -> int:
    """The exit code of ``bastion ARGV`` run in this process (main() returns on success)."""
    try:
        main([*argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_bastion_auth_keys_with_the_kek_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kek = os.urandom(32)
    monkeypatch.setenv("BASTION_TEST_PEPPER", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("BASTION_TEST_KEK", base64.urlsafe_b64encode(kek).decode())
    config = str(_config_file(tmp_path, "${BASTION_TEST_KEK}"))
    assert _main("auth", "keys", "rotate", "-c", config) == 0
    assert _main("auth", "keys", "list", "--json", "-c", config) == 0
    out = capsys.readouterr().out
    rows = orjson.loads(out[out.index("[") :])
    assert [r["state"] for r in rows] == ["active", "pending"]
    assert kek.hex() not in out
    # Another KEK in the environment: one clear line, exit 1, no traceback.
    monkeypatch.setenv("BASTION_TEST_KEK", base64.urlsafe_b64encode(os.urandom(32)).decode())
    assert _main("auth", "keys", "rotate", "--emergency", "-c", config) == 1
    err = capsys.readouterr().err
    assert "wrong key-encryption key" in err
    assert "Traceback" not in err


def test_bastion_auth_keys_with_the_kek_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BASTION_TEST_PEPPER", base64.b64encode(os.urandom(32)).decode())
    kek_file = tmp_path / "kek"
    kek_file.write_text(os.urandom(32).hex() + "\n", encoding="utf-8")
    config = str(_config_file(tmp_path, f"file:{kek_file}"))
    assert _main("auth", "keys", "rotate", "--emergency", "-c", config) == 0
    assert "signs now" in capsys.readouterr().out
    # A KEK that is not 32 bytes is a config error (exit 2) that does not echo it.
    kek_file.write_text("too-short-to-be-a-kek\n", encoding="utf-8")
    assert _main("auth", "keys", "rotate", "-c", config) == 2
    err = capsys.readouterr().err
    assert "auth.keys.local.kek" in err
    assert "too-short-to-be-a-kek" not in err
