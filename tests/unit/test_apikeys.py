"""API keys: the format, hashing, constant-time comparison, and the gateway's ApiKeyIndex."""

from __future__ import annotations

import hmac
import string
from dataclasses import replace
from typing import Any

import pytest

from bastion.core import apikeys
from bastion.core.apikeys import hash_secret, new_api_key, parse_api_key, secret_matches
from bastion.core.clock import ManualClock
from bastion.errors import StoreError
from bastion.gateway.layers.authn.apikeys import ApiKeyIndex
from bastion.store.base import ApiKeyRecord

PEPPER = b"p" * 32


# --- format ----------------------------------------------------------------------------------


def test_new_key_has_the_documented_shape() -> None:
    key_id, secret, full = new_api_key()
    assert full == f"bsk_{key_id}_{secret}"
    assert len(key_id) == 16
    assert set(key_id) <= set(string.ascii_lowercase + string.digits)
    assert len(secret) == 43
    assert set(secret) <= set(string.ascii_letters + string.digits + "-_")
    assert parse_api_key(full) == (key_id, secret)


def test_new_keys_are_random() -> None:
    keys = {new_api_key()[2] for _ in range(200)}
    assert len(keys) == 200
    assert len({k[4:20] for k in keys}) == 200


def test_secret_may_contain_underscores_and_still_parses() -> None:
    key_id, secret = "a" * 16, "_" * 43
    assert parse_api_key(f"bsk_{key_id}_{secret}") == (key_id, secret)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "bsk_",
        "bsk__",
        "Bsk_" + "a" * 16 + "_" + "A" * 43,  # wrong prefix case
        "bsx_" + "a" * 16 + "_" + "A" * 43,  # wrong prefix
        "bsk_" + "A" * 16 + "_" + "A" * 43,  # upper-case id
        "bsk_" + "a" * 15 + "_" + "A" * 44,  # id too short (same total length)
        "bsk_" + "a" * 16 + "-" + "A" * 43,  # wrong separator
        "bsk_" + "a" * 16 + "_" + "A" * 42,  # secret too short
        "bsk_" + "a" * 16 + "_" + "A" * 44,  # too long
        "bsk_" + "a" * 16 + "_" + "A" * 42 + "=",  # padding
        "bsk_" + "a" * 16 + "_" + "A" * 42 + "+",  # not base64url
        "bsk_" + "a" * 16 + "_" + "A" * 42 + "\n",  # trailing newline
        "bsk_" + "a" * 15 + "\u0661" + "_" + "A" * 43,  # Arabic-Indic digit in the id
        "bsk_" + "a" * 16 + "_" + "A" * 42 + "\u00e9",  # unicode in the secret
        "bsk_" + "a" * 16 + "_" + "A" * 43 + "x" * 10_000,  # much too long
        " bsk_" + "a" * 16 + "_" + "A" * 42,
    ],
)
def test_malformed_values_do_not_parse(value: str) -> None:
    assert parse_api_key(value) is None


def test_non_string_input_does_not_raise() -> None:
    assert parse_api_key(None) is None  # type: ignore[arg-type]
    assert parse_api_key(b"bsk_" + b"a" * 60) is None  # type: ignore[arg-type]


# --- hashing ---------------------------------------------------------------------------------


def test_hash_is_hmac_sha256_under_the_pepper() -> None:
    h = hash_secret(PEPPER, "secret")
    assert h == hmac.new(PEPPER, b"secret", "sha256").hexdigest()
    assert h != hash_secret(b"q" * 32, "secret")
    assert "secret" not in h


def test_secret_matches() -> None:
    h = hash_secret(PEPPER, "s3cret")
    assert secret_matches(PEPPER, "s3cret", h)
    assert not secret_matches(PEPPER, "s3cres", h)
    assert not secret_matches(b"q" * 32, "s3cret", h)
    assert not secret_matches(PEPPER, "s3cret", "")
    assert not secret_matches(PEPPER, "s3cret", "\u00e9" * 64)  # damaged row: no TypeError


def test_secret_matches_uses_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
    h = hash_secret(PEPPER, "x")
    assert secret_matches(PEPPER, "x", h)
    assert not secret_matches(PEPPER, "y", h)
    assert len(calls) == 2


# --- ApiKeyIndex -----------------------------------------------------------------------------


class FakeStore:
    """Just the two store methods ApiKeyIndex uses, counting calls."""

    def __init__(self, records: list[ApiKeyRecord]) -> None:
        self.records = {r.id: r for r in records}
        self.get_calls = 0
        self.fail = False

    async def list_api_keys(self, client_id: str | None = None) -> list[ApiKeyRecord]:
        return list(self.records.values())

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        self.get_calls += 1
        if self.fail:
            raise StoreError(diagnosis="database is locked")
        return self.records.get(key_id)


def make_key(
    now: float, *, expires_in: float | None = 3600.0, scopes: tuple[str, ...] = ("read",)
) -> tuple[ApiKeyRecord, str]:
    key_id, secret, full = new_api_key()
    rec = ApiKeyRecord(
        id=key_id,
        client_id="client-1",
        secret_hash=hash_secret(PEPPER, secret),
        scopes=scopes,
        created_at=now,
        expires_at=None if expires_in is None else now + expires_in,
    )
    return rec, full


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def _index(clock: ManualClock, *records: ApiKeyRecord) -> tuple[ApiKeyIndex, FakeStore]:
    store = FakeStore(list(records))
    index = ApiKeyIndex(store, PEPPER, clock)  # type: ignore[arg-type]
    await index.load()
    return index, store


async def test_valid_key_gives_its_principal(clock: ManualClock) -> None:
    rec, full = make_key(clock.now(), scopes=("read", "write"))
    index, store = await _index(clock, rec)
    principal, reason = await index.verify(full)
    assert reason == ""
    assert principal is not None
    assert principal.kind == "api_key"
    assert principal.subject == principal.client_id == "client-1"
    assert principal.scopes == frozenset({"read", "write"})
    assert principal.key_id == rec.id
    assert store.get_calls == 0


async def test_wrong_secret_is_rejected(clock: ManualClock) -> None:
    rec, full = make_key(clock.now())
    index, _ = await _index(clock, rec)
    forged = full[:-1] + ("A" if full[-1] != "A" else "B")
    assert await index.verify(forged) == (None, "api_key: wrong secret")


async def test_wrong_secret_is_compared_in_constant_time(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, full = make_key(clock.now())
    index, _ = await _index(clock, rec)
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    await index.verify(full[:-1] + ("A" if full[-1] != "A" else "B"))
    assert calls == [1]


async def test_revoked_by_event_without_store_call(clock: ManualClock) -> None:
    rec, full = make_key(clock.now())
    index, store = await _index(clock, rec)
    assert (await index.verify(full))[0] is not None
    index.apply({"type": "api_key.revoked", "key_id": rec.id, "at": clock.now()})
    assert await index.verify(full) == (None, "api_key: revoked")
    assert store.get_calls == 0


async def test_revocation_event_before_the_key_is_loaded_still_wins(clock: ManualClock) -> None:
    rec, full = make_key(clock.now())
    index, store = await _index(clock)
    index.apply({"type": "api_key.revoked", "key_id": rec.id, "at": clock.now()})
    store.records[rec.id] = rec  # a lagging replica still returns it as active
    assert await index.verify(full) == (None, "api_key: revoked")


async def test_revoked_in_store_record(clock: ManualClock) -> None:
    rec, full = make_key(clock.now())
    index, _ = await _index(clock, replace(rec, revoked_at=clock.now() - 1))
    assert await index.verify(full) == (None, "api_key: revoked")


async def test_expired_key_is_rejected(clock: ManualClock) -> None:
    rec, full = make_key(clock.now(), expires_in=60)
    index, _ = await _index(clock, rec)
    assert (await index.verify(full))[0] is not None
    clock.advance(60)
    assert await index.verify(full) == (None, "api_key: expired")


async def test_state_is_only_told_to_holders_of_the_secret(clock: ManualClock) -> None:
    rec, full = make_key(clock.now(), expires_in=60)
    index, _ = await _index(clock, rec)
    clock.advance(120)
    assert await index.verify(full[:-1] + ("A" if full[-1] != "A" else "B")) == (
        None,
        "api_key: wrong secret",
    )


async def test_unknown_id_hits_the_store_once_then_negative_cache(clock: ManualClock) -> None:
    index, store = await _index(clock)
    _, _, full = new_api_key()
    for _ in range(5):
        assert await index.verify(full) == (None, "api_key: unknown id")
    assert store.get_calls == 1
    clock.advance(2.5)  # negative_ttl passed
    assert await index.verify(full) == (None, "api_key: unknown id")
    assert store.get_calls == 2


async def test_created_event_clears_the_negative_entry(clock: ManualClock) -> None:
    index, store = await _index(clock)
    rec, full = make_key(clock.now())
    assert await index.verify(full) == (None, "api_key: unknown id")
    store.records[rec.id] = rec
    index.apply({"type": "api_key.created", "key_id": rec.id})
    principal, _ = await index.verify(full)
    assert principal is not None
    assert principal.key_id == rec.id
    assert store.get_calls == 2
    assert (await index.verify(full))[0] is not None
    assert store.get_calls == 2  # now held in memory


async def test_negative_cache_is_bounded(clock: ManualClock) -> None:
    store = FakeStore([])
    index = ApiKeyIndex(store, PEPPER, clock, max_negative=10)  # type: ignore[arg-type]
    fulls = [new_api_key()[2] for _ in range(50)]
    for full in fulls:
        await index.verify(full)
    assert len(index._negative) <= 10
    assert store.get_calls == 50
    await index.verify(fulls[-1])  # the newest entries are kept
    assert store.get_calls == 50


async def test_store_error_fails_closed(clock: ManualClock) -> None:
    index, store = await _index(clock)
    rec, full = make_key(clock.now())
    store.records[rec.id] = rec
    store.fail = True
    assert await index.verify(full) == (None, "api_key: store unavailable")
    store.fail = False
    assert (await index.verify(full))[0] is not None  # an error is not negatively cached


@pytest.mark.parametrize("value", ["", "bsk_", "Bearer x", "bsk_" + "é" * 60, "x" * 100_000])
async def test_malformed_values_never_reach_the_store(clock: ManualClock, value: str) -> None:
    index, store = await _index(clock)
    assert await index.verify(value) == (None, "api_key: malformed")
    assert store.get_calls == 0


async def test_malformed_events_are_ignored(clock: ManualClock) -> None:
    rec, full = make_key(clock.now())
    index, _ = await _index(clock, rec)
    index.apply({"type": "api_key.revoked"})
    index.apply({"type": "api_key.revoked", "key_id": 7})
    index.apply({"type": "something.else", "key_id": rec.id})
    assert (await index.verify(full))[0] is not None


def test_short_pepper_is_refused(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ApiKeyIndex(FakeStore([]), b"short", clock)  # type: ignore[arg-type]


def test_repr_never_shows_the_pepper(clock: ManualClock) -> None:
    index = ApiKeyIndex(FakeStore([]), PEPPER, clock)  # type: ignore[arg-type]
    assert "ppp" not in repr(index)


# --- verify_now: the index's synchronous answers ----------------------------------------------


async def test_verify_now_answers_every_key_held_in_memory_like_verify(clock: ManualClock) -> None:
    good, good_key = make_key(clock.now())
    revoked, revoked_key = make_key(clock.now())
    expired, expired_key = make_key(clock.now(), expires_in=10)
    index, store = await _index(clock, good, revoked, expired)
    index.apply({"type": "api_key.revoked", "key_id": revoked.id, "at": clock.now()})
    clock.advance(60)
    wrong = good_key[:-1] + ("A" if good_key[-1] != "A" else "B")
    for presented, reason in [
        (good_key, ""),
        (wrong, "api_key: wrong secret"),
        (revoked_key, "api_key: revoked"),
        (expired_key, "api_key: expired"),
        ("bsk_nope", "api_key: malformed"),
    ]:
        now = index.verify_now(presented)
        assert now is not None
        assert now[1] == reason
        assert now == await index.verify(presented)
    assert store.get_calls == 0


async def test_verify_now_defers_only_ids_the_store_must_be_asked_about(
    clock: ManualClock,
) -> None:
    index, store = await _index(clock)
    rec, full = make_key(clock.now())
    assert index.verify_now(full) is None  # not in memory: only the store can tell
    assert store.get_calls == 0
    assert await index.verify(full) == (None, "api_key: unknown id")
    assert index.verify_now(full) == (None, "api_key: unknown id")  # negative cache
    clock.advance(3)  # past negative_ttl: ask the store again
    assert index.verify_now(full) is None
    store.records[rec.id] = rec
    principal, reason = await index.verify(full)
    assert reason == ""
    assert principal is not None
    assert index.verify_now(full) == (principal, "")  # loaded: answered in memory from now on
    assert store.get_calls == 2


async def test_index_accepts_exactly_what_secret_matches_accepts(clock: ManualClock) -> None:
    rec, full = make_key(clock.now())
    _, secret = parse_api_key(full) or ("", "")
    upper = replace(rec, id="b" * 16, secret_hash=rec.secret_hash.upper())
    damaged = replace(rec, id="c" * 16, secret_hash="\u00e9" * 64)
    index, _ = await _index(clock, rec, upper, damaged)
    assert secret_matches(PEPPER, secret, rec.secret_hash)
    accepted = index.verify_now(full)
    assert accepted is not None
    assert accepted[0] is not None
    assert accepted[1] == ""
    for other in (upper, damaged):
        assert not secret_matches(PEPPER, secret, other.secret_hash)
        assert index.verify_now(f"bsk_{other.id}_{secret}") == (None, "api_key: wrong secret")
