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
    assert plain.open("ABC", user_id="u1", purpose="totp") == "ABC"
    assert plain.open(None, user_id="u1", purpose="totp") is None


def test_a_plain_value_is_refused_once_a_key_is_set() -> None:
    """Whoever can write the users table must not plant a TOTP key of their choosing."""
    assert TotpSealer(KEY).open(new_totp_secret(), user_id="u1", purpose="totp") is None
    assert TotpSealer(KEY).open("ABC", user_id="u1", purpose="pending") is None


async def test_a_planted_plain_totp_key_does_not_pass_the_second_factor() -> None:
    import dataclasses

    import pyotp

    from bastion.authserver.users.login import CODE_FAILED
    from bastion.authserver.users.repo import MemoryUserRepo
    from bastion.core.clock import ManualClock
    from tests.unit.authserver.users.browser import PASSWORD, Browser, csrf_of, make_service

    repo, clock = MemoryUserRepo(), ManualClock(1_700_000_010.0)
    service = make_service(repo, clock, totp_encryption_key="a" * 32)
    user = await service.create_user("root", PASSWORD, roles=("admin",))
    planted = new_totp_secret()  # the attacker's own authenticator
    repo._users[user.id] = dataclasses.replace(repo._users[user.id], totp_secret=planted)
    browser = Browser(service)
    await browser.login("root")
    token = csrf_of(await browser.get("/login/mfa"))
    code = pyotp.TOTP(planted).at(clock.now())
    resp = await browser.post("/login/mfa", {"csrf_token": token, "code": code})
    assert CODE_FAILED in resp.body.decode()
    assert await browser.current() is None


def test_the_authorization_server_always_has_a_totp_key() -> None:
    from bastion.authserver.config import AuthConfig

    def cfg(pepper: str, **users: str) -> AuthConfig:
        doc = {"issuer": "https://auth.example", "client_secret_pepper": pepper, "users": users}
        return AuthConfig.model_validate(doc)

    def key(c: AuthConfig) -> str:
        assert c.users.totp_encryption_key is not None
        return c.users.totp_encryption_key.get_secret_value()

    derived = key(cfg("p" * 40))
    assert len(derived) == 64
    assert "p" * 32 not in derived  # not the pepper itself
    assert key(cfg("p" * 40)) == derived  # every process derives the same
    assert key(cfg("q" * 40)) != derived
    assert key(cfg("p" * 40, totp_encryption_key="z" * 32)) == "z" * 32  # explicit wins
    sealed = TotpSealer(derived.encode()).seal("ABC", user_id="u1", purpose="totp")
    assert sealed.startswith("v1:")


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
