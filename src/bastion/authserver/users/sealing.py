"""TOTP keys at rest: AES-256-GCM under a key from the config, bound to the user.

A TOTP key is a shared secret: whoever reads it can make valid codes. With
``auth.users.totp_encryption_key`` set, the store holds ``v1:<base64url(nonce ‖ ciphertext)>``
and a copied row is useless without the key; the associated data is the user id (and a purpose
label), so a sealed key moved to another user's row, or from a pending enrolment to a confirmed
one, does not open. The AES key is HKDF-SHA256 of the configured secret (any length ≥ 32 bytes).

The authorization server always has a key: unset, it is derived from ``auth.client_secret_pepper``
(:meth:`bastion.authserver.config.AuthConfig`). Only a bare :class:`UsersConfig` without a key
(tests, ``memory://``) stores plain base32, and the service warns at start.

A sealed value that cannot be opened (no key, another key, tampered) opens to None: the user's
codes then never match — fail closed — and the error is logged. Once a key is set, a plain
(unprefixed) value opens to None too: whoever can write the users table must not be able to
plant a TOTP key of their choosing and so pass the second factor.
"""

from __future__ import annotations

import base64
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger("bastion.authserver.users")

_PREFIX = "v1:"
_NONCE = 12


class TotpSealer:
    """Seals and opens TOTP keys; ``key`` None stores them in plain text."""

    def __init__(self, key: bytes | None) -> None:
        self._aead: AESGCM | None = None
        if key is not None:
            derived = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"bastion totp keys v1"
            ).derive(key)
            self._aead = AESGCM(derived)

    @property
    def encrypting(self) -> bool:
        return self._aead is not None

    def seal(self, secret: str, *, user_id: str, purpose: str) -> str:
        """What to store for ``secret`` of ``user_id`` (``purpose``: "totp" or "pending")."""
        if self._aead is None:
            return secret
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, secret.encode("ascii"), _aad(user_id, purpose))
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, stored: str | None, *, user_id: str, purpose: str) -> str | None:
        """The TOTP key a stored value holds; None if there is none or it does not open."""
        if stored is None:
            return None
        if not stored.startswith(_PREFIX):
            if self._aead is None:
                return stored
            log.error(
                "user %s: TOTP key stored in plain text while a key is set: refused "
                "(reset the user's MFA to enrol again)",
                user_id,
            )
            return None
        if self._aead is None:
            log.error("user %s: TOTP key is encrypted but no totp_encryption_key is set", user_id)
            return None
        try:
            raw = base64.urlsafe_b64decode(stored[len(_PREFIX) :].encode("ascii"))
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _aad(user_id, purpose))
            return plain.decode("ascii")
        except (InvalidTag, ValueError):
            log.error("user %s: TOTP key does not open (another key, or tampered)", user_id)
            return None


def _aad(user_id: str, purpose: str) -> bytes:
    return f"bastion totp {purpose} {user_id}".encode()
