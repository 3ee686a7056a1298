"""Signing keys on SQLite and the real PostgreSQL: rows hold no plaintext key, a wrong KEK or a
tampered row stops start-up, and processes sharing one database rotate exactly once."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwt

from bastion.authserver.keys import KeyManager, KeysConfig, KeyStoreError, open_key_manager
from bastion.core.clock import ManualClock
from bastion.crypto.local_keystore import LocalKeyStore
from bastion.errors import StoreError
from tests.integration.authserver.keys.conftest import Backend

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

LIFETIME = 300.0


def _config(kek: bytes, **extra: Any) -> KeysConfig:
    return KeysConfig.model_validate(
        {"local": {"kek": base64.urlsafe_b64encode(kek).decode()}, **extra}
    )


async def _manager(store: Any, kek: bytes, clock: ManualClock, **extra: Any) -> KeyManager:
    return await open_key_manager(
        _config(kek, **extra), store, token_max_lifetime=LIFETIME, clock=clock
    )


def _unseal(material: bytes, kid: str, kek: bytes, alg: str = "ES256") -> bytes:
    aad = b"bastion/signing-key/v1:" + kid.encode() + b":" + alg.encode()
    return AESGCM(kek).decrypt(material[1:13], material[13:], aad)


async def test_raw_rows_never_hold_the_private_key(backend: Backend) -> None:
    kek, clock = os.urandom(32), ManualClock()
    m = await _manager(await backend.open(), kek, clock)
    await m.rotate()  # two keys: active and pending
    rows = await backend.raw("SELECT kid, public_jwk, material FROM signing_keys")
    assert len(rows) == 2
    for kid, public_jwk, material in rows:
        der = _unseal(base64.b64decode(material), kid, kek)  # the test knows the KEK
        private = serialization.load_der_private_key(der, password=None)
        scalar = private.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
        whole_row = " ".join(str(c) for c in (kid, public_jwk, material))
        for secret in (der, scalar):
            for form in (
                secret.hex(),
                base64.b64encode(secret).decode(),
                base64.urlsafe_b64encode(secret).decode().rstrip("="),
            ):
                assert form not in whole_row
        assert '"d"' not in public_jwk
        assert "PRIVATE" not in whole_row


async def test_wrong_kek_refuses_to_start(backend: Backend) -> None:
    clock = ManualClock()
    await _manager(await backend.open(), os.urandom(32), clock)
    with pytest.raises(KeyStoreError, match="wrong key-encryption key"):
        await _manager(await backend.open(), os.urandom(32), clock)


async def test_a_tampered_row_refuses_to_start(backend: Backend) -> None:
    kek, clock = os.urandom(32), ManualClock()
    await _manager(await backend.open(), kek, clock)
    [(kid, material)] = await backend.raw("SELECT kid, material FROM signing_keys")
    blob = bytearray(base64.b64decode(material))
    blob[20] ^= 0x80
    forged = base64.b64encode(bytes(blob)).decode()
    # Both values are base64 made by this test: no quoting to worry about.
    await backend.raw(f"UPDATE signing_keys SET material = '{forged}' WHERE kid = '{kid}'")  # noqa: S608
    with pytest.raises(KeyStoreError, match="cannot unseal"):
        await _manager(await backend.open(), kek, clock)


async def test_the_database_allows_one_active_key(backend: Backend) -> None:
    kek, clock = os.urandom(32), ManualClock()
    await _manager(await backend.open(), kek, clock)
    with pytest.raises(StoreError):
        await backend.raw(
            "INSERT INTO signing_keys (kid, alg, key_store, state, public_jwk, created_at,"
            " activate_at) VALUES ('x', 'ES256', 'local', 'active', '{}', 0, 0)"
        )


async def test_processes_sharing_a_store_create_one_first_key(backend: Backend) -> None:
    kek, clock = os.urandom(32), ManualClock()
    stores = [await backend.open() for _ in range(4)]
    managers = await asyncio.gather(*(_manager(s, kek, clock) for s in stores))
    kids = {(await m.jwks())["keys"][0]["kid"] for m in managers}
    assert len(kids) == 1
    assert len(await backend.raw("SELECT kid FROM signing_keys")) == 1


async def test_processes_sharing_a_store_rotate_once(backend: Backend) -> None:
    kek, clock = os.urandom(32), ManualClock()
    stores = [await backend.open() for _ in range(4)]
    managers = [await _manager(s, kek, clock) for s in stores]
    clock.advance(30 * 86400)  # the scheduled rotation is due for every process
    await asyncio.gather(*(m.tick() for m in managers))
    states = sorted(r[0] for r in await backend.raw("SELECT state FROM signing_keys"))
    assert states == ["active", "pending"]
    clock.advance(600)
    await asyncio.gather(*(m.tick() for m in managers))
    states = sorted(r[0] for r in await backend.raw("SELECT state FROM signing_keys"))
    assert states == ["active", "retiring"]
    views = [{k["kid"] for k in (await m.jwks())["keys"]} for m in managers]
    assert all(v == views[0] for v in views)


async def test_emergency_rotations_racing_leave_one_published_key(backend: Backend) -> None:
    kek, clock = os.urandom(32), ManualClock()
    managers = [await _manager(await backend.open(), kek, clock) for _ in range(3)]
    await asyncio.gather(*(m.rotate(emergency=True) for m in managers))
    published = await backend.raw("SELECT kid FROM signing_keys WHERE state <> 'retired'")
    assert len(published) == 1
    clock.advance(30)
    for m in managers:
        token = await m.sign({"sub": "a"}, typ="at+jwt")
        assert (
            jwt.decode(token, await managers[0].public_key_set()).header["kid"] == published[0][0]
        )


async def test_full_lifecycle_persists_and_retired_material_is_erased(backend: Backend) -> None:
    kek, clock = os.urandom(32), ManualClock()
    m = await _manager(await backend.open(), kek, clock, algorithm="EdDSA")
    first = (await m.jwks())["keys"][0]["kid"]
    await m.rotate()
    clock.advance(600)
    await m.tick()
    clock.advance(LIFETIME + 60 + 60)
    await m.tick()
    rows = dict(await backend.raw("SELECT kid, state FROM signing_keys"))
    assert rows[first] == "retired"
    [(material,)] = await backend.raw(
        f"SELECT material FROM signing_keys WHERE kid = '{first}'"  # noqa: S608 - a thumbprint
    )
    assert material is None
    # A new process reads the same set back.
    again = await _manager(await backend.open(), kek, clock, algorithm="EdDSA")
    assert await again.jwks() == await m.jwks()
    assert [r.kid for r in await again.records()] == [r.kid for r in await m.records()]


async def test_local_keystore_is_used_with_the_configured_kek(backend: Backend) -> None:
    """The manager's key store unseals what the standalone store seals under the same KEK."""
    kek, clock = os.urandom(32), ManualClock()
    m = await _manager(await backend.open(), kek, clock)
    [(kid, material)] = await backend.raw("SELECT kid, material FROM signing_keys")
    signer = LocalKeyStore(kek).load(kid, "ES256", base64.b64decode(material))
    assert signer.jwk == (await m.jwks())["keys"][0]


async def test_kek_rotation_reseals_the_rows(backend: Backend) -> None:
    old, new, clock = os.urandom(32), os.urandom(32), ManualClock()
    await _manager(await backend.open(), old, clock)
    before = await backend.raw("SELECT kid, material FROM signing_keys")
    config = {"local": {"kek": new.hex(), "previous_keks": [old.hex()]}}
    await open_key_manager(
        KeysConfig.model_validate(config),
        await backend.open(),
        token_max_lifetime=LIFETIME,
        clock=clock,
    )
    [(kid, material)] = await backend.raw("SELECT kid, material FROM signing_keys")
    assert (kid, material) != before[0]
    _unseal(base64.b64decode(material), kid, new)  # opens under the new KEK...
    with pytest.raises(InvalidTag):  # ...and no longer under the old one
        _unseal(base64.b64decode(material), kid, old)
