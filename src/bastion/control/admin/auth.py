"""Who is calling the admin API: access tokens of our authorization server, checked strictly.

:class:`AdminTokenVerifier` accepts a bearer token only when every check passes, in this order:
size and shape, the header read unverified (``typ`` ``at+jwt``, an allow-listed ``alg``, never
``none`` or HMAC), the signature against the issuer's public keys (the in-process KeyManager's
``public_key_set`` or the issuer's JWKS), ``iss``, ``aud`` (the admin API's own audience: a
token minted for another API is refused), ``exp``/``nbf``/``iat``, revocation, and ``amr``
naming a second factor (RFC 8176). Any failure before ``amr`` is one opaque ``authn.failed``;
the reason goes to ``diagnosis`` (logs) only. A token without MFA gets ``admin.mfa_required``.

:func:`require_recent_login` is the step-up rule of destructive operations: ``auth_time`` at
most :data:`STEP_UP_MAX_AGE` seconds ago (RFC 9470's ``max_age``).
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry, extract_compact

from bastion.control.admin.errors import MfaRequired, StepUpRequired
from bastion.control.admin.roles import admin_roles
from bastion.core.clock import Clock
from bastion.errors import AuthenticationFailed

#: Algorithms our authorization server signs with; nothing else is even tried.
ALLOWED_ALGS = ("ES256", "EdDSA", "PS256")
TOKEN_TYPES = ("at+jwt", "application/at+jwt")
MAX_TOKEN_BYTES = 8192
#: RFC 8176 methods that are a second factor (or several): one of them must be in ``amr``.
MFA_METHODS = frozenset({"mfa", "otp", "hwk", "sc", "swk"})
#: Step-up: destructive operations need a login at most this old (seconds).
STEP_UP_MAX_AGE = 600.0
#: Clock skew tolerated on ``iat``, ``nbf`` and ``auth_time`` (seconds).
LEEWAY = 30.0
#: The longest list accepted in ``roles``, ``groups`` or ``amr`` (a token is small).
MAX_CLAIM_ITEMS = 64

_REGISTRY = JWSRegistry(algorithms=list(ALLOWED_ALGS))
_CHALLENGE = 'Bearer realm="bastion-admin"'

KeySource = Callable[[], Awaitable[KeySet]]
RevocationCheck = Callable[[dict[str, Any]], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    """An authenticated administrator. ``roles`` holds only admin roles; ``owners`` is what an
    application's ``owner`` must equal for a developer to touch it (``sub`` and ``groups``)."""

    sub: str
    roles: frozenset[str]
    owners: frozenset[str]
    amr: tuple[str, ...]
    auth_time: float | None
    jti: str | None
    client_id: str | None

    def owns(self, owner: str) -> bool:
        return owner in self.owners


def _fail(reason: str) -> AuthenticationFailed:
    return AuthenticationFailed(
        diagnosis=f"admin token: {reason}", headers=[("www-authenticate", _CHALLENGE)]
    )


def _str_list(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # RFC 9068 §2.2.3.1 allows a space-separated string for roles
        value = value.split()
    if not isinstance(value, list) or len(value) > MAX_CLAIM_ITEMS:
        raise _fail(f"{name} is not a short list")
    if not all(isinstance(v, str) and 0 < len(v) <= 256 for v in value):
        raise _fail(f"{name} holds a non-string")
    return tuple(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class AdminTokenVerifier:
    """Verifies admin access tokens. ``keys()`` returns the issuer's current public keys (it
    is asked again, at most once a second, when a token names an unknown ``kid``);
    ``is_revoked(claims)`` answers from the revocation state (None: nothing is revoked)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: KeySource,
        clock: Clock,
        is_revoked: RevocationCheck | None = None,
        allowed_clients: frozenset[str] = frozenset(),
    ) -> None:
        if not issuer or not audience:
            raise ValueError("the admin API needs an issuer and an audience")
        self.issuer = issuer
        self.audience = audience
        self._keys = keys
        self._clock = clock
        self._is_revoked = is_revoked
        self._allowed_clients = allowed_clients

    async def authenticate(self, authorization: str | None) -> AdminPrincipal:
        """The principal of an ``Authorization`` header value; AuthenticationFailed (opaque) or
        MfaRequired. ``roles`` holds the admin roles of the token's ``roles`` claim (possibly
        none: the caller decides whether a user directory supplies them instead)."""
        token = _bearer(authorization)
        claims = await self._verified_claims(token)
        amr = _str_list(claims.get("amr"), "amr")
        if MFA_METHODS.isdisjoint(amr):
            raise MfaRequired(
                "sign in again with a second factor",
                diagnosis=f"admin token of {claims['sub']!r} without MFA (amr={list(amr)})",
                headers=[
                    ("www-authenticate", f'{_CHALLENGE}, error="insufficient_user_authentication"')
                ],
            )
        roles = admin_roles(_str_list(claims.get("roles"), "roles"))
        groups = _str_list(claims.get("groups"), "groups")
        jti, client_id = claims.get("jti"), claims.get("client_id")
        return AdminPrincipal(
            sub=claims["sub"],
            roles=roles,
            owners=frozenset((claims["sub"], *groups)),
            amr=amr,
            auth_time=_number(claims.get("auth_time")),
            jti=jti if isinstance(jti, str) else None,
            client_id=client_id if isinstance(client_id, str) else None,
        )

    async def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError):
            raise _fail("malformed") from None
        if header.get("typ") not in TOKEN_TYPES:
            raise _fail("typ is not at+jwt")
        alg = header.get("alg")
        if alg not in ALLOWED_ALGS:
            raise _fail("alg not allowed")
        keys = await self._keys()
        kid = header.get("kid")
        if not isinstance(kid, str) or all(k.kid != kid for k in keys.keys):
            raise _fail("unknown kid")
        try:
            with warnings.catch_warnings():
                # EdDSA is the polymorphic name joserfc warns about; our keys use it.
                warnings.simplefilter("ignore", SecurityWarning)
                claims = jwt.decode(token, keys, registry=_REGISTRY).claims
        except (JoseError, ValueError, TypeError) as exc:
            raise _fail(f"signature: {type(exc).__name__}") from None
        self._check_claims(claims)
        if self._is_revoked is not None and await self._is_revoked(claims):
            raise _fail("revoked")
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        now = self._clock.now()
        if claims.get("iss") != self.issuer:
            raise _fail("wrong issuer")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.audience not in audiences:
            raise _fail("wrong audience")
        exp = _number(claims.get("exp"))
        if exp is None or exp <= now:
            raise _fail("expired or no exp")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            when = _number(value)
            if when is None or when > now + LEEWAY:
                raise _fail(f"{name} in the future")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 0 < len(sub) <= 256:
            raise _fail("no sub")
        if self._allowed_clients and claims.get("client_id") not in self._allowed_clients:
            raise _fail("client not allowed")


def _bearer(authorization: str | None) -> str:
    if authorization is None:
        raise _fail("no Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token or " " in token:
        raise _fail("not a bearer token")
    if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise _fail("not a compact JWS")
    return token


def require_recent_login(principal: AdminPrincipal, now: float) -> None:
    """StepUpRequired unless the principal signed in at most :data:`STEP_UP_MAX_AGE` s ago.
    A token without ``auth_time``, or one in the future, fails closed."""
    at = principal.auth_time
    if at is None or at > now + LEEWAY or now - at > STEP_UP_MAX_AGE:
        raise StepUpRequired(
            "this operation needs a login within the last 10 minutes",
            diagnosis=f"step-up: auth_time={at} now={now:.0f} for {principal.sub!r}",
            headers=[
                (
                    "www-authenticate",
                    f'{_CHALLENGE}, error="insufficient_user_authentication", '
                    f'max_age="{int(STEP_UP_MAX_AGE)}"',
                )
            ],
        )
