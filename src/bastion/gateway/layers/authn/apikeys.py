"""The gateway's in-memory index of API keys: a dict lookup and one HMAC per request.

Keys are loaded from the store at start-up and kept current by control events
(``api_key.revoked`` takes effect at once, without a store round trip; the ``api_key.created``
event of a rotation shortens the old key to the end of its grace period). A key id this node
has not seen is looked up in the store once; ids the store does not know go into a bounded,
short-lived negative cache, so replaying one unknown id does not reach the store again.

:meth:`ApiKeyIndex.verify_now` decides every key it holds in memory (and every id in the negative
cache) without I/O; only an id it has never seen needs :meth:`ApiKeyIndex.verify`, which asks the
store. Both decide alike.

Expiry needs no event and no write: a key whose ``expires_at``, grace period or ``max_age``
has passed is refused by comparing with the clock. A successful check is counted in memory
(:class:`~bastion.gateway.layers.authn.key_usage.KeyUsage`), never written per request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from typing import Any

from mypy_extensions import mypyc_attr

from bastion.core.apikeys import effective_expiry, parse_api_key
from bastion.core.clock import Clock
from bastion.core.exchange import Principal
from bastion.gateway.layers.authn.key_usage import KeyUsage
from bastion.store.base import ApiKeyRecord, Store

__all__ = ["ApiKeyIndex"]

log = logging.getLogger("bastion.authn.apikeys")

MALFORMED = "api_key: malformed"
UNKNOWN = "api_key: unknown id"
WRONG_SECRET = "api_key: wrong secret"  # noqa: S105 - a diagnosis, not a secret
REVOKED = "api_key: revoked"
EXPIRED = "api_key: expired"
STORE_UNAVAILABLE = "api_key: store unavailable"
#: The node cannot vouch for its key cache (distributed mode, outage): fail closed.
STATE_NOT_CURRENT = "api_key: revocation state not current"

_MALFORMED: tuple[None, str] = (None, MALFORMED)
_UNKNOWN: tuple[None, str] = (None, UNKNOWN)
_WRONG_SECRET: tuple[None, str] = (None, WRONG_SECRET)
_REVOKED: tuple[None, str] = (None, REVOKED)
_EXPIRED: tuple[None, str] = (None, EXPIRED)


def _principal(rec: ApiKeyRecord) -> Principal:
    return Principal(
        kind="api_key",
        subject=rec.client_id,
        client_id=rec.client_id,
        scopes=frozenset(rec.scopes),
        key_id=rec.id,
    )


def _hash_bytes(rec: ApiKeyRecord) -> bytes:
    # As core.apikeys.secret_matches compares: a non-ASCII hash from a damaged row never matches.
    return rec.secret_hash.encode("utf-8", "replace")


# Subclassed by plain Python (the freshness guard, tests): allowed in the compiled build.
@mypyc_attr(allow_interpreted_subclasses=True)
class ApiKeyIndex:
    """Verifies presented API keys against the store's records, cached in memory.

    ``pepper`` is the server-side HMAC key (never logged). ``negative_ttl`` (s, monotonic) is how
    long an id unknown to the store stays answered from memory; at most ``max_negative`` such ids
    are held. ``max_age`` (s) caps every key's life from its creation (None: only its own
    expiry counts). ``usage`` counts accepted keys for the batched usage update. Use it from the
    gateway's event loop only.
    """

    def __init__(
        self,
        store: Store,
        pepper: bytes,
        clock: Clock,
        *,
        negative_ttl: float = 2.0,
        max_negative: int = 100_000,
        max_age: float | None = None,
        usage: KeyUsage | None = None,
    ) -> None:
        if len(pepper) < 32:
            raise ValueError("the API-key pepper must be at least 32 bytes")
        self._store = store
        # HMAC-SHA256 keyed with the pepper once; each check copies it (core.apikeys.hash_secret
        # computes the same value, keying it per call).
        self._mac = hmac.new(pepper, digestmod=hashlib.sha256)
        self._clock = clock
        self._negative_ttl = negative_ttl
        self._max_negative = max_negative
        self._keys: dict[str, ApiKeyRecord] = {}
        self._principals: dict[str, Principal] = {}
        # Stored secret hashes as bytes, for the constant-time comparison.
        self._hashes: dict[str, bytes] = {}
        # Ids revoked by an event. Kept even for ids not loaded yet, so a store replica that
        # lags behind the event cannot bring a revoked key back.
        self._revoked: set[str] = set()
        # Ids shortened by a rotation event -> end of their grace period; kept like _revoked so
        # a lagging replica cannot give a rotated key its old expiry back.
        self._shortened: dict[str, float] = {}
        # Effective end of each loaded key (expiry, max_age, grace), computed once per record.
        self._until: dict[str, float] = {}
        self._negative: dict[str, float] = {}
        self._max_age = max_age
        self.usage = usage

    async def load(self) -> None:
        """Replace the index with every key in the store. Store errors propagate (start-up)."""
        records = await self._store.list_api_keys()
        self._keys = {rec.id: rec for rec in records}
        self._principals = {rec.id: _principal(rec) for rec in records}
        self._hashes = {rec.id: _hash_bytes(rec) for rec in records}
        self._until = {rec.id: self._end_of(rec) for rec in records}
        self._negative.clear()

    def apply(self, event: dict[str, Any]) -> None:
        """Apply one control event; other types are ignored.

        ``{"type": "api_key.revoked", "key_id": …, "at": …}`` revokes the key immediately;
        ``{"type": "api_key.created", "key_id": …}`` forgets a negative-cache entry for the id;
        with ``"replaces": old_id, "replaces_until": t`` (a rotation) the old key stops at ``t``
        (never later than it would have anyway).
        """
        kind = event.get("type")
        key_id = event.get("key_id")
        if not isinstance(key_id, str) or not key_id:
            if kind in ("api_key.revoked", "api_key.created"):
                log.warning("ignored a malformed %s event", kind)
            return
        if kind == "api_key.revoked":
            self._revoked.add(key_id)
            self._negative.pop(key_id, None)
        elif kind == "api_key.created":
            self._negative.pop(key_id, None)
            if "replaces" in event:
                self._apply_rotation(event)

    def _apply_rotation(self, event: dict[str, Any]) -> None:
        old, until = event.get("replaces"), event.get("replaces_until")
        if (
            not isinstance(old, str)
            or not old
            or isinstance(until, bool)
            or not isinstance(until, int | float)
            or math.isnan(until)
        ):
            log.warning("ignored a malformed rotation event")
            return
        known = self._shortened.get(old)
        self._shortened[old] = end = float(until) if known is None else min(known, float(until))
        if old in self._until:
            self._until[old] = min(self._until[old], end)

    def _end_of(self, rec: ApiKeyRecord) -> float:
        """When ``rec`` stops working: its expiry, ``max_age`` or a rotation's grace end."""
        until = effective_expiry(rec.created_at, rec.expires_at, self._max_age)
        return min(until, self._shortened.get(rec.id, math.inf))

    def verify_now(self, presented: str) -> tuple[Principal | None, str] | None:
        """:meth:`verify` without I/O: ``(principal, "")``, ``(None, reason)``, or None when
        the key id is not in memory and only the store can tell (await :meth:`verify`)."""
        parsed = parse_api_key(presented)
        if parsed is None:
            return _MALFORMED
        key_id, secret = parsed
        rec = self._keys.get(key_id)
        if rec is None:
            until = self._negative.get(key_id)
            if until is not None and until > self._clock.monotonic():
                return _UNKNOWN
            return None
        return self._check(rec, key_id, secret)

    async def verify(self, presented: str) -> tuple[Principal | None, str]:
        """Check a presented key: ``(principal, "")`` if valid, else ``(None, reason)``.

        ``presented`` is untrusted; the reason is an internal diagnosis for the audit record
        and never contains the key. The secret is always compared in constant time, and before
        the key's state, so "revoked" or "expired" is only ever said to a holder of the secret.
        """
        done = self.verify_now(presented)
        if done is not None:
            return done
        parsed = parse_api_key(presented)
        if parsed is None:  # verify_now answered every malformed key already
            return _MALFORMED
        key_id, secret = parsed
        rec, reason = await self._lookup(key_id)
        if rec is None:
            return None, reason
        return self._check(rec, key_id, secret)

    def _check(self, rec: ApiKeyRecord, key_id: str, secret: str) -> tuple[Principal | None, str]:
        """The secret (constant time, first), then revocation and expiry."""
        mac = self._mac.copy()
        mac.update(secret.encode("utf-8"))
        if not hmac.compare_digest(mac.hexdigest().encode("ascii"), self._hashes[key_id]):
            return _WRONG_SECRET
        if key_id in self._revoked:
            return _REVOKED
        now = self._clock.now()
        if rec.revoked_at is not None and rec.revoked_at <= now:
            return _REVOKED
        if self._until[key_id] <= now:
            return _EXPIRED
        usage = self.usage
        if usage is not None:
            usage.hit(key_id, now)
        return self._principals[key_id], ""

    async def _lookup(self, key_id: str) -> tuple[ApiKeyRecord | None, str]:
        """One store read for an id not in memory, behind the negative cache."""
        mono = self._clock.monotonic()
        until = self._negative.get(key_id)
        if until is not None:
            if until > mono:
                return None, UNKNOWN
            del self._negative[key_id]
        try:
            rec = await self._store.get_api_key(key_id)
        except Exception:
            # Whatever the backend raised, we cannot know the key: fail closed.
            log.warning("API-key lookup failed; request denied", exc_info=True)
            return None, STORE_UNAVAILABLE
        if rec is None or rec.id != key_id:
            self._remember_unknown(key_id, mono)
            return None, UNKNOWN
        self._keys[key_id] = rec
        self._principals[key_id] = _principal(rec)
        self._hashes[key_id] = _hash_bytes(rec)
        self._until[key_id] = self._end_of(rec)
        return rec, ""

    def _remember_unknown(self, key_id: str, mono: float) -> None:
        neg = self._negative
        if len(neg) >= self._max_negative:
            for k in [k for k, until in neg.items() if until <= mono]:
                del neg[k]
            # Still full: forget the oldest entries (dicts keep insertion order).
            excess = len(neg) - self._max_negative + 1
            if excess > 0:
                for k in list(neg)[:excess]:
                    del neg[k]
        neg[key_id] = mono + self._negative_ttl

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # never show the pepper
        return f"ApiKeyIndex(keys={len(self._keys)}, negative={len(self._negative)})"
