"""The lifecycle decisions on plain records: when keys activate, retire and leave the JWKS."""

from __future__ import annotations

import dataclasses

from bastion.authserver.keys import lifecycle
from bastion.authserver.keys.lifecycle import (
    ACTIVE,
    PENDING,
    RETIRED,
    RETIRING,
    KeyRecord,
    Timing,
    plan_emergency,
    plan_rotate,
    plan_tick,
)

T = Timing(rotation_interval=86400.0, publish_lead=600.0, retire_grace=420.0)
NOW = 1_000_000.0


def rec(kid: str, state: str, **kw: float | None) -> KeyRecord:
    base = KeyRecord(
        kid=kid,
        alg="ES256",
        store="local",
        state=state,
        public_jwk={"kid": kid},
        material=b"m",
        created_at=kw.pop("created_at", NOW - 100_000) or 0.0,
        activate_at=kw.pop("activate_at", NOW - 100_000) or 0.0,
    )
    return dataclasses.replace(base, **kw)


def test_empty_store_gets_an_active_first_key() -> None:
    assert plan_tick([], NOW, T).new_key == (ACTIVE, "initial")


def test_nothing_to_do_for_a_fresh_active_key() -> None:
    assert plan_tick([rec("a", ACTIVE, activated_at=NOW - 10)], NOW, T).empty


def test_scheduled_rotation_starts_one_publish_lead_before_the_interval() -> None:
    active = rec("a", ACTIVE, activated_at=NOW)
    before = NOW + T.rotation_interval - T.publish_lead - 1
    assert plan_tick([active], before, T).empty
    due = plan_tick([active], before + 1, T)
    assert due.new_key == (PENDING, "scheduled")


def test_no_second_pending_key_while_one_waits() -> None:
    active = rec("a", ACTIVE, activated_at=NOW - T.rotation_interval)
    pending = rec("p", PENDING, created_at=NOW - 10, activate_at=NOW + 590)
    assert plan_tick([active, pending], NOW, T).empty


def test_pending_key_signs_only_after_two_jwks_lifetimes() -> None:
    active = rec("a", ACTIVE, activated_at=NOW - 1000)
    pending = rec("p", PENDING, created_at=NOW, activate_at=NOW + T.publish_lead)
    assert plan_tick([active, pending], NOW + T.publish_lead - 0.001, T).empty
    t = plan_tick([active, pending], NOW + T.publish_lead, T)
    states = {r.kid: r.state for r in t.updates}
    assert states == {"a": RETIRING, "p": ACTIVE}
    # Retirement is written before activation (one active key at any moment).
    assert [r.kid for r in t.updates] == ["a", "p"]
    retiring = t.updates[0]
    assert retiring.retired_at == NOW + T.publish_lead
    assert retiring.remove_at == NOW + T.publish_lead + T.retire_grace


def test_stored_activation_time_is_a_lower_bound_and_so_is_the_current_config() -> None:
    """A lead lengthened since the key was created (jwks_max_age raised) still applies."""
    active = rec("a", ACTIVE, activated_at=NOW - 1000)
    pending = rec("p", PENDING, created_at=NOW, activate_at=NOW + 60)
    assert plan_tick([active, pending], NOW + 61, T).empty
    later = dataclasses.replace(pending, activate_at=NOW + 5000)
    assert plan_tick([active, later], NOW + T.publish_lead, T).empty


def test_retiring_key_stays_published_until_its_tokens_expired() -> None:
    retiring = rec("r", RETIRING, retired_at=NOW, remove_at=NOW + T.retire_grace)
    active = rec("a", ACTIVE, activated_at=NOW)
    assert plan_tick([active, retiring], NOW + T.retire_grace - 0.001, T).empty
    t = plan_tick([active, retiring], NOW + T.retire_grace, T)
    assert [(r.kid, r.state, r.material) for r in t.updates] == [("r", RETIRED, None)]


def test_retire_grace_of_the_current_config_applies_too() -> None:
    """A token lifetime raised since the key retired keeps it published longer."""
    retiring = rec("r", RETIRING, retired_at=NOW, remove_at=NOW + 10)
    active = rec("a", ACTIVE, activated_at=NOW)
    assert plan_tick([active, retiring], NOW + 11, T).empty


def test_retiring_key_without_times_is_kept_until_grace_after_creation() -> None:
    retiring = rec("r", RETIRING, created_at=NOW, retired_at=None, remove_at=None)
    active = rec("a", ACTIVE, activated_at=NOW)
    assert plan_tick([active, retiring], NOW + T.retire_grace - 1, T).empty
    assert not plan_tick([active, retiring], NOW + T.retire_grace, T).empty


def test_no_active_key_but_a_pending_one_signs_early_rather_than_not_at_all() -> None:
    pending = rec("p", PENDING, created_at=NOW, activate_at=NOW + 600)
    t = plan_tick([pending], NOW, T)
    assert [(r.kid, r.state) for r in t.updates] == [("p", ACTIVE)]


def test_manual_rotation_publishes_a_pending_key_once() -> None:
    active = rec("a", ACTIVE, activated_at=NOW)
    assert plan_rotate([active]).new_key == (PENDING, "manual")
    assert plan_rotate([active, rec("p", PENDING)]).empty


def test_emergency_withdraws_every_published_key() -> None:
    keys = [
        rec("a", ACTIVE, activated_at=NOW),
        rec("p", PENDING),
        rec("r", RETIRING, retired_at=NOW),
        rec("x", RETIRED, material=None),
    ]
    t = plan_emergency(keys, NOW)
    assert t.new_key == (ACTIVE, "emergency")
    assert {r.kid for r in t.updates} == {"a", "p", "r"}
    assert all(r.state == RETIRED and r.material is None for r in t.updates)
    assert all(r.reason == "compromised" and r.removed_at == NOW for r in t.updates)


def test_new_records() -> None:
    kw = {"kid": "k", "alg": "ES256", "store": "local", "public_jwk": {}, "material": b"m"}
    active = lifecycle.new_record(**kw, state=ACTIVE, reason="initial", now=NOW, timing=T)  # type: ignore[arg-type]
    assert (active.state, active.activated_at, active.activate_at) == (ACTIVE, NOW, NOW)
    pending = lifecycle.new_record(**kw, state=PENDING, reason="manual", now=NOW, timing=T)  # type: ignore[arg-type]
    assert (pending.state, pending.activate_at) == (PENDING, NOW + T.publish_lead)


def test_published_order_and_signing_key() -> None:
    keys = [
        rec("r", RETIRING, created_at=1),
        rec("p", PENDING, created_at=3),
        rec("a", ACTIVE, created_at=2, activated_at=5),
        rec("x", RETIRED, created_at=0),
    ]
    assert [r.kid for r in lifecycle.published(keys)] == ["a", "p", "r"]
    assert lifecycle.signing_key(keys) is keys[2]
    assert lifecycle.signing_key([keys[0]]) is None
    two = [rec("a1", ACTIVE, activated_at=1), rec("a2", ACTIVE, activated_at=2)]
    assert lifecycle.signing_key(two) is two[1]
