"""Redaction: each detector flags what it must and leaves alone what it must not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.audit.redact import (
    DETECTORS,
    REDACTED,
    Redactor,
    luhn_valid,
    redact_headers,
    redact_query,
    redact_text,
)
from bastion.core.exchange import Headers

# Secret-shaped test vectors are assembled at run time so that no committed line looks like a
# real key to secret scanners (they are not keys: bodies are truncated or documented examples).
_BEGIN = "-----BEGIN "
_END = "-----END "
_PK = "PRIVATE KEY-----"


JWT = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0"
    ".MEUCIQDx3q7Yr0c1-Kx_2vM9b3h3ZlGXq8Qb0y2n7tY4J5wq6w"
)
API_KEY = "bsk_0a1b2c3d4e5f6a7b_Qx9v-Lm2Zp8Rt4Yk6Wn0Jc3Hb7Fd5Gs1Ue9Io2Kq4Ma"
VISA = "4111111111111111"


def with_check_digit(body: str) -> str:
    """``body`` followed by the Luhn check digit that makes it valid."""
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        (f"Authorization: Bearer {JWT}", JWT, None),
        (f"token {JWT} in text", JWT, "token [REDACTED_JWT] in text"),
        ("Bearer abcdefgh12345678", "abcdefgh12345678", "Bearer [REDACTED]"),
        ("basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy", "basic [REDACTED]"),
        (f"key={API_KEY}", API_KEY, None),
        (f"got {API_KEY}.", "Qx9v-Lm2", "got bsk_0a1b2c3d4e5f6a7b_***."),
        (f"x_{API_KEY}", "Qx9v-Lm2", "x_bsk_0a1b2c3d4e5f6a7b_***"),
        (
            '{"password": "hunter2", "user": "bob"}',
            "hunter2",
            '{"password": "[REDACTED]", "user": "bob"}',
        ),
        ("{'passwd': 'hunter2'}", "hunter2", "{'passwd': '[REDACTED]'}"),
        ('{\\"password\\": \\"hunter2\\"}', "hunter2", '{\\"password\\": \\"[REDACTED]\\"}'),
        ("user=bob&password=hunter2&x=1", "hunter2", "user=bob&password=[REDACTED]&x=1"),
        ("new_password: hunter2", "hunter2", "new_password: [REDACTED]"),
        ("client_secret = s3cr3t-value", "s3cr3t", "client_secret = [REDACTED]"),
        ('"refresh_token":"rt-abc.def"', "rt-abc", '"refresh_token":"[REDACTED]"'),
        ("authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", None),
        ("postgres://bob:s3cret@db:5432/x", "s3cret", "postgres://bob:[REDACTED]@db:5432/x"),
        ("AKIA" + "IOSFODNN7EXAMPLE", "AKIA" + "IOSFODNN7EXAMPLE", REDACTED),
        ("ghp_" + "a" * 36, "a" * 36, REDACTED),
        ("xox" + "b-1234567890-abcdefghij", "abcdefghij", REDACTED),
        ("sk_live_" + "Z" * 24, "Z" * 24, REDACTED),
        ("AIza" + "B" * 35, "B" * 35, REDACTED),
        (
            f"{_BEGIN}EC {_PK}\nMHcCAQEEIB\n{_END}EC {_PK}",
            "MHcCAQEEIB",
            "[REDACTED_PRIVATE_KEY]",
        ),
        ("ssn 123-45-6789.", "123-45-6789", "ssn ***-**-****."),
        (f"card {VISA}", VISA, "card ****1111"),
        ("card 4111 1111 1111 1111 exp", "4111 1111", "card ****1111 exp"),
        ("card 4111-1111-1111-1111", "4111-1111", "card ****1111"),
        ("amex 3782 822463 10005", "822463", "amex ****0005"),
        ("visa13 4222222222222", "4222222222222", "visa13 ****2222"),
        ("card 4111 1111 1111 1111 12/25", "4111 1111", "card ****1111 12/25"),
        ("ref 12 4111 1111 1111 1111", "4111 1111", "ref 12 ****1111"),
        ("id-4111111111111111", VISA, "id-****1111"),
    ],
)
def test_secret_is_masked(text: str, secret: str, expected: str | None) -> None:
    out = redact_text(text)
    assert secret not in out
    if expected is not None:
        assert out == expected


@pytest.mark.parametrize(
    "text",
    [
        "/v1/users/123/invoices",
        "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0",
        "order 4111111111111112 shipped",  # 16 digits, Luhn-invalid: an order number
        "order 1234-5678-9012-3456",  # Luhn-invalid with dashes
        "ts 17000000000000000000000",  # 23 digits: too long to be a card
        "jwt: token expired",
        "phone 555-123-4567",
        "2024-01-15T12:30:00Z",
        "bsk_0a1b2c3d4e5f6a7b",  # the public prefix alone
        "Bearer realm",
        "user=bob&page=2",
        "",
    ],
)
def test_innocent_text_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


def test_luhn() -> None:
    assert luhn_valid(VISA)
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")
    assert luhn_valid(with_check_digit("401288888888188"))


def test_detectors_are_named_and_hinted() -> None:
    names = [d.name for d in DETECTORS]
    assert len(names) == len(set(names))
    for det in DETECTORS:
        assert det.hints
        assert all(h == h.lower() for h in det.hints)


@settings(max_examples=200, deadline=None)
@given(
    body=st.text(alphabet="0123456789", min_size=12, max_size=18),
    sep=st.sampled_from(["", " ", "-"]),
    before=st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=20),
    after=st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=20),
)
def test_any_luhn_valid_card_is_masked(body: str, sep: str, before: str, after: str) -> None:
    number = with_check_digit(body)
    grouped = sep.join(number[i : i + 4] for i in range(0, len(number), 4))
    out = redact_text(f"{before} {grouped} {after}")
    assert grouped not in out
    assert "****" + number[-4:] in out


@settings(max_examples=200, deadline=None)
@given(
    key_id=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=16, max_size=16),
    secret=st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        min_size=43,
        max_size=43,
    ),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_any_api_key_keeps_only_its_id(key_id: str, secret: str, before: str, after: str) -> None:
    out = redact_text(f"{before}bsk_{key_id}_{secret} {after}")
    assert secret not in out
    assert f"bsk_{key_id}_***" in out


def test_result_is_stable_when_called_again() -> None:
    r = Redactor()
    for text in ("/v1/users/1", f"Bearer {JWT}", "/v1/users/1"):
        assert r.redact_text(text) == r.redact_text(text)
    assert r.redact_text(f"Bearer {JWT}") == "Bearer [REDACTED_JWT]"


# -- query strings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "apikey",
        "key",
        "client_secret",
        "authorization",
        "code",
        "session",
        "API_KEY",
        "new_password",
        "x-auth-token",
    ],
)
def test_sensitive_query_parameter_is_masked(name: str) -> None:
    out = redact_query(f"page=2&{name}=s3cr3tvalue&sort=asc")
    assert out == f"page=2&{name}={REDACTED}&sort=asc"


def test_query_keeps_innocent_parameters() -> None:
    assert redact_query("page=2&sort=name&q=blue+shoes") == "page=2&sort=name&q=blue+shoes"
    assert redact_query("") == ""
    assert redact_query("flag&x=") == "flag&x="


def test_query_percent_encoded_names_and_values() -> None:
    assert redact_query("pass%77ord=hunter2") == f"pass%77ord={REDACTED}"
    out = redact_query("note=4111+1111+1111+1111&q=Bearer%20abcdefghijkl")
    assert "4111" not in out
    assert "abcdefghijkl" not in out
    assert "****1111" in out


def test_query_free_text_values_are_redacted() -> None:
    out = redact_query(f"q={JWT}&k2={API_KEY}")
    assert JWT not in out
    assert "Qx9v" not in out


def test_extra_fields_from_config() -> None:
    r = Redactor(["otp_backup", "X-Tenant-Secret-Id", " "])
    assert r.redact_query("otp_backup=123456&page=1") == f"otp_backup={REDACTED}&page=1"
    assert r.redact_text('{"otp_backup": "123456"}') == '{"otp_backup": "[REDACTED]"}'
    assert redact_query("otp_backup=123456") == "otp_backup=123456"
    assert r.redact_headers({"x-tenant-secret-id": "t"}) == {"x-tenant-secret-id": REDACTED}


# -- headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "Cookie",
        "set-cookie",
        "X-API-Key",
        "x-auth-token",
        "x-csrf-token",
        "x-amz-security-token",
        "x-custom-session",
    ],
)
def test_sensitive_header_values_are_dropped(name: str) -> None:
    assert redact_headers([(name, "anything-at-all")]) == {name.lower(): REDACTED}


def test_headers_other_values_are_redacted_text_and_joined() -> None:
    headers = Headers(
        [
            ("accept", "application/json"),
            ("x-note", f"see {VISA}"),
            ("accept", "text/plain"),
            ("authorization", f"Bearer {JWT}"),
        ]
    )
    assert redact_headers(headers) == {
        "accept": "application/json, text/plain",
        "x-note": "see ****1111",
        "authorization": REDACTED,
    }
    assert redact_headers({"User-Agent": "curl/8"}) == {"user-agent": "curl/8"}


@pytest.mark.parametrize(
    ("diagnosis", "expected"),
    [
        ("api_key: unknown key id", "api_key: unknown key id"),
        ("jwt: token expired", "jwt: token expired"),
        ("cors preflight: origin not allowed", "cors preflight: origin not allowed"),
        (
            f"api_key: wrong secret for {API_KEY}",
            "api_key: wrong secret for bsk_0a1b2c3d4e5f6a7b_***",
        ),
        ("jwt: unknown issuer password=hunter2", "jwt: unknown issuer password=[REDACTED]"),
        ("password: hunter2", "password: [REDACTED]"),
        ("client_secret: s3cr3t", "client_secret: [REDACTED]"),
        (f"upstream said {VISA}", "upstream said ****1111"),
    ],
)
def test_diagnosis_keeps_its_tag(diagnosis: str, expected: str) -> None:
    assert Redactor().redact_diagnosis(diagnosis) == expected


# --- ids: hex digits and dashes take a shortcut ------------------------------------------------


def test_no_hint_can_occur_in_a_hex_id() -> None:
    # redact_text lets hex-and-dash strings skip the detectors and the name=value scan: that is
    # only right while every hint and every pair needs some other character.
    hex_chars = set("0123456789abcdef-")
    for det in DETECTORS:
        for hint in det.hints:
            assert not set(hint) <= hex_chars, (det.name, hint)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(["0", "1", "4", "5", "9", "a", "F", "-", "--", "411111", "123-45-6789"]),
        max_size=24,
    ).map("".join)
)
def test_hex_ids_are_redacted_exactly_like_any_text(s: str) -> None:
    assert Redactor().redact_text(s) == Redactor()._redact(s)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5f3a9c1e-1f3a0", "5f3a9c1e-1f3a0"),
        ("123456789012-1", "123456789012-1"),  # 13 digits, but not a card (Luhn)
        ("4111-1111-1111-1111", "****1111"),
        ("4111111111111111", "****1111"),
        ("123-45-6789", "***-**-****"),
        ("550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440000"),
    ],
)
def test_hex_ids_keep_cards_and_ssns_masked(text: str, expected: str) -> None:
    assert Redactor().redact_text(text) == expected


def test_unique_ids_do_not_evict_remembered_strings() -> None:
    r = Redactor()
    assert r.redact_text("/api/echo") == "/api/echo"
    for i in range(10_000):
        r.redact_text(f"5f3a9c1e-{i:x}")
    assert "/api/echo" in r._clean
    assert len(r._clean) == 1
