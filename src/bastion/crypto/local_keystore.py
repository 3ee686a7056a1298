"""The local key store: private keys sealed with AES-256-GCM under a key-encryption key.

The key pair is generated in process (``cryptography``), its PKCS#8 DER encoding sealed with
AES-256-GCM under the KEK, and only the sealed blob is handed to the database::

    material = b"\\x01" || nonce (12 random bytes) || AES-256-GCM(KEK, nonce, pkcs8, aad)
    aad      = b"bastion/signing-key/v1:" || kid || b":" || alg

The additional authenticated data binds the blob to its ``kid`` and algorithm: a blob copied
into another key's row does not unseal, and neither does a blob under the wrong KEK or with one
flipped bit. Unsealing checks, too, that the key inside has thumbprint ``kid``.

The KEK is 32 random bytes, given base64 (standard or URL-safe alphabet, padding optional) or
hex, from an environment variable or a file (the config's ``Secret``); :func:`parse_kek` refuses
anything that is not exactly 256 bits. ``bastion auth keys new-kek`` style generation is
``secrets.token_urlsafe(32)``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from bastion.crypto.keystore import (
    Algorithm,
    KeyStoreError,
    NewKey,
    Signer,
    check_kid,
    public_jwk,
)

_VERSION = b"\x01"
_NONCE = 12
_AAD_PREFIX = b"bastion/signing-key/v1:"
#: RSA modulus of PS256 keys (NIST SP 800-57: 3072 bits for use beyond 2030).
RSA_BITS = 3072


def parse_kek(value: str) -> bytes:
    """The 32-byte KEK from its base64 or hex text; ValueError (with no part of the value in
    the message) for anything else."""
    text = value.strip()
    candidates: list[bytes] = []
    if len(text) == 64:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(text))
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            candidates.append(decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            continue
    for raw in candidates:
        if len(raw) == 32:
            return raw
    raise ValueError("the key-encryption key must be 32 random bytes, base64 or hex encoded")


def _aad(kid: str, alg: Algorithm) -> bytes:
    return _AAD_PREFIX + kid.encode("ascii") + b":" + alg.encode("ascii")


_PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def _generate(alg: Algorithm) -> _PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def _signer(private: _PrivateKey, alg: Algorithm) -> Signer:
    """A signer over ``private`` through joserfc's own algorithm implementation."""
    key: ECKey | OKPKey | RSAKey
    if isinstance(private, ec.EllipticCurvePrivateKey):
        key = ECKey.import_key(private)
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        key = OKPKey.import_key(private)
    else:
        key = RSAKey.import_key(private)
    jwk = public_jwk(key, alg)
    algorithm = JWSRegistry.algorithms[alg]

    def sign(signing_input: bytes) -> bytes:
        return algorithm.sign(signing_input, key)

    return Signer(kid=jwk["kid"], alg=alg, jwk=jwk, sign=sign)


class LocalKeyStore:
    """Keys sealed under ``kek`` (32 bytes). Supports ES256, EdDSA (Ed25519) and PS256.

    ``previous`` are former KEKs: a blob the current KEK does not open is tried under each, and
    :meth:`reseal` re-seals such a blob under the current KEK (KEK rotation without downtime).
    """

    kind = "local"

    def __init__(self, kek: bytes, previous: Sequence[bytes] = ()) -> None:
        if len(kek) != 32 or any(len(k) != 32 for k in previous):
            raise ValueError("the key-encryption key must be 32 bytes (AES-256)")
        self._aead = AESGCM(kek)
        self._previous = [AESGCM(k) for k in previous]

    def __repr__(self) -> str:  # never show the KEK
        return "LocalKeyStore()"

    def supports(self, alg: Algorithm) -> bool:
        return alg in ("ES256", "EdDSA", "PS256")

    def generate(self, alg: Algorithm) -> NewKey:
        """A fresh key for ``alg`` and its sealed PKCS#8 encoding."""
        private = _generate(alg)
        signer = _signer(private, alg)
        der = private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return NewKey(signer=signer, material=self._seal(der, signer.kid, alg))

    def load(self, kid: str, alg: Algorithm, material: bytes) -> Signer:
        """Unseal ``material``; KeyStoreError for a wrong KEK, a tampered or swapped blob, or a
        key that is not ``kid``."""
        der, _stale = self._unseal(kid, alg, material)
        try:
            private = serialization.load_der_private_key(der, password=None)
        except ValueError:
            raise KeyStoreError(diagnosis=f"key {kid}: sealed material is not a key") from None
        if not isinstance(private, _PrivateKey):
            raise KeyStoreError(diagnosis=f"key {kid}: unsupported key type")
        return check_kid(kid, _signer(private, alg))

    def reseal(self, kid: str, alg: Algorithm, material: bytes) -> bytes | None:
        """``material`` sealed under the current KEK if a previous KEK sealed it, else None.
        KeyStoreError when no KEK opens it."""
        if not self._previous:
            return None  # nothing to migrate from
        der, stale = self._unseal(kid, alg, material)
        if not stale:
            return None
        self.load(kid, alg, material)  # what gets re-sealed must be the key ``kid``
        return self._seal(der, kid, alg)

    def _seal(self, der: bytes, kid: str, alg: Algorithm) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, der, _aad(kid, alg))

    def _unseal(self, kid: str, alg: Algorithm, material: bytes) -> tuple[bytes, bool]:
        """The PKCS#8 bytes, and whether a previous KEK (not the current one) opened them."""
        if len(material) < 1 + _NONCE + 16 or material[:1] != _VERSION:
            raise KeyStoreError(diagnosis=f"key {kid}: sealed material is malformed")
        nonce, sealed = material[1 : 1 + _NONCE], material[1 + _NONCE :]
        aad = _aad(kid, alg)
        for i, aead in enumerate([self._aead, *self._previous]):
            try:
                return aead.decrypt(nonce, sealed, aad), i > 0
            except InvalidTag:
                continue
        raise KeyStoreError(
            diagnosis=f"key {kid}: cannot unseal (wrong key-encryption key, or the row was "
            "tampered with or belongs to another key)"
        )

    def destroy(self, kid: str, material: bytes) -> None:
        """Nothing to erase here: the caller clears the row's sealed material."""

    def close(self) -> None:
        """Nothing to release."""
