"""bastion.control.keys: create (secret once), list with states, rotation grace, expiry,
revoke, the hygiene report — all on a hand-moved clock."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.control.keys import (
    DAY,
    ApplicationContact,
    ApplicationNotFound,
    KeyConflict,
    KeyInvalid,
    KeyNotFound,
    KeyPolicy,
    KeyService,
    key_id_from,
)
from bastion.core.apikeys import hash_secret, parse_api_key
from bastion.core.clock import ManualClock
from bastion.gateway.layers.authn.apikeys import ApiKeyIndex
from bastion.gateway.layers.authn.config import ApiKeysConfig
from bastion.store import MemoryStore
from bastion.store.base import ClientRecord

PEPPER = b"k" * 32


class Pushed:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = False

    async def __call__(self, event: dict[str, Any]) -> None:
        if self.fail:
            raise ConnectionError("redis down")
        self.events.append(event)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_800_000_000.0)


@pytest.fixture
async def store() -> MemoryStore:
    s = MemoryStore()
    await s.put_client(ClientRecord("billing", "Billing", 0.0))
    await s.put_client(ClientRecord("crm", "CRM", 0.0))
    return s


@pytest.fixture
def pushed() -> Pushed:
    return Pushed()


@pytest.fixture
def svc(store: MemoryStore, clock: ManualClock, pushed: Pushed) -> KeyService:
    return KeyService(store, PEPPER, clock=clock, publish=pushed)


def _index(store: MemoryStore, clock: ManualClock) -> ApiKeyIndex:
    return ApiKeyIndex(store, PEPPER, clock, max_age=KeyPolicy().max_age)


# -- create -------------------------------------------------------------------------------------


async def test_create_shows_the_secret_once_and_stores_only_its_hmac(
    svc: KeyService, store: MemoryStore, pushed: Pushed, clock: ManualClock
) -> None:
    issued = await svc.create("billing", scopes=["b:read", "a:write", "b:read"], name="ci")
    parsed = parse_api_key(issued.secret)
    assert parsed is not None
    key_id, secret = parsed
    assert issued.key.id == key_id
    assert issued.key.scopes == ("a:write", "b:read")
    assert issued.key.expires_at == clock.now() + 180 * DAY
    assert issued.key.state == "active"
    rec = await store.get_api_key(key_id)
    assert rec is not None
    assert rec.secret_hash == hash_secret(PEPPER, secret)
    assert secret not in repr(rec)
    # Never again: not in repr, not in the view, not in the listing, not in the event.
    assert issued.secret not in repr(issued)
    assert secret not in str(issued.key.to_dict())
    assert secret not in str([v.to_dict() for v in await svc.list_keys()])
    assert pushed.events == [{"type": "api_key.created", "key_id": key_id, "client_id": "billing"}]
    assert issued.to_dict()["key"] == issued.secret
    assert secret not in repr(svc)


async def test_create_for_an_unknown_application(svc: KeyService, store: MemoryStore) -> None:
    with pytest.raises(ApplicationNotFound):
        await svc.create("ghost")
    assert await store.list_api_keys() == []
    issued = await svc.create("newapp", create_application=True)
    assert issued.key.client_id == "newapp"
    assert await store.get_client("newapp") is not None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scopes": "read"},  # a string, not a list
        {"scopes": ["has space"]},
        {"scopes": ['quote"']},
        {"scopes": [""]},
        {"scopes": ["x" * 129]},
        {"scopes": [f"s{i}" for i in range(65)]},
        {"name": "x" * 201},
        {"name": "line\nbreak"},
        {"owner": "\x00"},
        {"ttl": 0},
        {"ttl": -1},
        {"ttl": 181 * DAY},
    ],
)
async def test_create_refuses_bad_input(
    svc: KeyService, store: MemoryStore, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(KeyInvalid):
        await svc.create("billing", **kwargs)
    assert await store.list_api_keys() == []


@pytest.mark.parametrize("client", ["", "a b", "x" * 129, "tab\t", "nul\x00"])
async def test_create_refuses_a_bad_application_id(svc: KeyService, client: str) -> None:
    with pytest.raises(KeyInvalid):
        await svc.create(client, create_application=True)


async def test_a_failed_push_does_not_fail_the_committed_change(
    svc: KeyService, store: MemoryStore, pushed: Pushed
) -> None:
    pushed.fail = True
    issued = await svc.create("billing")
    assert await store.get_api_key(issued.key.id) is not None
    await svc.revoke(issued.key.id)
    rec = await store.get_api_key(issued.key.id)
    assert rec is not None
    assert rec.revoked_at is not None


def test_service_and_policy_refuse_weak_settings(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="pepper"):
        KeyService(store, b"short")
    with pytest.raises(ValueError, match="default_ttl"):
        KeyPolicy(default_ttl=200 * DAY)
    with pytest.raises(ValueError, match="warn_age"):
        KeyPolicy(warn_age=180 * DAY)
    with pytest.raises(ValueError, match="rotation_grace"):
        KeyPolicy(rotation_grace=-1)


def test_policy_from_config() -> None:
    cfg = ApiKeysConfig(max_age="120d", warn_age="60d", default_ttl="90d", rotation_grace="2d")
    policy = KeyPolicy.from_config(cfg)
    assert (policy.max_age, policy.warn_age) == (120 * DAY, 60 * DAY)
    assert (policy.default_ttl, policy.rotation_grace) == (90 * DAY, 2 * DAY)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default_ttl": "200d"},
        {"warn_age": "180d"},
        {"rotation_grace": "91d"},
        {"usage_flush_interval": 0},
    ],
)
def test_config_refuses_inconsistent_lifecycle(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's ValidationError is a ValueError
        ApiKeysConfig(**kwargs)


# -- list and states ----------------------------------------------------------------------------


async def test_states_move_with_the_clock(svc: KeyService, clock: ManualClock) -> None:
    issued = await svc.create("billing")
    kid = issued.key.id
    assert (await svc.get(kid)).state == "active"
    clock.advance(90 * DAY - 1)
    assert (await svc.get(kid)).state == "active"
    clock.advance(1)
    assert (await svc.get(kid)).state == "warning"
    clock.advance(90 * DAY)
    assert (await svc.get(kid)).state == "expired"
    assert await svc.list_keys(include_ended=False) == []
    assert [v.id for v in await svc.list_keys()] == [kid]


async def test_list_filters_by_application(svc: KeyService) -> None:
    a = await svc.create("billing")
    b = await svc.create("crm")
    assert [v.id for v in await svc.list_keys("billing")] == [a.key.id]
    assert {v.id for v in await svc.list_keys()} == {a.key.id, b.key.id}


async def test_max_age_caps_a_key_stored_without_expiry(
    svc: KeyService, store: MemoryStore, clock: ManualClock
) -> None:
    issued = await svc.create("billing")
    rec = await store.get_api_key(issued.key.id)
    assert rec is not None
    legacy = rec.__class__(**{**_fields(rec), "id": "l" * 16, "expires_at": None})
    await store.put_api_key(legacy)
    view = await svc.get(legacy.id)
    assert view.expires_at == legacy.created_at + 180 * DAY
    clock.advance(180 * DAY)
    assert (await svc.get(legacy.id)).state == "expired"


def _fields(rec: Any) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in rec.__dataclass_fields__}


@pytest.mark.parametrize("text", ["", "bsk_", "ABCDEFGHIJKLMNOP", "short", "../../etc/passwd"])
async def test_malformed_ids_are_not_found(svc: KeyService, text: str) -> None:
    with pytest.raises(KeyNotFound):
        await svc.get(text)
    with pytest.raises(KeyInvalid):
        key_id_from(text)


def test_key_id_from_drops_the_secret() -> None:
    assert key_id_from("abcdefghij012345") == "abcdefghij012345"
    assert key_id_from("bsk_abcdefghij012345") == "abcdefghij012345"
    assert key_id_from("bsk_abcdefghij012345_" + "S" * 43) == "abcdefghij012345"


# -- rotation -----------------------------------------------------------------------------------


async def test_rotation_grace_old_key_works_inside_and_fails_after(
    svc: KeyService, store: MemoryStore, clock: ManualClock, pushed: Pushed
) -> None:
    issued = await svc.create("billing", scopes=["r"], name="ci", owner="alice")
    index = _index(store, clock)
    await index.load()
    clock.advance(100 * DAY)
    rotation = await svc.rotate(issued.key.id)
    new = rotation.successor
    assert rotation.previous.state == "rotating"
    assert rotation.previous.expires_at == clock.now() + 7 * DAY
    assert rotation.previous.replaced_by == new.key.id
    assert new.key.rotated_from == issued.key.id
    assert (new.key.client_id, new.key.scopes, new.key.name, new.key.owner) == (
        "billing",
        ("r",),
        "ci",
        "alice",
    )
    assert new.key.expires_at == clock.now() + 180 * DAY
    assert pushed.events[-1] == {
        "type": "api_key.created",
        "key_id": new.key.id,
        "client_id": "billing",
        "replaces": issued.key.id,
        "replaces_until": clock.now() + 7 * DAY,
    }
    index.apply(pushed.events[-1])
    # Inside the grace period both keys work.
    clock.advance(7 * DAY - 1)
    assert (await index.verify(issued.secret))[0] is not None
    assert (await index.verify(new.secret))[0] is not None
    # After it the old one is refused, with no write of any kind.
    clock.advance(1)
    seq = await store.last_change_seq()
    assert await index.verify(issued.secret) == (None, "api_key: expired")
    assert (await index.verify(new.secret))[0] is not None
    assert await store.last_change_seq() == seq
    assert (await svc.get(issued.key.id)).state == "expired"


async def test_rotation_never_extends_the_old_key(svc: KeyService, clock: ManualClock) -> None:
    issued = await svc.create("billing", ttl=10 * DAY)
    clock.advance(5 * DAY)
    rotation = await svc.rotate(issued.key.id, grace=30 * DAY)
    assert rotation.previous.expires_at == issued.key.expires_at


async def test_rotation_with_zero_grace_stops_the_old_key_now(
    svc: KeyService, store: MemoryStore, clock: ManualClock, pushed: Pushed
) -> None:
    issued = await svc.create("billing")
    index = _index(store, clock)
    await index.load()
    rotation = await svc.rotate(issued.key.id, grace=0)
    assert rotation.previous.state == "expired"
    index.apply(pushed.events[-1])
    assert await index.verify(issued.secret) == (None, "api_key: expired")


@pytest.mark.parametrize("case", ["revoked", "expired", "rotated"])
async def test_a_key_that_ended_or_was_rotated_cannot_rotate(
    svc: KeyService, store: MemoryStore, clock: ManualClock, case: str
) -> None:
    issued = await svc.create("billing", ttl=DAY)
    if case == "revoked":
        await svc.revoke(issued.key.id)
    elif case == "expired":
        clock.advance(DAY)
    else:
        await svc.rotate(issued.key.id)
    count = len(await store.list_api_keys())
    with pytest.raises(KeyConflict):
        await svc.rotate(issued.key.id)
    assert len(await store.list_api_keys()) == count


@pytest.mark.parametrize("kwargs", [{"grace": -1}, {"grace": 91 * DAY}, {"ttl": 0}, {"ttl": 1e12}])
async def test_rotation_refuses_bad_bounds(svc: KeyService, kwargs: dict[str, Any]) -> None:
    issued = await svc.create("billing")
    with pytest.raises(KeyInvalid):
        await svc.rotate(issued.key.id, **kwargs)
    assert (await svc.get(issued.key.id)).state == "active"


async def test_rotation_of_an_unknown_key(svc: KeyService) -> None:
    with pytest.raises(KeyNotFound):
        await svc.rotate("a" * 16)


async def test_a_rotation_that_loses_a_race_is_a_conflict(
    svc: KeyService, store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = await svc.create("billing")

    async def refused(*args: object) -> bool:
        return False

    monkeypatch.setattr(store, "rotate_api_key", refused)
    with pytest.raises(KeyConflict):
        await svc.rotate(issued.key.id)


# -- revoke -------------------------------------------------------------------------------------


async def test_revoke_is_immediate_and_pushed(
    svc: KeyService, store: MemoryStore, clock: ManualClock, pushed: Pushed
) -> None:
    issued = await svc.create("billing")
    index = _index(store, clock)
    await index.load()
    view = await svc.revoke(issued.key.id)
    assert view.state == "revoked"
    assert pushed.events[-1] == {
        "type": "api_key.revoked",
        "key_id": issued.key.id,
        "at": clock.now(),
    }
    index.apply(pushed.events[-1])
    assert await index.verify(issued.secret) == (None, "api_key: revoked")
    with pytest.raises(KeyConflict):
        await svc.revoke(issued.key.id)
    with pytest.raises(KeyNotFound):
        await svc.revoke("z" * 16)


async def test_revoke_application_revokes_every_live_key(svc: KeyService, pushed: Pushed) -> None:
    a = await svc.create("billing")
    b = await svc.create("billing")
    other = await svc.create("crm")
    await svc.revoke(a.key.id)
    assert await svc.revoke_application("billing") == [b.key.id]
    assert (await svc.get(other.key.id)).state == "active"
    assert await svc.revoke_application("billing") == []
    with pytest.raises(ApplicationNotFound):
        await svc.revoke_application("ghost")
    assert [e["key_id"] for e in pushed.events if e["type"] == "api_key.revoked"] == [
        a.key.id,
        b.key.id,
    ]


# -- report -------------------------------------------------------------------------------------


async def test_report(svc: KeyService, store: MemoryStore, clock: ManualClock) -> None:
    old = await svc.create("billing", owner="alice")
    clock.advance(60 * DAY)
    unused = await svc.create("crm")  # no owner; crm's owner comes from the application
    used = await svc.create("billing")  # no owner at all
    revoked = await svc.create("billing")
    await svc.revoke(revoked.key.id)
    clock.advance(35 * DAY)
    await store.record_key_usage({used.key.id: (3, clock.now() - DAY), old.key.id: (1, 0.0)})
    apps = {"crm": ApplicationContact("crm", owner="team-crm", contact="")}
    report = await svc.report(apps)
    assert [k.id for k in report.old_keys] == [old.key.id]
    assert [k.id for k in report.unused_keys] == [old.key.id, unused.key.id]
    assert [k.id for k in report.keys_without_owner] == [used.key.id]
    assert report.applications_without_contact == ("billing", "crm")
    full = await svc.report(
        {
            "billing": ApplicationContact("billing", "o", "ops@example.com"),
            "crm": ApplicationContact("crm", "o", "crm@example.com"),
        }
    )
    assert full.applications_without_contact == ()
    assert full.keys_without_owner == ()
    body = report.to_dict()
    assert body["old_keys"][0]["id"] == old.key.id
    assert "key" not in body["old_keys"][0]
    assert body["generated_at"] == clock.now()


async def test_errors_render_as_problems_without_the_diagnosis(svc: KeyService) -> None:
    with pytest.raises(KeyNotFound) as caught:
        await svc.get("q" * 16)
    body = caught.value.problem()
    assert (body["status"], body["code"]) == (404, "api_keys.not_found")
    assert "q" * 16 not in str(body)
    issued = await svc.create("billing")
    await svc.revoke(issued.key.id)
    with pytest.raises(KeyConflict) as conflict:
        await svc.rotate(issued.key.id)
    assert conflict.value.problem()["status"] == 409
