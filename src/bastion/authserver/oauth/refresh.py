"""Refresh tokens: rotation on every use, families, idempotent retry, reuse detection.

A refresh token is ``brt_`` and 256 random bits; only its SHA-256 is stored. Every token
belongs to a *family* (one grant) and has a *generation*. Using the current token rotates the
family with one compare-and-swap on its generation (:meth:`OAuthRepo.rotate_family`), so of
several concurrent refreshes exactly one rotates.

**Idempotent retry** (FAPI 2.0 §5.3.2.1): the rotation stores the whole token response,
encrypted with AES-256-GCM under a key derived from the token that was rotated away. For
``grace`` seconds that previous token, presented by the same client, gets that same response
back: the losers of a race, and a client whose response was lost, receive the pair the winner
received, and the family survives. The database alone cannot open the stored response: the
key is derived from a token of which only the hash is stored.

**No grace for public clients** (``auth_method: none``): for them "the same client" is only a
``client_id`` anyone can send, so a thief holding a rotated-out token would receive the
victim's *current* pair. Any second use of their previous token is reuse: the family is
revoked. (A public client must serialise its refreshes, e.g. one tab refreshes for all.)

**Reuse**: any other use of a non-current token (after the grace window, or older than the
previous generation) means two parties hold the family's tokens. The family is revoked, with
the last access token issued from it, and a security event is emitted (RFC 9700 §4.14.2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.authserver.config import RefreshConfig
from bastion.authserver.oauth.errors import OAuthError
from bastion.authserver.oauth.records import OAuthClient, RefreshFamily
from bastion.authserver.oauth.repo import OAuthRepo
from bastion.core.clock import Clock

log = logging.getLogger("bastion.authserver.refresh")

PREFIX = "brt_"
MAX_TOKEN_CHARS = 128
_RETRY_INFO = b"bastion refresh-token retry response v1"

#: Builds the token response for a rotation: (family, new refresh token) ->
#: (response body, access-token jti, access-token exp).
BuildResponse = Callable[[RefreshFamily, str], Awaitable[tuple[dict[str, Any], str, float]]]
#: Called with the family as it was, when reuse revoked it.
OnReuse = Callable[[RefreshFamily], Awaitable[None]]


def new_refresh_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """SHA-256 hex: a fast unkeyed hash suffices for 256-bit random values."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_family_id() -> str:
    return secrets.token_hex(16)


def _retry_key(token: str) -> bytes:
    return hmac.new(token.encode("utf-8"), _RETRY_INFO, hashlib.sha256).digest()


def _aad(family_id: str, generation: int) -> bytes:
    return f"{family_id}:{generation}".encode()


def seal_response(token: str, family_id: str, generation: int, body: bytes) -> str:
    """Encrypt ``body`` so that only a holder of ``token`` (generation ``generation``) can read
    it back; bound to the family and generation by the AAD."""
    nonce = os.urandom(12)
    ct = AESGCM(_retry_key(token)).encrypt(nonce, body, _aad(family_id, generation))
    return base64.b64encode(nonce + ct).decode("ascii")


def open_response(token: str, family_id: str, generation: int, sealed: str) -> bytes | None:
    """The body sealed by :func:`seal_response`, or None if anything does not match."""
    try:
        raw = base64.b64decode(sealed, validate=True)
        return AESGCM(_retry_key(token)).decrypt(raw[:12], raw[12:], _aad(family_id, generation))
    except (ValueError, InvalidTag):
        return None


def _invalid() -> OAuthError:
    return OAuthError("invalid_grant", "refresh token is invalid, expired or revoked")


class RefreshService:
    """Families of refresh tokens on an :class:`OAuthRepo` (see the module docstring)."""

    def __init__(
        self, repo: OAuthRepo, clock: Clock, config: RefreshConfig, on_reuse: OnReuse
    ) -> None:
        self._repo = repo
        self._clock = clock
        self._config = config
        self._on_reuse = on_reuse

    async def start_family(
        self,
        *,
        family_id: str,
        client_id: str,
        subject: str,
        scope: str,
        audience: tuple[str, ...],
        auth_time: float,
        amr: tuple[str, ...],
        acr: str,
        access_jti: str,
        access_exp: float,
    ) -> str:
        """Store a new family; returns its first refresh token."""
        now = self._clock.now()
        token = new_refresh_token()
        family = RefreshFamily(
            id=family_id,
            client_id=client_id,
            subject=subject,
            scope=scope,
            audience=audience,
            auth_time=auth_time,
            amr=amr,
            acr=acr,
            created_at=now,
            expires_at=auth_time + self._config.absolute_lifetime,
            last_used_at=now,
            access_jti=access_jti,
            access_exp=access_exp,
        )
        await self._repo.create_family(family, token_hash(token))
        return token

    async def lookup(self, token: str) -> tuple[RefreshFamily, int] | None:
        if not token.startswith(PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return None
        return await self._repo.find_refresh(token_hash(token))

    def live(self, family: RefreshFamily, now: float) -> bool:
        """Not revoked, not past its absolute lifetime, not idle too long."""
        return (
            family.revoked_at is None
            and now < family.expires_at
            and now - family.last_used_at < self._config.idle_timeout
        )

    async def refresh(self, token: str, client: OAuthClient, build: BuildResponse) -> bytes:
        """The token response (JSON bytes) for ``token`` presented by ``client``, or
        ``invalid_grant``. Rotates, replays the stored response, or revokes the family."""
        found = await self.lookup(token)
        if found is None:
            raise _invalid()
        family, generation = found
        if family.client_id != client.id:
            # Another client's token: refuse, but do not let it revoke the owner's family.
            log.warning("refresh token of client %r presented by %r", family.client_id, client.id)
            raise _invalid()
        now = self._clock.now()
        for _ in range(2):
            if not self.live(family, now):
                raise _invalid()
            if generation == family.generation:
                new = new_refresh_token()
                response, jti, exp = await build(family, new)
                body = orjson.dumps(response)
                sealed = seal_response(token, family.id, generation, body)
                if await self._repo.rotate_family(
                    family.id, generation, token_hash(new), now, sealed, jti, exp
                ):
                    return body
                # Lost a race: another request rotated first. Read what it did.
                again = await self._repo.find_refresh(token_hash(token))
                if again is None:
                    raise _invalid()
                family = again[0]
                continue
            if (
                generation == family.generation - 1
                and not client.public
                and family.rotated_at is not None
                and now - family.rotated_at <= self._config.grace
                and family.retry_response is not None
            ):
                body_or_none = open_response(token, family.id, generation, family.retry_response)
                if body_or_none is not None:
                    return body_or_none
            break
        revoked = await self._repo.revoke_family(family.id, now, "reuse")
        if revoked is not None:
            log.warning("refresh token reuse: family %s of client %r revoked", family.id, client.id)
            await self._on_reuse(revoked)
        raise _invalid()
