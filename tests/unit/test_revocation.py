"""RevocationState: jti, per-subject and per-client not-before revocations, events, loading
and pruning."""

from __future__ import annotations

import pytest

from bastion.core.clock import ManualClock
from bastion.core.revocation import RevocationState
from bastion.store.base import Revocation

ISS = "https://idp.test"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def state(clock: ManualClock) -> RevocationState:
    return RevocationState(clock)


def test_nothing_revoked_by_default(state: RevocationState, clock: ManualClock) -> None:
    assert not state.is_token_revoked(ISS, "alice", "j1", clock.now())
    assert not state.is_token_revoked(ISS, "alice", None, None)


def test_revoked_jti(state: RevocationState, clock: ManualClock) -> None:
    state.revoke_jti("j1", clock.now() + 60)
    assert state.is_token_revoked(ISS, "alice", "j1", clock.now())
    assert not state.is_token_revoked(ISS, "alice", "j2", clock.now())


def test_subject_not_before_for_one_issuer(state: RevocationState, clock: ManualClock) -> None:
    t = clock.now()
    state.raise_not_before("alice", ISS, t)
    assert state.is_token_revoked(ISS, "alice", "j1", t - 1)
    assert not state.is_token_revoked(ISS, "alice", "j1", t)  # issued at the bar: new login
    assert not state.is_token_revoked("https://other", "alice", "j1", t - 1)
    assert not state.is_token_revoked(ISS, "bob", "j1", t - 1)


def test_subject_not_before_for_every_issuer(state: RevocationState, clock: ManualClock) -> None:
    t = clock.now()
    state.raise_not_before("alice", None, t)
    assert state.is_token_revoked(ISS, "alice", None, t - 1)
    assert state.is_token_revoked("https://other", "alice", None, t - 1)


def test_token_without_iat_is_revoked_once_the_subject_has_a_bar(state: RevocationState) -> None:
    state.raise_not_before("alice", ISS, 10.0)
    assert state.is_token_revoked(ISS, "alice", "j1", None)


def test_not_before_only_moves_forward(state: RevocationState) -> None:
    state.raise_not_before("alice", ISS, 100.0)
    state.raise_not_before("alice", ISS, 50.0)
    assert state.is_token_revoked(ISS, "alice", None, 99.0)


def test_apply_events(state: RevocationState, clock: ManualClock) -> None:
    now = clock.now()
    state.apply({"type": "token.revoked", "jti": "j1", "expires_at": now + 60})
    state.apply({"type": "subject.revoked", "subject": "bob", "issuer": None, "not_before": now})
    assert state.is_token_revoked(ISS, "alice", "j1", now)
    assert state.is_token_revoked(ISS, "bob", "j9", now - 5)


@pytest.mark.parametrize(
    "event",
    [
        {"type": "token.revoked"},
        {"type": "token.revoked", "jti": "", "expires_at": 1.0},
        {"type": "token.revoked", "jti": "j1", "expires_at": "soon"},
        {"type": "token.revoked", "jti": "j1", "expires_at": float("nan")},
        {"type": "token.revoked", "jti": "j1", "expires_at": True},
        {"type": "subject.revoked", "subject": "alice", "issuer": 3, "not_before": 1.0},
        {"type": "subject.revoked", "subject": None, "not_before": 1.0},
        {"type": "api_key.revoked", "key_id": "k"},
        {"type": "unknown.type", "jti": "j1"},
        {},
    ],
)
def test_malformed_and_unknown_events_are_ignored(
    state: RevocationState, event: dict[str, object]
) -> None:
    state.apply(event)
    assert len(state) == 0


def test_load_from_store_records(state: RevocationState, clock: ManualClock) -> None:
    now = clock.now()
    state.load(
        [
            Revocation("jti", "j1", ISS, None, now + 60, now),
            Revocation("subject", "alice", ISS, now, now + 3600, now),
            Revocation("subject", "bob", None, None, now + 3600, now - 10),
            Revocation("bogus", "x", None, None, now + 60, now),
        ]
    )
    assert state.is_token_revoked(ISS, "z", "j1", now)
    assert state.is_token_revoked(ISS, "alice", None, now - 1)
    assert state.is_token_revoked(ISS, "bob", None, now - 11)
    assert not state.is_token_revoked(ISS, "bob", None, now - 10)
    assert len(state) == 3


def test_prune_drops_expired_jti_entries(state: RevocationState, clock: ManualClock) -> None:
    now = clock.now()
    state.revoke_jti("short", now + 10)
    state.revoke_jti("long", now + 100)
    state.raise_not_before("alice", None, now)
    assert state.prune() == 0
    clock.advance(10)
    assert state.prune() == 1
    assert not state.is_token_revoked(ISS, "x", "short", now)
    assert state.is_token_revoked(ISS, "x", "long", now)
    assert state.is_token_revoked(ISS, "alice", None, now - 1)  # subject bars are kept


def test_revoking_again_keeps_the_later_expiry(state: RevocationState, clock: ManualClock) -> None:
    now = clock.now()
    state.revoke_jti("j1", now + 100)
    state.revoke_jti("j1", now + 10)
    clock.advance(50)
    state.prune()
    assert state.is_token_revoked(ISS, "x", "j1", now)


# -- client revocations (every access token issued to one client) ---------------------------


def test_nothing_revoked_by_client_by_default(state: RevocationState, clock: ManualClock) -> None:
    assert not state.is_client_revoked("app", clock.now())
    assert not state.is_client_revoked("app", None)
    assert not state.is_client_revoked(None, None)


def test_client_bar(state: RevocationState, clock: ManualClock) -> None:
    t = clock.now()
    state.revoke_client("app", t, t + 3900)
    assert state.is_client_revoked("app", t - 1)
    assert not state.is_client_revoked("app", t)  # issued at the bar: after the incident
    assert not state.is_client_revoked("other-app", t - 1)
    assert not state.is_client_revoked("APP", t - 1)  # ids are exact, not case-folded
    assert not state.is_client_revoked(None, t - 1)  # no client_id: subject/jti checks only
    # the client bar is not a subject bar: a user whose sub equals the client id is untouched
    assert not state.is_token_revoked(ISS, "app", "j1", t - 1)


def test_client_token_without_iat_is_revoked(state: RevocationState, clock: ManualClock) -> None:
    state.revoke_client("app", clock.now(), clock.now() + 60)
    assert state.is_client_revoked("app", None)


def test_client_bar_only_moves_forward(state: RevocationState, clock: ManualClock) -> None:
    t = clock.now()
    state.revoke_client("app", t, t + 100)
    state.revoke_client("app", t - 50, t + 10)  # a replayed older event
    assert state.is_client_revoked("app", t - 1)
    clock.advance(50)
    assert state.prune() == 0  # kept until the later expiry
    assert state.is_client_revoked("app", t - 1)
    state.revoke_client("app", t + 20, t + 200)
    assert state.is_client_revoked("app", t + 19)


def test_apply_client_event(state: RevocationState, clock: ManualClock) -> None:
    t = clock.now()
    state.apply(
        {
            "type": "client.revoked",
            "client_id": "app",
            "issuer": ISS,
            "not_before": t,
            "expires_at": t + 3900,
        }
    )
    assert state.is_client_revoked("app", t - 1)
    assert not state.is_client_revoked("app", t + 1)
    assert len(state) == 1


@pytest.mark.parametrize(
    "event",
    [
        {"type": "client.revoked", "client_id": "app", "not_before": 1.0},
        {"type": "client.revoked", "client_id": "app", "expires_at": 9e18},
        {"type": "client.revoked", "client_id": "", "not_before": 1.0, "expires_at": 9e18},
        {"type": "client.revoked", "client_id": 7, "not_before": 1.0, "expires_at": 9e18},
        {"type": "client.revoked", "client_id": "app", "not_before": "1", "expires_at": 9e18},
        {"type": "client.revoked", "client_id": "app", "not_before": True, "expires_at": 9e18},
        {
            "type": "client.revoked",
            "client_id": "app",
            "not_before": float("nan"),
            "expires_at": 9e18,
        },
        {"type": "client.revoked", "client_id": "app", "not_before": 1.0, "expires_at": None},
    ],
)
def test_malformed_client_events_are_ignored(
    state: RevocationState, event: dict[str, object]
) -> None:
    state.apply(event)
    assert len(state) == 0


def test_load_client_records(state: RevocationState, clock: ManualClock) -> None:
    now = clock.now()
    state.load(
        [
            Revocation("client", "app", ISS, now, now + 3900, now),
            Revocation("client", "old", None, None, now + 60, now - 10),  # bar = created_at
        ]
    )
    assert state.is_client_revoked("app", now - 1)
    assert not state.is_client_revoked("app", now)
    assert state.is_client_revoked("old", now - 11)
    assert not state.is_client_revoked("old", now - 10)
    assert len(state) == 2


def test_prune_drops_client_bars_no_token_can_match(
    state: RevocationState, clock: ManualClock
) -> None:
    now = clock.now()
    state.revoke_client("short", now, now + 10)
    state.revoke_client("long", now, now + 100)
    clock.advance(10)
    assert state.prune() == 1
    assert not state.is_client_revoked("short", now - 1)
    assert state.is_client_revoked("long", now - 1)
    clock.advance(90)
    assert state.prune() == 1
    assert len(state) == 0


def test_version_moves_with_every_revocation_added_and_never_with_prune(
    state: RevocationState, clock: ManualClock
) -> None:
    seen = [state.version]
    state.revoke_jti("j1", clock.now() + 1)
    seen.append(state.version)
    state.raise_not_before("alice", ISS, clock.now())
    seen.append(state.version)
    state.revoke_client("app", clock.now(), clock.now() + 1)
    seen.append(state.version)
    state.apply({"type": "token.revoked", "jti": "j2", "expires_at": clock.now() + 1})
    seen.append(state.version)
    state.load([Revocation("jti", "j3", None, None, clock.now() + 1, clock.now())])
    seen.append(state.version)
    assert seen == sorted(set(seen))  # strictly increasing
    state.apply({"type": "token.revoked"})  # malformed: ignored, nothing added
    assert state.version == seen[-1]
    clock.advance(10)
    assert state.prune() > 0
    assert state.version == seen[-1]
