"""The :class:`KeyManager`: signs tokens with the active key, serves the JWKS, runs rotation.

The manager keeps a *view* of the key set (records from the repository, a loaded signer for
every published key) and refreshes it from the store at most every ``refresh_interval``: on
:meth:`KeyManager.tick`, and lazily inside :meth:`sign`/:meth:`jwks` when a tick is overdue, so
a server that never schedules ticks still follows rotations made by other processes.

Fail closed: when the view could not be refreshed for twice ``refresh_interval`` (store down),
signing and the JWKS raise :class:`SigningUnavailable` rather than serve a key set another
process may have withdrawn (emergency rotation). Loading a view is all or nothing: one
published key that does not unseal, resolve or match its ``kid`` makes the whole refresh fail
(:class:`~bastion.crypto.keystore.KeyStoreError`), and the previous view stays in place.

Signatures are made by joserfc's compact serialisation with the key store's signer plugged in
as the algorithm (``_StoreAlgorithm``): the header and payload encoding are joserfc's, the
signature is the store's (cryptography in process, or the PKCS#11 token).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import orjson
from joserfc import jws
from joserfc._rfc7515.model import JWSAlgModel
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from bastion.authserver.keys import lifecycle
from bastion.authserver.keys.config import KeysConfig
from bastion.authserver.keys.lifecycle import KeyRecord, Timing, Transition
from bastion.authserver.keys.repo import KeyRepo, key_repo
from bastion.core.clock import Clock, SystemClock
from bastion.crypto.keystore import (
    ALGORITHMS,
    Algorithm,
    KeyStore,
    KeyStoreError,
    Signer,
    thumbprint,
)
from bastion.crypto.local_keystore import LocalKeyStore, parse_kek
from bastion.errors import BastionError, ConfigError
from bastion.store.base import Store
from bastion.store.memory import MemoryStore

log = logging.getLogger("bastion.authserver.keys")

#: Attempts of one lifecycle step when other processes keep winning the compare-and-swap.
_CAS_ATTEMPTS = 5


class SigningUnavailable(BastionError):
    """No key can sign now: none is active, or the key set is too stale to trust."""

    code = "keys.unavailable"
    status = 503
    title = "Service unavailable"


class _StoreAlgorithm(JWSAlgModel):
    """A JWS algorithm whose ``sign`` is a key store's signer (the key stays in the store)."""

    def __init__(self, signer: Signer, key_type: str) -> None:
        self.name = signer.alg
        self.description = f"{signer.alg} by the key store"
        self.key_type = key_type
        self._sign = signer.sign

    def sign(self, msg: bytes, key: Any) -> bytes:
        return self._sign(msg)

    def verify(self, msg: bytes, sig: bytes, key: Any) -> bool:
        # Only used to sign; verifying goes through joserfc's own algorithms and the JWKS.
        return False


_PublicKey = ECKey | OKPKey | RSAKey


def _import_public(jwk: dict[str, Any]) -> _PublicKey:
    kty = jwk["kty"]
    if kty == "EC":
        return ECKey.import_key(jwk)
    if kty == "OKP":
        return OKPKey.import_key(jwk)
    return RSAKey.import_key(jwk)


class _Loaded:
    """A published key ready to sign: its signer, public key and a registry that signs with it."""

    __slots__ = ("public", "registry", "signer")

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.public = _import_public(signer.jwk)
        self.registry = JWSRegistry(algorithms=[signer.alg])
        self.registry.algorithms = {signer.alg: _StoreAlgorithm(signer, signer.jwk["kty"])}


class KeyManager:
    """Signing keys of one auth-server process; build it with :func:`open_key_manager`.

    ``jwks_max_age`` (s) is the JWKS's ``Cache-Control: max-age``. Every method may raise
    :class:`SigningUnavailable`, :class:`~bastion.crypto.keystore.KeyStoreError` or
    :class:`~bastion.errors.StoreError` (all BastionErrors, HTTP 503).
    """

    def __init__(
        self,
        config: KeysConfig,
        repo: KeyRepo,
        keystore: KeyStore,
        *,
        token_max_lifetime: float,
        clock: Clock,
    ) -> None:
        self.config = config
        self.jwks_max_age = int(config.jwks_max_age)
        self.keystore = keystore
        self.timing = Timing(
            rotation_interval=config.rotation_interval,
            publish_lead=2 * config.jwks_max_age,
            retire_grace=token_max_lifetime + config.clock_skew + 2 * config.refresh_interval,
        )
        self._repo = repo
        self._clock = clock
        self._lock = asyncio.Lock()
        self._records: list[KeyRecord] = []
        self._loaded: dict[str, _Loaded] = {}
        self._active: _Loaded | None = None
        self._jwks: dict[str, Any] = {"keys": []}
        self._keyset = KeySet([])
        self._refreshed_at: float | None = None  # monotonic

    # -- public interface ---------------------------------------------------------------------

    async def sign(self, claims: dict[str, Any], *, typ: str) -> str:
        """A compact JWS of ``claims`` with the active key; header ``{alg, kid, typ}``."""
        await self._fresh_view()
        active = self._active
        if active is None:
            raise SigningUnavailable(diagnosis="signing keys: no active key")
        header = {"typ": typ, "alg": active.signer.alg, "kid": active.signer.kid}
        try:
            return jws.serialize_compact(
                header, orjson.dumps(claims), active.public, registry=active.registry
            )
        except KeyStoreError:
            raise
        except Exception as exc:  # a token session lost, a library error: never a traceback out
            raise KeyStoreError(
                diagnosis=f"key {active.signer.kid}: signing failed: {type(exc).__name__}"
            ) from exc

    async def jwks(self) -> dict[str, Any]:
        """``{"keys": [...]}``: public JWKs of the pending, active and retiring keys (a copy
        the caller may change)."""
        await self._fresh_view()
        return {"keys": [dict(k) for k in self._jwks["keys"]]}

    async def public_key_set(self) -> KeySet:
        """The JWKS's keys as a joserfc KeySet, to verify tokens this server issued."""
        await self._fresh_view()
        return self._keyset

    async def tick(self) -> None:
        """Advance the lifecycle (activate, retire, start a scheduled rotation) and refresh the
        view. Safe to call from every process: the repository's compare-and-swap lets one win."""
        async with self._lock:
            await self._step(lambda recs, now: lifecycle.plan_tick(recs, now, self.timing))
            await self._reseal()

    async def rotate(self, *, emergency: bool = False) -> str:
        """Start a rotation; returns the new key's kid.

        Orderly (default): a new key is published now and signs after two JWKS lifetimes; if a
        pending key exists already, that is the rotation under way and its kid is returned.
        ``emergency``: every published key is withdrawn at once and a fresh key signs
        immediately; tokens signed by the withdrawn keys stop validating.
        """
        async with self._lock:
            if emergency:
                kid = await self._step(lambda recs, now: lifecycle.plan_emergency(recs, now))
                if kid is None:  # every attempt lost the compare-and-swap to another process
                    raise SigningUnavailable(
                        diagnosis="signing keys: emergency rotation not written (store busy);"
                        " run it again"
                    )
            else:
                kid = await self._step(lambda recs, now: lifecycle.plan_rotate(recs))
            if kid is None:  # a rotation was already under way
                pending = [r for r in self._records if r.state == lifecycle.PENDING]
                if not pending:
                    raise SigningUnavailable(diagnosis="signing keys: rotation did not start")
                kid = pending[-1].kid
            log.warning(
                "signing key rotation (%s): new key %s",
                "emergency" if emergency else "orderly",
                kid,
            )
            return kid

    async def records(self) -> list[KeyRecord]:
        """Every key record, retired ones included (for ``bastion auth keys list``)."""
        _generation, records = await self._repo.load()
        return records

    def close(self) -> None:
        """Release the key store (PKCS#11 session)."""
        self.keystore.close()

    # -- internals ----------------------------------------------------------------------------

    async def _fresh_view(self) -> None:
        """Refresh when a tick is overdue; raise when the view is too old to trust."""
        now = self._clock.monotonic()
        age = None if self._refreshed_at is None else now - self._refreshed_at
        if (age is None or age >= self.config.refresh_interval) and not self._lock.locked():
            try:
                await self.tick()
            except BastionError as exc:
                log.warning("signing keys: refresh failed: %s", exc.diagnosis or exc.code)
        if self._refreshed_at is None:
            raise SigningUnavailable(diagnosis="signing keys: never loaded")
        if self._clock.monotonic() - self._refreshed_at > 2 * self.config.refresh_interval:
            raise SigningUnavailable(diagnosis="signing keys: key set too stale (store down?)")

    async def _step(self, plan: Callable[[list[KeyRecord], float], Transition]) -> str | None:
        """Plan on fresh records, write with compare-and-swap, retry if another process won.
        Returns the kid of a key this call created, if any."""
        for _attempt in range(_CAS_ATTEMPTS):
            generation, records = await self._repo.load()
            now = self._clock.now()
            transition = plan(records, now)
            if transition.empty:
                self._install(records)
                return None
            inserts: list[KeyRecord] = []
            if transition.new_key is not None:
                state, reason = transition.new_key
                new = self.keystore.generate(self._algorithm())
                inserts.append(
                    lifecycle.new_record(
                        kid=new.signer.kid,
                        alg=new.signer.alg,
                        store=self.keystore.kind,
                        public_jwk=new.signer.jwk,
                        material=new.material,
                        state=state,
                        reason=reason,
                        now=now,
                        timing=self.timing,
                    )
                )
            try:
                won = await self._repo.apply(generation, inserts, transition.updates)
            except BaseException:
                self._discard(inserts)
                raise
            if not won:
                self._discard(inserts)
                continue
            self._erase_retired(records, transition.updates)
            _generation, fresh = await self._repo.load()
            self._install(fresh)
            return inserts[0].kid if inserts else None
        # Other processes kept changing the set; theirs is as good as ours.
        _generation, fresh = await self._repo.load()
        self._install(fresh)
        return None

    async def _reseal(self) -> None:
        """Re-seal published keys still stored under a former KEK (KEK rotation). Losing the
        compare-and-swap is fine: the winner's write or the next tick does it."""
        generation, records = await self._repo.load()
        updates = []
        for rec in lifecycle.published(records):
            # Only keys this process holds: anything else failed (or will fail) _install.
            if rec.material is None or rec.kid not in self._loaded:
                continue
            try:
                fresh = self.keystore.reseal(rec.kid, _checked_alg(rec), rec.material)
            except KeyStoreError as exc:
                # Another process re-sealed it under a KEK this one lacks (a rolling restart):
                # the loaded key keeps working here.
                log.warning("signing key %s: not re-sealed: %s", rec.kid, exc.diagnosis)
                continue
            if fresh is not None:
                updates.append(dataclasses.replace(rec, material=fresh))
        if updates and await self._repo.apply(generation, [], updates):
            log.warning(
                "signing keys re-sealed under the current KEK: %s", [r.kid for r in updates]
            )
            _generation, fresh_records = await self._repo.load()
            self._install(fresh_records)

    def _algorithm(self) -> Algorithm:
        return self.config.algorithm

    def _discard(self, inserts: list[KeyRecord]) -> None:
        for rec in inserts:
            if rec.material is not None:
                self._destroy(rec.kid, rec.material)

    def _erase_retired(self, before: list[KeyRecord], updates: list[KeyRecord]) -> None:
        old = {r.kid: r for r in before}
        for rec in updates:
            prev = old.get(rec.kid)
            if rec.state == lifecycle.RETIRED and prev is not None and prev.material is not None:
                self._destroy(rec.kid, prev.material)

    def _destroy(self, kid: str, material: bytes) -> None:
        try:
            self.keystore.destroy(kid, material)
        except KeyStoreError as exc:  # the row no longer points at it; report, carry on
            log.warning("signing key %s: could not erase from the key store: %s", kid, exc)

    def _install(self, records: list[KeyRecord]) -> None:
        """Load a signer for every published key, then swap the view in; all or nothing."""
        loaded: dict[str, _Loaded] = {}
        for rec in lifecycle.published(records):
            cached = self._loaded.get(rec.kid)
            loaded[rec.kid] = cached if cached is not None else self._load(rec)
        active_rec = lifecycle.signing_key(records)
        self._records = records
        self._loaded = loaded
        self._active = loaded[active_rec.kid] if active_rec is not None else None
        jwks = [loaded[r.kid].signer.jwk for r in lifecycle.published(records)]
        self._jwks = {"keys": jwks}
        self._keyset = KeySet([_import_public(j) for j in jwks])
        self._refreshed_at = self._clock.monotonic()

    def _load(self, rec: KeyRecord) -> _Loaded:
        if rec.store != self.keystore.kind:
            raise KeyStoreError(
                diagnosis=f"key {rec.kid} lives in the {rec.store!r} key store, but the"
                f" {self.keystore.kind!r} store is configured"
            )
        if rec.material is None:
            raise KeyStoreError(diagnosis=f"key {rec.kid} is {rec.state} but has no material")
        alg = _checked_alg(rec)
        if thumbprint(rec.public_jwk) != rec.kid:
            raise KeyStoreError(diagnosis=f"key {rec.kid}: stored public key does not match")
        return _Loaded(self.keystore.load(rec.kid, alg, rec.material))


def _checked_alg(rec: KeyRecord) -> Algorithm:
    """The record's algorithm, if it is one we sign with; KeyStoreError otherwise."""
    if rec.alg not in ALGORITHMS:
        raise KeyStoreError(diagnosis=f"key {rec.kid}: unsupported algorithm {rec.alg!r}")
    alg: Algorithm = rec.alg  # narrowed by the check above
    return alg


def build_keystore(config: KeysConfig, store: Store) -> KeyStore:
    """The key store the config names. ConfigError when its settings are missing or bad."""
    if config.store == "pkcs11":
        from bastion.crypto.pkcs11_keystore import Pkcs11KeyStore

        p11 = config.pkcs11
        if p11 is None:  # the config model refuses this; kept for a hand-built config
            raise ConfigError(["auth.keys.pkcs11: required with store 'pkcs11'"])
        return Pkcs11KeyStore(
            library=p11.library, token_label=p11.token_label, pin=p11.pin.get_secret_value()
        )
    kek_secret = config.local.kek
    if kek_secret is None:
        if isinstance(store, MemoryStore):
            # Nothing outlives the process, so a per-process KEK loses nothing.
            return LocalKeyStore(os.urandom(32))
        raise ConfigError(
            ["auth.keys.local.kek: required (a 32-byte key, e.g. '${BASTION_KEK}' or 'file:…')"]
        )
    try:
        kek = parse_kek(kek_secret.get_secret_value())
    except ValueError as exc:
        raise ConfigError([f"auth.keys.local.kek: {exc}"]) from None
    previous: list[bytes] = []
    for i, old in enumerate(config.local.previous_keks):
        try:
            previous.append(parse_kek(old.get_secret_value()))
        except ValueError as exc:
            raise ConfigError([f"auth.keys.local.previous_keks[{i}]: {exc}"]) from None
    return LocalKeyStore(kek, previous)


async def open_key_manager(
    config: KeysConfig,
    store: Store,
    *,
    token_max_lifetime: float,
    clock: Clock | None = None,
    keystore: KeyStore | None = None,
) -> KeyManager:
    """A ready :class:`KeyManager` on ``store`` (memory, SQLite or PostgreSQL, already open).

    ``token_max_lifetime`` (s) is the longest lifetime of any token the server signs (access
    and ID tokens): a retiring key stays published that long. Creates the first key when the
    store has none, and checks that every published key loads (wrong KEK, tampered row, missing
    token object: KeyStoreError, nothing half-loaded). ``clock`` and ``keystore`` are for tests.
    """
    if token_max_lifetime <= 0:
        raise ConfigError(["auth: the token lifetime must be positive"])
    ks = keystore if keystore is not None else build_keystore(config, store)
    if not ks.supports(config.algorithm):
        ks.close()
        raise ConfigError(
            [f"auth.keys.algorithm: the {ks.kind} key store cannot make {config.algorithm} keys"]
        )
    manager = KeyManager(
        config,
        key_repo(store),
        ks,
        token_max_lifetime=token_max_lifetime,
        clock=clock or SystemClock(),
    )
    try:
        await manager.tick()
    except BaseException:
        manager.close()
        raise
    return manager
