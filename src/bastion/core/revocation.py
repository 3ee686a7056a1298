"""Which tokens are revoked, as held in memory by every gateway node.

Three kinds of entries, all kept in plain dicts because :meth:`RevocationState.is_token_revoked`
and :meth:`RevocationState.is_client_revoked` run on every authenticated request (including
verified-token cache hits):

* **by jti** — one token, denied until its own ``expires_at`` (after that the token is expired
  anyway, so :meth:`~RevocationState.prune` drops the entry);
* **by subject** — every token of ``subject`` issued before ``not_before``, either for one
  issuer or, with ``issuer=None``, for all of them ("log this user out everywhere");
* **by client** — every access token whose ``client_id`` claim is the client, issued before
  ``not_before`` (the incident action "revoke an application": tokens a stolen client already
  holds, whoever their subject). Keyed by ``client_id`` alone, so the check is one dict lookup;
  the stored issuer is informational (client ids are ours, issued by our authorization server).

The state is filled from the store at start-up (:meth:`~RevocationState.load`) and then kept
current by the control events every node receives (:meth:`~RevocationState.apply`).

:attr:`RevocationState.version` counts the revocations added: a token found not revoked at one
version is still not revoked while the version is unchanged (:meth:`~RevocationState.prune`
only drops entries, which can never revoke anything), so a verified-token cache may skip the
lookups until the version moves.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from mypy_extensions import mypyc_attr

from bastion.core.clock import Clock
from bastion.store.base import Revocation

__all__ = ["RevocationState"]

log = logging.getLogger("bastion.revocation")


def _number(value: Any) -> float | None:
    """A finite float from a JSON number, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


# Subclassed by plain Python (the freshness guard, tests): allowed in the compiled build.
@mypyc_attr(allow_interpreted_subclasses=True)
class RevocationState:
    """In-memory revocation lists: dict lookups only, safe to call on every request.

    ``clock.now()`` (wall-clock seconds) is compared with token times (``iat``, ``exp``).
    Not thread-safe: use it from the event loop that runs the gateway.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        #: Incremented by every revocation added (never by :meth:`prune`): while it is
        #: unchanged, :meth:`is_token_revoked` and :meth:`is_client_revoked` answer False for
        #: every question they answered False before.
        self.version = 0
        self._jtis: dict[str, float] = {}
        self._not_before: dict[tuple[str | None, str], float] = {}
        self._clients: dict[str, tuple[float, float]] = {}  # client_id -> (not_before, until)

    def revoke_jti(self, jti: str, expires_at: float) -> None:
        """Deny the token with this ``jti`` until ``expires_at`` (its own ``exp`` is enough)."""
        old = self._jtis.get(jti)
        self._jtis[jti] = expires_at if old is None else max(old, expires_at)
        self.version += 1

    def raise_not_before(self, subject: str, issuer: str | None, not_before: float) -> None:
        """Deny every token of ``subject`` (from ``issuer``, or any issuer if None) issued before
        ``not_before``. The bar only ever moves forward."""
        key = (issuer, subject)
        old = self._not_before.get(key)
        self._not_before[key] = not_before if old is None else max(old, not_before)
        self.version += 1

    def revoke_client(self, client_id: str, not_before: float, expires_at: float) -> None:
        """Deny every access token issued to ``client_id`` before ``not_before``; the entry may
        be forgotten after ``expires_at`` (no such token outlives it). Both only move forward."""
        old = self._clients.get(client_id)
        if old is None:
            self._clients[client_id] = (not_before, expires_at)
        else:
            self._clients[client_id] = (max(old[0], not_before), max(old[1], expires_at))
        self.version += 1

    def current(self) -> bool:
        """Whether this node can vouch that its lists are up to date (always, in one process;
        distributed mode overrides it with a freshness bound)."""
        return True

    def is_token_revoked(
        self, issuer: str | None, subject: str, jti: str | None, issued_at: float | None
    ) -> bool:
        """Whether a token is revoked by its ``jti`` or by a not-before bar on its subject.

        A token without ``iat`` cannot prove it was issued after a bar, so it counts as revoked
        as soon as its subject has one (fail closed).
        """
        if jti is not None and jti in self._jtis:
            return True
        nbs = self._not_before
        if not nbs:
            return False
        for key in ((issuer, subject), (None, subject)):
            bar = nbs.get(key)
            if bar is not None and (issued_at is None or issued_at < bar):
                return True
        return False

    def is_client_revoked(self, client_id: str | None, issued_at: float | None) -> bool:
        """Whether an access token issued to ``client_id`` (its ``client_id`` claim) is revoked
        by a client bar. One dict lookup, none when no client is revoked.

        A token without ``iat`` counts as revoked once its client has a bar (fail closed). A
        token without ``client_id`` is not covered: the subject and jti checks still apply.
        """
        clients = self._clients
        if not clients or client_id is None:
            return False
        entry = clients.get(client_id)
        return entry is not None and (issued_at is None or issued_at < entry[0])

    def apply(self, event: dict[str, Any]) -> None:
        """Apply one control event; unknown types and malformed events are ignored.

        ``{"type": "token.revoked", "jti": str, "expires_at": number}`` and
        ``{"type": "subject.revoked", "subject": str, "issuer": str | None, "not_before": number}``
        and ``{"type": "client.revoked", "client_id": str, "not_before": number,
        "expires_at": number}``.
        """
        kind = event.get("type")
        if kind == "token.revoked":
            jti = event.get("jti")
            expires_at = _number(event.get("expires_at"))
            if isinstance(jti, str) and jti and expires_at is not None:
                self.revoke_jti(jti, expires_at)
            else:
                log.warning("ignored a malformed token.revoked event")
        elif kind == "subject.revoked":
            subject = event.get("subject")
            issuer = event.get("issuer")
            not_before = _number(event.get("not_before"))
            if (
                isinstance(subject, str)
                and subject
                and (issuer is None or isinstance(issuer, str))
                and not_before is not None
            ):
                self.raise_not_before(subject, issuer, not_before)
            else:
                log.warning("ignored a malformed subject.revoked event")
        elif kind == "client.revoked":
            client_id = event.get("client_id")
            not_before = _number(event.get("not_before"))
            expires_at = _number(event.get("expires_at"))
            if (
                isinstance(client_id, str)
                and client_id
                and not_before is not None
                and expires_at is not None
            ):
                self.revoke_client(client_id, not_before, expires_at)
            else:
                log.warning("ignored a malformed client.revoked event")

    def load(self, revocations: Iterable[Revocation]) -> None:
        """Add stored revocations (``store.active_revocations(now)``) to the current state."""
        for rev in revocations:
            if rev.kind == "jti":
                self.revoke_jti(rev.value, rev.expires_at)
            elif rev.kind == "subject":
                bar = rev.not_before if rev.not_before is not None else rev.created_at
                self.raise_not_before(rev.value, rev.issuer, bar)
            elif rev.kind == "client":
                bar = rev.not_before if rev.not_before is not None else rev.created_at
                self.revoke_client(rev.value, bar, rev.expires_at)
            else:
                log.warning("ignored a stored revocation of unknown kind %r", rev.kind)

    def prune(self) -> int:
        """Drop jti and client entries that no live token can match any more; returns how many
        were dropped."""
        now = self._clock.now()
        dead = [jti for jti, exp in self._jtis.items() if exp <= now]
        for jti in dead:
            del self._jtis[jti]
        gone = [cid for cid, (_, until) in self._clients.items() if until <= now]
        for cid in gone:
            del self._clients[cid]
        return len(dead) + len(gone)

    def __len__(self) -> int:
        return len(self._jtis) + len(self._not_before) + len(self._clients)
