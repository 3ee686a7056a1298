"""Client authentication at the token, introspection and revocation endpoints.

* ``client_secret_basic`` / ``client_secret_post`` (RFC 6749 §2.3.1): secrets are 256 random
  bits made by the server, stored as HMAC-SHA256 under a server pepper and compared in constant
  time. A slow KDF would add nothing for random secrets and would throttle the endpoint. A
  client holds at most two secrets, so a new one can be rolled out before the old one expires.
* ``private_key_jwt`` (RFC 7523 §2.2, OpenID Connect Core §9): a short-lived JWT signed by the
  client's registered key, ``iss`` = ``sub`` = client id, ``aud`` our issuer or token endpoint,
  each ``jti`` accepted once.
* ``none``: a public client names itself with ``client_id``; it can only use PKCE-bound codes.

A client must use the method it registered. Every failure is the same ``invalid_client``; the
reason goes to the log only. Registrations are cached per process for ``cache_ttl`` seconds.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Mapping
from typing import TypeGuard
from urllib.parse import unquote

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from bastion.authserver.oauth.errors import OAuthError, invalid_client
from bastion.authserver.oauth.records import ClientSecret, OAuthClient
from bastion.authserver.oauth.repo import OAuthRepo
from bastion.authserver.oauth.rfc9068 import quiet_registry
from bastion.core.apikeys import hash_secret, secret_matches
from bastion.core.clock import Clock

log = logging.getLogger("bastion.authserver.clients")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Signature algorithms accepted on client assertions (no HMAC: the secret would be shared).
ASSERTION_ALGS = ("ES256", "ES384", "PS256", "RS256", "EdDSA")
MAX_ASSERTION_BYTES = 8192
#: Assertions must be short-lived: ``exp`` at most this far ahead.
MAX_ASSERTION_LIFETIME = 600.0
#: Clock skew allowed on an assertion's ``nbf`` and ``iat`` (seconds).
ASSERTION_LEEWAY = 60.0
SECRET_PREFIX = "bcs_"  # noqa: S105 - a public prefix, not a secret
_CACHE_MAX = 10_000
_NO_HASH = "0" * 64
_ASSERTION_REGISTRY = quiet_registry(ASSERTION_ALGS)


def new_client_secret() -> str:
    """A fresh secret: ``bcs_`` (so scanners recognise a leak) and 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_record(pepper: bytes, secret: str, now: float) -> ClientSecret:
    return ClientSecret(hash_secret(pepper, secret), now)


def rotate_secrets(
    current: tuple[ClientSecret, ...], new: ClientSecret, overlap: float, now: float
) -> tuple[ClientSecret, ...]:
    """The secrets after a rotation: the new one, plus the newest still-valid old one limited
    to ``overlap`` more seconds (0: the old ones stop at once). Never more than two."""
    if overlap <= 0:
        return (new,)
    live = [s for s in current if s.valid(now)]
    if not live:
        return (new,)
    newest = max(live, key=lambda s: s.created_at)
    end = now + overlap
    if newest.expires_at is not None:
        end = min(end, newest.expires_at)
    return (new, ClientSecret(newest.hash, newest.created_at, end))


class ClientAuthenticator:
    """Finds and authenticates the client of a request (see the module docstring)."""

    def __init__(
        self,
        repo: OAuthRepo,
        pepper: bytes,
        clock: Clock,
        *,
        issuer: str,
        cache_ttl: float = 5.0,
    ) -> None:
        self._repo = repo
        self._pepper = pepper
        self._clock = clock
        # RFC 7523bis (audience injection): the issuer identifier and nothing else — not the
        # token endpoint URL, not a list that merely contains the issuer among other audiences.
        self._issuer = issuer
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[OAuthClient | None, float]] = {}

    async def client(self, client_id: str) -> OAuthClient | None:
        """The registration of ``client_id`` (cached), or None."""
        now = self._clock.monotonic()
        hit = self._cache.get(client_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        found = await self._repo.get_client(client_id)
        if self._ttl > 0:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[client_id] = (found, now + self._ttl)
        return found

    def forget(self, client_id: str) -> None:
        self._cache.pop(client_id, None)

    async def authenticate(
        self, headers: Mapping[str, str], form: Mapping[str, list[str]]
    ) -> OAuthClient:
        """The authenticated client, or OAuthError (``invalid_client``/``invalid_request``)."""
        basic = _basic_credentials(headers.get("authorization"))
        form_id = _one(form, "client_id")
        form_secret = _one(form, "client_secret")
        assertion = _one(form, "client_assertion")
        assertion_type = _one(form, "client_assertion_type")
        used = [m for m in (basic, form_secret, assertion) if m is not None]
        if len(used) > 1:
            # RFC 6749 §2.3: a client must not use more than one method in a request.
            raise OAuthError("invalid_request", "more than one client authentication method")
        if basic is not None:
            client_id, secret = basic
            if form_id is not None and form_id != client_id:
                raise OAuthError("invalid_request", "client_id does not match")
            return await self._by_secret(client_id, secret, "client_secret_basic")
        if form_secret is not None:
            if form_id is None:
                raise invalid_client()
            return await self._by_secret(form_id, form_secret, "client_secret_post")
        if assertion is not None:
            if assertion_type != ASSERTION_TYPE:
                raise OAuthError("invalid_request", "unsupported client_assertion_type")
            return await self._by_assertion(assertion, form_id)
        if form_id is None:
            raise invalid_client()
        client = await self.client(form_id)
        if client is None or client.auth_method != "none":
            log.info("client %r refused: no credentials", form_id[:128])
            raise invalid_client()
        return client

    async def _by_secret(self, client_id: str, secret: str, method: str) -> OAuthClient:
        client = await self.client(client_id)
        if client is None or client.auth_method != method:
            # The same HMAC as for a known client, so timing does not tell which ids exist.
            secret_matches(self._pepper, secret, _NO_HASH)
            log.info("client %r refused: unknown or not %s", client_id[:128], method)
            raise invalid_client()
        now = self._clock.now()
        ok = False
        for stored in client.secrets:
            # Check every secret (constant work whichever matches); expired ones never match.
            if secret_matches(self._pepper, secret, stored.hash) and stored.valid(now):
                ok = True
        if not ok:
            log.info("client %r refused: wrong or expired secret", client_id[:128])
            raise invalid_client()
        return client

    async def _by_assertion(self, assertion: str, form_id: str | None) -> OAuthClient:
        if len(assertion) > MAX_ASSERTION_BYTES:
            raise invalid_client()
        # The issuer names the client: read it without trusting it, then verify with its key.
        client_id = form_id if form_id is not None else _peek_issuer(assertion)
        if client_id is None:
            raise invalid_client()
        client = await self.client(client_id)
        if client is None or client.auth_method != "private_key_jwt" or not client.jwks:
            raise invalid_client()
        try:
            keys = KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
            token = jwt.decode(assertion, keys, registry=_ASSERTION_REGISTRY)
        except (JoseError, ValueError, TypeError) as exc:
            log.info("client %r refused: assertion %s", client_id[:128], type(exc).__name__)
            raise invalid_client() from None
        claims = token.claims
        now = self._clock.now()
        exp = claims.get("exp")
        aud = claims.get("aud")
        jti = claims.get("jti")
        if (
            claims.get("iss") != client_id
            or claims.get("sub") != client_id
            or not _number(exp)
            or exp <= now
            or exp > now + MAX_ASSERTION_LIFETIME
            or aud not in (self._issuer, [self._issuer])
            or not _not_after(claims, "nbf", now + ASSERTION_LEEWAY)
            or not _not_after(claims, "iat", now + ASSERTION_LEEWAY)
            or not isinstance(jti, str)
            or not 0 < len(jti) <= 256
        ):
            log.info("client %r refused: assertion claims", client_id[:128])
            raise invalid_client()
        if not await self._repo.use_assertion_jti(client_id, jti, float(exp)):
            log.warning("client %r refused: replayed assertion", client_id[:128])
            raise invalid_client()
        return client


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _not_after(claims: dict[str, object], name: str, limit: float) -> bool:
    """An optional time claim: absent, or a number not after ``limit``."""
    if name not in claims:
        return True
    value = claims[name]
    return _number(value) and value <= limit


def _peek_issuer(assertion: str) -> str | None:
    try:
        claims = orjson.loads(extract_compact(assertion.encode("ascii")).payload)
    except (JoseError, ValueError, TypeError, UnicodeError):
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) and 0 < len(iss) <= 128 else None


def _one(form: Mapping[str, list[str]], name: str) -> str | None:
    got = form.get(name)
    if not got:
        return None
    if len(got) > 1:
        raise OAuthError("invalid_request", f"{name} given more than once")
    return got[0]


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(client_id, secret)`` from ``Authorization: Basic``; both parts are form-urlencoded
    before base64 (RFC 6749 §2.3.1). A malformed header is ``invalid_client``."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise invalid_client() from None
    client_id, sep, secret = raw.partition(":")
    if not sep or not client_id:
        raise invalid_client()
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
