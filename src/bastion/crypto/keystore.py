"""The key-store protocol: where signing keys are made, kept and used.

A key store creates asymmetric signing keys and signs with them; the private half never leaves
it in plaintext. Two stores implement it:

* :mod:`bastion.crypto.local_keystore` — the private key is generated in process and sealed
  with AES-256-GCM under a key-encryption key (KEK); the database keeps only the sealed blob.
* :mod:`bastion.crypto.pkcs11_keystore` — the key pair is generated inside a PKCS#11 token
  (an HSM; SoftHSM2 in tests), marked sensitive and non-extractable; the database keeps only
  the token object's id, and the token signs.

Both hand back a :class:`Signer` that produces signatures already in JWS form (RFC 7518 §3.4:
ECDSA as raw ``r || s``, not DER), and the key's public JWK. The ``kid`` is the RFC 7638
thumbprint of that public JWK, so a row whose public key was swapped no longer matches its kid.

Every failure to create, unseal or find a key is a :class:`KeyStoreError`: a store never hands
back a half-loaded key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

from bastion.errors import BastionError

Algorithm = Literal["ES256", "EdDSA", "PS256"]
"""The JWS algorithms of signing keys (RFC 9068 access tokens and OIDC ID tokens)."""

ALGORITHMS: tuple[Algorithm, ...] = ("ES256", "EdDSA", "PS256")

PublicKey = ECKey | OKPKey | RSAKey

#: Members of a public JWK that RFC 7638 and verifiers need; nothing else is published.
_PUBLIC_MEMBERS = {
    "EC": ("kty", "crv", "x", "y"),
    "OKP": ("kty", "crv", "x"),
    "RSA": ("kty", "n", "e"),
}

#: The key type and curve each algorithm requires of a public JWK.
_ALG_KEY = {"ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519"), "PS256": ("RSA", None)}


class KeyStoreError(BastionError):
    """A signing key could not be created, unsealed, found or used.

    The ``diagnosis`` names the kid and the reason (wrong KEK, tampered row, token missing);
    clients only ever see a 503.
    """

    code = "keys.store_failed"
    status = 503
    title = "Service unavailable"


def public_jwk(key: PublicKey | dict[str, Any], alg: Algorithm) -> dict[str, Any]:
    """The public JWK of ``key`` (a joserfc key or a JWK dict) with ``kid``, ``alg`` and
    ``use: sig``; private members are never copied. Raises KeyStoreError when the key does not
    fit ``alg`` (an EC key for PS256, a P-384 key for ES256, …)."""
    data = key.as_dict(private=False) if not isinstance(key, dict) else key
    kty = data.get("kty")
    want_kty, want_crv = _ALG_KEY[alg]
    if kty != want_kty or (want_crv is not None and data.get("crv") != want_crv):
        raise KeyStoreError(diagnosis=f"a {kty}/{data.get('crv')} key cannot sign {alg}")
    try:
        members = {m: data[m] for m in _PUBLIC_MEMBERS[want_kty]}
    except KeyError as exc:
        raise KeyStoreError(diagnosis=f"public JWK lacks member {exc.args[0]!r}") from None
    jwk: dict[str, Any] = dict(members)
    jwk["kid"] = thumbprint(members)
    jwk["alg"] = alg
    jwk["use"] = "sig"
    return jwk


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of a public JWK: the key's ``kid``."""
    kty = jwk.get("kty")
    cls: type[PublicKey]
    if kty == "EC":
        cls = ECKey
    elif kty == "OKP":
        cls = OKPKey
    elif kty == "RSA":
        cls = RSAKey
    else:
        raise KeyStoreError(diagnosis=f"unsupported key type {kty!r}")
    members = {m: jwk[m] for m in _PUBLIC_MEMBERS[kty] if m in jwk}
    try:
        return cls.import_key(members).thumbprint()
    except (ValueError, TypeError, JoseError) as exc:
        raise KeyStoreError(diagnosis=f"invalid public JWK: {exc}") from None


@dataclass(frozen=True, slots=True)
class Signer:
    """A usable signing key: its kid, algorithm, public JWK and a ``sign`` callable that takes
    the JWS signing input and returns the JWS signature bytes (RFC 7518 form)."""

    kid: str
    alg: Algorithm
    jwk: dict[str, Any]
    sign: Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key a store has just generated: ``material`` is what the database keeps (a sealed
    blob or a token reference; never the private key in plaintext)."""

    signer: Signer
    material: bytes


class KeyStore(Protocol):
    """Creates and loads signing keys. Calls are synchronous and short (in-process crypto, or
    one call into a PKCS#11 library); every failure raises :class:`KeyStoreError`."""

    #: ``local`` or ``pkcs11``: recorded with each key, so a key is never handed to the wrong store.
    kind: str

    def supports(self, alg: Algorithm) -> bool:
        """Whether this store can generate and sign with ``alg`` keys."""

    def generate(self, alg: Algorithm) -> NewKey:
        """Generate a fresh key pair for ``alg``."""

    def load(self, kid: str, alg: Algorithm, material: bytes) -> Signer:
        """The signer of a stored key. Raises KeyStoreError if ``material`` does not unseal or
        resolve, or if the key it yields does not have thumbprint ``kid``."""

    def reseal(self, kid: str, alg: Algorithm, material: bytes) -> bytes | None:
        """New material for a key stored under an outdated secret (a former KEK), or None when
        ``material`` is current. KeyStoreError when it does not load at all."""

    def destroy(self, kid: str, material: bytes) -> None:
        """Erase the key where the store can (a token object); a no-op for sealed blobs, whose
        rows the caller clears."""

    def close(self) -> None:
        """Release sessions and handles."""


def check_kid(kid: str, signer: Signer) -> Signer:
    """``signer`` if its public key's thumbprint is ``kid``; KeyStoreError otherwise (a row
    whose material belongs to another key: swapped, replayed or forged)."""
    if signer.kid != kid:
        raise KeyStoreError(diagnosis=f"key {kid}: stored material belongs to another key")
    return signer
