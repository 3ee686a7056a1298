"""Password hashing with argon2id (RFC 9106) through argon2-cffi, never by hand.

Hashes are PHC strings (``$argon2id$v=19$m=…,t=…,p=…$salt$hash``) that carry their own
parameters, so raising the parameters in config needs no migration: a hash made with other
parameters still verifies, and :meth:`PasswordHasher.needs_rehash` tells the login to store a
new one. Hashing is CPU- and memory-bound (tens of milliseconds by design), so it runs in a
worker thread, never on the event loop, and at most ``max_concurrent`` at once.

Unknown users cost the same as known ones: :meth:`PasswordHasher.verify_dummy` verifies the
password against a hash of a random password made with the current parameters, so the time a
login takes does not say whether the username exists.
"""

from __future__ import annotations

import asyncio
import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bastion.authserver.users.config import PasswordHashConfig

#: Longer passwords are refused before hashing (argon2 would take them, but a megabyte of
#: "password" is an attack on the CPU, not a password).
MAX_PASSWORD_LENGTH = 1024


class PasswordHasher:
    """argon2id with one set of parameters; thread-safe (argon2-cffi keeps no state)."""

    def __init__(self, params: PasswordHashConfig) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_cost,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))
        self._slots = asyncio.Semaphore(params.max_concurrent)

    async def hash(self, password: str) -> str:
        """A new PHC string for ``password`` (fresh random salt)."""
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """Does ``password`` match? False (never an exception) for a mismatch, a password that
        is too long, or a stored value that is not an argon2 hash."""
        if len(password) > MAX_PASSWORD_LENGTH:
            await self.verify_dummy(password[:MAX_PASSWORD_LENGTH])
            return False
        async with self._slots:
            return await asyncio.to_thread(self._verify, password_hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of one verification, for a user that does not exist or is locked."""
        async with self._slots:
            await asyncio.to_thread(self._verify, self._dummy, password[:MAX_PASSWORD_LENGTH])

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """Was ``password_hash`` made with other parameters than the configured ones?"""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
