"""Fixtures of the signing-key integration tests: a store factory for SQLite and PostgreSQL
(several stores on one database act as several auth-server processes), and a SoftHSM2 token."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.store.postgres import PostgresStore
from bastion.store.sqlite import SqliteStore
from tests.support.postgres import pg_schema

SOFTHSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"

OpenStore = Callable[[], Awaitable[Any]]


@dataclass
class Backend:
    """``open()`` gives a new, opened store on the test's one database; ``raw(sql)`` runs SQL
    on it and returns the rows as tuples."""

    name: str
    open: OpenStore
    raw: Callable[[str], Awaitable[list[tuple[Any, ...]]]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    opened: list[Any] = []
    if request.param == "sqlite":
        path = str(tmp_path / "state.db")

        async def open_sqlite() -> SqliteStore:
            s = SqliteStore(path)
            await s.open()
            opened.append(s)
            return s

        first = await open_sqlite()

        async def raw_sqlite(sql: str) -> list[tuple[Any, ...]]:
            return await first.read("test", lambda c: [tuple(r) for r in c.execute(sql)])

        yield Backend("sqlite", open_sqlite, raw_sqlite)
    else:
        async with pg_schema("keys") as url:
            await PostgresStore(url).upgrade()

            async def open_pg() -> PostgresStore:
                s = PostgresStore(url, max_connections=4)
                await s.open()
                opened.append(s)
                return s

            first_pg = await open_pg()

            async def raw_pg(sql: str) -> list[tuple[Any, ...]]:
                async def q(conn: Any) -> list[tuple[Any, ...]]:
                    return [tuple(r) for r in await conn.fetch(sql)]

                return await first_pg.read("test", q)

            try:
                yield Backend("postgresql", open_pg, raw_pg)
            finally:
                for s in opened:
                    await s.close()
                opened.clear()
    for s in opened:
        await s.close()


@dataclass
class Token:
    """An initialised SoftHSM2 token: its label and user PIN (SOFTHSM2_CONF is set)."""

    label: str
    pin: str
    so_pin: str


@pytest.fixture(scope="session")
def softhsm_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One SoftHSM2 config and token directory for the session: the library reads
    SOFTHSM2_CONF once, when a process first loads it, so every test's token lives here."""
    util = shutil.which("softhsm2-util")
    assert util is not None, "softhsm2-util is missing (Debian package softhsm2)"
    assert os.path.exists(SOFTHSM_LIB)
    base = tmp_path_factory.mktemp("softhsm")
    tokens = base / "tokens"
    tokens.mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        yield conf


@pytest.fixture
def softhsm(softhsm_conf: Path) -> Token:
    """A fresh, empty token of its own (unique label) for one test."""
    token = Token(label=f"bastion-{secrets.token_hex(4)}", pin="4821-user", so_pin="9917-so")
    subprocess.run(
        [
            *("softhsm2-util", "--init-token", "--free", "--label", token.label),
            *("--so-pin", token.so_pin, "--pin", token.pin),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(softhsm_conf)},
    )
    # SoftHSM2 lists the tokens of its directory when initialised: make a library this process
    # loaded for an earlier test see the new one (sessions of earlier tests are all closed).
    import pkcs11

    pkcs11.lib(SOFTHSM_LIB).reinitialize()
    return token
