"""Where users, recovery codes and login sessions are kept: the :class:`UserRepo` protocol and
its in-memory implementation (unit tests, ``memory://``). The SQL implementations live in
:mod:`bastion.authserver.users.sql_repo` and pass the same contract suite.

Every operation that guards a secret is one atomic step of the repository, so concurrent
requests cannot race past it: :meth:`UserRepo.reserve_attempt` counts an attempt *before* the
password or code is checked (at most ``threshold`` guesses, however many run at once),
:meth:`UserRepo.use_totp_step` is a compare-and-set on the last accepted time step, and
:meth:`UserRepo.use_recovery_code` marks a code used only if it was unused.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from bastion.authserver.users.model import AttemptGrant, SessionRecord, UserRecord
from bastion.errors import StoreError


class UserExists(Exception):
    """A user with this id or username exists already (only ``bastion auth users create``
    meets it; no HTTP endpoint creates users). Deliberately not a ValueError or StoreError:
    the stores translate those, and this one must reach the caller as it is."""


class UserRepo(Protocol):
    """Durable users, recovery codes and sessions. Every method may raise StoreError."""

    async def create_user(self, user: UserRecord) -> None:
        """Store a new user; :class:`UserExists` when the id or username is taken."""

    async def get_user(self, user_id: str) -> UserRecord | None: ...

    async def find_user(self, username: str) -> UserRecord | None:
        """By normalised username (the caller normalises)."""

    async def list_users(self) -> list[UserRecord]:
        """Every user, by username."""

    async def set_password_hash(
        self, user_id: str, password_hash: str, now: float, *, must_change: bool | None = None
    ) -> bool:
        """Replace the hash (rehash, reset or the user's own change); False for an unknown user.
        ``must_change`` sets or clears the forced change at the next login; None keeps it (a
        rehash at login must not lift it)."""

    async def reserve_attempt(
        self, user_id: str, now: float, threshold: int, lock_for: float
    ) -> AttemptGrant:
        """Count one login attempt before its secret is checked, atomically.

        Refused (``allowed`` False, nothing counted) while the user is disabled or locked. A
        lock that has run out is cleared with its count first. The attempt that brings the
        count to ``threshold`` sets ``locked_until = now + lock_for``: if its secret is right,
        :meth:`clear_failures` lifts the lock again; otherwise the account stays locked.
        """

    async def clear_failures(self, user_id: str, now: float) -> None:
        """After a successful login: count 0, no lock."""

    async def release_attempt(self, user_id: str, threshold: int) -> None:
        """Take back one reserved attempt whose secret was right but did not finish the login
        (a password before the second factor): the count goes down by one, and a lock this
        attempt set is lifted. Earlier failures stay counted, so a known password cannot be
        used to reset the count between guesses at the second factor."""

    async def set_disabled(self, user_id: str, disabled: bool, now: float) -> bool:
        """An administrator's lock (True) or unlock (False; also clears failures and any
        lockout). False for an unknown user."""

    async def set_roles(self, user_id: str, roles: tuple[str, ...], now: float) -> bool:
        """Replace the user's roles (the admin API's role assignment). False for an unknown
        user. Whether a role needs MFA is decided at each login and each ``current`` call, so
        a role that needs it takes a password-only session's login away and forces enrolment
        at the next login."""

    async def enable_totp(
        self, user_id: str, secret: str, step: int, code_hashes: list[str], now: float
    ) -> bool:
        """Store a confirmed TOTP secret (its confirming code's ``step`` counts as used) and
        replace the recovery codes by ``code_hashes``. False for an unknown user."""

    async def clear_mfa(self, user_id: str, now: float) -> bool:
        """Remove TOTP and every recovery code. False for an unknown user."""

    async def use_totp_step(self, user_id: str, step: int) -> bool:
        """Accept a TOTP code of time step ``step`` only if no code of this or a later step was
        accepted before (compare-and-set); True when accepted."""

    async def use_recovery_code(self, user_id: str, code_hash: str, now: float) -> bool:
        """Mark an unused recovery code used; True only the first time."""

    async def recovery_codes_left(self, user_id: str) -> int: ...

    async def create_session(self, session: SessionRecord) -> None: ...

    async def get_session(self, id_hash: str) -> SessionRecord | None: ...

    async def replace_session(self, old_id_hash: str | None, session: SessionRecord) -> None:
        """Delete ``old_id_hash`` (if given) and store ``session``, atomically: the new id of a
        session whose privilege changed (session fixation defence)."""

    async def touch_session(self, id_hash: str, now: float) -> None: ...

    async def set_session_data(self, id_hash: str, data: dict[str, Any]) -> None:
        """Replace the ``data`` of a session (a pending TOTP secret during enrolment)."""

    async def delete_session(self, id_hash: str) -> None: ...

    async def delete_user_sessions(self, user_id: str) -> int:
        """End every session of a user; how many there were."""

    async def purge_sessions(self, now: float) -> int:
        """Delete sessions whose ``expires_at`` has passed; how many."""


class MemoryUserRepo:
    """Process-local :class:`UserRepo`. Each method runs without an ``await`` in between, so it
    is atomic on the event loop, like one SQL transaction."""

    def __init__(self) -> None:
        self._users: dict[str, UserRecord] = {}
        self._codes: dict[str, dict[str, float | None]] = {}
        self._sessions: dict[str, SessionRecord] = {}

    def _by_name(self, username: str) -> UserRecord | None:
        for user in self._users.values():
            if user.username == username:
                return user
        return None

    def _update(self, user_id: str, **changes: object) -> bool:
        user = self._users.get(user_id)
        if user is None:
            return False
        self._users[user_id] = dataclasses.replace(user, **changes)  # type: ignore[arg-type]
        return True

    async def create_user(self, user: UserRecord) -> None:
        if user.id in self._users or self._by_name(user.username) is not None:
            raise UserExists(f"user {user.username!r} exists")
        self._users[user.id] = user
        self._codes[user.id] = {}

    async def get_user(self, user_id: str) -> UserRecord | None:
        return self._users.get(user_id)

    async def find_user(self, username: str) -> UserRecord | None:
        return self._by_name(username)

    async def list_users(self) -> list[UserRecord]:
        return sorted(self._users.values(), key=lambda u: u.username)

    async def set_password_hash(
        self, user_id: str, password_hash: str, now: float, *, must_change: bool | None = None
    ) -> bool:
        if must_change is None:
            return self._update(user_id, password_hash=password_hash, updated_at=now)
        return self._update(
            user_id, password_hash=password_hash, updated_at=now, must_change_password=must_change
        )

    async def reserve_attempt(
        self, user_id: str, now: float, threshold: int, lock_for: float
    ) -> AttemptGrant:
        user = self._users.get(user_id)
        if user is None or user.locked(now):
            return AttemptGrant(False, 0)
        count = (0 if user.locked_until is not None else user.failed_logins) + 1
        locked_until = now + lock_for if count >= threshold else None
        self._update(user_id, failed_logins=count, locked_until=locked_until)
        return AttemptGrant(True, count)

    async def clear_failures(self, user_id: str, now: float) -> None:
        self._update(user_id, failed_logins=0, locked_until=None)

    async def release_attempt(self, user_id: str, threshold: int) -> None:
        user = self._users.get(user_id)
        if user is None or user.failed_logins <= 0:
            return
        count = user.failed_logins - 1
        locked_until = user.locked_until if count >= threshold else None
        self._update(user_id, failed_logins=count, locked_until=locked_until)

    async def set_disabled(self, user_id: str, disabled: bool, now: float) -> bool:
        if disabled:
            return self._update(user_id, disabled=True, updated_at=now)
        return self._update(
            user_id, disabled=False, failed_logins=0, locked_until=None, updated_at=now
        )

    async def set_roles(self, user_id: str, roles: tuple[str, ...], now: float) -> bool:
        return self._update(user_id, roles=tuple(roles), updated_at=now)

    async def enable_totp(
        self, user_id: str, secret: str, step: int, code_hashes: list[str], now: float
    ) -> bool:
        if not self._update(user_id, totp_secret=secret, totp_last_step=step, updated_at=now):
            return False
        self._codes[user_id] = dict.fromkeys(code_hashes)
        return True

    async def clear_mfa(self, user_id: str, now: float) -> bool:
        if not self._update(user_id, totp_secret=None, totp_last_step=None, updated_at=now):
            return False
        self._codes[user_id] = {}
        return True

    async def use_totp_step(self, user_id: str, step: int) -> bool:
        user = self._users.get(user_id)
        if user is None or user.totp_secret is None:
            return False
        if user.totp_last_step is not None and user.totp_last_step >= step:
            return False
        return self._update(user_id, totp_last_step=step)

    async def use_recovery_code(self, user_id: str, code_hash: str, now: float) -> bool:
        codes = self._codes.get(user_id, {})
        if code_hash not in codes or codes[code_hash] is not None:
            return False
        codes[code_hash] = now
        return True

    async def recovery_codes_left(self, user_id: str) -> int:
        return sum(1 for used in self._codes.get(user_id, {}).values() if used is None)

    async def create_session(self, session: SessionRecord) -> None:
        if session.id_hash in self._sessions:
            raise StoreError(diagnosis="session id collision")
        self._sessions[session.id_hash] = session

    async def get_session(self, id_hash: str) -> SessionRecord | None:
        return self._sessions.get(id_hash)

    async def replace_session(self, old_id_hash: str | None, session: SessionRecord) -> None:
        if session.id_hash in self._sessions:
            raise StoreError(diagnosis="session id collision")
        if old_id_hash is not None:
            self._sessions.pop(old_id_hash, None)
        self._sessions[session.id_hash] = session

    async def touch_session(self, id_hash: str, now: float) -> None:
        session = self._sessions.get(id_hash)
        if session is not None:
            self._sessions[id_hash] = dataclasses.replace(session, last_seen=now)

    async def set_session_data(self, id_hash: str, data: dict[str, Any]) -> None:
        session = self._sessions.get(id_hash)
        if session is not None:
            self._sessions[id_hash] = dataclasses.replace(session, data=dict(data))

    async def delete_session(self, id_hash: str) -> None:
        self._sessions.pop(id_hash, None)

    async def delete_user_sessions(self, user_id: str) -> int:
        doomed = [k for k, s in self._sessions.items() if s.user_id == user_id]
        for key in doomed:
            del self._sessions[key]
        return len(doomed)

    async def purge_sessions(self, now: float) -> int:
        doomed = [k for k, s in self._sessions.items() if s.expires_at <= now]
        for key in doomed:
            del self._sessions[key]
        return len(doomed)
