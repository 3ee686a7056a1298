"""Password login: CSRF, enumeration, lockout, throttling, open redirects, session fixation,
header injection."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from bastion.authserver.users import ACR_PWD
from bastion.authserver.users.login import LOGIN_FAILED
from bastion.authserver.users.repo import MemoryUserRepo
from bastion.authserver.users.sessions import hash_session_id, new_token
from bastion.core.clock import ManualClock
from tests.unit.authserver.users.browser import PASSWORD, Browser, csrf_of, make_service

RETURN = "/authorize?client_id=app&state=xyz&code_challenge=abc"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def repo() -> MemoryUserRepo:
    return MemoryUserRepo()


@pytest.fixture
async def browser(repo: MemoryUserRepo, clock: ManualClock) -> Browser:
    service = make_service(repo, clock)
    await service.create_user("Alice", PASSWORD, email="alice@example.com", roles=("user",))
    return Browser(service)


async def test_login_signs_in_and_returns_to_authorize(browser: Browser) -> None:
    resp = await browser.login("alice", return_to=RETURN)
    assert resp.status == 303
    assert resp.header("location") == RETURN
    auth = await browser.current()
    assert auth is not None
    assert auth.username == "alice"
    assert auth.amr == ("pwd",)
    assert auth.acr == ACR_PWD


async def test_username_is_case_and_width_insensitive(browser: Browser) -> None:
    resp = await browser.login(
        "\uff21\uff2c\uff29\uff23\uff25 "
    )  # full-width letters and a space: NFKC + trim
    assert resp.header("location") == "/account"


async def test_cookies_are_host_prefixed_secure_httponly_samesite(browser: Browser) -> None:
    page = await browser.get("/login")
    csrf_cookie = page.header("set-cookie") or ""
    assert csrf_cookie.startswith("__Host-bastion_csrf=")
    assert "Secure" in csrf_cookie
    assert "HttpOnly" in csrf_cookie
    assert "SameSite=Strict" in csrf_cookie
    assert "Path=/" in csrf_cookie
    assert "Domain" not in csrf_cookie
    resp = await browser.post(
        "/login", {"csrf_token": csrf_of(page), "username": "alice", "password": PASSWORD}
    )
    session_cookie = resp.header("set-cookie") or ""
    assert session_cookie.startswith("__Host-bastion_session=")
    for attr in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="):
        assert attr in session_cookie


async def test_plain_http_issuer_drops_prefix_and_secure() -> None:
    from bastion.authserver.users.sessions import CookieNames

    names = CookieNames(secure=False)
    assert names.session == "bastion_session"
    assert "Secure" not in names.set_session("x", 10)[1]


async def test_login_page_has_security_headers(browser: Browser) -> None:
    page = await browser.get("/login")
    csp = page.header("content-security-policy") or ""
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert page.header("cache-control") == "no-store"


async def test_session_store_keeps_only_a_hash(browser: Browser, repo: MemoryUserRepo) -> None:
    await browser.login("alice")
    sid = browser.session_id
    assert sid is not None
    assert await repo.get_session(sid) is None
    assert await repo.get_session(hash_session_id(sid)) is not None


# -- user enumeration -------------------------------------------------------------------------


async def test_unknown_user_and_wrong_password_look_the_same(browser: Browser) -> None:
    unknown = await browser.login("mallory", "whatever-password")
    wrong = await browser.login("alice", "wrong-password-1")
    assert unknown.status == wrong.status == 200
    assert unknown.body == wrong.body
    assert LOGIN_FAILED in unknown.body.decode()
    assert unknown.header("set-cookie") is None
    assert wrong.header("set-cookie") is None


async def test_locked_account_looks_like_a_wrong_password(browser: Browser) -> None:
    user = await browser.service.find_user("alice")
    assert user is not None
    await browser.service.lock(user.id)
    locked = await browser.login("alice", PASSWORD)
    wrong = await browser.login("nobody", PASSWORD)
    assert locked.status == wrong.status
    assert locked.body == wrong.body


async def test_oversized_username_and_password_are_plain_failures(browser: Browser) -> None:
    long_name = await browser.login("a" * 5000, PASSWORD)
    long_password = await browser.login("alice", "p" * 100_000)
    empty = await browser.login("alice", "")
    for resp in (long_name, long_password, empty):
        assert resp.status == 200
        assert LOGIN_FAILED in resp.body.decode()
    assert await browser.current() is None


# -- lockout ----------------------------------------------------------------------------------


async def test_ten_failures_lock_and_the_eleventh_right_password_is_refused(
    browser: Browser, clock: ManualClock
) -> None:
    for i in range(10):
        browser.ip = f"203.0.113.{i}"  # many addresses: the per-IP throttle does not help
        resp = await browser.login("alice", f"wrong-password-{i}")
        assert LOGIN_FAILED in resp.body.decode()
    browser.ip = "198.51.100.1"
    resp = await browser.login("alice", PASSWORD)
    assert resp.status == 200
    assert LOGIN_FAILED in resp.body.decode()
    assert await browser.current() is None
    clock.advance(29 * 60)
    assert LOGIN_FAILED in (await browser.login("alice", PASSWORD)).body.decode()
    clock.advance(61)
    assert (await browser.login("alice", PASSWORD)).status == 303


async def test_nine_failures_then_success_resets_the_count(
    browser: Browser, repo: MemoryUserRepo
) -> None:
    for i in range(9):
        browser.ip = f"203.0.113.{i}"
        await browser.login("alice", f"wrong-password-{i}")
    assert (await browser.login("alice", PASSWORD)).status == 303
    user = await repo.find_user("alice")
    assert user is not None
    assert user.failed_logins == 0
    assert user.locked_until is None
    for i in range(9):
        browser.ip = f"198.51.100.{i}"
        await browser.login("alice", f"wrong-password-{i}")
    assert (await browser.login("alice", PASSWORD)).status == 303


async def test_lockout_threshold_and_duration_are_configurable_within_pci_bounds(
    repo: MemoryUserRepo, clock: ManualClock
) -> None:
    from pydantic import ValidationError

    from bastion.authserver.users import UsersConfig

    with pytest.raises(ValidationError):
        UsersConfig(lockout_threshold=11)
    with pytest.raises(ValidationError):
        UsersConfig(lockout_duration="29m")  # type: ignore[arg-type]
    service = make_service(repo, clock, lockout_threshold=3, lockout_duration="1h")
    await service.create_user("bob", PASSWORD)
    b = Browser(service)
    for i in range(3):
        await b.login("bob", f"wrong-password-{i}")
    clock.advance(3599)
    assert LOGIN_FAILED in (await b.login("bob", PASSWORD)).body.decode()
    clock.advance(2)
    assert (await b.login("bob", PASSWORD)).status == 303


async def test_concurrent_guesses_cannot_pass_the_threshold(browser: Browser) -> None:
    import asyncio

    user = await browser.service.find_user("alice")
    assert user is not None
    page = await browser.get("/login")
    token = csrf_of(page)
    reqs = []
    for i in range(11):
        browser.ip = f"203.0.113.{i}"
        password = PASSWORD if i == 10 else f"guess-{i}-xxxxxx"
        reqs.append(
            browser.request(
                "POST", "/login", {"csrf_token": token, "username": "alice", "password": password}
            )
        )
    results = await asyncio.gather(*(browser.send(r) for r in reqs))
    # Counted before checking: the right password, arriving last, finds the account locked.
    assert all(r.status == 200 for r in results)
    assert await browser.current() is None


# -- CSRF -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form_token", "cookie", "headers"),
    [
        (None, "keep", {}),  # missing form token
        ("wrong", "keep", {}),  # wrong form token
        ("keep", None, {}),  # no cookie
        ("keep", "other", {}),  # a cookie planted with another value
        ("keep", "keep", {"origin": "https://evil.example"}),
        ("keep", "keep", {"origin": "null"}),
        ("keep", "keep", {"sec-fetch-site": "cross-site"}),
    ],
)
async def test_login_csrf_refused(
    browser: Browser,
    repo: MemoryUserRepo,
    form_token: str | None,
    cookie: str | None,
    headers: dict[str, str],
) -> None:
    page = await browser.get("/login")
    token = csrf_of(page)
    name = browser.service.cookies.csrf
    if cookie is None:
        browser.jar.pop(name)
    elif cookie == "other":
        browser.jar[name] = new_token()
    form = {"username": "alice", "password": PASSWORD}
    if form_token == "keep":
        form["csrf_token"] = token
    elif form_token is not None:
        form["csrf_token"] = new_token()
    resp = await browser.post("/login", form, headers=headers)
    assert resp.status == 403
    assert await browser.current() is None
    user = await repo.find_user("alice")
    assert user is not None
    assert user.failed_logins == 0


async def test_login_form_reuses_a_good_csrf_cookie_and_replaces_a_bad_one(
    browser: Browser,
) -> None:
    first = await browser.get("/login")
    again = await browser.get("/login")
    assert csrf_of(first) == csrf_of(again)
    assert again.header("set-cookie") is None
    browser.jar[browser.service.cookies.csrf] = "short;bad"
    fresh = await browser.get("/login")
    assert fresh.header("set-cookie") is not None
    assert csrf_of(fresh) != csrf_of(first)


async def test_repeated_form_field_is_refused(browser: Browser) -> None:
    page = await browser.get("/login")
    body = f"csrf_token={csrf_of(page)}&username=alice&username=bob&password=x".encode()
    req = browser.request("POST", "/login", {}, body=body)
    assert (await browser.send(req)).status == 400


async def test_repeated_return_to_on_the_form_page_is_dropped(browser: Browser) -> None:
    page = await browser.get("/login?return_to=/authorize%3Fa&return_to=/authorize%3Fb")
    assert 'name="return_to"' not in page.body.decode()


# -- per-IP throttling ------------------------------------------------------------------------


async def test_login_posts_are_throttled_per_ip(browser: Browser, clock: ManualClock) -> None:
    statuses = [(await browser.login("alice", f"bad-password-{i}")).status for i in range(11)]
    assert statuses[:10] == [200] * 10
    assert statuses[10] == 429
    other = Browser(browser.service, ip="198.51.100.7")
    assert (await other.login("nobody", "x")).status == 200
    resp = await browser.login("alice", PASSWORD)
    assert resp.status == 429
    assert int(resp.header("retry-after") or "0") >= 1
    clock.advance(60)
    assert (await browser.login("nobody", "x")).status == 200


# -- return_to / open redirect ----------------------------------------------------------------

EVIL = [
    "//evil.com",
    "https://evil.com",
    "http://evil.com/authorize?x=1",
    "/\\evil.com",
    "\\\\evil.com",
    "/%2F%2Fevil.com",
    "%2F%2Fevil.com",
    "https:%2F%2Fevil.com",
    "/%5Cevil.com",
    "/authorize/../evil",
    "/authorize",
    "/Authorize?x=1",
    " /authorize?x=1",
    "/authorize?x=1\r\nSet-Cookie: a=b",
    "/authorize?x=1#@evil.com",
    "/authorize?x=\\evil",
    "/authorize?x=é",
    "javascript:alert(1)",
    "/authorize?" + "a" * 5000,
    "",
]


@pytest.mark.parametrize("target", EVIL)
async def test_return_to_outside_authorize_goes_to_the_default_page(
    browser: Browser, target: str
) -> None:
    resp = await browser.login("alice", return_to=target)
    assert resp.status == 303
    assert resp.header("location") == "/account"
    assert browser.service.login_url(target) == "/login"


@pytest.mark.parametrize("target", EVIL)
async def test_return_to_in_the_query_is_dropped_from_the_form(
    browser: Browser, target: str
) -> None:
    page = await browser.get("/login?return_to=" + quote(target, safe=""))
    assert 'name="return_to"' not in page.body.decode()


async def test_return_to_is_escaped_in_the_form(browser: Browser) -> None:
    target = '/authorize?state="><script>alert(1)</script>'
    page = await browser.get("/login?return_to=" + quote(target, safe=""))
    text = page.body.decode()
    assert "<script>" not in text
    assert "&quot;&gt;&lt;script&gt;" in text


# -- session fixation -------------------------------------------------------------------------


async def test_planted_session_id_is_never_adopted(browser: Browser) -> None:
    planted = new_token()
    browser.jar[browser.service.cookies.session] = planted
    await browser.login("alice")
    assert browser.session_id is not None
    assert browser.session_id != planted
    attacker = Browser(browser.service)
    attacker.jar[browser.service.cookies.session] = planted
    assert await attacker.current() is None


async def test_new_session_id_at_each_login_and_old_one_dies(browser: Browser) -> None:
    await browser.login("alice")
    first = browser.session_id
    await browser.login("alice")
    second = browser.session_id
    assert first
    assert second
    assert first != second
    stale = Browser(browser.service)
    stale.jar[browser.service.cookies.session] = first
    assert await stale.current() is None


# -- header / cookie injection ----------------------------------------------------------------


async def test_crlf_in_fields_never_reaches_headers(browser: Browser) -> None:
    resp = await browser.login("alice\r\nSet-Cookie: evil=1", PASSWORD)
    for _name, value in resp.headers:
        assert "\r" not in value
        assert "\n" not in value
        assert "evil" not in value
    resp = await browser.login("alice", return_to="/authorize?a=1\r\nX-Injected: 1")
    assert resp.header("location") == "/account"
    assert resp.header("x-injected") is None


async def test_malformed_and_injected_cookies_are_ignored(browser: Browser) -> None:
    await browser.login("alice")
    sid = browser.session_id
    assert sid is not None
    for cookie in (
        f'{browser.service.cookies.session}="{sid}\\"; x=1"',
        f"{browser.service.cookies.session}={sid}x",
        f"{browser.service.cookies.session}=../../{sid[:20]}",
        "\x00garbage",
    ):
        req = browser.request("GET", "/authorize")
        req = type(req)("GET", "/authorize", headers={"cookie": cookie})
        assert await browser.service.current(req) is None


# -- sessions ---------------------------------------------------------------------------------


async def test_session_idle_and_absolute_timeouts(browser: Browser, clock: ManualClock) -> None:
    await browser.login("alice")
    clock.advance(3000)
    assert await browser.current() is not None  # touched: idle clock restarts
    clock.advance(3000)
    assert await browser.current() is not None
    clock.advance(3601)
    assert await browser.current() is None
    await browser.login("alice")
    for _ in range(8):
        clock.advance(3599)
        assert await browser.current() is not None
    clock.advance(10)
    assert await browser.current() is None  # 8 h absolute, however active


async def test_logout_needs_csrf_and_ends_the_session(browser: Browser) -> None:
    await browser.login("alice")
    account = await browser.get("/account")
    assert account.status == 200
    assert "alice" in account.body.decode()
    assert (await browser.post("/logout", {"csrf_token": "x"})).status == 403
    assert await browser.current() is not None
    resp = await browser.post("/logout", {"csrf_token": csrf_of(account)})
    assert resp.status == 303
    assert resp.header("location") == "/login"
    assert await browser.current() is None
    assert (await browser.get("/account")).header("location") == "/login"
    assert (await browser.post("/logout", {})).header("location") == "/login"


async def test_lock_ends_sessions_and_runs_on_disable_hooks(browser: Browser) -> None:
    await browser.login("alice")
    seen: list[str] = []

    async def hook(user_id: str) -> None:
        seen.append(user_id)

    async def broken(user_id: str) -> None:
        raise RuntimeError("hook down")

    browser.service.on_disable.extend([broken, hook])
    user = await browser.service.find_user("alice")
    assert user is not None
    assert await browser.service.lock(user.id)
    assert seen == [user.id]
    assert await browser.current() is None
    assert LOGIN_FAILED in (await browser.login("alice")).body.decode()
    assert await browser.service.unlock(user.id)
    assert (await browser.login("alice")).status == 303
    assert not await browser.service.lock("missing")


async def test_expired_sessions_are_purged_now_and_then(
    browser: Browser, repo: MemoryUserRepo, clock: ManualClock
) -> None:
    await browser.login("alice")
    old = browser.session_id
    assert old is not None
    clock.advance(9 * 3600)  # past the absolute lifetime
    await Browser(browser.service, ip="198.51.100.5").login("nobody", "x")
    assert await repo.get_session(hash_session_id(old)) is None


async def test_lockout_does_not_sign_out_the_owner(browser: Browser) -> None:
    await browser.login("alice")
    for i in range(10):
        attacker = Browser(browser.service, ip=f"203.0.113.{i}")
        await attacker.login("alice", f"wrong-password-{i}")
    assert LOGIN_FAILED in (await Browser(browser.service).login("alice")).body.decode()
    assert await browser.current() is not None


async def test_security_events_name_no_secret(browser: Browser) -> None:
    seen: list[tuple[str, dict[str, object]]] = []

    def broken(action: str, fields: dict[str, object]) -> None:
        raise RuntimeError("sink down")

    browser.service.on_security_event.extend([broken, lambda a, f: seen.append((a, f))])
    await browser.login("guessed-name", "hunter2-password")
    for i in range(10):
        browser.ip = f"203.0.113.{i}"
        await browser.login("alice", f"wrong-password-{i}")
    await browser.login("alice")
    user = await browser.service.find_user("alice")
    assert user is not None
    await browser.service.lock(user.id)
    actions = [a for a, _ in seen]
    assert actions[0] == "user.login_failed"
    assert seen[0][1] == {"source.ip": "192.0.2.1", "reason": "unknown"}
    assert actions.count("user.locked_out") == 1
    assert seen[-2][1] == {"user.id": user.id, "source.ip": "203.0.113.9", "reason": "locked"}
    assert seen[-1] == ("user.disabled", {"user.id": user.id})
    text = repr(seen)
    assert "guessed-name" not in text
    assert "password" not in text.replace("'reason': 'password'", "")
