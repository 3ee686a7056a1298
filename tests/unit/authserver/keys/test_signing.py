"""KeyManager on the memory store: signing, JWKS, rotation timing seen by a caching verifier,
two processes on one store, fail-closed staleness, tampered rows, config errors."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError
from joserfc.jwk import ECKey, KeySet
from pydantic import ValidationError

from bastion.authserver.keys import (
    KeyManager,
    KeysConfig,
    KeyStoreError,
    SigningUnavailable,
    open_key_manager,
)
from bastion.authserver.keys.lifecycle import ACTIVE, PENDING, RETIRED, RETIRING, KeyRecord
from bastion.authserver.keys.repo import KeyRepo, MemoryKeyRepo, key_repo
from bastion.authserver.keys.signing import build_keystore
from bastion.authserver.oauth.rfc9068 import quiet_registry
from bastion.core.clock import ManualClock
from bastion.crypto.keystore import Algorithm, NewKey, Signer
from bastion.crypto.local_keystore import LocalKeyStore
from bastion.errors import ConfigError, StoreError
from bastion.store.memory import MemoryStore
from bastion.store.sqlite import SqliteStore

LIFETIME = 300.0
KEK = os.urandom(32)


async def _manager(
    store: MemoryStore | None = None,
    clock: ManualClock | None = None,
    keystore: LocalKeyStore | None = None,
    **config: Any,
) -> KeyManager:
    return await open_key_manager(
        KeysConfig.model_validate(config),
        store if store is not None else MemoryStore(),
        token_max_lifetime=LIFETIME,
        clock=clock or ManualClock(),
        keystore=keystore or LocalKeyStore(KEK),
    )


def _repo(store: MemoryStore) -> MemoryKeyRepo:
    repo = key_repo(store)
    assert isinstance(repo, MemoryKeyRepo)
    return repo


async def test_first_key_signs_at_once_and_verifies_with_the_jwks() -> None:
    m = await _manager()
    token = await m.sign({"sub": "alice", "iss": "https://as"}, typ="at+jwt")
    jwks = await m.jwks()
    assert len(jwks["keys"]) == 1
    key = jwks["keys"][0]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}  # no private "d"
    decoded = jwt.decode(token, await m.public_key_set())
    assert decoded.header == {"typ": "at+jwt", "alg": "ES256", "kid": key["kid"]}
    assert decoded.claims["sub"] == "alice"
    assert m.jwks_max_age == 300


async def test_default_keystore_on_memory_store_needs_no_kek() -> None:
    m = await open_key_manager(KeysConfig(), MemoryStore(), token_max_lifetime=LIFETIME)
    assert (await m.jwks())["keys"]
    m.close()


@pytest.mark.parametrize(("alg", "kty"), [("EdDSA", "OKP"), ("PS256", "RSA")])
async def test_other_algorithms(alg: str, kty: str) -> None:
    m = await _manager(algorithm=alg)
    token = await m.sign({"sub": "a"}, typ="at+jwt")
    assert (await m.jwks())["keys"][0]["kty"] == kty
    # joserfc warns on "EdDSA" (RFC 9864); the registry without that warning, not a
    # process-wide warning filter (see rfc9068.quiet_registry)
    registry = quiet_registry((alg,))
    decoded = jwt.decode(token, await m.public_key_set(), registry=registry)
    assert decoded.header["alg"] == alg


async def test_a_token_signed_by_another_key_under_our_kid_does_not_verify() -> None:
    m = await _manager()
    kid = (await m.jwks())["keys"][0]["kid"]
    attacker = ECKey.generate_key("P-256")
    forged = jwt.encode({"alg": "ES256", "kid": kid, "typ": "at+jwt"}, {"sub": "root"}, attacker)
    with pytest.raises(BadSignatureError):
        jwt.decode(forged, await m.public_key_set())


async def test_emergency_rotation_withdraws_the_old_key_and_signs_with_a_new_one() -> None:
    m = await _manager()
    old_token = await m.sign({"sub": "a"}, typ="at+jwt")
    old_kid = (await m.jwks())["keys"][0]["kid"]
    new_kid = await m.rotate(emergency=True)
    assert new_kid != old_kid
    assert [k["kid"] for k in (await m.jwks())["keys"]] == [new_kid]
    with pytest.raises(InvalidKeyIdError):  # the old kid is gone from the set
        jwt.decode(old_token, await m.public_key_set())
    new_token = await m.sign({"sub": "a"}, typ="at+jwt")
    assert jwt.decode(new_token, await m.public_key_set()).header["kid"] == new_kid
    old = next(r for r in await m.records() if r.kid == old_kid)
    assert (old.state, old.reason, old.material) == (RETIRED, "compromised", None)


async def test_emergency_rotation_also_withdraws_pending_and_retiring_keys() -> None:
    clock = ManualClock()
    m = await _manager(clock=clock)
    await m.rotate()
    clock.advance(601)
    await m.tick()  # pending -> active, first -> retiring
    await m.rotate()  # a new pending key
    states = sorted(r.state for r in await m.records())
    assert states == [ACTIVE, PENDING, RETIRING]
    new = await m.rotate(emergency=True)
    assert [k["kid"] for k in (await m.jwks())["keys"]] == [new]


async def test_orderly_rotation_returns_the_pending_kid_and_is_idempotent() -> None:
    clock = ManualClock()
    m = await _manager(clock=clock)
    first = (await m.jwks())["keys"][0]["kid"]
    pending = await m.rotate()
    assert await m.rotate() == pending
    assert [k["kid"] for k in (await m.jwks())["keys"]] == [first, pending]
    token = await m.sign({}, typ="at+jwt")
    assert jwt.decode(token, await m.public_key_set()).header["kid"] == first  # not yet


class CachingVerifier:
    """A resource server that honours Cache-Control strictly: it re-fetches the JWKS only when
    its copy is ``max_age`` old, and never on an unknown kid (the worst case for us)."""

    def __init__(self, manager: KeyManager, clock: ManualClock) -> None:
        self.manager, self.clock = manager, clock
        self.keys: KeySet | None = None
        self.fetched_at = 0.0

    async def verify(self, token: str) -> None:
        if self.keys is None or self.clock.now() - self.fetched_at >= self.manager.jwks_max_age:
            self.keys = KeySet.import_key_set(await self.manager.jwks())  # type: ignore[arg-type]
            self.fetched_at = self.clock.now()
        jwt.decode(token, self.keys)


async def test_rotations_never_break_a_caching_verifier() -> None:
    """Scheduled rotation, then a manual one, across several hours of simulated time: every
    token verifies with whatever JWKS a strict cache holds until the token expires."""
    clock = ManualClock()
    m = await _manager(clock=clock, rotation_interval="1h", jwks_max_age="5m")
    # Verifiers that fetched at different moments (phase-shifted caches).
    verifiers = []
    for _ in range(4):
        v = CachingVerifier(m, clock)
        verifiers.append(v)
        await v.verify(await m.sign({"n": 0}, typ="at+jwt"))
        clock.advance(37)
    live: list[tuple[float, str]] = []
    kids_seen: set[str] = set()
    step = 20.0
    for i in range(int(4 * 3600 / step)):
        clock.advance(step)
        await m.tick()
        if i == 400:
            await m.rotate()
        token = await m.sign({"n": i}, typ="at+jwt")
        kids_seen.add(jwt.decode(token, await m.public_key_set()).header["kid"])
        live = [(exp, t) for exp, t in live if exp > clock.now()]
        live.append((clock.now() + LIFETIME, token))
        for v in verifiers:
            for _exp, t in live[-3:] + live[:1]:  # the newest and the oldest unexpired
                await v.verify(t)
    assert len(kids_seen) >= 5  # ~4 scheduled rotations plus the manual one
    records = await m.records()
    for r in records:
        if r.activated_at is not None and r.reason != "initial":
            assert r.activated_at - r.created_at >= 2 * 300
        if r.state == RETIRED:
            assert r.removed_at is not None
            assert r.retired_at is not None
            assert r.removed_at - r.retired_at >= LIFETIME + 60


async def test_retiring_key_is_published_until_its_last_token_expired() -> None:
    clock = ManualClock()
    m = await _manager(clock=clock, clock_skew="1m", refresh_interval="30s")
    first = (await m.jwks())["keys"][0]["kid"]
    await m.rotate()
    clock.advance(599)
    last_old = await m.sign({}, typ="at+jwt")  # the last token of the first key
    assert jwt.decode(last_old, await m.public_key_set()).header["kid"] == first
    clock.advance(1)
    await m.tick()  # the pending key takes over now
    assert (
        jwt.decode(await m.sign({}, typ="at+jwt"), await m.public_key_set()).header["kid"] != first
    )
    grace = LIFETIME + 60 + 2 * 30
    clock.advance(grace - 1)
    await m.tick()
    jwt.decode(last_old, await m.public_key_set())  # still published
    clock.advance(1)
    await m.tick()
    assert first not in {k["kid"] for k in (await m.jwks())["keys"]}


class _Interleaved:
    """A repository wrapper that runs ``before`` once just before its first ``apply``: another
    process acting between this one's read and its write."""

    def __init__(self, inner: KeyRepo, before: Any) -> None:
        self.inner, self.before, self.calls = inner, before, 0

    async def load(self) -> tuple[int, list[KeyRecord]]:
        return await self.inner.load()

    async def apply(
        self, generation: int, inserts: list[KeyRecord], updates: list[KeyRecord]
    ) -> bool:
        self.calls += 1
        if self.calls == 1:
            await self.before()
        return await self.inner.apply(generation, inserts, updates)


class _CountingStore(LocalKeyStore):
    def __init__(self) -> None:
        super().__init__(KEK)
        self.generated = 0
        self.destroyed: list[str] = []

    def generate(self, alg: Algorithm) -> NewKey:
        self.generated += 1
        return super().generate(alg)

    def destroy(self, kid: str, material: bytes) -> None:
        self.destroyed.append(kid)


async def test_two_processes_deciding_to_rotate_at_once_rotate_once() -> None:
    store, clock = MemoryStore(), ManualClock()
    a = await _manager(store=store, clock=clock)
    ks_b = _CountingStore()
    b = await _manager(store=store, clock=clock, keystore=ks_b)
    clock.advance(30 * 86400)  # both see the rotation due
    b._repo = _Interleaved(b._repo, a.tick)  # a wins the race while b is between read and write
    await b.tick()
    pending = [r for r in await a.records() if r.state == PENDING]
    assert len(pending) == 1
    assert ks_b.generated == 1  # b made a key, lost the compare-and-swap...
    assert len(ks_b.destroyed) == 1  # ...and threw it away
    assert ks_b.destroyed[0] != pending[0].kid
    assert {k["kid"] for k in (await b.jwks())["keys"]} == {
        k["kid"] for k in (await a.jwks())["keys"]
    }


async def test_emergency_rotation_retries_when_another_process_wins() -> None:
    store, clock = MemoryStore(), ManualClock()
    a = await _manager(store=store, clock=clock)
    b = await _manager(store=store, clock=clock)
    b._repo = _Interleaved(b._repo, a.rotate)
    new = await b.rotate(emergency=True)
    assert [k["kid"] for k in (await b.jwks())["keys"]] == [new]
    clock.advance(30)  # a's next refresh
    assert [k["kid"] for k in (await a.jwks())["keys"]] == [new]


async def test_another_process_rotation_is_followed_without_explicit_ticks() -> None:
    store, clock = MemoryStore(), ManualClock()
    a = await _manager(store=store, clock=clock)
    b = await _manager(store=store, clock=clock)
    new = await a.rotate(emergency=True)
    clock.advance(30)  # b's refresh_interval: sign() re-reads the set by itself
    token = await b.sign({}, typ="at+jwt")
    assert jwt.decode(token, await a.public_key_set()).header["kid"] == new


async def test_signing_fails_closed_when_the_key_set_cannot_be_refreshed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = MemoryStore(), ManualClock()
    m = await _manager(store=store, clock=clock)
    store.set_unavailable(True)
    clock.advance(31)
    with caplog.at_level(logging.WARNING, "bastion.authserver.keys"):
        await m.sign({}, typ="at+jwt")  # within twice the refresh interval: cached view
    assert "refresh failed" in caplog.text
    clock.advance(30)
    with pytest.raises(SigningUnavailable):
        await m.sign({}, typ="at+jwt")
    with pytest.raises(SigningUnavailable):
        await m.jwks()
    with pytest.raises(SigningUnavailable):
        await m.public_key_set()
    store.set_unavailable(False)
    await m.sign({}, typ="at+jwt")


async def test_open_fails_when_the_store_is_down() -> None:
    store = MemoryStore()
    store.set_unavailable(True)
    with pytest.raises(StoreError):
        await _manager(store=store)


async def test_wrong_kek_refuses_to_start() -> None:
    store = MemoryStore()
    await _manager(store=store)
    with pytest.raises(KeyStoreError, match="wrong key-encryption key"):
        await _manager(store=store, keystore=LocalKeyStore(os.urandom(32)))


async def _tamper(store: MemoryStore, change: Any) -> None:
    repo = _repo(store)
    for kid, r in list(repo.records.items()):
        repo.records[kid] = change(r)


async def test_swapped_public_key_refuses_to_start() -> None:
    store = MemoryStore()
    await _manager(store=store)
    attacker = ECKey.generate_key("P-256").as_dict(private=False)
    await _tamper(store, lambda r: dataclasses.replace(r, public_jwk=attacker))
    with pytest.raises(KeyStoreError, match="does not match"):
        await _manager(store=store)


async def test_material_swapped_between_keys_refuses_to_start() -> None:
    store, clock = MemoryStore(), ManualClock()
    m = await _manager(store=store, clock=clock)
    await m.rotate()
    repo = _repo(store)
    a, b = list(repo.records.values())
    repo.records[a.kid] = dataclasses.replace(a, material=b.material)
    with pytest.raises(KeyStoreError, match="cannot unseal"):
        await _manager(store=store, clock=clock)


async def test_a_forged_row_without_the_kek_never_becomes_a_published_key() -> None:
    """An attacker who can write the database adds a key of their own: refused, not served."""
    store, clock = MemoryStore(), ManualClock()
    m = await _manager(store=store, clock=clock)
    attacker = LocalKeyStore(os.urandom(32)).generate("ES256")
    repo = _repo(store)
    rec = next(iter(repo.records.values()))
    repo.records[attacker.signer.kid] = dataclasses.replace(
        rec,
        kid=attacker.signer.kid,
        state=PENDING,
        public_jwk=attacker.signer.jwk,
        material=attacker.material,
    )
    clock.advance(60)
    with pytest.raises(KeyStoreError):
        await m.tick()
    # The running view is unchanged (nothing half-loaded) and still serves the old set.
    assert attacker.signer.kid not in {k["kid"] for k in (await m.jwks())["keys"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: dataclasses.replace(r, material=None), "no material"),
        (lambda r: dataclasses.replace(r, store="pkcs11"), "'pkcs11' key store"),
        (lambda r: dataclasses.replace(r, alg="HS256"), "unsupported algorithm"),
    ],
)
async def test_broken_rows_refuse_to_start(change: Any, message: str) -> None:
    store = MemoryStore()
    await _manager(store=store)
    await _tamper(store, change)
    with pytest.raises(KeyStoreError, match=message):
        await _manager(store=store)


class _FailingSigner(LocalKeyStore):
    def load(self, kid: str, alg: Algorithm, material: bytes) -> Signer:
        signer = super().load(kid, alg, material)

        def boom(data: bytes) -> bytes:
            raise RuntimeError("token session lost")

        return dataclasses.replace(signer, sign=boom)


async def test_a_failing_signer_is_a_key_store_error_not_a_crash() -> None:
    m = await _manager(keystore=_FailingSigner(KEK))
    with pytest.raises(KeyStoreError, match="signing failed: RuntimeError"):
        await m.sign({}, typ="at+jwt")


class _AlwaysLoses:
    """Another process wins every compare-and-swap."""

    def __init__(self, inner: KeyRepo) -> None:
        self.inner = inner

    async def load(self) -> tuple[int, list[KeyRecord]]:
        return await self.inner.load()

    async def apply(
        self, generation: int, inserts: list[KeyRecord], updates: list[KeyRecord]
    ) -> bool:
        return False


async def test_no_active_key_is_signing_unavailable() -> None:
    store, clock = MemoryStore(), ManualClock()
    ks = _CountingStore()
    m = await _manager(store=store, clock=clock, keystore=ks)
    await _tamper(store, lambda r: dataclasses.replace(r, state=RETIRED, material=None))
    m._repo = _AlwaysLoses(m._repo)
    clock.advance(30)
    with pytest.raises(SigningUnavailable, match="no active key"):
        await m.sign({}, typ="at+jwt")
    assert ks.generated == 1 + 5
    assert len(ks.destroyed) == 5
    assert (await m.jwks()) == {"keys": []}


# -- config and factory ------------------------------------------------------------------------


def test_config_defaults_and_rules() -> None:
    c = KeysConfig()
    assert (c.algorithm, c.store, c.jwks_max_age, c.rotation_interval) == (
        "ES256",
        "local",
        300.0,
        30 * 86400.0,
    )
    with pytest.raises(ValidationError, match="pkcs11"):
        KeysConfig(store="pkcs11")
    hsm = KeysConfig.model_validate(
        {"store": "pkcs11", "algorithm": "EdDSA", "pkcs11": {"token_label": "t", "pin": "1"}}
    )
    assert hsm.pkcs11 is not None
    assert hsm.pkcs11.library == "/usr/lib/softhsm/libsofthsm2.so"
    assert "1" not in repr(hsm.pkcs11.pin)
    with pytest.raises(ValidationError, match="two jwks_max_age"):
        KeysConfig.model_validate({"rotation_interval": "1h", "jwks_max_age": "1h"})
    with pytest.raises(ValidationError):
        KeysConfig.model_validate({"unknown": 1})


async def test_sqlite_store_without_kek_is_a_config_error(tmp_path: Any) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        with pytest.raises(ConfigError, match="kek: required"):
            await open_key_manager(KeysConfig(), store, token_max_lifetime=LIFETIME)
    finally:
        await store.close()


def test_a_bad_kek_is_a_config_error_that_does_not_echo_it() -> None:
    cfg = KeysConfig.model_validate({"local": {"kek": "not-a-key-at-all"}})
    with pytest.raises(ConfigError) as info:
        build_keystore(cfg, MemoryStore())
    assert "not-a-key-at-all" not in str(info.value.problems)


def test_kek_from_a_file(tmp_path: Any) -> None:
    raw = os.urandom(32)
    path = tmp_path / "kek"
    path.write_text(raw.hex() + "\n")
    cfg = KeysConfig.model_validate({"local": {"kek": f"file:{path}"}})
    assert isinstance(build_keystore(cfg, MemoryStore()), LocalKeyStore)
    assert raw.hex() not in repr(cfg)


async def test_token_lifetime_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        await open_key_manager(KeysConfig(), MemoryStore(), token_max_lifetime=0)


async def test_a_keystore_that_cannot_make_the_algorithm_is_a_config_error() -> None:
    class EcOnly(LocalKeyStore):
        def supports(self, alg: Algorithm) -> bool:
            return alg == "ES256"

    with pytest.raises(ConfigError, match="cannot make PS256"):
        await _manager(keystore=EcOnly(KEK), algorithm="PS256")


async def test_unknown_store_type_is_refused() -> None:
    with pytest.raises(StoreError):
        key_repo(object())  # type: ignore[arg-type]


def test_signer_type_is_frozen() -> None:
    s = Signer(kid="k", alg="ES256", jwk={}, sign=lambda b: b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.kid = "x"  # type: ignore[misc]


class _FailingApply(_AlwaysLoses):
    async def apply(
        self, generation: int, inserts: list[KeyRecord], updates: list[KeyRecord]
    ) -> bool:
        raise StoreError(diagnosis="write refused")


async def test_a_failed_write_discards_the_generated_key() -> None:
    store, clock = MemoryStore(), ManualClock()
    ks = _CountingStore()
    m = await _manager(store=store, clock=clock, keystore=ks)
    m._repo = _FailingApply(m._repo)
    with pytest.raises(StoreError):
        await m.rotate()
    assert ks.generated == 2
    assert len(ks.destroyed) == 1  # the key that never reached the store


class _StubbornStore(LocalKeyStore):
    def destroy(self, kid: str, material: bytes) -> None:
        raise KeyStoreError(diagnosis=f"key {kid}: token busy")


async def test_a_key_that_cannot_be_erased_is_reported_and_the_rotation_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = await _manager(keystore=_StubbornStore(KEK))
    with caplog.at_level(logging.WARNING, "bastion.authserver.keys"):
        new = await m.rotate(emergency=True)
    assert "could not erase" in caplog.text
    assert [k["kid"] for k in (await m.jwks())["keys"]] == [new]


class _TokenRefuses(LocalKeyStore):
    def load(self, kid: str, alg: Algorithm, material: bytes) -> Signer:
        signer = super().load(kid, alg, material)

        def refuse(data: bytes) -> bytes:
            raise KeyStoreError(diagnosis=f"key {kid}: token refused to sign")

        return dataclasses.replace(signer, sign=refuse)


async def test_a_key_store_refusal_passes_through_as_is() -> None:
    m = await _manager(keystore=_TokenRefuses(KEK))
    with pytest.raises(KeyStoreError, match="token refused to sign"):
        await m.sign({}, typ="at+jwt")


async def test_kek_rotation_reseals_published_keys_under_the_new_kek() -> None:
    store, clock = MemoryStore(), ManualClock()
    old, new = os.urandom(32), os.urandom(32)
    m = await _manager(store=store, clock=clock, keystore=LocalKeyStore(old))
    await m.rotate()  # an active and a pending key, both under the old KEK
    kids = {k["kid"] for k in (await m.jwks())["keys"]}
    # A process restarted with the new KEK and the old one as previous re-seals at start-up.
    m2 = await _manager(store=store, clock=clock, keystore=LocalKeyStore(new, [old]))
    assert {k["kid"] for k in (await m2.jwks())["keys"]} == kids
    # Now the new KEK alone opens every published key; the old one opens none.
    await _manager(store=store, clock=clock, keystore=LocalKeyStore(new))
    with pytest.raises(KeyStoreError, match="wrong key-encryption key"):
        await _manager(store=store, clock=clock, keystore=LocalKeyStore(old))
    # The process still on the old KEK keeps its loaded keys and keeps signing, refresh after
    # refresh (a rolling restart), and one that lists the new KEK as previous does not mind.
    for _ in range(3):
        clock.advance(30)
        await m.sign({}, typ="at+jwt")
    # Even with some other former KEK configured, rows it cannot open are left alone.
    m.keystore = LocalKeyStore(old, [os.urandom(32)])
    clock.advance(30)
    await m.sign({}, typ="at+jwt")


def test_previous_keks_in_config(tmp_path: Any) -> None:
    raw_old, raw_new = os.urandom(32), os.urandom(32)
    cfg = KeysConfig.model_validate(
        {"local": {"kek": raw_new.hex(), "previous_keks": [raw_old.hex()]}}
    )
    ks = build_keystore(cfg, MemoryStore())
    sealed = LocalKeyStore(raw_old).generate("ES256")
    assert ks.load(sealed.signer.kid, "ES256", sealed.material).kid == sealed.signer.kid
    bad = KeysConfig.model_validate({"local": {"kek": raw_new.hex(), "previous_keks": ["x"]}})
    with pytest.raises(ConfigError, match=r"previous_keks\[0\]"):
        build_keystore(bad, MemoryStore())


async def test_jwks_is_a_copy() -> None:
    m = await _manager()
    served = await m.jwks()
    served["keys"][0]["kid"] = "forged"
    served["keys"].append({"kty": "oct", "k": "AAAA"})
    again = await m.jwks()
    assert len(again["keys"]) == 1
    assert again["keys"][0]["kid"] != "forged"


async def test_an_emergency_rotation_that_never_wins_says_so() -> None:
    m = await _manager()
    m._repo = _AlwaysLoses(m._repo)
    with pytest.raises(SigningUnavailable, match="run it again"):
        await m.rotate(emergency=True)
