"""Proof Key for Code Exchange (RFC 7636), ``S256`` only: ``plain`` lets anyone who sees the
authorization request redeem the code, so OAuth 2.1 and RFC 9700 §2.1.1 rule it out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

#: RFC 7636 §4.1: 43-128 characters from the unreserved set.
VERIFIER_RE = re.compile(r"[A-Za-z0-9\-._~]{43,128}", re.ASCII)
#: An S256 challenge is base64url(SHA-256) without padding: exactly 43 characters.
CHALLENGE_RE = re.compile(r"[A-Za-z0-9\-_]{43}", re.ASCII)


def s256_challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(ASCII(code_verifier)))`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def valid_challenge(challenge: str) -> bool:
    return CHALLENGE_RE.fullmatch(challenge) is not None


def verify(verifier: str | None, challenge: str) -> bool:
    """RFC 7636 §4.6: the verifier is well formed and hashes to the stored challenge.

    ``verifier`` is untrusted; a missing or malformed one is False, never an exception.
    """
    if verifier is None or VERIFIER_RE.fullmatch(verifier) is None:
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)
