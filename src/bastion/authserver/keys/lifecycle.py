"""The signing-key lifecycle as pure decisions: records in, the next transition out.

::

    pending ──(published ≥ 2 JWKS lifetimes)──▶ active ──(successor activates)──▶ retiring
       ▲                                                                            │
       └─ scheduled / manual rotation                 (every token it signed expired)▼
                                                                                  retired

* **pending**: published in the JWKS, never signs. It becomes active once it has been published
  for ``publish_lead`` (two JWKS cache lifetimes), so every verifier that honours our
  ``Cache-Control`` has it before the first token signed with it arrives (Hydra signs at once).
* **active**: the one key that signs. A database index also allows at most one.
* **retiring**: signs nothing, stays published for ``retire_grace`` after it stopped signing:
  the longest token lifetime, the allowed clock skew, and twice the refresh interval (another
  process may sign with it until it re-reads the set).
* **retired**: gone from the JWKS; its private material is erased.

Exceptions, by design: the very first key signs at once (no verifier can have cached a JWKS
without it), and an **emergency** rotation withdraws every published key at once and makes a
fresh key active immediately: tokens signed by the withdrawn keys stop validating.

Timing values stored on a record (``activate_at``, ``remove_at``) are lower bounds computed with
the config of the moment; the decisions here also apply the current config and take the later
of the two, so shortening ``jwks_max_age`` or a token lifetime never shortens a wait under way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

PENDING = "pending"
ACTIVE = "active"
RETIRING = "retiring"
RETIRED = "retired"
STATES = (PENDING, ACTIVE, RETIRING, RETIRED)
PUBLISHED = (PENDING, ACTIVE, RETIRING)

#: Why a key was created (``compromised`` replaces it when an emergency rotation withdrew the
#: key), recorded for ``bastion auth keys list``.
Reason = Literal["initial", "scheduled", "manual", "emergency", "compromised"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One signing key as the store keeps it. ``material`` is the key store's sealed blob or
    token reference (None once retired); ``public_jwk`` carries ``kid``, ``alg`` and ``use``."""

    kid: str
    alg: str
    store: str
    state: str
    public_jwk: dict[str, Any]
    material: bytes | None
    created_at: float
    activate_at: float
    activated_at: float | None = None
    retired_at: float | None = None
    remove_at: float | None = None
    removed_at: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Timing:
    """Durations (s) the lifecycle runs on; see the module docstring."""

    rotation_interval: float
    publish_lead: float
    retire_grace: float


@dataclass(frozen=True, slots=True)
class Transition:
    """What to do: ``updates`` to existing records (already in a safe order: retirements before
    activations), and whether to create a key (``new_key``: its initial state and reason)."""

    updates: list[KeyRecord] = field(default_factory=list)
    new_key: tuple[str, Reason] | None = None

    @property
    def empty(self) -> bool:
        return not self.updates and self.new_key is None


def activation_time(rec: KeyRecord, timing: Timing) -> float:
    """When a pending key may start signing."""
    return max(rec.activate_at, rec.created_at + timing.publish_lead)


def removal_time(rec: KeyRecord, timing: Timing) -> float:
    """When a retiring key may leave the JWKS."""
    stopped = rec.retired_at if rec.retired_at is not None else rec.created_at
    return max(rec.remove_at or stopped, stopped + timing.retire_grace)


def new_record(
    *,
    kid: str,
    alg: str,
    store: str,
    public_jwk: dict[str, Any],
    material: bytes,
    state: str,
    reason: Reason,
    now: float,
    timing: Timing,
) -> KeyRecord:
    """The record of a freshly generated key entering the lifecycle as ``state``."""
    if state == ACTIVE:
        return KeyRecord(
            kid, alg, store, ACTIVE, public_jwk, material, now, now, activated_at=now, reason=reason
        )
    return KeyRecord(
        kid,
        alg,
        store,
        PENDING,
        public_jwk,
        material,
        now,
        now + timing.publish_lead,
        reason=reason,
    )


def _retire(rec: KeyRecord, now: float, timing: Timing) -> KeyRecord:
    return dataclasses.replace(
        rec,
        state=RETIRING,
        retired_at=now,
        remove_at=now + timing.retire_grace,
    )


def _activate(rec: KeyRecord, now: float) -> KeyRecord:
    return dataclasses.replace(rec, state=ACTIVE, activated_at=now)


def _erase(rec: KeyRecord, now: float, *, compromised: bool = False) -> KeyRecord:
    reason = "compromised" if compromised else rec.reason
    return dataclasses.replace(rec, state=RETIRED, material=None, removed_at=now, reason=reason)


def _by_age(records: list[KeyRecord]) -> list[KeyRecord]:
    return sorted(records, key=lambda r: (r.created_at, r.kid))


def plan_tick(records: list[KeyRecord], now: float, timing: Timing) -> Transition:
    """The scheduled step at ``now``: retire what expired, activate a pending key that has
    been published long enough, and start a rotation when the active key is due."""
    active = _by_age([r for r in records if r.state == ACTIVE])
    pending = _by_age([r for r in records if r.state == PENDING])
    retiring = [r for r in records if r.state == RETIRING]
    updates = [_erase(r, now) for r in retiring if now >= removal_time(r, timing)]

    ready = [p for p in pending if now >= activation_time(p, timing)]
    if not active and pending and not ready:
        # Nothing can sign (only reachable by editing the store by hand): signing early beats
        # refusing every token request.
        ready = pending[:1]
    if ready:
        successor = ready[0]
        updates.extend(_retire(a, now, timing) for a in active)
        updates.append(_activate(successor, now))
        return Transition(updates=updates)
    if not active:
        # The first key: nothing is published, so no verifier holds a stale JWKS.
        return Transition(updates=updates, new_key=(ACTIVE, "initial"))
    newest = max(active, key=lambda r: r.activated_at or r.created_at)
    started = newest.activated_at if newest.activated_at is not None else newest.created_at
    due = started + timing.rotation_interval - timing.publish_lead
    if not pending and now >= due:
        return Transition(updates=updates, new_key=(PENDING, "scheduled"))
    return Transition(updates=updates)


def plan_rotate(records: list[KeyRecord]) -> Transition:
    """A manual, orderly rotation: publish a new pending key now (it signs after the publish
    lead). No change when a pending key already exists: that rotation is under way."""
    if any(r.state == PENDING for r in records):
        return Transition()
    return Transition(new_key=(PENDING, "manual"))


def plan_emergency(records: list[KeyRecord], now: float) -> Transition:
    """Withdraw every published key at once (their material is erased) and create a fresh
    active key. Tokens they signed stop validating as soon as verifiers re-read the JWKS."""
    updates = [_erase(r, now, compromised=True) for r in records if r.state in PUBLISHED]
    return Transition(updates=updates, new_key=(ACTIVE, "emergency"))


def signing_key(records: list[KeyRecord]) -> KeyRecord | None:
    """The active key (the most recently activated if a hand-edited store holds several)."""
    active = [r for r in records if r.state == ACTIVE]
    if not active:
        return None
    return max(active, key=lambda r: (r.activated_at or r.created_at, r.kid))


def published(records: list[KeyRecord]) -> list[KeyRecord]:
    """The keys of the JWKS: active first, then pending, then retiring (newest first)."""
    order = {ACTIVE: 0, PENDING: 1, RETIRING: 2}
    keys = [r for r in records if r.state in order]
    return sorted(keys, key=lambda r: (order[r.state], -r.created_at, r.kid))
