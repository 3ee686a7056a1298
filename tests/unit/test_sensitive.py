"""Sensitive-data detectors: one parametrised ``(value, should_flag)`` table per detector, the
field-name rules, the scanner and its schema guard (which must never let a finding through)."""

from __future__ import annotations

import re

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwe, jws
from joserfc.jwk import OctKey

from bastion.audit import redact
from bastion.core.apikeys import new_api_key
from bastion.core.fieldnames import FieldNames, name_words
from bastion.core.sensitive import (
    DETECTORS,
    FIELD_NAME,
    REDACTED,
    SensitiveScanner,
    ValueDetector,
    child_pointer,
    detector_names,
    find_card,
    iban_valid,
    luhn_valid,
    register,
    ssn_valid,
)

# Secret-shaped test vectors are assembled at run time so that no committed line looks like a
# real key to secret scanners (they are not keys: bodies are truncated or documented examples).
_BEGIN = "-----BEGIN "
_END = "-----END "
_PK = "PRIVATE KEY-----"

_KEY = OctKey.import_key(b"k" * 32)
SIGNED = jws.serialize_compact({"alg": "HS256"}, b'{"sub":"alice"}', _KEY)
UNSIGNED = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."  # {"alg":"none"}.{"sub":"alice"}.
ENCRYPTED = jwe.encrypt_compact(
    {"alg": "A128KW", "enc": "A128GCM"}, b"secret", OctKey.import_key(b"k" * 16)
)
API_KEY = new_api_key()[2]
BCRYPT = "$2b$12$" + "a" * 53
ARGON2 = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
PEM = f"{_BEGIN}RSA {_PK}\nMIIEowIBAAKCAQEA\n{_END}RSA {_PK}"


def flags(detector: str, value: str) -> bool:
    return next(DETECTORS[detector].finds(value), None) is not None


@pytest.mark.parametrize(
    ("value", "should_flag"),
    [
        ("4111111111111111", True),  # Visa test number
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1111", True),
        ("card 5555555555554444 on file", True),  # Mastercard
        ("378282246310005", True),  # Amex, 15 digits
        ("6011111111111117", True),  # Discover
        ("2221000000000009", True),  # Mastercard 2-series
        ("4111 1111 1111 1111 12/25", True),  # a card followed by its expiry
        ("4111111111111112", False),  # Luhn fails
        ("1234567812345670", False),  # Luhn-valid order number: no card network starts with 1
        ("ORD-2024-0001-0000-0015", False),  # Luhn-valid order number; 2024 is no network prefix
        ("9999999999999995", False),
        ("378282246310005002", False),  # Luhn-valid, an Amex prefix at the wrong length
        ("41111111111111111111", False),  # 20 digits without separators: no card
        ("411111111111", False),  # 12 digits
        ("2024-01-15T09:30:00Z", False),
    ],
)
def test_card_number(value: str, should_flag: bool) -> None:
    assert flags("card_number", value) is should_flag


@pytest.mark.parametrize(
    ("value", "should_flag"),
    [
        ("123-45-6789", True),
        ("SSN: 078-05-1120.", True),
        ("000-12-3456", False),  # area 000 never issued
        ("666-12-3456", False),
        ("912-34-5678", False),  # 9xx: ITINs, not SSNs
        ("123-00-4567", False),  # group 00
        ("123-45-0000", False),  # serial 0000
        ("123456789", False),  # no dashes: too many false positives to guess
        ("1123-45-6789", False),
        ("+1-555-123-4567", False),  # a phone number
    ],
)
def test_us_ssn(value: str, should_flag: bool) -> None:
    assert flags("us_ssn", value) is should_flag


@pytest.mark.parametrize(
    ("value", "should_flag"),
    [
        ("GB82WEST12345698765432", True),  # the ISO 13616 example
        ("GB82 WEST 1234 5698 7654 32", True),
        ("DE89 3704 0044 0532 0130 00", True),
        ("pay to NL91ABNA0417164300 today", True),
        ("GB82 WEST 1234 5698 7654 33", False),  # mod-97 fails
        ("DE89 3704 0044 0532 0130 0", False),  # one character short for DE
        ("XX82WEST12345698765432", False),  # no such country
        ("SKU-0001", False),
    ],
)
def test_iban(value: str, should_flag: bool) -> None:
    assert flags("iban", value) is should_flag


@pytest.mark.parametrize(
    ("value", "should_flag"),
    [
        (PEM, True),
        (f"{_BEGIN}{_PK}\nMIIE", True),
        (f"{_BEGIN}EC {_PK}", True),
        (f"{_BEGIN}OPENSSH {_PK}", True),
        (f"{_BEGIN}ENCRYPTED {_PK}", True),
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----", True),
        ("-----BEGIN PUBLIC KEY-----\nMFkw", False),
        ("-----BEGIN CERTIFICATE-----\nMIIB", False),
    ],
)
def test_private_key(value: str, should_flag: bool) -> None:
    assert flags("private_key", value) is should_flag


@pytest.mark.parametrize(
    ("value", "should_flag"),
    [
        (SIGNED, True),
        (f"Bearer {SIGNED}", True),
        (UNSIGNED, True),  # alg none, empty signature
        (ENCRYPTED, True),  # JWE, five parts
        ("eyJmb28iOjF9.eyJzdWIiOiJ4In0.abc", False),  # a JSON header without alg
        ("eyJhbGciOiJIUzI1NiJ9", False),  # a header alone
        ("eyJ!!!.eyJ.x", False),
        ("version 1.2.3", False),
    ],
)
def test_jwt(value: str, should_flag: bool) -> None:
    assert flags("jwt", value) is should_flag


@pytest.mark.parametrize(
    ("value", "should_flag"),
    [
        (API_KEY, True),
        (f"key={API_KEY}", True),
        ("bsk_" + "a" * 16 + "_" + "b" * 43, True),
        ("bsk_" + "a" * 16, False),  # the public id alone
        ("bsk_" + "A" * 16 + "_" + "b" * 43, False),  # ids are lower-case
        ("bsk_" + "a" * 16 + "_" + "b" * 42, False),
    ],
)
def test_bastion_api_key(value: str, should_flag: bool) -> None:
    assert flags("bastion_api_key", value) is should_flag


@pytest.mark.parametrize(
    ("value", "should_flag"),
    [
        (BCRYPT, True),
        ("$2a$10$" + "N9qo8uLOickgx2ZMRZoMye" + "IjZAgcfl7p92ldGxad68LJZdL17lhWy", True),
        ("$2y$12$" + "x" * 53, True),
        (ARGON2, True),
        ("$argon2i$v=19$m=4096,t=3,p=1$c2FsdA$aGFzaA", True),
        ("$scrypt$ln=16,r=8,p=1$c2FsdA$aGFzaGhhc2g", True),
        ("$pbkdf2-sha256$29000$N2ZM$lS9zdg", True),
        ("pbkdf2_sha256$260000$salt1234$" + "a" * 44, True),  # Django
        ("pbkdf2:sha256:600000$abcd$" + "0" * 64, True),  # werkzeug
        ("scrypt:32768:8:1$abcd$" + "f" * 128, True),  # werkzeug
        ("$6$rounds=5000$saltsalt$" + "a" * 86, True),  # sha512-crypt
        ("$5$saltsalt$" + "a" * 43, True),  # sha256-crypt
        ("$1$saltsalt$" + "a" * 22, True),  # md5-crypt
        ("$19.99 per month", False),
        ("$2b$12$short", False),
        ("costs $5 each", False),
    ],
)
def test_password_hash(value: str, should_flag: bool) -> None:
    assert flags("password_hash", value) is should_flag


@pytest.mark.parametrize(
    ("name", "should_flag"),
    [
        ("password", True),
        ("Password", True),
        ("new_password", True),
        ("passwordHash", True),
        ("password_hash", True),
        ("ssn", True),
        ("SSN", True),
        ("card_number", True),
        ("cardNumber", True),
        ("CardNumber", True),
        ("cardnumber", True),
        ("cvv", True),
        ("cvv2", True),
        ("api_key", True),
        ("x-api-key", True),
        ("APIKey", True),
        ("client_secret", True),
        ("access_token", True),
        ("refreshToken", True),
        ("private_key", True),
        ("session_id", True),
        ("pin", True),
        ("social_security_number", True),
        ("password_updated_at", False),  # metadata about the secret
        ("token_type", False),
        ("api_key_id", False),  # our key ids are public
        ("ssn_last4", False),
        ("card_last4", False),
        ("expires_in", False),
        ("classname", False),  # contains "ssn", is no SSN
        ("secretary", False),
        ("keyboard", False),
        ("shipping", False),  # contains "pin"
        ("name", False),
        ("id", False),
        ("", False),
    ],
)
def test_field_names(name: str, should_flag: bool) -> None:
    names = FieldNames()
    assert names.is_sensitive(name) is should_flag
    if should_flag:  # the hint never misses a sensitive name
        assert re.search(names.hint, name)


def test_extra_field_names_are_words_or_phrases() -> None:
    names = FieldNames(["dob", "date_of_birth"])
    assert names.is_sensitive("dob")
    assert names.is_sensitive("dateOfBirth")
    assert names.is_sensitive("date-of-birth")
    assert names.is_sensitive("dateofbirth")
    assert not names.is_sensitive("date")
    assert not FieldNames().is_sensitive("dob")
    assert name_words("x-API-Key2") == ("x", "api", "key2")


def test_luhn_is_shared_with_audit_redaction() -> None:
    assert redact.luhn_valid is luhn_valid  # one implementation
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert find_card("4111 1111 1111 1111 12") == "4111111111111111"
    assert ssn_valid("123-45-6789")
    assert not ssn_valid("123-45-678")
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    # The order numbers refused above do pass Luhn: the issuer prefix is what refuses them.
    for order_number in ("1234567812345670", "2024000100000015", "378282246310005002"):
        assert luhn_valid(order_number)


def test_scanner_names_what_fired_and_masks_by_shape() -> None:
    scanner = SensitiveScanner()
    assert scanner.scan_string("hello world") == ()
    assert scanner.scan_string("4111111111111111") == ("card_number",)
    assert set(scanner.scan_string("4111111111111111 and 123-45-6789")) == {
        "card_number",
        "us_ssn",
    }
    assert scanner.mask_string("4111 1111 1111 1111", ("card_number",)) == "****1111"
    assert scanner.mask_string("x 123-45-6789", ("us_ssn",)) == REDACTED
    assert scanner.mask_string("4111111111111111 123-45-6789", ("card_number", "us_ssn")) == (
        REDACTED
    )
    assert scanner.scan_number(4111111111111111) == ("card_number",)
    assert scanner.scan_number(4111111111111111.0) == ("card_number",)
    assert scanner.scan_number(4111111111111112) == ()
    assert scanner.scan_number(123) == ()
    assert scanner.scan_number(True) == ()
    assert scanner.scan_number(1.5e15 + 0.5) == ()


def test_scanner_selection_and_unknown_names() -> None:
    only_cards = SensitiveScanner(["card_number"])
    assert only_cards.scan_string("123-45-6789") == ()
    assert not only_cards.is_sensitive_name("password")
    assert SensitiveScanner([FIELD_NAME]).scan_string("4111111111111111") == ()
    assert SensitiveScanner([]).value_hint == ""
    with pytest.raises(ValueError, match="unknown detector"):
        SensitiveScanner(["cards"])
    assert detector_names()[-1] == FIELD_NAME


def test_scan_json_reports_pointers_never_values() -> None:
    doc = {
        "user": {"name": "Bob", "password": "hunter2", "a/b": "123-45-6789"},
        "cards": [4111111111111111, "none"],
        "note": BCRYPT,
    }
    found = SensitiveScanner().scan_json(doc)
    assert found == [
        ("/user/password", FIELD_NAME),
        ("/user/a~1b", "us_ssn"),
        ("/cards/0", "card_number"),
        ("/note", "password_hash"),
    ]
    assert child_pointer("/x", "m~n") == "/x/m~0n"


CLEAN = [
    {"id": "ord_0123456789abcdef", "status": "accepted", "total": 1299},
    ["SKU-0001", 5, None, True, 12.5],
    {"nested": {"deep": [{"name": "Alice", "price": "$19.99"}]}},
]
DIRTY = [
    {"card": "4111111111111111"},
    {"n": [{"m": 5555555555554444}]},
    {"password": "x"},
    {"Authorization_Token": 1},
    {"k": ARGON2},
    [SIGNED],
    {"4111111111111111": "a card as a key"},
    {"iban": "GB82WEST12345698765432"},
    -4111111111111111,
]


@pytest.mark.parametrize("value", CLEAN + DIRTY)
def test_guard_schema_never_passes_a_finding(value: object) -> None:
    scanner = SensitiveScanner()
    ref = "#/$defs/guard"
    guard = jsonschema_rs.Draft202012Validator(
        {"$ref": ref, "$defs": {"guard": scanner.guard_schema(ref)}}
    )
    findings = scanner.scan_json(value)
    if findings or (isinstance(value, dict) and "4111111111111111" in value):
        assert not guard.is_valid(value)
    if value in CLEAN:
        assert findings == []
        assert guard.is_valid(value)


def test_register_adds_a_detector_once() -> None:
    detector = ValueDetector(
        "test_token", "a test token", re.compile(r"tt_[0-9]{8}"), hint="tt_", min_length=11
    )
    try:
        register(detector)
        assert SensitiveScanner().scan_string("x tt_12345678") == ("test_token",)
        with pytest.raises(ValueError, match="exists already"):
            register(detector)
    finally:
        del DETECTORS["test_token"]
    with pytest.raises(ValueError, match="exists already"):
        register(ValueDetector(FIELD_NAME, "", re.compile("x"), hint="x", min_length=1))


_HINT_TEXT = st.text(
    alphabet=st.sampled_from(
        list("0123456789 -$_:.eyJbskBEGINargonscryptpbkdfAZDEGBé\u00a0\u0661")
    ),
    max_size=40,
)


@settings(max_examples=500, deadline=None)
@given(text=_HINT_TEXT)
def test_the_hint_search_agrees_with_pythons_reading_of_the_hint(text: str) -> None:
    """scan_string searches the hint with jsonschema-rs's engine: it must match wherever
    Python's ``re`` matches (else a finding could be missed) — and it does exactly there."""
    scanner = SensitiveScanner()
    python = re.compile(scanner.value_hint).search(text) is not None
    assert scanner.hint_matches(text) == python
    for detector in DETECTORS.values():
        if re.search(detector.hint, text):
            assert scanner.hint_matches(text)


def test_a_string_that_is_not_utf8_is_still_scanned() -> None:
    scanner = SensitiveScanner()
    assert scanner.scan_string("\ud800 4111 1111 1111 1111") == ("card_number",)
    assert scanner.scan_string("\ud800 nothing to see here") == ()
    assert not SensitiveScanner([]).hint_matches("4111111111111111")


def _luhn_reference(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@settings(max_examples=500, deadline=None)
@given(digits=st.text(alphabet="0123456789", max_size=25))
def test_luhn_matches_the_digit_by_digit_definition(digits: str) -> None:
    assert luhn_valid(digits) == _luhn_reference(digits)
