"""The login, MFA and account pages: handlers ``Request -> Response``.

Flow: ``GET /login`` → ``POST /login`` (password) → ``/login/mfa`` (a TOTP or recovery code,
when enrolled) → ``/password/change`` (a one-time password from an invitation must be replaced)
→ ``/mfa/enroll`` (a user whose role needs MFA and has none) → signed in, back to the
``return_to`` of the login if it is an ``/authorize?…`` path, else the default page. Each step
is a session state; only the last one (``done``) is a login the OAuth endpoints accept.

Defences, each at one place:

* CSRF: every POST needs a token — the double-submit cookie before there is a session, the
  session-bound token after (:mod:`.sessions`) — compared in constant time; a cross-site
  ``Origin`` or ``Sec-Fetch-Site`` is refused as well.
* No user enumeration: an unknown user, a wrong password, a locked or disabled account all get
  the same page and status after the same argon2 work (a dummy hash for unknown users).
* Brute force: each attempt (password or second factor) is counted before its secret is checked
  (:meth:`UserRepo.reserve_attempt`); at the threshold the account locks for the configured time.
  Form submissions are throttled per client IP (GCRA) before any of that.
* Session fixation: every privilege change (password accepted, second factor accepted,
  password changed, TOTP enrolled) issues a new session id and deletes the old one.
* One-time passwords: the forced change comes after the second factor (the one-time password
  alone cannot set a password on an account with TOTP), refuses the same password again, and
  ends every other session of the user.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from ipaddress import IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bastion.authserver.http import DuplicateParameter, Request, Response, html_response, redirect
from bastion.authserver.users import pages
from bastion.authserver.users.mfa import (
    hash_recovery_code,
    match_totp,
    new_recovery_codes,
    new_totp_secret,
    provisioning_uri,
    qr_data_uri,
)
from bastion.authserver.users.model import (
    ACR_MFA,
    ACR_PWD,
    AMR_MFA,
    AMR_OTP,
    AMR_PWD,
    STATE_DONE,
    STATE_ENROLL,
    STATE_MFA,
    STATE_PASSWORD,
    SessionRecord,
    UserRecord,
    normalise_username,
)
from bastion.authserver.users.passwords import MAX_PASSWORD_LENGTH
from bastion.authserver.users.returnto import safe_return_to
from bastion.authserver.users.sessions import (
    hash_session_id,
    new_token,
    session_csrf,
    tokens_equal,
    well_formed,
)
from bastion.core.clientip import parse_ip
from bastion.core.gcra import LocalLimiter

if TYPE_CHECKING:
    from bastion.authserver.users.service import UserService

log = logging.getLogger("bastion.authserver.users")

Handler = Callable[[Request], Awaitable[Response]]

#: The one message of every failed password login (unknown user, wrong password, locked).
LOGIN_FAILED = "Sign-in failed. Check your username and password, or try again later."
CODE_FAILED = "That code was not accepted. Try again, or use a recovery code."
PASSWORD_FAILED = "That password was not accepted."  # noqa: S105 - a message, not a password
#: Usernames longer than this cannot exist (the store's column is 128; this bounds the work).
MAX_USERNAME_LENGTH = 256
#: Expired sessions are deleted at most this often (s), on a login form submission.
PURGE_INTERVAL = 600.0
#: A user id that never exists, for the attempt counter's equal work on unknown usernames.
_NO_USER = "-"


def throttle_key(client_ip: str) -> str:
    """What the per-IP throttle counts: an IPv4 address, or the /64 of an IPv6 address (one
    subscriber's allocation: an attacker there has 2^64 addresses to rotate through, not one
    each). Anything unparsable shares one key."""
    addr = parse_ip(client_ip)
    if addr is None:
        return "-"
    if isinstance(addr, IPv6Address):
        return str(IPv6Network((addr, 64), strict=False))
    return str(addr)


def origin_of(url: str) -> str:
    """The RFC 6454 ASCII serialisation browsers send in ``Origin``: scheme, host, and the port
    only when it is not the scheme's default."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or (scheme, port) in (("https", 443), ("http", 80)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class BadForm(Exception):
    """A form with a repeated field: answered 400."""


class LoginPages:
    """The handlers of one :class:`UserService`; ``routes`` maps (METHOD, path) to them."""

    def __init__(self, service: UserService) -> None:
        self.s = service
        cfg = service.config
        self.hasher = service.hasher
        self.limiter = LocalLimiter(
            cfg.login_rate.emission_interval, cfg.login_rate.effective_burst, max_keys=100_000
        )
        self._last_purge = service.clock.monotonic()
        self.origin = origin_of(service.issuer)
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/login"): self.login_form,
            ("POST", "/login"): self.login_submit,
            ("GET", "/login/mfa"): self.mfa_form,
            ("POST", "/login/mfa"): self.mfa_submit,
            ("GET", "/mfa/enroll"): self.enroll_form,
            ("POST", "/mfa/enroll"): self.enroll_submit,
            ("POST", "/mfa/disable"): self.mfa_disable,
            ("GET", "/password/change"): self.password_form,
            ("POST", "/password/change"): self.password_submit,
            ("POST", "/logout"): self.logout,
            ("GET", "/account"): self.account,
        }

    # -- helpers -------------------------------------------------------------------------------

    def _throttled(self, request: Request) -> Response | None:
        """The per-IP GCRA on form submissions; a 429 page when over the rate."""
        res = self.limiter.check(throttle_key(request.client_ip), self.s.clock.monotonic())
        if res.allowed:
            return None
        retry = max(1, int(res.retry_after + 0.999))
        return html_response(
            429,
            pages.message_page("Too many attempts", "Too many attempts. Wait a moment."),
            extra=(("retry-after", str(retry)),),
        )

    def _cross_site(self, request: Request) -> bool:
        """A POST whose browser says it came from another site (defence beside the token)."""
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != self.origin:
            return True
        return request.headers.get("sec-fetch-site", "same-origin") not in (
            "same-origin",
            "none",
        )

    @staticmethod
    def _form(request: Request, *names: str) -> dict[str, str]:
        """The named form fields ('' when absent); BadForm for a repeated one."""
        try:
            return {name: request.form_param(name) or "" for name in names}
        except DuplicateParameter as exc:
            raise BadForm(exc.name) from None

    def _refused(self, status: int, message: str) -> Response:
        return html_response(status, pages.message_page("Request refused", message))

    def _csrf_refused(self) -> Response:
        return self._refused(403, "The form expired or did not come from this site. Try again.")

    def _destination(self, session: SessionRecord) -> str:
        return safe_return_to(session.data.get("return_to")) or self.s.config.default_page

    async def _new_session(
        self,
        request: Request,
        user: UserRecord,
        *,
        state: str,
        amr: tuple[str, ...],
        data: dict[str, Any],
    ) -> tuple[str, SessionRecord]:
        """A new session id for ``user`` replacing whatever session the request had."""
        now = self.s.clock.now()
        cfg = self.s.config
        lifetime = cfg.session_lifetime if state == STATE_DONE else cfg.mfa_step_timeout
        session_id = new_token()
        record = SessionRecord(
            id_hash=hash_session_id(session_id),
            user_id=user.id,
            state=state,
            amr=amr,
            auth_time=now,
            created_at=now,
            expires_at=now + lifetime,
            last_seen=now,
            data=data,
        )
        old = self.s.session_id_of(request)
        await self.s.repo.replace_session(hash_session_id(old) if old else None, record)
        return session_id, record

    def _signed_in(self, session_id: str, record: SessionRecord, location: str) -> Response:
        max_age = int(record.expires_at - record.created_at)
        return redirect(location, extra=(self.s.cookies.set_session(session_id, max_age),))

    async def _session(
        self, request: Request, *states: str
    ) -> tuple[str, SessionRecord, UserRecord] | None:
        found = await self.s.session_of(request)
        session_id = self.s.session_id_of(request)
        if found is None or session_id is None or found[0].state not in states:
            return None
        return session_id, found[0], found[1]

    def _session_csrf_ok(self, request: Request, session_id: str, given: str) -> bool:
        return not self._cross_site(request) and tokens_equal(session_csrf(session_id), given)

    async def _count_attempt(self, user: UserRecord, ip: str) -> bool:
        cfg = self.s.config
        grant = await self.s.repo.reserve_attempt(
            user.id, self.s.clock.now(), cfg.lockout_threshold, cfg.lockout_duration
        )
        if grant.allowed and grant.count >= cfg.lockout_threshold:
            log.warning("user %s reached %d failed attempts: locked", user.id, grant.count)
            self.s.security_event(
                "user.locked_out", **{"user.id": user.id, "source.ip": ip, "attempts": grant.count}
            )
        return grant.allowed

    async def _second_factor_ok(
        self, user: UserRecord, code: str, recovery: str, ip: str
    ) -> str | None:
        """Check a TOTP or recovery code; the amr factor it proves, or None."""
        now = self.s.clock.now()
        if code and user.totp_secret:
            secret = self.s.sealer.open(user.totp_secret, user_id=user.id, purpose="totp")
            if secret is None:
                return None
            step = match_totp(secret, code, now, self.s.config.totp_valid_window)
            if step is not None and await self.s.repo.use_totp_step(user.id, step):
                return AMR_OTP
            return None
        if recovery:
            code_hash = hash_recovery_code(recovery)
            if code_hash is not None and await self.s.repo.use_recovery_code(
                user.id, code_hash, now
            ):
                log.info("user %s used a recovery code", user.id)
                self.s.security_event(
                    "user.recovery_code_used", **{"user.id": user.id, "source.ip": ip}
                )
                return AMR_MFA
        return None

    # -- login ---------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        """The form; sets the double-submit CSRF cookie unless a good one is there."""
        try:
            return_to = safe_return_to(request.param("return_to"))
        except DuplicateParameter:
            return_to = None
        token = request.cookies().get(self.s.cookies.csrf)
        extra: tuple[tuple[str, str], ...] = ()
        if not well_formed(token) or token is None:
            token = new_token()
            extra = (self.s.cookies.set_csrf(token),)
        return html_response(200, pages.login_page(csrf=token, return_to=return_to), extra=extra)

    async def login_submit(self, request: Request) -> Response:
        if (throttled := self._throttled(request)) is not None:
            return throttled
        try:
            form = self._form(request, "csrf_token", "username", "password", "return_to")
        except BadForm:
            return self._refused(400, "The form was malformed.")
        cookie = request.cookies().get(self.s.cookies.csrf)
        if (
            self._cross_site(request)
            or not well_formed(cookie)
            or cookie is None
            or not tokens_equal(cookie, form["csrf_token"])
        ):
            return self._csrf_refused()
        return_to = safe_return_to(form["return_to"])
        await self._purge_now_and_then()
        user = await self._password_ok(form["username"], form["password"], request.client_ip)
        if user is None:
            page = pages.login_page(csrf=cookie, return_to=return_to, error=LOGIN_FAILED)
            return html_response(200, page)
        data: dict[str, Any] = {"return_to": return_to} if return_to else {}
        if user.totp_secret:
            sid, rec = await self._new_session(request, user, state=STATE_MFA, amr=(), data=data)
            return self._signed_in(sid, rec, "/login/mfa")
        return await self._after_factors(request, user, (AMR_PWD,), data)

    async def _after_factors(
        self, request: Request, user: UserRecord, amr: tuple[str, ...], data: dict[str, Any]
    ) -> Response:
        """The step after the factors the user has (password, and TOTP when enrolled): a
        forced password change, then a TOTP enrolment the roles need, then signed in."""
        if user.must_change_password:
            sid, rec = await self._new_session(
                request, user, state=STATE_PASSWORD, amr=amr, data=data
            )
            return self._signed_in(sid, rec, "/password/change")
        if not user.totp_secret and self.s.mfa_required(user.roles):
            sid, rec = await self._new_session(
                request, user, state=STATE_ENROLL, amr=amr, data=data
            )
            return self._signed_in(sid, rec, "/mfa/enroll")
        sid, rec = await self._new_session(request, user, state=STATE_DONE, amr=amr, data=data)
        log.info("user %s signed in (%s)", user.id, ",".join(amr))
        return self._signed_in(sid, rec, self._destination(rec))

    async def _purge_now_and_then(self) -> None:
        """Delete expired sessions (abandoned logins) at most once per PURGE_INTERVAL."""
        now = self.s.clock.monotonic()
        if now - self._last_purge >= PURGE_INTERVAL:
            self._last_purge = now
            await self.s.repo.purge_sessions(self.s.clock.now())

    async def _password_ok(self, raw_username: str, password: str, ip: str) -> UserRecord | None:
        """The user if ``password`` is theirs and they may sign in; else None after the same
        work (one attempt count, one argon2 verification) whatever the reason."""
        user = None
        if 0 < len(raw_username) <= MAX_USERNAME_LENGTH:
            user = await self.s.repo.find_user(normalise_username(raw_username))
        if user is None:
            # Same round trip to the store as a known user's attempt count (it matches no row).
            await self.s.repo.reserve_attempt(_NO_USER, self.s.clock.now(), 1, 0.0)
            await self.hasher.verify_dummy(password)
            log.info("login failed: unknown username")
            # The attempted name is not reported: people type passwords into it.
            self.s.security_event("user.login_failed", **{"source.ip": ip, "reason": "unknown"})
            return None
        if not await self._count_attempt(user, ip):
            await self.hasher.verify_dummy(password)
            log.info("login refused: user %s is locked", user.id)
            self._failed(user, ip, "locked")
            return None
        if not password or len(password) > MAX_PASSWORD_LENGTH:
            await self.hasher.verify_dummy(password)
            self._failed(user, ip, "password")
            return None
        if not await self.hasher.verify(user.password_hash, password):
            log.info("login failed: wrong password for user %s", user.id)
            self._failed(user, ip, "password")
            return None
        now = self.s.clock.now()
        if user.totp_secret:
            # Not signed in yet: the count is reset only when the second factor is right too.
            await self.s.repo.release_attempt(user.id, self.s.config.lockout_threshold)
        else:
            await self.s.repo.clear_failures(user.id, now)
        if self.hasher.needs_rehash(user.password_hash):
            await self.s.repo.set_password_hash(user.id, await self.hasher.hash(password), now)
            log.info("password hash of user %s re-made with the current parameters", user.id)
        return user

    def _failed(self, user: UserRecord, ip: str, reason: str) -> None:
        self.s.security_event(
            "user.login_failed", **{"user.id": user.id, "source.ip": ip, "reason": reason}
        )

    # -- second factor -------------------------------------------------------------------------

    async def mfa_form(self, request: Request) -> Response:
        found = await self._session(request, STATE_MFA)
        if found is None:
            return redirect("/login")
        return html_response(200, pages.mfa_page(csrf=session_csrf(found[0])))

    async def mfa_submit(self, request: Request) -> Response:
        if (throttled := self._throttled(request)) is not None:
            return throttled
        found = await self._session(request, STATE_MFA)
        if found is None:
            return redirect("/login")
        session_id, session, user = found
        try:
            form = self._form(request, "csrf_token", "code", "recovery_code")
        except BadForm:
            return self._refused(400, "The form was malformed.")
        if not self._session_csrf_ok(request, session_id, form["csrf_token"]):
            return self._csrf_refused()
        if not await self._count_attempt(user, request.client_ip):
            await self.s.repo.delete_session(session.id_hash)
            return html_response(
                200, pages.message_page("Sign-in failed", LOGIN_FAILED), extra=self._clear()
            )
        factor = await self._second_factor_ok(
            user, form["code"], form["recovery_code"], request.client_ip
        )
        if factor is None:
            log.info("second factor refused for user %s", user.id)
            self._failed(user, request.client_ip, "second_factor")
            return html_response(
                200, pages.mfa_page(csrf=session_csrf(session_id), error=CODE_FAILED)
            )
        await self.s.repo.clear_failures(user.id, self.s.clock.now())
        amr = (AMR_PWD, AMR_OTP, AMR_MFA) if factor == AMR_OTP else (AMR_PWD, AMR_MFA)
        return await self._after_factors(request, user, amr, session.data)

    # -- forced password change ----------------------------------------------------------------

    async def password_form(self, request: Request) -> Response:
        found = await self._session(request, STATE_PASSWORD)
        if found is None:
            return redirect("/login")
        return html_response(200, pages.password_change_page(csrf=session_csrf(found[0])))

    async def password_submit(self, request: Request) -> Response:
        """Replace the one-time password: twice the same new one, allowed by the policy, not
        the old one. Then every other session of the user ends and the login goes on."""
        if (throttled := self._throttled(request)) is not None:
            return throttled
        found = await self._session(request, STATE_PASSWORD)
        if found is None:
            return redirect("/login")
        session_id, session, user = found
        try:
            form = self._form(request, "csrf_token", "new_password", "confirm_password")
        except BadForm:
            return self._refused(400, "The form was malformed.")
        if not self._session_csrf_ok(request, session_id, form["csrf_token"]):
            return self._csrf_refused()
        new, confirm = form["new_password"], form["confirm_password"]

        def again(message: str) -> Response:
            page = pages.password_change_page(csrf=session_csrf(session_id), error=message)
            return html_response(200, page)

        if not tokens_equal(new, confirm):
            return again("The two passwords differ.")
        try:
            self.s.check_password(new)
        except ValueError as exc:  # AccountError: the policy (length)
            return again(f"Choose another password: {exc}.")
        if await self.hasher.verify(user.password_hash, new):
            return again("Choose a new password, not the one you were given.")
        now = self.s.clock.now()
        if not await self.s.repo.set_password_hash(
            user.id, await self.hasher.hash(new), now, must_change=False
        ):
            return redirect("/login", extra=self._clear())
        # Whoever else signed in with the one-time password is signed out.
        await self.s.repo.delete_user_sessions(user.id)
        log.info("user %s replaced the one-time password", user.id)
        self.s.security_event("user.password_changed", **{"user.id": user.id})
        changed = await self.s.repo.get_user(user.id)
        if changed is None or changed.must_change_password:
            return redirect("/login", extra=self._clear())
        return await self._after_factors(request, changed, session.amr, session.data)

    def _clear(self) -> tuple[tuple[str, str], ...]:
        return (self.s.cookies.clear_session(),)

    # -- enrolment -----------------------------------------------------------------------------

    async def enroll_form(self, request: Request) -> Response:
        found = await self._session(request, STATE_ENROLL, STATE_DONE)
        if found is None:
            return redirect("/login")
        session_id, session, user = found
        if user.totp_secret:
            return redirect(self.s.config.default_page)
        secret = self._pending(session, user)
        if secret is None:
            secret = new_totp_secret()
            sealed = self.s.sealer.seal(secret, user_id=user.id, purpose="pending")
            await self.s.repo.set_session_data(
                session.id_hash, {**session.data, "totp_pending": sealed}
            )
        return html_response(200, self._enroll_page(session_id, session, user, secret, None))

    def _pending(self, session: SessionRecord, user: UserRecord) -> str | None:
        """The TOTP key being enrolled in this session, if any."""
        stored = session.data.get("totp_pending")
        if not isinstance(stored, str):
            return None
        return self.s.sealer.open(stored, user_id=user.id, purpose="pending")

    def _enroll_page(
        self,
        session_id: str,
        session: SessionRecord,
        user: UserRecord,
        secret: str,
        error: str | None,
    ) -> str:
        uri = provisioning_uri(secret, user.username, self.s.config.totp_issuer)
        return pages.enroll_page(
            csrf=session_csrf(session_id),
            qr_data_uri=qr_data_uri(uri),
            secret=secret,
            required=session.state == STATE_ENROLL,
            error=error,
            ask_password=session.state == STATE_DONE,
        )

    async def enroll_submit(self, request: Request) -> Response:
        if (throttled := self._throttled(request)) is not None:
            return throttled
        found = await self._session(request, STATE_ENROLL, STATE_DONE)
        if found is None:
            return redirect("/login")
        session_id, session, user = found
        try:
            form = self._form(request, "csrf_token", "code", "password")
        except BadForm:
            return self._refused(400, "The form was malformed.")
        if not self._session_csrf_ok(request, session_id, form["csrf_token"]):
            return self._csrf_refused()
        secret = self._pending(session, user)
        if user.totp_secret or secret is None:
            return redirect("/mfa/enroll")
        if session.state == STATE_DONE:
            # ASVS V3.7.1: binding a new factor in a session that signed in earlier needs the
            # password again, or whoever took over the session (a stolen cookie, an unlocked
            # screen) binds their own authenticator and keeps the account.
            refused = await self._reauthenticate(request, user, form["password"])
            if refused is not None:
                page = self._enroll_page(session_id, session, user, secret, refused)
                return html_response(200, page)
        now = self.s.clock.now()
        step = match_totp(secret, form["code"], now, self.s.config.totp_valid_window)
        if step is None:
            page = self._enroll_page(session_id, session, user, secret, CODE_FAILED)
            return html_response(200, page)
        codes = new_recovery_codes(self.s.config.recovery_codes)
        hashes = [h for h in (hash_recovery_code(c) for c in codes) if h is not None]
        sealed = self.s.sealer.seal(secret, user_id=user.id, purpose="totp")
        await self.s.repo.enable_totp(user.id, sealed, step, hashes, now)
        data = {k: v for k, v in session.data.items() if k != "totp_pending"}
        sid, rec = await self._new_session(
            request, user, state=STATE_DONE, amr=(AMR_PWD, AMR_OTP, AMR_MFA), data=data
        )
        log.info("user %s enrolled TOTP", user.id)
        page = pages.recovery_codes_page(codes=codes, continue_to=self._destination(rec))
        max_age = int(rec.expires_at - rec.created_at)
        return html_response(200, page, extra=(self.s.cookies.set_session(sid, max_age),))

    async def _reauthenticate(
        self, request: Request, user: UserRecord, password: str
    ) -> str | None:
        """Check the signed-in user's password again; None when right, else the message to
        show. Counted like a login attempt (lockout after the threshold)."""
        if not await self._count_attempt(user, request.client_ip):
            return PASSWORD_FAILED
        if (
            not password
            or len(password) > MAX_PASSWORD_LENGTH
            or not await self.hasher.verify(user.password_hash, password)
        ):
            log.info("re-authentication failed for user %s", user.id)
            self._failed(user, request.client_ip, "password")
            return PASSWORD_FAILED
        await self.s.repo.release_attempt(user.id, self.s.config.lockout_threshold)
        return None

    async def mfa_disable(self, request: Request) -> Response:
        """Switch TOTP off: needs a current code; refused for roles that require MFA."""
        if (throttled := self._throttled(request)) is not None:
            return throttled
        found = await self._session(request, STATE_DONE)
        if found is None:
            return redirect("/login")
        session_id, _session, user = found
        try:
            form = self._form(request, "csrf_token", "code")
        except BadForm:
            return self._refused(400, "The form was malformed.")
        if not self._session_csrf_ok(request, session_id, form["csrf_token"]):
            return self._csrf_refused()
        if self.s.mfa_required(user.roles):
            return self._refused(403, "Two-step verification is required for your account.")
        if not user.totp_secret:
            return redirect(self.s.config.default_page)
        if (
            not await self._count_attempt(user, request.client_ip)
            or await self._second_factor_ok(user, form["code"], "", request.client_ip) is None
        ):
            return self._refused(403, CODE_FAILED)
        now = self.s.clock.now()
        await self.s.repo.clear_failures(user.id, now)
        await self.s.repo.clear_mfa(user.id, now)
        await self.s.repo.delete_user_sessions(user.id)
        log.info("user %s switched TOTP off", user.id)
        return redirect("/login", extra=self._clear())

    # -- signed in -----------------------------------------------------------------------------

    async def logout(self, request: Request) -> Response:
        found = await self._session(request, STATE_MFA, STATE_ENROLL, STATE_PASSWORD, STATE_DONE)
        if found is not None:
            session_id, session, _user = found
            try:
                form = self._form(request, "csrf_token")
            except BadForm:
                return self._refused(400, "The form was malformed.")
            if not self._session_csrf_ok(request, session_id, form["csrf_token"]):
                return self._csrf_refused()
            await self.s.repo.delete_session(session.id_hash)
        return redirect("/login", extra=self._clear())

    async def account(self, request: Request) -> Response:
        found = await self._session(request, STATE_DONE)
        if found is None:
            return redirect("/login")
        session_id, session, user = found
        page = pages.account_page(
            csrf=session_csrf(session_id),
            username=user.username,
            totp=user.totp_secret is not None,
            codes_left=await self.s.repo.recovery_codes_left(user.id),
            may_disable=not self.s.mfa_required(user.roles),
            acr=ACR_MFA if AMR_MFA in session.amr else ACR_PWD,
        )
        return html_response(200, page)
