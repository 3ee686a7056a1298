"""``bastion auth keys list|rotate`` on a SQLite store: output, emergency rotation, no secrets.

The commands are driven through their Typer app with the config loader replaced by a config
object (the ``auth`` section joins the root config with the authorization server)."""

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
