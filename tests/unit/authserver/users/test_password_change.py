"""The forced change of an invitation's one-time password, before the login completes.
Attacks: skipping the page (straight to /authorize, /account, /mfa/enroll), skipping the second
factor with the one-time password alone, the same password again, two different entries, a
too-short one, a missing or cross-site CSRF token, another session opened with the one-time
password, a login-time rehash lifting the flag."""

from __future__ import annotations

import re

import pyotp
import pytest

from bastion.authserver.users.repo import MemoryUserRepo
from bastion.authserver.users.service import UserService
from bastion.core.clock import ManualClock
from tests.unit.authserver.users.browser import PASSWORD, Browser, csrf_of, make_service

OTP_PASSWORD = "one-time-password-from-the-invitation"
NEW_PASSWORD = "my own good passphrase"
RETURN = "/authorize?client_id=app&state=xyz&code_challenge=abc"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture
async def service(clock: ManualClock) -> UserService:
    service = make_service(MemoryUserRepo(), clock, mfa_required_roles=["admin"])
    await service.create_user("ivy", OTP_PASSWORD, must_change_password=True)
    await service.create_user("ada", OTP_PASSWORD, roles=("admin",), must_change_password=True)
    await service.create_user("bob", PASSWORD)
    return service


async def change(browser: Browser, new: str, confirm: str | None = None, **kw: object) -> object:
    page = await browser.get("/password/change")
    assert page.status == 200, page.body
    form = {
        "csrf_token": csrf_of(page),
        "new_password": new,
        "confirm_password": new if confirm is None else confirm,
    }
    return await browser.post("/password/change", form, **kw)


async def test_invited_user_must_change_before_the_login_completes(service: UserService) -> None:
    browser = Browser(service)
    resp = await browser.login("ivy", OTP_PASSWORD, return_to=RETURN)
    assert resp.header("location") == "/password/change"
    # Half signed in is not signed in: no OAuth login, no account page, no enrolment.
    assert await browser.current() is None
    assert (await browser.get("/account")).header("location") == "/login"
    assert (await browser.get("/mfa/enroll")).header("location") == "/login"
    done = await change(browser, NEW_PASSWORD)
    assert done.header("location") == RETURN  # the login goes on where it was going
    auth = await browser.current()
    assert auth is not None
    assert auth.amr == ("pwd",)
    user = await service.find_user("ivy")
    assert user is not None
    assert not user.must_change_password
    # The one-time password is gone; the new one signs in without a detour.
    fresh = Browser(service)
    assert (await fresh.login("ivy", OTP_PASSWORD)).header("location") != "/password/change"
    assert await fresh.current() is None
    assert (await fresh.login("ivy", NEW_PASSWORD)).header("location") == "/account"
    assert await fresh.current() is not None


@pytest.mark.parametrize(
    ("new", "confirm", "message"),
    [
        (NEW_PASSWORD, NEW_PASSWORD + "x", "differ"),
        ("short", "short", "at least"),
        (OTP_PASSWORD, OTP_PASSWORD, "not the one you were given"),
        ("", "", "at least"),
    ],
)
async def test_bad_new_passwords_are_refused(
    service: UserService, new: str, confirm: str, message: str
) -> None:
    browser = Browser(service)
    await browser.login("ivy", OTP_PASSWORD)
    resp = await change(browser, new, confirm)
    assert resp.status == 200
    assert message in resp.body.decode()
    assert await browser.current() is None
    user = await service.find_user("ivy")
    assert user is not None
    assert user.must_change_password


async def test_csrf_and_cross_site_posts_are_refused(service: UserService) -> None:
    browser = Browser(service)
    await browser.login("ivy", OTP_PASSWORD)
    form = {"csrf_token": "forged", "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
    assert (await browser.post("/password/change", form)).status == 403
    resp = await change(browser, NEW_PASSWORD, headers={"origin": "https://evil.example"})
    assert resp.status == 403  # type: ignore[attr-defined]
    user = await service.find_user("ivy")
    assert user is not None
    assert user.must_change_password
    # Without any session: back to the login, nothing changes.
    anonymous = Browser(service)
    assert (await anonymous.post("/password/change", form)).header("location") == "/login"
    assert (await anonymous.get("/password/change")).header("location") == "/login"


async def test_a_signed_in_user_without_the_flag_has_no_such_page(service: UserService) -> None:
    browser = Browser(service)
    await browser.login("bob")
    assert await browser.current() is not None
    assert (await browser.get("/password/change")).header("location") == "/login"


async def test_other_sessions_with_the_one_time_password_end(service: UserService) -> None:
    first, second = Browser(service), Browser(service, ip="192.0.2.2")
    await first.login("ivy", OTP_PASSWORD)
    await second.login("ivy", OTP_PASSWORD)
    await change(first, NEW_PASSWORD)
    assert await first.current() is not None
    assert (await second.get("/password/change")).header("location") == "/login"
    form = {"csrf_token": "x", "new_password": "attacker's choice!", "confirm_password": "x"}
    assert (await second.post("/password/change", form)).header("location") == "/login"


async def test_then_a_role_that_needs_mfa_enrols(service: UserService, clock: ManualClock) -> None:
    browser = Browser(service)
    assert (await browser.login("ada", OTP_PASSWORD)).header("location") == "/password/change"
    assert (await change(browser, NEW_PASSWORD)).header("location") == "/mfa/enroll"
    assert await browser.current() is None  # still not signed in
    page = await browser.get("/mfa/enroll")
    found = re.search(r"<code>([A-Z2-7]{32})</code>", page.body.decode())
    assert found is not None
    code = pyotp.TOTP(found.group(1)).at(clock.now())
    done = await browser.post("/mfa/enroll", {"csrf_token": csrf_of(page), "code": code})
    assert done.status == 200
    auth = await browser.current()
    assert auth is not None
    assert "mfa" in auth.amr


async def test_the_second_factor_comes_before_the_change(
    service: UserService, clock: ManualClock
) -> None:
    """A user with TOTP whose password an administrator made one-time: the one-time password
    alone reaches neither the change page nor a login."""
    browser = Browser(service)
    await browser.login("ada", OTP_PASSWORD)
    await change(browser, NEW_PASSWORD)
    page = await browser.get("/mfa/enroll")
    found = re.search(r"<code>([A-Z2-7]{32})</code>", page.body.decode())
    assert found is not None
    totp = pyotp.TOTP(found.group(1))
    await browser.post("/mfa/enroll", {"csrf_token": csrf_of(page), "code": totp.at(clock.now())})
    user = await service.find_user("ada")
    assert user is not None
    await service.repo.set_password_hash(
        user.id, await service.hasher.hash(OTP_PASSWORD), clock.now(), must_change=True
    )
    clock.advance(60)
    thief = Browser(service, ip="198.51.100.9")
    assert (await thief.login("ada", OTP_PASSWORD)).header("location") == "/login/mfa"
    assert (await thief.get("/password/change")).header("location") == "/login"
    form = {"csrf_token": "x", "new_password": "thief's passphrase", "confirm_password": "x"}
    assert (await thief.post("/password/change", form)).header("location") == "/login"
    mfa = await thief.get("/login/mfa")
    resp = await thief.post(
        "/login/mfa", {"csrf_token": csrf_of(mfa), "code": totp.at(clock.now())}
    )
    assert resp.header("location") == "/password/change"
    assert await thief.current() is None
    final = await change(thief, "another good passphrase")
    assert final.header("location") == "/account"  # type: ignore[attr-defined]
    auth = await thief.current()
    assert auth is not None
    assert auth.amr == ("pwd", "otp", "mfa")


async def test_a_rehash_at_login_keeps_the_flag(service: UserService, clock: ManualClock) -> None:
    user = await service.find_user("ivy")
    assert user is not None
    assert await service.repo.set_password_hash(user.id, user.password_hash, clock.now())
    again = await service.find_user("ivy")
    assert again is not None
    assert again.must_change_password
