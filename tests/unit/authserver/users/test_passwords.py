"""argon2id hashing: parameters, malformed hashes, long input, bounded concurrency."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from bastion.authserver.users.config import PasswordHashConfig
from bastion.authserver.users.passwords import MAX_PASSWORD_LENGTH, PasswordHasher
from tests.unit.authserver.users.browser import FAST_HASH


async def test_hash_is_argon2id_with_the_configured_parameters() -> None:
    hasher = PasswordHasher(FAST_HASH)
    first = await hasher.hash("pw-1234567890")
    assert first.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert first != await hasher.hash("pw-1234567890")  # salted
    assert await hasher.verify(first, "pw-1234567890")
    assert not await hasher.verify(first, "pw-1234567891")
    assert not hasher.needs_rehash(first)
    stronger = PasswordHasher(PasswordHashConfig(time_cost=3, memory_cost=19456, parallelism=1))
    assert stronger.needs_rehash(first)
    assert await stronger.verify(first, "pw-1234567890")  # old hashes still verify


@pytest.mark.parametrize("stored", ["", "plaintext", "$argon2id$v=19$broken", "$2b$12$abc"])
async def test_malformed_stored_hash_never_verifies(stored: str) -> None:
    hasher = PasswordHasher(FAST_HASH)
    assert not await hasher.verify(stored, "anything")
    assert hasher.needs_rehash(stored)


async def test_overlong_password_is_refused_without_hashing_it_all() -> None:
    hasher = PasswordHasher(FAST_HASH)
    long_pw = "x" * (MAX_PASSWORD_LENGTH + 1)
    stored = await hasher.hash(long_pw[:MAX_PASSWORD_LENGTH])
    assert not await hasher.verify(stored, long_pw)


async def test_concurrent_hashing_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = PasswordHasher(
        PasswordHashConfig(time_cost=2, memory_cost=19456, parallelism=1, max_concurrent=2)
    )
    lock = threading.Lock()
    running = peak = 0

    def slow(_hash: str, _password: str) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return False

    monkeypatch.setattr(hasher, "_verify", slow)
    await asyncio.gather(*(hasher.verify("h", "p") for _ in range(8)))
    assert 1 <= peak <= 2
