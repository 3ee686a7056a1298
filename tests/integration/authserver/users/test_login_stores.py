"""The whole login flow over SQLite and the real PostgreSQL, and what their rows hold."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pyotp
import pytest

from bastion.authserver.users import UsersConfig, open_user_service
from bastion.authserver.users.login import CODE_FAILED, LOGIN_FAILED
from bastion.core.clock import ManualClock
from bastion.store.postgres import PostgresStore
from bastion.store.sqlite import SqliteStore
from tests.support.postgres import pg_schema
from tests.unit.authserver.users.browser import FAST_HASH, ISSUER, PASSWORD, Browser, csrf_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

_SECRET = re.compile(r"<code>([A-Z2-7]{32})</code>")
_CODES = re.compile(r"<li>([a-z2-9-]{19})</li>")


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[object, str]]:
    """(store, raw dump function target): the store and how to read its tables raw."""
    if request.param == "sqlite":
        path = str(tmp_path / "bastion.db")
        store = SqliteStore(path)
        await store.open()
        try:
            yield store, path
        finally:
            await store.close()
    else:
        async with pg_schema("login") as url:
            pg = PostgresStore(url)
            await pg.upgrade()
            await pg.open()
            try:
                yield pg, url
            finally:
                await pg.close()


async def raw_rows(target: str) -> str:
    """Every row of the users tables as one string (what a database thief would read)."""
    tables = ("auth_users", "auth_recovery_codes", "auth_sessions")
    if target.startswith("postgresql://"):
        conn = await asyncpg.connect(target)
        try:
            return repr([await conn.fetch(f"SELECT * FROM {t}") for t in tables])  # noqa: S608
        finally:
            await conn.close()
    db = sqlite3.connect(target)
    try:
        return repr([db.execute(f"SELECT * FROM {t}").fetchall() for t in tables])  # noqa: S608
    finally:
        db.close()


async def test_full_flow_and_raw_rows(backend: tuple[object, str]) -> None:
    store, target = backend
    clock = ManualClock(1_700_000_010.0)
    config = UsersConfig(password_hash=FAST_HASH, totp_encryption_key="t" * 40)  # type: ignore[arg-type]
    service = await open_user_service(config, store, issuer=ISSUER, clock=clock)  # type: ignore[arg-type]
    await service.create_user("root", PASSWORD, roles=("admin",))
    browser = Browser(service)

    # Admin: password, then mandatory enrolment.
    resp = await browser.login("root", return_to="/authorize?client_id=c")
    assert resp.header("location") == "/mfa/enroll"
    page = await browser.get("/mfa/enroll")
    secret = _SECRET.search(page.body.decode()).group(1)  # type: ignore[union-attr]
    done = await browser.post(
        "/mfa/enroll", {"csrf_token": csrf_of(page), "code": pyotp.TOTP(secret).at(clock.now())}
    )
    codes = _CODES.findall(done.body.decode())
    assert len(codes) == 10
    auth = await browser.current()
    assert auth is not None
    assert auth.amr == ("pwd", "otp", "mfa")
    session_id = browser.session_id
    assert session_id is not None

    # Nothing replayable is readable from the rows: no session id, password, TOTP key or
    # recovery code.
    rows = await raw_rows(target)
    assert secret not in rows
    assert "'v1:" in rows
    assert session_id not in rows
    assert PASSWORD not in rows
    for code in codes:
        assert code not in rows
        assert code.replace("-", "") not in rows
    assert "$argon2id$v=19$m=19456,t=2,p=1$" in rows

    # Replay of the enrolment code, then a recovery code once.
    mfa = Browser(service, ip="198.51.100.2")
    await mfa.login("root")
    token = csrf_of(await mfa.get("/login/mfa"))
    replay = await mfa.post(
        "/login/mfa", {"csrf_token": token, "code": pyotp.TOTP(secret).at(clock.now())}
    )
    assert CODE_FAILED in replay.body.decode()
    ok = await mfa.post("/login/mfa", {"csrf_token": token, "recovery_code": codes[0]})
    assert ok.status == 303
    again = Browser(service, ip="198.51.100.3")
    await again.login("root")
    token = csrf_of(await again.get("/login/mfa"))
    reused = await again.post("/login/mfa", {"csrf_token": token, "recovery_code": codes[0]})
    assert CODE_FAILED in reused.body.decode()

    # Lockout over the real store: ten failures, then the right password is refused.
    await service.create_user("carol", PASSWORD)
    for i in range(10):
        attacker = Browser(service, ip=f"203.0.113.{i}")
        assert LOGIN_FAILED in (await attacker.login("carol", f"bad-{i}-password")).body.decode()
    assert LOGIN_FAILED in (await Browser(service, ip="192.0.2.99").login("carol")).body.decode()
    clock.advance(1801)
    assert (await Browser(service, ip="192.0.2.99").login("carol")).status == 303

    # A second service over the same store sees the same users and sessions.
    other = await open_user_service(config, store, issuer=ISSUER, clock=clock)  # type: ignore[arg-type]
    assert await other.current(browser.request("GET", "/authorize")) is not None
