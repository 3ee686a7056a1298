"""``bastion auth clients``: the ``introspect`` permission from the command line, and how it is
stored (a marker inside ``grant_types`` until the table has a column for it)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from bastion.authserver.oauth.repo import open_oauth_repo
from bastion.cli.auth import auth_app
from bastion.cli.common import CliFailure
from bastion.store.sqlite import SqliteStore

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "pepper").write_text(secrets.token_urlsafe(48))
    path = tmp_path / "auth.yaml"
    path.write_text(
        f"""
store: sqlite:///{tmp_path}/auth.db
auth:
  issuer: http://127.0.0.1:9999
  bind: 127.0.0.1:9999
  client_secret_pepper: file:{tmp_path}/pepper
"""
    )
    return path


def cli(config: Path, *args: str) -> object:
    return runner.invoke(auth_app, [*args, "-c", str(config)])


def failure(result: object) -> tuple[int, str]:
    """The CliFailure a command raised (the entry point turns it into one line and the code)."""
    exc = result.exception  # type: ignore[attr-defined]
    assert isinstance(exc, CliFailure), result.output  # type: ignore[attr-defined]
    return exc.code, str(exc)


def listed(config: Path) -> dict[str, dict[str, object]]:
    result = cli(config, "clients", "list", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    return {str(c["id"]): c for c in orjson.loads(result.stdout)}  # type: ignore[attr-defined]


def raw_grant_types(config: Path) -> dict[str, tuple[list[str], int]]:
    """Per client: the stored grant_types array and the introspect column, as in the file."""

    async def go() -> dict[str, tuple[list[str], int]]:
        store = SqliteStore(str(config.parent / "auth.db"))
        await store.open()
        try:
            rows = await store.read(
                "dump",
                lambda c: c.execute(
                    "SELECT id, grant_types, introspect FROM oauth_clients"
                ).fetchall(),
            )
            return {r[0]: (orjson.loads(r[1]), r[2]) for r in rows}
        finally:
            await store.close()

    return asyncio.run(go())


def test_introspect_is_off_unless_granted_and_can_be_set_and_withdrawn(config: Path) -> None:
    assert cli(config, "clients", "create", "--id", "app").exit_code == 0  # type: ignore[attr-defined]
    assert cli(config, "clients", "create", "--id", "rs", "--introspect").exit_code == 0  # type: ignore[attr-defined]
    clients = listed(config)
    assert (clients["app"]["introspect"], clients["rs"]["introspect"]) == (False, True)
    assert clients["rs"]["grant_types"] == ["client_credentials"]  # the marker never shows
    raw = raw_grant_types(config)
    # The permission is a column of its own (migration 8), never a marker among the grants.
    assert raw["rs"] == (["client_credentials"], 1)
    assert raw["app"] == (["client_credentials"], 0)

    assert cli(config, "clients", "set-introspect", "app").exit_code == 0  # type: ignore[attr-defined]
    assert cli(config, "clients", "set-introspect", "rs", "--deny").exit_code == 0  # type: ignore[attr-defined]
    clients = listed(config)
    assert (clients["app"]["introspect"], clients["rs"]["introspect"]) == (True, False)
    assert raw_grant_types(config) == {
        "rs": (["client_credentials"], 0),
        "app": (["client_credentials"], 1),
    }


def test_public_clients_and_unknown_ids_are_refused(config: Path) -> None:
    made = cli(
        config,
        *("clients", "create", "--id", "spa", "--auth-method", "none", "--introspect"),
        *("--grant", "authorization_code", "--redirect-uri", "https://app.example/cb"),
    )
    code, message = failure(made)
    assert code == 2
    assert "cannot introspect" in message
    ok = cli(
        config,
        *("clients", "create", "--id", "spa", "--auth-method", "none"),
        *("--grant", "authorization_code", "--redirect-uri", "https://app.example/cb"),
    )
    assert ok.exit_code == 0, ok.output  # type: ignore[attr-defined]
    assert failure(cli(config, "clients", "set-introspect", "spa"))[0] == 2
    assert "no client" in failure(cli(config, "clients", "set-introspect", "ghost"))[1]


def test_the_marker_cannot_be_registered_as_a_grant_type(config: Path) -> None:
    made = cli(
        config,
        "clients",
        "create",
        "--id",
        "sneaky",
        "--grant",
        "urn:bastion:permission:introspect",
    )
    assert "not supported" in failure(made)[1]

    async def stored() -> object:
        store = SqliteStore(str(config.parent / "auth.db"))
        await store.open()
        try:
            return await open_oauth_repo(store).get_client("sneaky")
        finally:
            await store.close()

    assert asyncio.run(stored()) is None
