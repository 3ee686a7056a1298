"""JWT access-token verification for the gateway, cheapest checks first.

Order of :meth:`JwtVerifier.verify` (every step can reject; the first costly one is the
signature, ~115 µs, so everything an attacker controls for free is checked before it):

1. size limit (no parsing at all);
2. verified-token cache: a hit re-checks only ``exp``, route issuer/audience and revocation
   (dict and set lookups, ~1 µs);
3. structure (three base64url segments), then header and payload read *unverified* with
   :func:`joserfc.jws.extract_compact`: ``iss`` configured and allowed on the route, ``alg`` in
   that issuer's allow-list (``none`` never), ``typ`` if present, ``crit`` and the types of
   registered header parameters, key set available, ``kid`` known (else one rate-limited JWKS refetch), key type
   matching ``alg`` (an HMAC issuer never meets an RSA key and vice versa);
4. the caller's per-IP verify budget (``before_crypto``);
5. the signature (:func:`joserfc.jwt.decode` with the one key and ``algorithms=[alg]``);
6. claims: ``iss``, ``sub``, ``aud``, ``exp`` required; ``nbf``/``iat`` within the issuer's
   leeway; ``aud`` holding the route's audience (or one of the issuer's); revocation;
7. the principal is cached until ``min(exp + leeway, now + cache_ttl)``. Key rotation clears
   the cache.

Every failure raises :class:`TokenRejected` whose ``reason`` is a short internal diagnosis for
the audit record (never the token, never key material).

:meth:`JwtVerifier.verify_now` runs the same steps synchronously and returns None only where
I/O is needed (an unknown ``kid`` that a JWKS refetch may resolve); :meth:`JwtVerifier.verify`
awaits that refetch. Both decide alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jws
from joserfc import jwt as jose_jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry

from bastion.core.clock import Clock
from bastion.core.exchange import Principal
from bastion.core.revocation import RevocationState
from bastion.errors import ConfigError
from bastion.events.freshness import GuardedRevocationState
from bastion.gateway.layers.authn.config import IssuerConfig
from bastion.gateway.layers.authn.jwks import JwksKeys

__all__ = ["JwtVerifier", "TokenRejected"]

_KEY_TYPE_FOR_ALG = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), "RSA"),
    **dict.fromkeys(("ES256", "ES384", "ES512"), "EC"),
    "EdDSA": "OKP",
    **dict.fromkeys(("HS256", "HS384", "HS512"), "oct"),
}
_ACCEPTED_TYP = frozenset({"at+jwt", "application/at+jwt", "jwt"})
_ACCESS_TOKEN_TYP = frozenset({"at+jwt", "application/at+jwt"})
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", re.ASCII)
_CLAIM_REASONS = {
    "nbf": "jwt: not yet valid",
    "iat": "jwt: issued in the future",
    "iss": "jwt: wrong issuer",
    "aud": "jwt: wrong audience",
    "exp": "jwt: bad exp",
}


#: The node cannot vouch for its revocation lists (distributed mode, outage): fail closed.
STATE_NOT_CURRENT = "jwt: revocation state not current"
#: Keys unavailable: the JWKS endpoint has been failing for longer than the stale limit.
KEYS_UNAVAILABLE = "jwt: keys unavailable"


class TokenRejected(Exception):
    """A token was refused; ``reason`` (e.g. ``"jwt: expired"``) is for the audit record only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Issuer:
    config: IssuerConfig
    keys: JwksKeys
    algorithms: frozenset[str]
    audiences: frozenset[str]
    registries: dict[str, JWSRegistry]


class _Entry:
    """A verified token: its principal, ``expires`` (exp + leeway), the cache ``deadline``, its
    issuer, the audiences it holds, ``iat``, and ``revocations``: the revocation state's
    version when the token was last found not revoked (-1: check on every hit)."""

    def __init__(
        self,
        principal: Principal,
        expires: float,
        deadline: float,
        issuer: _Issuer,
        auds: frozenset[str],
        iat: float | None,
        revocations: int,
    ) -> None:
        self.principal = principal
        self.expires = expires
        self.deadline = deadline
        self.issuer = issuer
        self.auds = auds
        self.iat = iat
        self.revocations = revocations


def _version_exact(revocations: RevocationState) -> bool:
    """Whether a "not revoked" answer of ``revocations`` holds while its ``version`` is
    unchanged (see :attr:`RevocationState.version`): its per-token lookups are the base class's,
    or the guarded state's, which adds only a refusal while stale, and staleness is asked of
    ``current()`` on every cache hit anyway."""
    cls = type(revocations)
    return (
        cls.is_token_revoked is RevocationState.is_token_revoked
        or cls.is_token_revoked is GuardedRevocationState.is_token_revoked
    ) and cls.is_client_revoked is RevocationState.is_client_revoked


def _audience_ok(token_auds: frozenset[str], audience: str | None, issuer: _Issuer) -> bool:
    if audience is not None:
        return audience in token_auds
    return not issuer.audiences or not issuer.audiences.isdisjoint(token_auds)


def _str_set(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    return frozenset()


def _principal(claims: dict[str, Any], iss: str) -> Principal:
    scope = claims.get("scope")
    scopes = _str_set(scope) if scope is not None else _str_set(claims.get("scp"))
    roles = claims.get("roles", [])
    client_id = claims.get("client_id") or claims.get("azp")
    jti = claims.get("jti")
    return Principal(
        kind="jwt",
        subject=claims["sub"],
        client_id=client_id if isinstance(client_id, str) else None,
        scopes=scopes,
        roles=_str_set(roles) if isinstance(roles, list) else frozenset(),
        issuer=iss,
        key_id=jti if isinstance(jti, str) else None,
        claims=claims,
    )


class JwtVerifier:
    """Verifies bearer JWTs from the configured issuers, with a bounded verified-token cache.

    One instance serves every route (the route passes its audience and allowed issuers).
    ``cache_ttl`` (s) caps how long a verified token is trusted without re-verification.
    Use it from the gateway's event loop only.
    """

    def __init__(
        self,
        issuers: list[IssuerConfig],
        clock: Clock,
        revocations: RevocationState,
        *,
        cache_size: int = 100_000,
        cache_ttl: float = 300.0,
    ) -> None:
        self._clock = clock
        self._revocations = revocations
        # A cache hit skips the revocation lookups while the state's version is the one the
        # token was last checked at; -1 stored as that version (never current) checks always.
        self._version_exact = _version_exact(revocations)
        self._cache_size = max(1, cache_size)
        self._cache_ttl = cache_ttl
        self._cache: dict[str, _Entry] = {}
        self._issuers: dict[str, _Issuer] = {}
        for cfg in issuers:
            if cfg.issuer in self._issuers:
                raise ConfigError([f"issuers: {cfg.issuer!r} is configured twice"])
            algs = frozenset(cfg.algorithms)
            self._issuers[cfg.issuer] = _Issuer(
                config=cfg,
                keys=JwksKeys(cfg, clock, on_change=self.clear_cache),
                algorithms=algs,
                audiences=frozenset(cfg.audiences),
                # RFC 7515 §4: unknown header parameters are ignored unless listed in "crit"
                # (which joserfc still enforces); registered ones are type-checked.
                registries={
                    alg: JWSRegistry(algorithms=[alg], strict_check_header=False) for alg in algs
                },
            )
        self._max_bytes = max((c.max_token_bytes for c in issuers), default=0)

    async def start(self) -> None:
        """Load or fetch every issuer's keys and start their background refresh."""
        for issuer in self._issuers.values():
            await issuer.keys.start()

    async def aclose(self) -> None:
        """Stop every background refresh."""
        for issuer in self._issuers.values():
            await issuer.keys.aclose()

    def keys(self, issuer: str) -> JwksKeys:
        """The key set of a configured issuer (KeyError if unknown)."""
        return self._issuers[issuer].keys

    def clear_cache(self) -> None:
        """Forget every verified token (called when an issuer's key set changes)."""
        self._cache.clear()

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    def verify_now(
        self,
        token: str,
        audience: str | None,
        allowed_issuers: frozenset[str] | None,
        before_crypto: Callable[[], bool] | None = None,
    ) -> Principal | None:
        """:meth:`verify` without I/O: the principal, TokenRejected, or None when only a JWKS
        refetch (an unknown ``kid``) can decide (await :meth:`verify` then).

        ``before_crypto`` None: a token that is not in the cache is not verified here either
        (None is returned for it, the verified-token cache hit being the only fast path asked
        for); otherwise as in :meth:`verify`.
        """
        entry = self._cache.get(token)
        if entry is not None:
            # (No size check on a hit: a cached token passed its issuer's size limit.)
            now = self._clock.now()
            if now < entry.deadline:
                # The route's issuers and audience, the keys and the revocation lists are
                # checked on every hit (inline: this is the per-request path).
                principal = entry.principal
                if allowed_issuers is not None and principal.issuer not in allowed_issuers:
                    raise TokenRejected("jwt: issuer not allowed on route")
                issuer = entry.issuer
                keys = issuer.keys
                if not keys.always_available and not keys.available():
                    raise TokenRejected(KEYS_UNAVAILABLE)
                if audience is not None:
                    if audience not in entry.auds:
                        raise TokenRejected("jwt: wrong audience")
                elif issuer.audiences and issuer.audiences.isdisjoint(entry.auds):
                    raise TokenRejected("jwt: wrong audience")
                revocations = self._revocations
                if not revocations.current():
                    raise TokenRejected(STATE_NOT_CURRENT)
                if entry.revocations != revocations.version:
                    # Something was revoked since this token was last checked (or the state
                    # does not allow skipping): the lookups.
                    iat = entry.iat
                    if revocations.is_token_revoked(
                        principal.issuer, principal.subject, principal.key_id, iat
                    ) or revocations.is_client_revoked(principal.client_id, iat):
                        raise TokenRejected("jwt: revoked")
                    if self._version_exact:
                        entry.revocations = revocations.version
                return principal
            self._cache.pop(token, None)
            if now >= entry.expires:
                raise TokenRejected("jwt: expired")
        elif len(token) > self._max_bytes:
            raise TokenRejected("jwt: too large")
        if before_crypto is None:
            return None
        raw, header, issuer, alg = self._inspect(token, allowed_issuers)
        keys = issuer.keys
        kid = header.get("kid")
        key = keys.key_for(kid)
        if key is None:
            if keys.refetch_possible():
                return None
            raise TokenRejected("jwt: unknown kid")
        return self._verify_signed(token, raw, issuer, alg, key, audience, before_crypto)

    async def verify(
        self,
        token: str,
        *,
        audience: str | None,
        allowed_issuers: frozenset[str] | None,
        before_crypto: Callable[[], bool],
    ) -> Principal:
        """The principal of a valid ``token``; raises :class:`TokenRejected` otherwise.

        ``audience``: the route's required ``aud`` (None: the issuer's list, if any).
        ``allowed_issuers``: issuers accepted on the route (None: all configured).
        ``before_crypto`` is called right before a signature check; False rejects the token
        (the per-IP verify budget). It is not called on a cache hit.
        """
        principal = self.verify_now(token, audience, allowed_issuers)
        if principal is not None:
            return principal
        return await self._verify_uncached(token, audience, allowed_issuers, before_crypto)

    def _check_revocation(self, principal: Principal, issued_at: float | None) -> None:
        revocations = self._revocations
        if not revocations.current():
            raise TokenRejected(STATE_NOT_CURRENT)
        if revocations.is_token_revoked(
            principal.issuer, principal.subject, principal.key_id, issued_at
        ) or revocations.is_client_revoked(principal.client_id, issued_at):
            raise TokenRejected("jwt: revoked")

    def _inspect(
        self, token: str, allowed_issuers: frozenset[str] | None
    ) -> tuple[bytes, dict[str, Any], _Issuer, str]:
        """Everything checked before a key is looked up (no cryptography): structure, ``alg``,
        issuer, size, ``typ``, header parameters and key availability. Returns the raw token,
        its (unverified) header, its issuer and ``alg``."""
        if _COMPACT_JWS.fullmatch(token) is None:
            raise TokenRejected("jwt: malformed")
        raw = token.encode("ascii")
        try:
            obj = jws.extract_compact(raw)
            header = obj.headers()
            payload = orjson.loads(obj.payload or b"")
        except (JoseError, ValueError, TypeError):  # orjson.JSONDecodeError is a ValueError
            raise TokenRejected("jwt: malformed") from None
        if not isinstance(payload, dict) or "b64" in header:
            raise TokenRejected("jwt: malformed")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise TokenRejected("jwt: alg not allowed")

        iss = payload.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise TokenRejected("jwt: unknown issuer")
        if allowed_issuers is not None and issuer.config.issuer not in allowed_issuers:
            raise TokenRejected("jwt: issuer not allowed on route")
        if len(token) > issuer.config.max_token_bytes:
            raise TokenRejected("jwt: too large")
        if alg not in issuer.algorithms:
            raise TokenRejected("jwt: alg not allowed")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP):
            raise TokenRejected("jwt: wrong typ")
        if issuer.config.require_at_jwt and (
            not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYP
        ):
            raise TokenRejected("jwt: not an access token (typ)")
        try:
            issuer.registries[alg].check_header(header)
        except JoseError:
            raise TokenRejected("jwt: unsupported header") from None
        if not issuer.keys.available():
            raise TokenRejected(KEYS_UNAVAILABLE)
        return raw, header, issuer, alg

    async def _verify_uncached(
        self,
        token: str,
        audience: str | None,
        allowed_issuers: frozenset[str] | None,
        before_crypto: Callable[[], bool],
    ) -> Principal:
        raw, header, issuer, alg = self._inspect(token, allowed_issuers)
        keys = issuer.keys
        kid = header.get("kid")
        key = keys.key_for(kid)
        if key is None and await keys.refetch_for_unknown_kid():
            key = keys.key_for(kid)
        if key is None:
            raise TokenRejected("jwt: unknown kid")
        return self._verify_signed(token, raw, issuer, alg, key, audience, before_crypto)

    def _verify_signed(
        self,
        token: str,
        raw: bytes,
        issuer: _Issuer,
        alg: str,
        key: Key,
        audience: str | None,
        before_crypto: Callable[[], bool],
    ) -> Principal:
        """From the key on: key type, verify budget, signature, claims, revocation, cache."""
        if key.key_type != _KEY_TYPE_FOR_ALG.get(alg):
            raise TokenRejected("jwt: key type does not match alg")

        if not before_crypto():
            raise TokenRejected("jwt: verify budget exceeded")
        registry = issuer.registries[alg]
        try:
            claims = jose_jwt.decode(raw, key, algorithms=[alg], registry=registry).claims
        except BadSignatureError:
            raise TokenRejected("jwt: bad signature") from None
        except (JoseError, ValueError, TypeError):
            # e.g. an ES384 key under ES256, or a JWK whose own "alg"/"use" forbids this use.
            raise TokenRejected("jwt: key rejected for alg") from None

        now = self._clock.now()
        self._check_claims(claims, issuer, now)
        auds = (
            _str_set(claims["aud"])
            if isinstance(claims["aud"], list)
            else frozenset({claims["aud"]})
        )
        if not _audience_ok(auds, audience, issuer):
            raise TokenRejected("jwt: wrong audience")
        iat = claims.get("iat")
        iat_f = float(iat) if iat is not None else None
        principal = _principal(claims, issuer.config.issuer)
        self._check_revocation(principal, iat_f)
        checked_at = self._revocations.version if self._version_exact else -1
        expires = float(claims["exp"]) + issuer.config.leeway
        deadline = min(expires, now + self._cache_ttl)
        self._remember(
            token, _Entry(principal, expires, deadline, issuer, auds, iat_f, checked_at), now
        )
        return principal

    def _check_claims(self, claims: dict[str, Any], issuer: _Issuer, now: float) -> None:
        """Registered claims with joserfc's validator, on our clock and the issuer's leeway."""
        registry = jose_jwt.JWTClaimsRegistry(
            now=int(now),
            leeway=int(issuer.config.leeway),
            iss={"essential": True, "value": issuer.config.issuer},
            sub={"essential": True},
            aud={"essential": True},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise TokenRejected("jwt: expired") from None
        except MissingClaimError as exc:
            raise TokenRejected(f"jwt: missing claim {exc.claim}") from None
        except InvalidClaimError as exc:
            raise TokenRejected(_CLAIM_REASONS.get(exc.claim, "jwt: invalid claim")) from None
        except JoseError:
            raise TokenRejected("jwt: invalid claim") from None

    def _remember(self, token: str, entry: _Entry, now: float) -> None:
        cache = self._cache
        if len(cache) >= self._cache_size:
            for k in [k for k, e in cache.items() if e.deadline <= now]:
                del cache[k]
            if len(cache) >= self._cache_size:
                # Still full of live entries: drop the oldest eighth (insertion order).
                for k in list(cache)[: max(1, self._cache_size // 8)]:
                    del cache[k]
        cache[token] = entry
