"""The local key store: AES-256-GCM sealing under the KEK, AAD bound to the kid, no half-loads."""

from __future__ import annotations

import base64
import os
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.errors import BadSignatureError, SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from bastion.crypto.keystore import Algorithm, KeyStoreError
from bastion.crypto.local_keystore import LocalKeyStore, parse_kek

KEK = os.urandom(32)


@pytest.fixture(scope="module")
def rsa_material() -> tuple[LocalKeyStore, str, bytes]:
    """One PS256 key for the module (RSA generation is the slow part)."""
    store = LocalKeyStore(KEK)
    new = store.generate("PS256")
    return store, new.signer.kid, new.material


def _verify(token: str, jwk: dict[str, object], alg: str) -> dict[str, object]:
    key = {"EC": ECKey, "OKP": OKPKey, "RSA": RSAKey}[str(jwk["kty"])].import_key(jwk)
    with warnings.catch_warnings():
        # joserfc flags "EdDSA" as deprecated by RFC 9864 ("Ed25519"); the issue asks for it.
        warnings.simplefilter("ignore", SecurityWarning)
        obj = jws.deserialize_compact(token, KeySet([key]), algorithms=[alg])
    return dict(obj.headers())


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_generate_seal_load_sign_verify(alg: Algorithm) -> None:
    store = LocalKeyStore(KEK)
    new = store.generate(alg)
    again = LocalKeyStore(KEK).load(new.signer.kid, alg, new.material)
    assert again.kid == new.signer.kid
    assert again.jwk == new.signer.jwk
    header = base64.urlsafe_b64encode(f'{{"alg":"{alg}"}}'.encode()).rstrip(b"=")
    signing_input = header + b".eyJzdWIiOiJhIn0"
    sig = base64.urlsafe_b64encode(again.sign(signing_input)).rstrip(b"=").decode()
    assert _verify(f"{signing_input.decode()}.{sig}", again.jwk, alg) == {"alg": alg}


def test_ps256(rsa_material: tuple[LocalKeyStore, str, bytes]) -> None:
    store, kid, material = rsa_material
    signer = store.load(kid, "PS256", material)
    assert signer.jwk["kty"] == "RSA"
    assert len(base64.urlsafe_b64decode(signer.jwk["n"] + "==")) * 8 == 3072
    signing_input = b"eyJhbGciOiJQUzI1NiJ9.e30"
    sig = base64.urlsafe_b64encode(signer.sign(signing_input)).rstrip(b"=").decode()
    assert _verify(f"{signing_input.decode()}.{sig}", signer.jwk, "PS256")


def test_sealed_material_holds_no_plaintext_key() -> None:
    store = LocalKeyStore(KEK)
    new = store.generate("ES256")
    der = _private_der(new.material, new.signer.kid, "ES256")
    private_scalar = der[-100:]  # the tail of PKCS#8 carries the private scalar and public point
    assert der not in new.material
    assert private_scalar[:32] not in new.material
    assert b"PRIVATE KEY" not in new.material
    # Two generations never produce the same blob (fresh nonce, fresh key).
    assert store.generate("ES256").material != new.material


def _private_der(material: bytes, kid: str, alg: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aad = b"bastion/signing-key/v1:" + kid.encode() + b":" + alg.encode()
    return AESGCM(KEK).decrypt(material[1:13], material[13:], aad)


def test_wrong_kek_is_a_clear_error() -> None:
    new = LocalKeyStore(KEK).generate("ES256")
    with pytest.raises(KeyStoreError, match="wrong key-encryption key"):
        LocalKeyStore(os.urandom(32)).load(new.signer.kid, "ES256", new.material)


@pytest.mark.parametrize("position", [0, 1, 5, 12, 13, 40, -1])
def test_any_flipped_byte_is_refused(position: int) -> None:
    store = LocalKeyStore(KEK)
    new = store.generate("ES256")
    tampered = bytearray(new.material)
    tampered[position] ^= 0x01
    with pytest.raises(KeyStoreError):
        store.load(new.signer.kid, "ES256", bytes(tampered))


def test_material_swapped_between_rows_does_not_unseal() -> None:
    """The AAD binds the blob to its kid: key B's blob in key A's row is refused."""
    store = LocalKeyStore(KEK)
    a, b = store.generate("ES256"), store.generate("ES256")
    with pytest.raises(KeyStoreError, match="cannot unseal"):
        store.load(a.signer.kid, "ES256", b.material)


def test_material_under_another_algorithm_does_not_unseal() -> None:
    store = LocalKeyStore(KEK)
    new = store.generate("EdDSA")
    with pytest.raises(KeyStoreError):
        store.load(new.signer.kid, "ES256", new.material)


@pytest.mark.parametrize("material", [b"", b"\x01", b"\x02" + bytes(60), b"\x01" + bytes(20)])
def test_malformed_material_is_refused(material: bytes) -> None:
    with pytest.raises(KeyStoreError):
        LocalKeyStore(KEK).load("kid", "ES256", material)


def test_a_validly_sealed_non_key_is_refused() -> None:
    """Whoever holds the KEK could seal junk; it still does not load."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aad = b"bastion/signing-key/v1:kid:ES256"
    nonce = os.urandom(12)
    material = b"\x01" + nonce + AESGCM(KEK).encrypt(nonce, b"not a key", aad)
    with pytest.raises(KeyStoreError, match="not a key"):
        LocalKeyStore(KEK).load("kid", "ES256", material)


def test_a_sealed_key_under_a_claimed_kid_of_another_key_is_refused() -> None:
    """Sealed with the right AAD for kid X, but the key inside has another thumbprint."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    nonce = os.urandom(12)
    aad = b"bastion/signing-key/v1:victim-kid:ES256"
    material = b"\x01" + nonce + AESGCM(KEK).encrypt(nonce, der, aad)
    with pytest.raises(KeyStoreError, match="another key"):
        LocalKeyStore(KEK).load("victim-kid", "ES256", material)


def test_the_kek_is_never_shown() -> None:
    assert KEK.hex() not in repr(LocalKeyStore(KEK))


def test_kek_must_be_256_bits() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        LocalKeyStore(os.urandom(16))


@pytest.mark.parametrize(
    "encode",
    [
        lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
        lambda b: base64.urlsafe_b64encode(b).decode(),
        lambda b: base64.b64encode(b).decode(),
        lambda b: b.hex(),
        lambda b: "  " + b.hex().upper() + "\n",
    ],
)
def test_parse_kek_accepts_base64_and_hex(encode: object) -> None:
    raw = os.urandom(32)
    assert parse_kek(encode(raw)) == raw  # type: ignore[operator]


@pytest.mark.parametrize(
    "text",
    ["", "short", base64.b64encode(os.urandom(16)).decode(), "zz" * 32, "é" * 43],
)
def test_parse_kek_refuses_anything_else_without_echoing_it(text: str) -> None:
    with pytest.raises(ValueError, match="32 random bytes") as info:
        parse_kek(text)
    if text:
        assert text not in str(info.value)


def test_supported_algorithms() -> None:
    store = LocalKeyStore(KEK)
    assert all(store.supports(a) for a in ("ES256", "EdDSA", "PS256"))
    store.destroy("kid", b"")  # nothing to erase: the caller clears the row
    store.close()


def test_bad_signature_detected_after_signing() -> None:
    """A signature over other bytes does not verify (the signer signs what it is given)."""
    store = LocalKeyStore(KEK)
    signer = store.generate("ES256").signer
    sig = base64.urlsafe_b64encode(signer.sign(b"eyJhbGciOiJFUzI1NiJ9.e30")).rstrip(b"=")
    forged = "eyJhbGciOiJFUzI1NiJ9.e319." + sig.decode()
    with pytest.raises(BadSignatureError):
        _verify(forged, signer.jwk, "ES256")


def test_previous_keks_open_old_blobs_and_reseal_moves_them_to_the_current_kek() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed_old = LocalKeyStore(old).generate("ES256")
    kid = sealed_old.signer.kid
    rotating = LocalKeyStore(new, previous=[old])
    assert rotating.load(kid, "ES256", sealed_old.material).kid == kid
    fresh = rotating.reseal(kid, "ES256", sealed_old.material)
    assert fresh is not None
    assert fresh != sealed_old.material
    assert LocalKeyStore(new).load(kid, "ES256", fresh).jwk == sealed_old.signer.jwk
    with pytest.raises(KeyStoreError, match="cannot unseal"):
        LocalKeyStore(old).load(kid, "ES256", fresh)
    assert rotating.reseal(kid, "ES256", fresh) is None  # already current


def test_reseal_refuses_what_no_kek_opens() -> None:
    sealed = LocalKeyStore(os.urandom(32)).generate("ES256")
    with pytest.raises(KeyStoreError, match="cannot unseal"):
        LocalKeyStore(os.urandom(32), previous=[os.urandom(32)]).reseal(
            sealed.signer.kid, "ES256", sealed.material
        )


def test_previous_keks_must_be_256_bits_too() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        LocalKeyStore(os.urandom(32), previous=[b"short"])
