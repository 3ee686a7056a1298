"""TOTP keys at rest: sealed under the configured key, bound to user and purpose."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.authserver.users import UsersConfig
from bastion.authserver.users.mfa import new_totp_secret
from bastion.authserver.users.sealing import TotpSealer

KEY = b"k" * 32


def test_round_trip_and_no_plaintext() -> None:
    sealer = TotpSealer(KEY)
    secret = new_totp_secret()
    stored = sealer.seal(secret, user_id="u1", purpose="totp")
    assert stored.startswith("v1:")
    assert secret not in stored
    assert stored != sealer.seal(secret, user_id="u1", purpose="totp")  # fresh nonce
    assert sealer.open(stored, user_id="u1", purpose="totp") == secret


@pytest.mark.parametrize(
    ("user_id", "purpose", "key"),
    [
        ("u2", "totp", KEY),  # moved to another user's row
        ("u1", "pending", KEY),  # a pending enrolment's value in the confirmed column
        ("u1", "totp", b"x" * 32),  # another key
    ],
)
def test_swapped_or_rekeyed_values_do_not_open(user_id: str, purpose: str, key: bytes) -> None:
    stored = TotpSealer(KEY).seal(new_totp_secret(), user_id="u1", purpose="totp")
    assert TotpSealer(key).open(stored, user_id=user_id, purpose=purpose) is None


@pytest.mark.parametrize("stored", ["v1:", "v1:!!!", "v1:AAAA", "v1:" + "A" * 80])
def test_tampered_values_do_not_open(stored: str) -> None:
    assert TotpSealer(KEY).open(stored, user_id="u1", purpose="totp") is None


def test_without_a_key() -> None:
    plain = TotpSealer(None)
    assert not plain.encrypting
    assert plain.seal("ABC", user_id="u1", purpose="totp") == "ABC"
    sealed = TotpSealer(KEY).seal("ABC", user_id="u1", purpose="totp")
    assert plain.open(sealed, user_id="u1", purpose="totp") is None  # fail closed
    assert TotpSealer(KEY).open("ABC", user_id="u1", purpose="totp") == "ABC"  # legacy row
    assert plain.open(None, user_id="u1", purpose="totp") is None


def test_key_length_is_checked() -> None:
    with pytest.raises(ValidationError):
        UsersConfig(totp_encryption_key="short")  # type: ignore[arg-type]
    cfg = UsersConfig(totp_encryption_key="z" * 32)  # type: ignore[arg-type]
    assert cfg.totp_encryption_key is not None
    assert "z" * 32 not in repr(cfg)


async def test_login_fails_closed_when_the_key_changes() -> None:
    import re

    import pyotp

    from bastion.authserver.users.login import CODE_FAILED
    from bastion.authserver.users.repo import MemoryUserRepo
    from bastion.core.clock import ManualClock
    from tests.unit.authserver.users.browser import PASSWORD, Browser, csrf_of, make_service

    repo, clock = MemoryUserRepo(), ManualClock(1_700_000_010.0)
    first = make_service(repo, clock, totp_encryption_key="a" * 32)
    await first.create_user("root", PASSWORD, roles=("admin",))
    browser = Browser(first)
    await browser.login("root")
    page = await browser.get("/mfa/enroll")
    secret = re.search(r"<code>([A-Z2-7]{32})</code>", page.body.decode()).group(1)  # type: ignore[union-attr]
    code = pyotp.TOTP(secret).at(clock.now())
    assert (
        await browser.post("/mfa/enroll", {"csrf_token": csrf_of(page), "code": code})
    ).status == 200
    user = await repo.find_user("root")
    assert user is not None
    assert user.totp_secret is not None
    assert secret not in user.totp_secret

    clock.advance(30)
    rekeyed = Browser(make_service(repo, clock, totp_encryption_key="b" * 32))
    await rekeyed.login("root")
    token = csrf_of(await rekeyed.get("/login/mfa"))
    resp = await rekeyed.post(
        "/login/mfa", {"csrf_token": token, "code": pyotp.TOTP(secret).at(clock.now())}
    )
    assert CODE_FAILED in resp.body.decode()
    assert await rekeyed.current() is None
