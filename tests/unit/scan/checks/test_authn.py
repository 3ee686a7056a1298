"""Token attacks: the vulnerable example accepts alg none, is signed with 'secret' (cracked from
the wordlist) and ignores exp/iss/aud; the secure one refuses every forged token."""

from __future__ import annotations

import warnings

from joserfc import jwt
from joserfc.jwk import OctKey

from bastion.scan.checks.authn import Authn, crack_hmac_key
from bastion.scan.model import Severity
from tests.unit.scan.checks.conftest import Target, run_check


async def test_vulnerable_tokens_are_forged(target: Target) -> None:
    async with target(True) as ctx:
        found = await run_check(Authn(), ctx)
    keys = {f.key for f in found}
    assert keys == {"alg-none", "weak-hmac-key", "expired", "wrong-iss-aud"}
    weak = next(f for f in found if f.key == "weak-hmac-key")
    assert weak.severity is Severity.CRITICAL
    assert "secret" not in weak.detail
    for f in found:  # the cracked key never shows up in the evidence
        assert all("secret" not in e.as_text().replace("x-bastion", "") for e in f.evidence)


async def test_secure_tokens_resist(target: Target) -> None:
    async with target(False) as ctx:
        assert await run_check(Authn(), ctx) == []


def test_crack_finds_numbers_and_words_and_gives_up_on_random_keys() -> None:
    for key in (b"changeme", b"4711"):
        token = jwt.encode({"alg": "HS256"}, {"sub": "2"}, _key(key))
        assert crack_hmac_key(token) == key
    strong = jwt.encode({"alg": "HS256"}, {"sub": "2"}, OctKey.generate_key(256))
    assert crack_hmac_key(strong, seconds=0.05) is None
    assert crack_hmac_key("not.a.jwt") is None
    es = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"  # ES256: no HMAC key to find
    assert crack_hmac_key(es) is None


def _key(raw: bytes) -> OctKey:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return OctKey.import_key(raw)
