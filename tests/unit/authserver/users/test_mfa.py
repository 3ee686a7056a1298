"""TOTP enrolment and login, replay, recovery codes, mandatory MFA for admin roles."""

from __future__ import annotations

import re

import pyotp
import pytest

from bastion.authserver.users import ACR_MFA
from bastion.authserver.users.login import CODE_FAILED, LOGIN_FAILED
from bastion.authserver.users.mfa import (
    hash_recovery_code,
    match_totp,
    new_recovery_codes,
    new_totp_secret,
)
from bastion.authserver.users.repo import MemoryUserRepo
from bastion.core.clock import ManualClock
from tests.unit.authserver.users.browser import PASSWORD, Browser, csrf_of, make_service

RETURN = "/authorize?client_id=app&state=s1"
_SECRET = re.compile(r"<code>([A-Z2-7]{32})</code>")
_CODES = re.compile(r"<li>([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})</li>")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_010.0)


@pytest.fixture
def repo() -> MemoryUserRepo:
    return MemoryUserRepo()


@pytest.fixture
async def browser(repo: MemoryUserRepo, clock: ManualClock) -> Browser:
    service = make_service(repo, clock)
    await service.create_user("root", PASSWORD, roles=("admin",))
    await service.create_user("carol", PASSWORD, roles=("user",))
    return Browser(service)


def code_at(secret: str, clock: ManualClock) -> str:
    return pyotp.TOTP(secret).at(clock.now())


async def enrol(browser: Browser, clock: ManualClock, user: str = "root") -> tuple[str, list[str]]:
    """Sign in (password) and enrol TOTP; returns the secret and the recovery codes."""
    resp = await browser.login(user, return_to=RETURN)
    form: dict[str, str] = {}
    if resp.header("location") != "/mfa/enroll":
        page = await browser.get("/account")
        assert page.status == 200
        form["password"] = PASSWORD  # a voluntary enrolment asks for the password again
    page = await browser.get("/mfa/enroll")
    assert page.status == 200
    m = _SECRET.search(page.body.decode())
    assert m is not None
    secret = m.group(1)
    done = await browser.post(
        "/mfa/enroll", {"csrf_token": csrf_of(page), "code": code_at(secret, clock), **form}
    )
    assert done.status == 200
    codes = _CODES.findall(done.body.decode())
    assert len(codes) == 10
    return secret, codes


async def mfa_step(browser: Browser, user: str = "root") -> str:
    resp = await browser.login(user, return_to=RETURN)
    assert resp.header("location") == "/login/mfa"
    page = await browser.get("/login/mfa")
    assert page.status == 200
    return csrf_of(page)


# -- pure functions -----------------------------------------------------------------------------


def test_rfc6238_sha1_vectors_through_match_totp() -> None:
    # RFC 6238 Appendix B, SHA-1 seed "12345678901234567890", truncated to 6 digits.
    import base64

    secret = base64.b32encode(b"12345678901234567890").decode()
    for t, code in ((59, "287082"), (1111111109, "081804"), (1234567890, "005924")):
        assert match_totp(secret, code, t, 0) == t // 30
    assert match_totp(secret, "287082", 59 + 30, 1) == 1
    assert match_totp(secret, "287082", 59 + 60, 1) is None


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5x", "١٢٣٤٥٦"])
def test_malformed_totp_codes_never_match(code: str) -> None:
    assert match_totp(new_totp_secret(), code, 1_700_000_000, 2) is None


def test_recovery_codes_are_random_and_hash_normalised() -> None:
    codes = new_recovery_codes(10)
    assert len(set(codes)) == 10
    code = codes[0]
    assert hash_recovery_code(code) == hash_recovery_code(code.upper().replace("-", " "))
    assert hash_recovery_code("short") is None
    assert hash_recovery_code("0000-0000-0000-0000") is None  # letters outside the alphabet


# -- enrolment ----------------------------------------------------------------------------------


async def test_admin_must_enrol_before_the_login_finishes(
    browser: Browser, clock: ManualClock
) -> None:
    resp = await browser.login("root", return_to=RETURN)
    assert resp.header("location") == "/mfa/enroll"
    assert await browser.current() is None
    assert (await browser.get("/account")).header("location") == "/login"
    page = await browser.get("/mfa/enroll")
    text = page.body.decode()
    assert 'src="data:image/svg+xml' in text
    assert "needs two-step verification" in text
    again = await browser.get("/mfa/enroll")
    assert _SECRET.search(again.body.decode()).group(1) == _SECRET.search(text).group(1)  # type: ignore[union-attr]
    before = browser.session_id
    secret = _SECRET.search(text).group(1)  # type: ignore[union-attr]
    wrong = await browser.post("/mfa/enroll", {"csrf_token": csrf_of(page), "code": "000000"})
    assert CODE_FAILED in wrong.body.decode()
    done = await browser.post(
        "/mfa/enroll", {"csrf_token": csrf_of(page), "code": code_at(secret, clock)}
    )
    assert done.status == 200
    assert f'href="{RETURN.replace("&", "&amp;")}"' in done.body.decode()
    assert browser.session_id != before
    auth = await browser.current()
    assert auth is not None
    assert auth.amr == ("pwd", "otp", "mfa")
    assert auth.acr == ACR_MFA


async def test_enrol_needs_the_session_csrf_token(browser: Browser, clock: ManualClock) -> None:
    await browser.login("root")
    page = await browser.get("/mfa/enroll")
    secret = _SECRET.search(page.body.decode()).group(1)  # type: ignore[union-attr]
    resp = await browser.post("/mfa/enroll", {"csrf_token": "x", "code": code_at(secret, clock)})
    assert resp.status == 403
    other = Browser(browser.service)
    await other.login("carol")
    stolen = csrf_of(await other.get("/account"))  # another session's token
    resp = await browser.post("/mfa/enroll", {"csrf_token": stolen, "code": code_at(secret, clock)})
    assert resp.status == 403


async def test_enrolled_user_cannot_enrol_again_without_reset(
    browser: Browser, clock: ManualClock
) -> None:
    await enrol(browser, clock)
    assert (await browser.get("/mfa/enroll")).header("location") == "/account"
    page = await browser.get("/account")
    resp = await browser.post("/mfa/enroll", {"csrf_token": csrf_of(page), "code": "123456"})
    assert resp.header("location") == "/mfa/enroll"


async def test_enrol_pages_need_a_session(browser: Browser) -> None:
    assert (await browser.get("/mfa/enroll")).header("location") == "/login"
    assert (await browser.post("/mfa/enroll", {"code": "1"})).header("location") == "/login"
    assert (await browser.get("/login/mfa")).header("location") == "/login"
    assert (await browser.post("/login/mfa", {"code": "1"})).header("location") == "/login"
    assert (await browser.post("/mfa/disable", {"code": "1"})).header("location") == "/login"


# -- TOTP at login ------------------------------------------------------------------------------


async def test_totp_login_wrong_then_right(browser: Browser, clock: ManualClock) -> None:
    secret, _ = await enrol(browser, clock)
    clock.advance(30)
    token = await mfa_step(browser)
    assert await browser.current() is None  # password alone is not a login now
    before = browser.session_id
    wrong = await browser.post("/login/mfa", {"csrf_token": token, "code": "000000"})
    assert wrong.status == 200
    assert CODE_FAILED in wrong.body.decode()
    ok = await browser.post("/login/mfa", {"csrf_token": token, "code": code_at(secret, clock)})
    assert ok.header("location") == RETURN
    assert browser.session_id != before
    auth = await browser.current()
    assert auth is not None
    assert auth.acr == ACR_MFA


async def test_totp_code_is_accepted_once(browser: Browser, clock: ManualClock) -> None:
    secret, _ = await enrol(browser, clock)
    # The enrolment's own code is spent: the same code cannot finish a login.
    token = await mfa_step(browser)
    replay = await browser.post("/login/mfa", {"csrf_token": token, "code": code_at(secret, clock)})
    assert CODE_FAILED in replay.body.decode()
    clock.advance(30)
    code = code_at(secret, clock)
    ok = await browser.post("/login/mfa", {"csrf_token": token, "code": code})
    assert ok.status == 303
    # A second browser (the attacker who watched the code) within the same step: refused.
    thief = Browser(browser.service, ip="203.0.113.9")
    token = await mfa_step(thief)
    stolen = await thief.post("/login/mfa", {"csrf_token": token, "code": code})
    assert CODE_FAILED in stolen.body.decode()
    # An older step's code (still inside the drift window) is refused after a newer one.
    clock.advance(30)
    previous = pyotp.TOTP(secret).at(clock.now() - 30)
    stale = await thief.post("/login/mfa", {"csrf_token": token, "code": previous})
    assert CODE_FAILED in stale.body.decode()


async def test_wrong_codes_count_toward_the_lockout(
    browser: Browser, repo: MemoryUserRepo, clock: ManualClock
) -> None:
    secret, _ = await enrol(browser, clock)
    token = await mfa_step(browser)
    for i in range(9):
        browser.ip = f"203.0.113.{i}"
        resp = await browser.post("/login/mfa", {"csrf_token": token, "code": f"{i:06d}"})
        assert CODE_FAILED in resp.body.decode()
    browser.ip = "203.0.113.200"
    resp = await browser.post("/login/mfa", {"csrf_token": token, "code": "999999"})
    user = await repo.find_user("root")
    assert user is not None
    assert user.locked(clock.now())
    clock.advance(30)
    # Locked: even the right code is refused, and the half-finished login ends.
    resp = await browser.post("/login/mfa", {"csrf_token": token, "code": code_at(secret, clock)})
    assert LOGIN_FAILED in resp.body.decode()
    assert await browser.current() is None
    assert (await browser.get("/login/mfa")).header("location") == "/login"
    assert LOGIN_FAILED in (await browser.login("root")).body.decode()


async def test_mfa_step_expires(browser: Browser, clock: ManualClock) -> None:
    secret, _ = await enrol(browser, clock)
    token = await mfa_step(browser)
    clock.advance(301)
    resp = await browser.post("/login/mfa", {"csrf_token": token, "code": code_at(secret, clock)})
    assert resp.header("location") == "/login"


async def test_mfa_step_needs_csrf(browser: Browser, clock: ManualClock) -> None:
    secret, _ = await enrol(browser, clock)
    clock.advance(30)
    await mfa_step(browser)
    resp = await browser.post("/login/mfa", {"csrf_token": "nope", "code": code_at(secret, clock)})
    assert resp.status == 403
    resp = await browser.post(
        "/login/mfa",
        {"csrf_token": csrf_of(await browser.get("/login/mfa")), "code": code_at(secret, clock)},
        headers={"origin": "https://evil.example"},
    )
    assert resp.status == 403


# -- recovery codes -----------------------------------------------------------------------------


async def test_recovery_code_works_once(browser: Browser, clock: ManualClock) -> None:
    _, codes = await enrol(browser, clock)
    events: list[str] = []
    browser.service.on_security_event.append(lambda action, _fields: events.append(action))
    token = await mfa_step(browser)
    ok = await browser.post("/login/mfa", {"csrf_token": token, "recovery_code": codes[0].upper()})
    assert events == ["user.recovery_code_used"]
    assert ok.header("location") == RETURN
    auth = await browser.current()
    assert auth is not None
    assert auth.amr == ("pwd", "mfa")
    assert auth.acr == ACR_MFA
    assert "9 recovery codes left" in (await browser.get("/account")).body.decode()
    token = await mfa_step(browser)
    again = await browser.post("/login/mfa", {"csrf_token": token, "recovery_code": codes[0]})
    assert CODE_FAILED in again.body.decode()
    bogus = await browser.post(
        "/login/mfa", {"csrf_token": token, "recovery_code": "abcd-efgh-jkmn-pqrs"}
    )
    assert CODE_FAILED in bogus.body.decode()
    assert (
        await browser.post("/login/mfa", {"csrf_token": token, "recovery_code": codes[1]})
    ).status == 303


async def test_recovery_codes_are_stored_hashed(
    browser: Browser, repo: MemoryUserRepo, clock: ManualClock
) -> None:
    _, codes = await enrol(browser, clock)
    stored = repr(repo._codes)
    for code in codes:
        assert code not in stored
        assert code.replace("-", "") not in stored


# -- switching MFA off --------------------------------------------------------------------------


async def test_admin_cannot_switch_mfa_off(browser: Browser, clock: ManualClock) -> None:
    secret, _ = await enrol(browser, clock)
    page = await browser.get("/account")
    assert "Switch off" not in page.body.decode()
    clock.advance(30)
    resp = await browser.post(
        "/mfa/disable", {"csrf_token": csrf_of(page), "code": code_at(secret, clock)}
    )
    assert resp.status == 403
    user = await browser.service.find_user("root")
    assert user is not None
    assert user.totp_secret is not None


async def test_user_switches_mfa_off_with_a_current_code(
    browser: Browser, clock: ManualClock
) -> None:
    secret, _ = await enrol(browser, clock, "carol")
    page = await browser.get("/account")
    assert "Switch off" in page.body.decode()
    bad = await browser.post("/mfa/disable", {"csrf_token": csrf_of(page), "code": "000000"})
    assert bad.status == 403
    assert (await browser.post("/mfa/disable", {"csrf_token": "x", "code": "1"})).status == 403
    clock.advance(30)
    resp = await browser.post(
        "/mfa/disable", {"csrf_token": csrf_of(page), "code": code_at(secret, clock)}
    )
    assert resp.header("location") == "/login"
    assert await browser.current() is None
    assert (await browser.login("carol")).header("location") == "/account"
    assert "Set it up" in (await browser.get("/account")).body.decode()
    page = await browser.get("/account")
    resp = await browser.post("/mfa/disable", {"csrf_token": csrf_of(page), "code": "1"})
    assert resp.header("location") == "/account"


async def test_enrolment_in_an_earlier_session_needs_the_password_again(
    browser: Browser, clock: ManualClock, repo: MemoryUserRepo
) -> None:
    """The attack: whoever holds a signed-in session (a stolen cookie, an unlocked screen) binds
    their own authenticator to the account. ASVS V3.7.1: re-authenticate first."""
    events: list[str] = []
    browser.service.on_security_event.append(lambda action, fields: events.append(action))
    assert (await browser.login("carol")).header("location") == "/account"
    page = await browser.get("/mfa/enroll")
    body = page.body.decode()
    assert 'name="password"' in body
    secret = _SECRET.search(body).group(1)  # type: ignore[union-attr]
    for password in ({}, {"password": "not the password"}, {"password": "x" * 2000}):
        resp = await browser.post(
            "/mfa/enroll", {"csrf_token": csrf_of(page), "code": code_at(secret, clock), **password}
        )
        assert resp.status == 200
        assert "That password was not accepted." in resp.body.decode()
        user = await repo.find_user("carol")
        assert user is not None
        assert user.totp_secret is None  # nothing bound
    assert events.count("user.login_failed") == 3  # counted towards the lockout
    user = await repo.find_user("carol")
    assert user is not None
    assert user.failed_logins == 3
    resp = await browser.post(
        "/mfa/enroll",
        {"csrf_token": csrf_of(page), "code": code_at(secret, clock), "password": PASSWORD},
    )
    assert resp.status == 200
    assert len(_CODES.findall(resp.body.decode())) == 10
    user = await repo.find_user("carol")
    assert user is not None
    assert user.totp_secret is not None


async def test_mandatory_enrolment_right_after_the_password_does_not_ask_again(
    browser: Browser,
) -> None:
    assert (await browser.login("root", return_to=RETURN)).header("location") == "/mfa/enroll"
    assert 'name="password"' not in (await browser.get("/mfa/enroll")).body.decode()


# -- administration -----------------------------------------------------------------------------


async def test_reset_mfa_forces_admin_to_enrol_again(
    browser: Browser, repo: MemoryUserRepo, clock: ManualClock
) -> None:
    await enrol(browser, clock)
    user = await browser.service.find_user("root")
    assert user is not None
    assert await browser.service.reset_mfa(user.id)
    assert await browser.current() is None
    assert await repo.recovery_codes_left(user.id) == 0
    assert (await browser.login("root")).header("location") == "/mfa/enroll"
    assert not await browser.service.reset_mfa("missing")


async def test_rehash_on_login_when_parameters_change(
    repo: MemoryUserRepo, clock: ManualClock
) -> None:
    old = make_service(repo, clock)
    user = await old.create_user("dave", PASSWORD)
    assert "m=19456,t=2,p=1" in user.password_hash
    new = make_service(
        repo, clock, password_hash={"time_cost": 3, "memory_cost": 19456, "parallelism": 1}
    )
    assert (await Browser(new).login("dave")).status == 303
    stored = await repo.get_user(user.id)
    assert stored is not None
    assert "m=19456,t=3,p=1" in stored.password_hash
    assert (await Browser(new).login("dave")).status == 303


async def test_account_rules(browser: Browser) -> None:
    from bastion.authserver.users.repo import UserExists
    from bastion.authserver.users.service import AccountError

    service = browser.service
    with pytest.raises(AccountError):
        await service.create_user("ok-name", "short")
    with pytest.raises(AccountError):
        await service.create_user("bad name", PASSWORD)
    with pytest.raises(AccountError):
        await service.create_user("<script>", PASSWORD)
    with pytest.raises(AccountError):
        await service.create_user("eve", PASSWORD, roles=("Admin Role",))
    with pytest.raises(AccountError):
        await service.create_user("eve", "x" * 2000)
    with pytest.raises(UserExists):
        await service.create_user("ROOT", PASSWORD)
    user = await service.find_user("carol")
    assert user is not None
    info = await service.get_user(user.id)
    assert info is not None
    assert info.roles == ("user",)
    assert not info.disabled
    assert await service.set_password(user.id, "another long password")
    assert (await Browser(service).login("carol", "another long password")).status == 303
    assert not await service.set_password("missing", "another long password")
    assert [u.username for u in await service.list_users()] == ["carol", "root"]


async def test_known_password_cannot_reset_the_count_between_code_guesses(
    browser: Browser, repo: MemoryUserRepo, clock: ManualClock
) -> None:
    await enrol(browser, clock)
    for round_ in range(5):
        attacker = Browser(browser.service, ip=f"203.0.113.{round_}")
        token = await mfa_step(attacker)
        for guess in range(2):
            resp = await attacker.post("/login/mfa", {"csrf_token": token, "code": f"00000{guess}"})
            assert resp.status == 200
    user = await repo.find_user("root")
    assert user is not None
    assert user.locked(clock.now())
    clock.advance(30)
    late = Browser(browser.service, ip="198.51.100.50")
    assert LOGIN_FAILED in (await late.login("root")).body.decode()


async def test_typos_then_password_then_code_signs_in(
    browser: Browser, repo: MemoryUserRepo, clock: ManualClock
) -> None:
    secret, _ = await enrol(browser, clock)
    for i in range(9):
        browser.ip = f"203.0.113.{i}"
        await browser.login("root", f"typo-password-{i}")
    browser.ip = "198.51.100.60"
    clock.advance(30)
    token = await mfa_step(browser)  # the 10th attempt, right: taken back, no lock
    user = await repo.find_user("root")
    assert user is not None
    assert user.failed_logins == 9
    assert not user.locked(clock.now())
    ok = await browser.post("/login/mfa", {"csrf_token": token, "code": code_at(secret, clock)})
    assert ok.status == 303
    user = await repo.find_user("root")
    assert user is not None
    assert user.failed_logins == 0


async def test_password_session_stops_counting_when_mfa_becomes_required(
    repo: MemoryUserRepo, clock: ManualClock
) -> None:
    relaxed = make_service(repo, clock, mfa_required_roles=[])
    await relaxed.create_user("ops", PASSWORD, roles=("admin",))
    browser = Browser(relaxed)
    assert (await browser.login("ops")).header("location") == "/account"
    assert await browser.current() is not None
    strict = Browser(make_service(repo, clock))
    strict.jar = dict(browser.jar)
    assert await strict.current() is None
