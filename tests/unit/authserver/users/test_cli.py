"""``bastion auth users``: create, set-password, list, lock, unlock, reset-mfa."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from typer.testing import CliRunner

from bastion.authserver.users import UsersConfig
from bastion.cli import auth_users
from bastion.cli.common import CliFailure
from bastion.store.sqlite import SqliteStore
from tests.unit.authserver.users.browser import FAST_HASH, ISSUER, PASSWORD

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "bastion.db"
    cfg = SimpleNamespace(
        store=f"sqlite:///{path}",
        cache=None,
        auth=SimpleNamespace(users=UsersConfig(password_hash=FAST_HASH), issuer=ISSUER),
    )
    monkeypatch.setattr(auth_users, "load", lambda _path: cfg)
    return path


def cli(*args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(auth_users.users_app, [*args, "-c", "unused.yaml"], input=stdin)


def rows(db: Path) -> str:
    async def go() -> str:
        store = SqliteStore(str(db))
        await store.open()
        try:
            return repr(
                await store.read("dump", lambda c: c.execute("SELECT * FROM auth_users").fetchall())
            )
        finally:
            await store.close()

    return asyncio.run(go())


def listed(db: Path) -> list[dict[str, object]]:
    result = cli("list", "--json")
    assert result.exit_code == 0, result.output
    data: list[dict[str, object]] = orjson.loads(result.stdout)
    return data


def test_create_from_stdin_prints_nothing_secret(db: Path) -> None:
    result = cli(
        "create",
        "Root",
        "--role",
        "admin",
        "--email",
        "r@example.com",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert "created user root" in result.stdout
    assert "TOTP enrolment is required" in result.stdout
    assert PASSWORD not in result.stdout
    assert "argon2" not in result.stdout
    stored = rows(db)
    assert PASSWORD not in stored
    assert "$argon2id$" in stored
    [user] = listed(db)
    assert user["username"] == "root"
    assert user["roles"] == ["admin"]
    assert user["mfa"] is False
    assert "password_hash" not in user


def test_create_from_the_prompt_asks_twice(db: Path) -> None:
    result = cli("create", "alice", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.stdout
    mismatch = cli("create", "bob", stdin=f"{PASSWORD}\nsomething else entirely\n")
    assert mismatch.exit_code != 0
    assert [u["username"] for u in listed(db)] == ["alice"]


def test_there_is_no_password_option(db: Path) -> None:
    result = cli("create", "alice", "--password", PASSWORD)
    assert result.exit_code != 0
    assert listed(db) == []


@pytest.mark.parametrize(
    ("args", "stdin", "code"),
    [
        (("create", "alice", "--password-stdin"), "short\n", 2),
        (("create", "bad name", "--password-stdin"), PASSWORD + "\n", 2),
        (("create", "alice", "--role", "Bad Role", "--password-stdin"), PASSWORD + "\n", 2),
        (("create", "alice", "--password-stdin"), "", 2),
    ],
)
def test_create_refusals(db: Path, args: tuple[str, ...], stdin: str, code: int) -> None:
    result = cli(*args, stdin=stdin)
    assert isinstance(result.exception, CliFailure)
    assert result.exception.code == code
    assert PASSWORD not in str(result.exception)


def test_duplicate_and_unknown_users(db: Path) -> None:
    assert cli("create", "alice", "--password-stdin", stdin=PASSWORD + "\n").exit_code == 0
    dup = cli("create", "ALICE", "--password-stdin", stdin=PASSWORD + "\n")
    assert isinstance(dup.exception, CliFailure)
    assert "exists" in str(dup.exception)
    for command in ("lock", "unlock", "reset-mfa"):
        missing = cli(command, "nobody")
        assert isinstance(missing.exception, CliFailure)
        assert "no user" in str(missing.exception)


def test_lock_unlock_reset_and_set_password(db: Path) -> None:
    assert cli("create", "alice", "--password-stdin", stdin=PASSWORD + "\n").exit_code == 0
    seen: list[str] = []

    def factory(cfg: object, store: object):  # type: ignore[no-untyped-def]
        async def hook(user_id: str) -> None:
            seen.append(user_id)

        return hook

    auth_users.DISABLE_HOOKS.append(factory)
    try:
        assert cli("lock", "alice").exit_code == 0
    finally:
        auth_users.DISABLE_HOOKS.remove(factory)
    [user] = listed(db)
    assert user["disabled"] is True
    assert seen == [user["id"]]
    table = cli("list")
    assert "locked" in table.stdout
    assert cli("unlock", "alice").exit_code == 0
    assert listed(db)[0]["disabled"] is False
    assert cli("reset-mfa", "alice").exit_code == 0
    result = cli("set-password", "alice", "--password-stdin", stdin="a new long password\n")
    assert result.exit_code == 0, result.output
    short = cli("set-password", "alice", "--password-stdin", stdin="short\n")
    assert isinstance(short.exception, CliFailure)


def test_without_an_auth_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SimpleNamespace(store=f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setattr(auth_users, "load", lambda _path: cfg)
    result = cli("list")
    assert isinstance(result.exception, CliFailure)
    assert result.exception.code == 2


def test_lock_revokes_refresh_families_and_their_access_tokens(db: Path) -> None:
    import time

    from bastion.authserver.oauth.records import OAuthClient, RefreshFamily
    from bastion.authserver.oauth.repo import open_oauth_repo

    assert cli("create", "alice", "--password-stdin", stdin=PASSWORD + "\n").exit_code == 0
    [user] = listed(db)
    now = time.time()

    async def seed() -> None:
        store = SqliteStore(str(db))
        await store.open()
        try:
            repo = open_oauth_repo(store)
            await repo.put_client(OAuthClient(id="web", name="web", auth_method="none", secrets=()))
            for n, exp in enumerate((now + 300, now - 10)):
                family = RefreshFamily(
                    id=f"fam{n}",
                    client_id="web",
                    subject=str(user["id"]),
                    scope="openid",
                    audience=(),
                    auth_time=now,
                    amr=("pwd",),
                    acr="urn:bastion:acr:pwd",
                    created_at=now,
                    expires_at=now + 3600,
                    last_used_at=now,
                    access_jti=f"jti-{n}",
                    access_exp=exp,
                )
                await repo.create_family(family, f"hash{n}")
        finally:
            await store.close()

    async def check() -> tuple[list[object], list[str]]:
        store = SqliteStore(str(db))
        await store.open()
        try:
            repo = open_oauth_repo(store)
            families = [await repo.find_refresh(f"hash{n}") for n in range(2)]
            revoked = [r.value for r in await store.active_revocations(time.time())]
            return [f[0].revoked_at if f else None for f in families], revoked
        finally:
            await store.close()

    asyncio.run(seed())
    result = cli("lock", "alice")
    assert result.exit_code == 0, result.output
    assert "revoked 2 refresh-token families" in result.stdout
    revoked_at, revocations = asyncio.run(check())
    assert all(at is not None for at in revoked_at)
    assert revocations == ["jti-0"]  # the expired access token needs no revocation
