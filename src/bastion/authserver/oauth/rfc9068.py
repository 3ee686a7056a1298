"""JWT access tokens (RFC 9068): what we put in them and how we check our own.

Issued tokens carry the header ``typ: at+jwt`` (§2.1) and the claims ``iss``, ``sub``, ``aud``,
``exp``, ``iat``, ``jti``, ``client_id`` and ``scope`` (§2.2); tokens from a user's login
(code and refresh grants) also ``auth_time``, ``amr`` and ``acr`` of that login (§2.2.1, see
:func:`bastion.authserver.oauth.grants.login_claims`). A client-credentials token's ``sub`` is
the client id (§2.2: no resource owner). The lifetime is the server's
``access_token_ttl`` (at most one hour).

:class:`AccessTokenVerifier` checks tokens we issued, for introspection, revocation and
``/userinfo``: size first, then the header read unverified (``typ`` and an allow-listed ``alg``,
never ``none``), then the signature against our current public keys, then ``iss`` and ``exp``,
then revocation. Every failure is one :class:`InvalidAccessToken` with an internal reason.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry, extract_compact

from bastion.authserver.oauth.ports import Signer
from bastion.core.clock import Clock

TYP = "at+jwt"
#: Algorithms our keys may use (KEYS: ES256 default, EdDSA and PS256 available).
OUR_ALGS = ("ES256", "EdDSA", "PS256")
MAX_TOKEN_BYTES = 8192


def quiet_registry(algorithms: tuple[str, ...]) -> JWSRegistry:
    """A JWS registry allowing ``algorithms`` whose ``EdDSA`` does not warn.

    joserfc emits a ``SecurityWarning`` on every use of the polymorphic name ``EdDSA`` (RFC 9864
    prefers ``Ed25519``); the issue's algorithm list names EdDSA, so it stays. Silencing the
    warning with ``warnings.catch_warnings`` is not safe: the filter list is process-wide, and
    another thread leaving its own ``catch_warnings`` block restores a list without our filter
    — under ``-W error`` the warning then became an exception in the middle of a request (the
    intermittent EdDSA failure). So this registry holds its own copy of the algorithm, without
    the warning, and nothing touches the warning filters.
    """
    registry = JWSRegistry(algorithms=list(algorithms))
    table = dict(JWSRegistry.algorithms)
    eddsa = table.get("EdDSA")
    if eddsa is not None and "EdDSA" in algorithms:
        quiet = copy.copy(eddsa)
        quiet.security_warning = None
        table["EdDSA"] = quiet
    registry.algorithms = table  # this instance only; the class-wide table is untouched
    return registry


_REGISTRY = quiet_registry(OUR_ALGS)


class InvalidAccessToken(Exception):
    """Not an active access token of ours; ``reason`` is for logs only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_jti() -> str:
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    iat: int
    exp: int


class AccessTokenIssuer:
    """Builds and signs RFC 9068 access tokens."""

    def __init__(self, signer: Signer, clock: Clock, *, issuer: str, ttl: float) -> None:
        self._signer = signer
        self._clock = clock
        self._issuer = issuer
        self._ttl = int(ttl)

    @property
    def ttl(self) -> int:
        return self._ttl

    async def issue(
        self,
        *,
        subject: str,
        client_id: str,
        audience: tuple[str, ...],
        scope: str,
        jti: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> IssuedToken:
        """Sign a token; ``jti`` may be chosen in advance (a code records it before issuing)."""
        now = int(self._clock.now())
        jti = jti or new_jti()
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": subject,
            "aud": audience[0] if len(audience) == 1 else list(audience),
            "exp": now + self._ttl,
            "iat": now,
            "jti": jti,
            "client_id": client_id,
        }
        if scope:
            claims["scope"] = scope
        if extra:
            claims.update(extra)
        token = await self._signer.sign(claims, typ=TYP)
        return IssuedToken(token, jti, now, now + self._ttl)


class AccessTokenVerifier:
    """Verifies access tokens we issued. ``is_revoked(jti)`` answers from the revocation state."""

    def __init__(
        self,
        signer: Signer,
        clock: Clock,
        *,
        issuer: str,
        is_revoked: Callable[[str, str, float | None], bool],
        is_client_revoked: Callable[[str | None, float | None], bool] | None = None,
        key_cache_ttl: float = 5.0,
        cache_size: int = 10_000,
    ) -> None:
        self._signer = signer
        self._clock = clock
        self._issuer = issuer
        self._is_revoked = is_revoked
        # A client bar (incident action "revoke an application"): every token issued to the
        # client before it. None: no such bars here (tests of the verifier alone).
        self._is_client_revoked = is_client_revoked
        self._ttl = key_cache_ttl
        self._keys: KeySet | None = None
        self._keys_at = -1e18
        self._cache: dict[str, dict[str, Any]] = {}
        self._kids: frozenset[str] = frozenset()
        self._cache_size = cache_size

    async def _key_set(self, force: bool = False) -> KeySet:
        now = self._clock.monotonic()
        age = now - self._keys_at
        # A forced reread at most once a second: unknown kids cannot make us reread per request.
        if self._keys is None or age > self._ttl or (force and age > 1.0):
            self._keys = await self._signer.public_key_set()
            self._keys_at = now
            kids = frozenset(str(k.kid) for k in self._keys.keys)
            if kids != self._kids:
                # A key withdrawn from the set must stop vouching for tokens at once.
                self._cache.clear()
                self._kids = kids
        return self._keys

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of an active token of ours, or InvalidAccessToken.

        A token whose signature was verified before is found in a bounded cache (a resource
        server introspects the same token on every request); a hit re-checks expiry and
        revocation only. Only verified tokens enter the cache, so forgeries cannot fill it.
        """
        await self._key_set()  # a changed key set (emergency rotation) empties the cache
        hit = self._cache.get(token)
        if hit is not None:
            return self._still_active(hit)
        claims = await self._verify_signed(token)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()  # simple and bounded; a refill costs one verification each
        self._cache[token] = claims
        return claims

    def _still_active(self, claims: dict[str, Any]) -> dict[str, Any]:
        if claims["exp"] <= self._clock.now():
            raise InvalidAccessToken("expired")
        iat = claims.get("iat")
        issued = float(iat) if isinstance(iat, int | float) else None
        if self._is_revoked(claims["sub"], claims["jti"], issued):
            raise InvalidAccessToken("revoked")
        client = claims.get("client_id") or claims.get("azp")
        if self._is_client_revoked is not None and self._is_client_revoked(
            client if isinstance(client, str) else None, issued
        ):
            raise InvalidAccessToken("revoked (client)")
        return claims

    async def _verify_signed(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise InvalidAccessToken("not a compact JWS")
        try:
            header = extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError) as exc:
            raise InvalidAccessToken(f"malformed: {type(exc).__name__}") from None
        if header.get("typ") not in (TYP, "application/at+jwt"):
            raise InvalidAccessToken("typ is not at+jwt")
        if header.get("alg") not in OUR_ALGS:
            raise InvalidAccessToken("alg not allowed")
        kid = header.get("kid")
        keys = await self._key_set()
        if not isinstance(kid, str) or not _has_kid(keys, kid):
            keys = await self._key_set(force=True)  # a key published since the last read
        try:
            decoded = jwt.decode(token, keys, registry=_REGISTRY)
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidAccessToken(f"signature: {type(exc).__name__}") from None
        claims = decoded.claims
        now = self._clock.now()
        exp = claims.get("exp")
        if claims.get("iss") != self._issuer:
            raise InvalidAccessToken("wrong issuer")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= now:
            raise InvalidAccessToken("expired")
        jti, sub = claims.get("jti"), claims.get("sub")
        if not isinstance(jti, str) or not isinstance(sub, str):
            raise InvalidAccessToken("jti or sub missing")
        return self._still_active(claims)


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)


def peek_claims(token: str) -> dict[str, Any] | None:
    """The payload of a compact JWS, unverified (only to tell a JWT from an opaque token)."""
    try:
        payload = orjson.loads(extract_compact(token.encode("ascii")).payload)
    except (JoseError, ValueError, UnicodeError):
        return None
    return payload if isinstance(payload, dict) else None
