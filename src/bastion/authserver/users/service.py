"""The users service the OAuth server composes: who is signed in, the login pages, accounts.

:func:`open_user_service` picks the repository for the configured store (memory, SQLite,
PostgreSQL). The OAuth server mounts :attr:`UserService.routes` as they are, asks
:meth:`UserService.current` on ``/authorize``, and sends a browser that is not signed in to
:meth:`UserService.login_url`. The administrative operations (create, lock, unlock, reset MFA)
are what ``bastion auth users`` calls.
"""

from __future__ import annotations

import logging
import re
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from bastion.authserver.http import Request, Response
from bastion.authserver.users.config import UsersConfig
from bastion.authserver.users.model import (
    ACR_MFA,
    ACR_PWD,
    AMR_MFA,
    STATE_DONE,
    USERNAME,
    Authentication,
    SessionRecord,
    UserInfo,
    UserRecord,
    normalise_username,
)
from bastion.authserver.users.passwords import MAX_PASSWORD_LENGTH, PasswordHasher
from bastion.authserver.users.repo import MemoryUserRepo, UserRepo
from bastion.authserver.users.returnto import safe_return_to
from bastion.authserver.users.sealing import TotpSealer
from bastion.authserver.users.sessions import CookieNames, hash_session_id, well_formed
from bastion.authserver.users.sql_repo import PostgresRunner, SqliteRunner, SqlUserRepo
from bastion.core.clock import Clock, SystemClock
from bastion.store.base import Store
from bastion.store.memory import MemoryStore
from bastion.store.postgres import PostgresStore
from bastion.store.sqlite import SqliteStore

log = logging.getLogger("bastion.authserver.users")


class AccountError(ValueError):
    """An account change that is not allowed (bad username, short password, bad role)."""


Handler = Callable[[Request], Awaitable[Response]]
DisableHook = Callable[[str], Awaitable[None]]
SecurityHook = Callable[[str, dict[str, Any]], None]

#: Role names: a short allow-listed alphabet (they end up in tokens).
ROLE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
#: A session is marked used at most this often (one write per minute, not per request).
TOUCH_INTERVAL = 60.0


class UserService:
    """Users, sessions and the login pages over one :class:`UserRepo`."""

    def __init__(
        self,
        config: UsersConfig,
        repo: UserRepo,
        *,
        issuer: str,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.repo = repo
        self.issuer = issuer.rstrip("/")
        self.clock: Clock = clock or SystemClock()
        self.cookies = CookieNames(secure=self.issuer.startswith("https://"))
        #: Called with a user id when the user's existing grants must end: after an
        #: administrator's lock, a password reset and an MFA reset (the OAuth server registers
        #: "revoke this user's refresh-token families and their last access tokens").
        self.on_disable: list[DisableHook] = []
        #: Called with (action, ECS fields) for security-relevant login events
        #: (``user.login_failed``, ``user.locked_out``, ``user.recovery_code_used``,
        #: ``user.disabled``); the OAuth server can publish them on the event bus. Never a
        #: password, code or attempted username in the fields.
        self.on_security_event: list[SecurityHook] = []
        self.hasher = PasswordHasher(config.password_hash)
        key = config.totp_encryption_key
        self.sealer = TotpSealer(key.get_secret_value().encode() if key is not None else None)
        if not self.sealer.encrypting:
            log.warning(
                "auth.users.totp_encryption_key is not set: TOTP keys are stored unencrypted"
            )
        from bastion.authserver.users.login import LoginPages

        #: The login, MFA and account pages, (METHOD, path) -> handler.
        self.routes: Mapping[tuple[str, str], Handler] = LoginPages(self).routes

    # -- what the OAuth server asks -------------------------------------------------------------

    async def current(self, request: Request) -> Authentication | None:
        """The finished login of the request's session cookie, or None.

        None for a missing, malformed, unknown, expired or idle session, a login still waiting
        for its second factor, a password-only login of a user whose roles now need MFA, and a
        user who is gone or locked by an administrator.
        """
        found = await self.session_of(request)
        if found is None:
            return None
        session, user = found
        if session.state != STATE_DONE:
            return None
        if AMR_MFA not in session.amr and self.mfa_required(user.roles):
            # Signed in with a password alone before MFA became required for the user's roles
            # (a config change): that login no longer counts.
            return None
        return Authentication(
            user_id=user.id,
            username=user.username,
            amr=session.amr,
            acr=ACR_MFA if AMR_MFA in session.amr else ACR_PWD,
            auth_time=session.auth_time,
        )

    def login_url(self, return_to: str) -> str:
        """Where to send a browser that must sign in first; ``return_to`` is kept only if the
        login may go back to it (see :mod:`bastion.authserver.users.returnto`)."""
        safe = safe_return_to(return_to)
        if safe is None:
            return "/login"
        return "/login?return_to=" + quote(safe, safe="")

    async def get_user(self, user_id: str) -> UserInfo | None:
        user = await self.repo.get_user(user_id)
        return user.info() if user is not None else None

    def security_event(self, action: str, **fields: Any) -> None:
        """Hand a security event to every ``on_security_event`` hook (a failing hook is logged,
        never raised into the login)."""
        for hook in list(self.on_security_event):
            try:
                hook(action, dict(fields))
            except Exception:
                log.exception("on_security_event hook failed for %s", action)

    # -- sessions -------------------------------------------------------------------------------

    def session_id_of(self, request: Request) -> str | None:
        """The request's session cookie if it is well formed (anything else is ignored)."""
        value = request.cookies().get(self.cookies.session)
        return value if well_formed(value) else None

    async def session_of(self, request: Request) -> tuple[SessionRecord, UserRecord] | None:
        """The live session of the request (any state) and its user, or None."""
        session_id = self.session_id_of(request)
        if session_id is None:
            return None
        id_hash = hash_session_id(session_id)
        session = await self.repo.get_session(id_hash)
        if session is None:
            return None
        now = self.clock.now()
        if session.expires_at <= now or now - session.last_seen > self.config.session_idle_timeout:
            await self.repo.delete_session(id_hash)
            return None
        user = await self.repo.get_user(session.user_id)
        # An administrator's lock ends sessions; a lockout after failed attempts does not
        # (else anyone who knows a username could sign its owner out by guessing wrong).
        if user is None or user.disabled:
            return None
        if now - session.last_seen >= TOUCH_INTERVAL:
            await self.repo.touch_session(id_hash, now)
        return session, user

    # -- administration (``bastion auth users``) ------------------------------------------------

    async def find_user(self, username: str) -> UserRecord | None:
        return await self.repo.find_user(normalise_username(username))

    async def list_users(self) -> list[UserRecord]:
        return await self.repo.list_users()

    def mfa_required(self, roles: tuple[str, ...]) -> bool:
        """Must a user with ``roles`` use MFA (and may not switch it off)?"""
        return any(role in self.config.mfa_required_roles for role in roles)

    def check_password(self, password: str) -> None:
        """AccountError unless ``password`` may be set (length only: NIST SP 800-63B §3.1.1.2
        advises against composition rules)."""
        if len(password) < self.config.password_min_length:
            raise AccountError(
                f"the password must have at least {self.config.password_min_length} characters"
            )
        if len(password) > MAX_PASSWORD_LENGTH:
            raise AccountError(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")

    async def create_user(
        self,
        username: str,
        password: str,
        *,
        email: str | None = None,
        name: str | None = None,
        roles: tuple[str, ...] = (),
        must_change_password: bool = False,
    ) -> UserRecord:
        """A new user; AccountError for a bad username, password or role, UserExists when the
        username is taken. A user whose roles need MFA enrols at the first login;
        ``must_change_password`` (an invitation's one-time password) makes the first login
        stop at a forced password change."""
        username = normalise_username(username)
        if not USERNAME.fullmatch(username):
            raise AccountError(
                "a username is 1-128 of a-z, 0-9 and . _ @ + - (starting with a letter or digit)"
            )
        for role in roles:
            if not ROLE.fullmatch(role):
                raise AccountError(f"role {role!r}: use 1-64 of a-z, 0-9 and _ . : -")
        self.check_password(password)
        now = self.clock.now()
        user = UserRecord(
            id=uuid.uuid4().hex,
            username=username,
            password_hash=await self.hasher.hash(password),
            created_at=now,
            updated_at=now,
            email=email or None,
            name=name or None,
            roles=tuple(dict.fromkeys(roles)),
            must_change_password=must_change_password,
        )
        await self.repo.create_user(user)
        return user

    async def set_password(self, user_id: str, password: str) -> bool:
        """Replace a user's password (AccountError if not allowed); every session ends and the
        ``on_disable`` hooks run: a reset is what an administrator does when the old password
        may be known to someone else, so whatever that someone obtained with it must stop
        working too (refresh tokens included)."""
        self.check_password(password)
        if not await self.repo.set_password_hash(
            user_id, await self.hasher.hash(password), self.clock.now()
        ):
            return False
        await self.repo.delete_user_sessions(user_id)
        self.security_event("user.password_reset", **{"user.id": user_id})
        await self._end_grants(user_id)
        return True

    async def _end_grants(self, user_id: str) -> None:
        """Run the ``on_disable`` hooks (a failing hook is logged; the caller's change stands)."""
        for hook in list(self.on_disable):
            try:
                await hook(user_id)
            except Exception:
                log.exception("on_disable hook failed for user %s", user_id)

    async def lock(self, user_id: str) -> bool:
        """An administrator's lock: no login, every session ends, then the ``on_disable`` hooks
        run (a failing hook is logged; the lock stands). False for an unknown user."""
        if not await self.repo.set_disabled(user_id, True, self.clock.now()):
            return False
        await self.repo.delete_user_sessions(user_id)
        self.security_event("user.disabled", **{"user.id": user_id})
        await self._end_grants(user_id)
        return True

    async def unlock(self, user_id: str) -> bool:
        """Lift an administrator's lock and any lockout after failed attempts."""
        return await self.repo.set_disabled(user_id, False, self.clock.now())

    async def reset_mfa(self, user_id: str) -> bool:
        """Remove TOTP and recovery codes (a lost phone); every session ends and the
        ``on_disable`` hooks run (a lost phone may be in someone else's hands, with the refresh
        tokens of its apps). A user whose role needs MFA must enrol again at the next login."""
        if not await self.repo.clear_mfa(user_id, self.clock.now()):
            return False
        await self.repo.delete_user_sessions(user_id)
        self.security_event("user.mfa_reset", **{"user.id": user_id})
        await self._end_grants(user_id)
        return True


#: One in-memory repository per MemoryStore, so every service over one store sees one set of users.
_MEMORY_REPOS: weakref.WeakKeyDictionary[MemoryStore, MemoryUserRepo] = weakref.WeakKeyDictionary()


def repo_for(store: Store) -> UserRepo:
    """The user repository that keeps its tables beside ``store``'s (TypeError for a store
    type it does not know: a programming error, caught at start-up)."""
    if isinstance(store, SqliteStore):
        return SqlUserRepo(SqliteRunner(store))
    if isinstance(store, PostgresStore):
        return SqlUserRepo(PostgresRunner(store))
    if isinstance(store, MemoryStore):
        repo = _MEMORY_REPOS.get(store)
        if repo is None:
            repo = _MEMORY_REPOS[store] = MemoryUserRepo()
        return repo
    raise TypeError(f"no user repository for {type(store).__name__}")


async def open_user_service(
    config: UsersConfig, store: Store, *, issuer: str, clock: Clock | None = None
) -> UserService:
    """The user service over an opened ``store`` (memory, SQLite or PostgreSQL; the users
    tables come with schema migration 4). Sessions that expired are purged on the way."""
    service = UserService(config, repo_for(store), issuer=issuer, clock=clock)
    await service.repo.purge_sessions(service.clock.now())
    return service
