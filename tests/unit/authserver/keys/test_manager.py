"""KeyManager on the memory store: signing, JWKS, the lifecycle's timing, emergency rotation."""

from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError

from bastion.authserver.keys import KeyManager, KeysConfig, open_key_manager
from bastion.core.clock import ManualClock
from bastion.store.memory import MemoryStore

LIFETIME = 300.0


async def _manager(
    store: MemoryStore | None = None, clock: ManualClock | None = None, **config: object
) -> KeyManager:
    return await open_key_manager(
        KeysConfig.model_validate(config),
        store or MemoryStore(),
        token_max_lifetime=LIFETIME,
        clock=clock or ManualClock(),
    )


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
