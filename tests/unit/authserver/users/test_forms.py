"""Every form endpoint: repeated fields, throttling, config rules of the pages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.authserver.users import UsersConfig
from bastion.authserver.users.repo import MemoryUserRepo
from bastion.authserver.users.sessions import tokens_equal
from bastion.core.clock import ManualClock
from tests.unit.authserver.users.browser import PASSWORD, Browser, csrf_of, make_service

#: (path, how far the session must be): each needs a session in that state.
FORMS = [
    ("/login/mfa", "mfa"),
    ("/mfa/enroll", "enroll"),
    ("/mfa/disable", "done"),
    ("/logout", "done"),
]


async def browser_at(state: str) -> Browser:
    clock = ManualClock(1_700_000_010.0)
    service = make_service(MemoryUserRepo(), clock)
    roles = ("admin",) if state == "enroll" else ()
    user = await service.create_user("alice", PASSWORD, roles=roles)
    if state == "mfa":
        await service.repo.enable_totp(user.id, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", 0, [], 0.0)
    browser = Browser(service)
    await browser.login("alice")
    return browser


@pytest.mark.parametrize(("path", "state"), FORMS)
async def test_repeated_field_is_refused(path: str, state: str) -> None:
    browser = await browser_at(state)
    token = csrf_of(
        await browser.get(
            "/account" if state == "done" else "/login/mfa" if state == "mfa" else "/mfa/enroll"
        )
    )
    body = f"csrf_token={token}&code=1&code=2&csrf_token={token}".encode()
    resp = await browser.send(browser.request("POST", path, {}, body=body))
    assert resp.status == 400


@pytest.mark.parametrize(("path", "state"), [f for f in FORMS if f[0] != "/logout"])
async def test_form_posts_are_throttled(path: str, state: str) -> None:
    browser = await browser_at(state)
    statuses = [
        (await browser.post(path, {"csrf_token": "x", "code": "1"})).status for _ in range(12)
    ]
    assert 429 in statuses


@pytest.mark.parametrize("page", ["//evil.com", "https://evil.com", "/\\evil", "/a b", "relative"])
def test_default_page_must_be_local(page: str) -> None:
    with pytest.raises(ValidationError):
        UsersConfig(default_page=page)


def test_default_page_can_be_another_local_path() -> None:
    assert UsersConfig(default_page="/welcome").default_page == "/welcome"


def test_missing_token_never_matches() -> None:
    assert not tokens_equal("abc", None)
    assert not tokens_equal("abc", "abd")
    assert tokens_equal("abc", "abc")


@pytest.mark.parametrize(
    ("issuer", "origin"),
    [
        ("https://AS.example:443/realm", "https://as.example"),
        ("https://as.example:8443", "https://as.example:8443"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_origin_of_issuer(issuer: str, origin: str) -> None:
    from bastion.authserver.users.login import origin_of

    assert origin_of(issuer) == origin


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
        ("", "-"),
        ("not-an-ip", "-"),
    ],
)
def test_throttle_key(ip: str, key: str) -> None:
    from bastion.authserver.users.login import throttle_key

    assert throttle_key(ip) == key


async def test_ipv6_neighbours_share_one_budget() -> None:
    browser = await browser_at("done")
    statuses = []
    for i in range(12):
        browser.ip = f"2001:db8:1:2::{i + 1:x}"
        statuses.append((await browser.post("/login", {"username": "x"})).status)
    assert statuses[-1] == 429
