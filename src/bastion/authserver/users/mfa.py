"""Second factors: TOTP (RFC 6238 through pyotp) and one-time recovery codes.

TOTP: SHA-1, 6 digits, 30-second steps — what every authenticator app supports (RFC 6238
§5.2 default). A code is checked for each step within ``valid_window`` steps of now (clock drift)
with a constant-time comparison; the caller then records the matching step with the repository's
compare-and-set so a code is accepted once per step and never again for an earlier step
(RFC 6238 §5.2: "the verifier MUST NOT accept the second attempt of the same OTP").

Recovery codes: 16 characters from a 31-letter alphabet without look-alikes (~79 bits each),
shown once at enrolment, stored as SHA-256 (a fast hash suffices for values this random; the
login's attempt counter bounds online guessing).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import pyotp
import segno

#: Recovery-code alphabet: lower-case letters and digits without 0/o, 1/l/i.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_CODE_LEN = 16
_TOTP_CODE = re.compile(r"^[0-9]{6}$")
TOTP_INTERVAL = 30


def new_totp_secret() -> str:
    """A new 160-bit TOTP key, base32 (RFC 4226 §4 recommends 160 bits)."""
    return pyotp.random_base32(length=32)


def totp_step(now: float) -> int:
    """The RFC 6238 time step ``T`` of ``now``."""
    return int(now // TOTP_INTERVAL)


def match_totp(secret: str, code: str, now: float, valid_window: int) -> int | None:
    """The time step whose code ``code`` is, within ``valid_window`` steps of ``now``; None if
    none. Every candidate step is compared (constant-time), whatever matches first."""
    code = code.strip().replace(" ", "")
    if not _TOTP_CODE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_INTERVAL)
    here = totp_step(now)
    found: int | None = None
    for step in range(here - valid_window, here + valid_window + 1):
        if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
            found = step
    return found


def provisioning_uri(secret: str, username: str, issuer_name: str) -> str:
    """The ``otpauth://totp/…`` URI authenticator apps scan."""
    return pyotp.TOTP(secret, interval=TOTP_INTERVAL).provisioning_uri(
        name=username, issuer_name=issuer_name
    )


def qr_data_uri(uri: str) -> str:
    """A QR code of ``uri`` as an SVG ``data:`` URI (the page's CSP allows ``img-src data:``;
    no inline script, no external request)."""
    return str(segno.make(uri, error="m", micro=False).svg_data_uri(scale=5, border=4))


def new_recovery_codes(count: int) -> list[str]:
    """``count`` fresh codes formatted for people: ``abcd-efgh-jkmn-pqrs``."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(_CODE_LEN))
        codes.append("-".join(raw[i : i + 4] for i in range(0, _CODE_LEN, 4)))
    return codes


def hash_recovery_code(code: str) -> str | None:
    """SHA-256 (hex) of a code as typed (case, spaces and dashes ignored); None when it cannot
    be a code of ours (wrong length or letters), so no lookup is made for it."""
    clean = code.strip().lower().replace("-", "").replace(" ", "")
    if len(clean) != _CODE_LEN or any(c not in _ALPHABET for c in clean):
        return None
    return hashlib.sha256(clean.encode("ascii")).hexdigest()
