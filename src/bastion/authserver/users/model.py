"""Plain records of the users package: what the authorization server learns about a login, what
it may show about a user, and the rows the repositories keep.

Nothing here does I/O. :class:`Authentication` and :class:`UserInfo` are the public contract with
the OAuth endpoints (``id_token``/``userinfo`` claims); the ``*Record`` types are private to the
package and its repositories.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

#: ``acr`` values (OpenID Connect Core §2): how strongly the user proved who they are.
ACR_PWD = "urn:bastion:acr:pwd"  # noqa: S105 - an acr value, not a password
ACR_MFA = "urn:bastion:acr:mfa"

#: ``amr`` values (RFC 8176 §2): ``pwd`` password, ``otp`` a one-time code (TOTP), ``mfa``
#: more than one factor. A recovery code is a second factor but not an OTP generator: it gives
#: ``("pwd", "mfa")``.
AMR_PWD = "pwd"  # noqa: S105 - an amr value (RFC 8176), not a password
AMR_OTP = "otp"
AMR_MFA = "mfa"

#: Usernames after normalisation: lower-case ASCII letters, digits and ``. _ @ + -``.
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")


def normalise_username(raw: str) -> str:
    """NFKC, trimmed, lower-case: one spelling per account (no ``Admin`` beside ``admin``)."""
    return unicodedata.normalize("NFKC", raw).strip().lower()


@dataclass(frozen=True, slots=True)
class Authentication:
    """A finished login: who, how (``amr``, ``acr``) and when (``auth_time``, epoch seconds)."""

    user_id: str
    username: str
    amr: tuple[str, ...]
    acr: str
    auth_time: float


@dataclass(frozen=True, slots=True)
class UserInfo:
    """What the OAuth endpoints may know about a user (never a hash or an MFA secret)."""

    id: str
    username: str
    email: str | None
    name: str | None
    roles: tuple[str, ...]
    disabled: bool


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One stored user.

    ``password_hash`` is an argon2id PHC string. ``totp_secret`` is the base32 RFC 6238 key of a
    confirmed enrolment (None: no TOTP); ``totp_last_step`` is the last time step whose code was
    accepted (a code is accepted only for a later step: replay protection). ``failed_logins``
    counts failed attempts since the last success; ``locked_until`` (epoch s) is set when they
    reach the threshold. ``disabled`` is an administrator's lock, without end.
    ``must_change_password``: the password is a one-time one (an invitation); the next login
    stops at a forced password change before the session is complete.
    """

    id: str
    username: str
    password_hash: str
    created_at: float
    email: str | None = None
    name: str | None = None
    roles: tuple[str, ...] = ()
    disabled: bool = False
    totp_secret: str | None = None
    totp_last_step: int | None = None
    failed_logins: int = 0
    locked_until: float | None = None
    updated_at: float = 0.0
    must_change_password: bool = False

    def info(self) -> UserInfo:
        return UserInfo(
            id=self.id,
            username=self.username,
            email=self.email,
            name=self.name,
            roles=self.roles,
            disabled=self.disabled,
        )

    def locked(self, now: float) -> bool:
        """Locked by an administrator, or by too many failures until ``locked_until``."""
        return self.disabled or (self.locked_until is not None and self.locked_until > now)


#: Login session states, in the order a login passes them.
STATE_MFA = "mfa"  # password accepted; a TOTP or recovery code is still due
STATE_ENROLL = "enroll"  # password accepted; the user's role needs MFA and none is enrolled
#: Factors accepted; a one-time password must be replaced first (a state name, not a secret).
STATE_PASSWORD = "password"  # noqa: S105
STATE_DONE = "done"  # authenticated


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A server-side login session. ``id_hash`` is SHA-256 of the cookie's session id (the id
    itself is never stored). ``data`` holds small per-session values (the pending TOTP secret
    of an enrolment, the return_to of the login)."""

    id_hash: str
    user_id: str
    state: str
    amr: tuple[str, ...]
    auth_time: float
    created_at: float
    expires_at: float
    last_seen: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AttemptGrant:
    """The answer of :meth:`UserRepo.reserve_attempt`: ``allowed`` False when the account is
    locked (by an administrator or by earlier failures); ``count`` the attempts now counted."""

    allowed: bool
    count: int
