"""Login session ids, their cookies, and the CSRF tokens bound to them.

A session id is 256 random bits (``secrets.token_urlsafe(32)``) that only the browser holds; the
store keeps SHA-256 of it, so a read of the sessions table cannot be replayed as a cookie. (A fast
hash is enough for a uniformly random 256-bit value; a slow KDF would only slow every request.)

CSRF tokens of a signed-in (or half signed-in) user are derived from the session id:
``HMAC-SHA256(session_id, "bastion csrf")``. They need no storage, change when the session id
changes, and cannot be computed without the cookie. Before there is a session (the login form)
the token is a double-submit cookie: a random value in a ``SameSite=Strict`` cookie (``__Host-``
prefixed over https, so a sibling subdomain cannot plant it) that the form must echo. Both are
compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

#: A session id or CSRF token as we issue them: 43 base64url characters (256 bits).
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def new_token() -> str:
    """A fresh 256-bit random value, base64url without padding."""
    return secrets.token_urlsafe(32)


def well_formed(value: str | None) -> bool:
    """Does ``value`` look like a token we issued? (Anything else is ignored unread.)"""
    return value is not None and _TOKEN.fullmatch(value) is not None


def hash_session_id(session_id: str) -> str:
    """What the store keeps instead of the session id: SHA-256, hex."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def session_csrf(session_id: str) -> str:
    """The CSRF token of the pages of session ``session_id``."""
    mac = hmac.new(session_id.encode("ascii"), b"bastion csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def tokens_equal(expected: str, given: str | None) -> bool:
    """Constant-time comparison; a missing token never matches."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


class CookieNames:
    """Cookie names and attributes for one issuer. Over https the names carry the ``__Host-``
    prefix, which browsers accept only with ``Secure``, ``Path=/`` and no ``Domain``: such a
    cookie cannot be set or overwritten by another host or over plain http."""

    def __init__(self, *, secure: bool) -> None:
        self.secure = secure
        prefix = "__Host-" if secure else ""
        self.session = f"{prefix}bastion_session"
        self.csrf = f"{prefix}bastion_csrf"

    def _attrs(self, same_site: str) -> str:
        secure = "; Secure" if self.secure else ""
        return f"Path=/; HttpOnly; SameSite={same_site}{secure}"

    def set_session(self, session_id: str, max_age: int) -> tuple[str, str]:
        """The session cookie. ``SameSite=Lax``: the browser must send it on the top-level
        navigation from a client application to ``/authorize``; state-changing requests are
        POSTs, which Lax does not send cross-site, and they carry a CSRF token too."""
        return (
            "set-cookie",
            f"{self.session}={session_id}; Max-Age={max_age}; {self._attrs('Lax')}",
        )

    def clear_session(self) -> tuple[str, str]:
        return ("set-cookie", f"{self.session}=; Max-Age=0; {self._attrs('Lax')}")

    def set_csrf(self, token: str) -> tuple[str, str]:
        """The login form's double-submit cookie (``SameSite=Strict``: only our own pages)."""
        return ("set-cookie", f"{self.csrf}={token}; {self._attrs('Strict')}")
