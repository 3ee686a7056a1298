"""The API-key format and its hashing: pure functions, no I/O.

A key reads ``bsk_<id>_<secret>``:

* ``bsk_`` — a fixed prefix, so secret scanners (ours and GitHub's) can recognise leaked keys;
* ``<id>`` — 16 characters from ``[a-z0-9]`` (~82 bits), public: it names the key in logs,
  audit records and the CLI, and is the lookup key in the store;
* ``<secret>`` — 256 random bits as base64url without padding (43 characters). Only
  ``HMAC-SHA256(pepper, secret)`` is ever stored; the pepper is a server-side secret, so a
  stolen database alone does not let anyone check guesses offline.

A fast keyed hash (not argon2) is deliberate: the secret has 256 bits of entropy, so there is
nothing to brute-force, and the check must cost microseconds on every request
(``PERFORMANCE.md``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

__all__ = [
    "ID_ALPHABET",
    "ID_LENGTH",
    "KEY_LENGTH",
    "KEY_PREFIX",
    "SECRET_LENGTH",
    "effective_expiry",
    "hash_secret",
    "new_api_key",
    "parse_api_key",
    "secret_matches",
]

KEY_PREFIX = "bsk_"
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
ID_LENGTH = 16
SECRET_BYTES = 32
SECRET_LENGTH = 43  # base64url of 32 bytes, without the "=" padding
KEY_LENGTH = len(KEY_PREFIX) + ID_LENGTH + 1 + SECRET_LENGTH

# ASCII-only classes and fullmatch: no Unicode digits, no trailing newline slipping through "$".
_KEY_RE = re.compile(r"bsk_([a-z0-9]{16})_([A-Za-z0-9_-]{43})", re.ASCII)


def new_api_key() -> tuple[str, str, str]:
    """A fresh random key as ``(key_id, secret, full_key)``.

    Show ``full_key`` to its owner once; store only ``key_id`` and ``hash_secret(pepper, secret)``.
    """
    key_id = "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return key_id, secret, f"{KEY_PREFIX}{key_id}_{secret}"


def parse_api_key(value: str) -> tuple[str, str] | None:
    """Split a presented key into ``(key_id, secret)``, or None if it is not exactly our format.

    ``value`` is untrusted client input; any type, length or character outside the format gives
    None, never an exception.
    """
    if not isinstance(value, str) or len(value) != KEY_LENGTH:
        return None
    m = _KEY_RE.fullmatch(value)
    if m is None:
        return None
    return m.group(1), m.group(2)


def hash_secret(pepper: bytes, secret: str) -> str:
    """``HMAC-SHA256(pepper, secret)`` as lower-case hex: the only form in which a secret is stored."""
    return hmac.new(pepper, secret.encode("utf-8"), hashlib.sha256).hexdigest()


def secret_matches(pepper: bytes, secret: str, stored_hash: str) -> bool:
    """Whether ``secret`` hashes to ``stored_hash``, compared in constant time.

    Bytes are compared (not ``str``) so a non-ASCII value from a damaged store row gives False
    instead of a ``TypeError``.
    """
    computed = hash_secret(pepper, secret).encode("ascii")
    return hmac.compare_digest(computed, stored_hash.encode("utf-8", "replace"))


def effective_expiry(created_at: float, expires_at: float | None, max_age: float | None) -> float:
    """The moment a key stops working: its ``expires_at`` or ``created_at + max_age``,
    whichever comes first (``inf`` when neither is set).

    ``max_age`` caps every key, including keys stored without an expiry or with a longer one
    by an older version: a key stops by itself, without anyone writing to the store.
    """
    until = float("inf") if expires_at is None else expires_at
    if max_age is not None:
        until = min(until, created_at + max_age)
    return until
