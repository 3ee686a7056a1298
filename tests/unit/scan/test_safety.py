"""The safety policy: what may be sent, and the ledger of created objects."""

from __future__ import annotations

import pytest

from bastion.scan.safety import Ledger, SafetyPolicy


def _policy(allow: bool = False) -> SafetyPolicy:
    ledger = Ledger()
    ledger.record("http://t/api/invoices/31", "POST /api/invoices", "user_a")
    return SafetyPolicy(ledger, allow_account_mutation=allow)


@pytest.mark.parametrize(
    ("method", "path", "template", "text", "allowed"),
    [
        ("GET", "/api/users/1/password", "/api/users/{id}/password", "", True),
        ("OPTIONS", "/api/reset", None, "", True),
        ("POST", "/api/invoices", "/api/invoices", "createInvoice", True),
        ("DELETE", "/api/invoices/7", "/api/invoices/{id}", "", False),
        ("PATCH", "/api/invoices/7", "/api/invoices/{id}", "", False),
        ("PUT", "/api/invoices/31", "/api/invoices/{id}", "", True),
        ("DELETE", "/api/invoices/31", "/api/invoices/{id}", "", True),
        ("DELETE", "/api/invoices/31/lines/2", "/api/invoices/{id}/lines/{n}", "", True),
        ("DELETE", "/api/invoices/311", "/api/invoices/{id}", "", False),
        ("POST", "/api/users/2/password", "/api/users/{id}/password", "", False),
        ("POST", "/api/me/email", "/api/me/email", "", False),
        ("POST", "/api/admin/reset", "/api/admin/reset", "", False),
        ("POST", "/api/createdb", None, "", False),
        ("POST", "/api/logout", "/api/logout", "", False),
        ("POST", "/api/x", "/api/x", "changePassword", False),
        ("PATCH", "/api/me", "/api/me", "", False),
        ("PUT", "/api/settings", "/api/settings", "", True),
        ("DELETE", "/api/things/1", None, "", False),
        ("POST", "/api/invoices/31/reset", "/api/invoices/{id}/reset", "", False),
    ],
)
def test_decisions(method: str, path: str, template: str | None, text: str, allowed: bool) -> None:
    decision = _policy().decide(method, path, template=template, text=text)
    assert decision.allowed is allowed, decision.reason
    if not allowed:
        assert decision.reason


def test_flag_allows_account_mutation_but_not_foreign_deletes() -> None:
    policy = _policy(allow=True)
    assert policy.decide("POST", "/api/users/2/password", template="/api/users/{id}/password")
    assert policy.decide(
        "POST", "/api/invoices/31/reset", template="/api/invoices/{id}/reset"
    ).allowed
    assert not policy.decide("DELETE", "/api/invoices/7", template="/api/invoices/{id}").allowed


def test_ledger() -> None:
    ledger = Ledger()
    ledger.record("/api/x/1/", "POST /api/x", "user_a")
    ledger.record("api/x/1", "POST /api/x", "user_a")
    assert len(ledger.objects) == 1
    assert ledger.owns("http://t/api/x/1")
    assert ledger.owns("/api/x/1/sub")
    assert not ledger.owns("/api/x/10")
    ledger.mark_deleted("/api/x/1")
    assert ledger.objects[0].deleted


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/oauth/token", True),  # getting a token changes nothing
        ("POST", "/api/sessions", True),
        ("POST", "/api/tokens/revoke", False),
        ("POST", "/api/api-keys", False),
        ("POST", "/api/users/2/roles", False),
        ("POST", "/api/controls", True),  # "roles" only as a word
    ],
)
def test_login_is_not_an_account_mutation(method: str, path: str, allowed: bool) -> None:
    assert _policy().decide(method, path, template=path).allowed is allowed
