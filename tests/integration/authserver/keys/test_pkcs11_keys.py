"""The PKCS#11 key store against a real SoftHSM2 token the tests initialise: keys generated in
the token, never extractable, ES256 signatures (hash outside + CKM_ECDSA) that verify."""

from __future__ import annotations

import base64
from pathlib import Path

import pkcs11
import pytest
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from bastion.authserver.keys import KeysConfig, KeyStoreError, open_key_manager
from bastion.authserver.oauth.rfc9068 import quiet_registry
from bastion.core.clock import ManualClock
from bastion.crypto.keystore import Algorithm
from bastion.crypto.pkcs11_keystore import Pkcs11KeyStore
from bastion.store.sqlite import SqliteStore
from tests.integration.authserver.keys.conftest import SOFTHSM_LIB, Token

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]


def _store(token: Token) -> Pkcs11KeyStore:
    return Pkcs11KeyStore(library=SOFTHSM_LIB, token_label=token.label, pin=token.pin)


def _session(token: Token) -> pkcs11.Session:
    """A session of our own; it shares the login of a key store open in this process."""
    tok = pkcs11.lib(SOFTHSM_LIB).get_token(token_label=token.label)
    try:
        return tok.open(user_pin=token.pin, rw=True)
    except pkcs11.UserAlreadyLoggedIn:
        return tok.open(rw=True)


@pytest.mark.parametrize(
    ("alg", "kty", "length"), [("ES256", "EC", 64), ("EdDSA", "OKP", 64), ("PS256", "RSA", 384)]
)
def test_sign_with_token_key_and_verify_with_joserfc(
    softhsm: Token, alg: Algorithm, kty: str, length: int
) -> None:
    ks = _store(softhsm)
    new = ks.generate(alg)
    assert len(new.material) == 16  # only the token object's id leaves the token
    signer = ks.load(new.signer.kid, alg, new.material)
    assert signer.jwk["kty"] == kty
    header = base64.urlsafe_b64encode(f'{{"alg":"{alg}"}}'.encode()).rstrip(b"=")
    signing_input = header + b".eyJzdWIiOiJhIn0"
    sig = signer.sign(signing_input)
    assert len(sig) == length  # ES256: raw r || s, what JWS wants (not DER)
    token = f"{signing_input.decode()}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
    key = {"EC": ECKey, "OKP": OKPKey, "RSA": RSAKey}[kty].import_key(signer.jwk)
    registry = quiet_registry((alg,))  # joserfc warns on "EdDSA" (RFC 9864); this one does not
    obj = jws.deserialize_compact(token, key, registry=registry)
    assert obj.payload == b'{"sub":"a"}'
    tampered = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(tampered, key, registry=registry)
    ks.close()


@pytest.mark.parametrize(
    ("alg", "key_type", "secret"),
    [
        ("ES256", KeyType.EC, Attribute.VALUE),
        ("EdDSA", KeyType.EC_EDWARDS, Attribute.VALUE),
        ("PS256", KeyType.RSA, Attribute.PRIVATE_EXPONENT),
    ],
)
def test_private_key_is_not_extractable(
    softhsm: Token, alg: Algorithm, key_type: KeyType, secret: Attribute
) -> None:
    ks = _store(softhsm)
    new = ks.generate(alg)
    ks.close()
    with _session(softhsm) as session:
        private = session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, key_type=key_type, id=new.material
        )
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        with pytest.raises(pkcs11.AttributeSensitive):
            private[secret]
        with pytest.raises(pkcs11.PKCS11Error):  # cannot be switched back on
            private[Attribute.EXTRACTABLE] = True
        wrapper = session.generate_key(
            KeyType.AES, 256, template={Attribute.WRAP: True, Attribute.TOKEN: False}
        )
        with pytest.raises(pkcs11.PKCS11Error):  # not even wrapped under a key we hold
            wrapper.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD)


def test_an_extractable_key_planted_under_an_id_is_refused(softhsm: Token) -> None:
    """A key someone imported or generated extractable is not one of ours."""
    from pkcs11.util.ec import encode_named_curve_parameters

    key_id = b"\x07" * 16
    with _session(softhsm) as session:
        params = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        params.generate_keypair(
            store=True,
            id=key_id,
            private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
        )
    ks = _store(softhsm)
    with pytest.raises(KeyStoreError, match="extractable"):
        ks.load("any", "ES256", key_id)
    ks.close()


def test_a_key_that_was_once_extractable_is_refused(softhsm: Token) -> None:
    """The attack: generate a key extractable, copy it out, then flip it to sensitive and not
    extractable and plant it under an id. Its current flags look right; its history
    (CKA_NEVER_EXTRACTABLE, CKA_ALWAYS_SENSITIVE false) gives it away."""
    from pkcs11.util.ec import encode_named_curve_parameters

    key_id = b"\x08" * 16
    with _session(softhsm) as session:
        params = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        _, private = params.generate_keypair(
            store=True,
            id=key_id,
            private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
        )
        private[Attribute.SENSITIVE] = True
        private[Attribute.EXTRACTABLE] = False
        assert private[Attribute.SENSITIVE]
        assert not private[Attribute.EXTRACTABLE]
        assert not private[Attribute.NEVER_EXTRACTABLE]
    ks = _store(softhsm)
    with pytest.raises(KeyStoreError, match="was extractable"):
        ks.load("any", "ES256", key_id)
    ks.close()


def test_an_imported_private_key_is_refused(softhsm: Token) -> None:
    """A key created from outside values (CKA_LOCAL false) exists outside the token."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from pkcs11.util.ec import decode_ec_public_key, encode_named_curve_parameters

    key_id = b"\x09" * 16
    outside = ec.generate_private_key(ec.SECP256R1())
    with _session(softhsm) as session:
        curve = encode_named_curve_parameters("secp256r1")
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.KEY_TYPE: KeyType.EC,
                Attribute.TOKEN: True,
                Attribute.ID: key_id,
                Attribute.EC_PARAMS: curve,
                Attribute.VALUE: outside.private_numbers().private_value.to_bytes(32, "big"),
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
            }
        )
        der = outside.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        public = decode_ec_public_key(der, encode_ec_point=True)
        public[Attribute.TOKEN] = True
        public[Attribute.ID] = key_id
        session.create_object(public)
    ks = _store(softhsm)
    with pytest.raises(KeyStoreError, match="not generated in the token"):
        ks.load("any", "ES256", key_id)
    ks.close()


def test_missing_or_swapped_token_objects_are_refused(softhsm: Token) -> None:
    ks = _store(softhsm)
    a, b = ks.generate("ES256"), ks.generate("ES256")
    with pytest.raises(KeyStoreError, match="another key"):
        ks.load(a.signer.kid, "ES256", b.material)
    with pytest.raises(KeyStoreError, match="not found"):
        ks.load(a.signer.kid, "ES256", b"\x00" * 16)
    with pytest.raises(KeyStoreError, match="malformed"):
        ks.load(a.signer.kid, "ES256", b"short")
    ks.destroy(a.signer.kid, a.material)
    with pytest.raises(KeyStoreError, match="not found"):
        ks.load(a.signer.kid, "ES256", a.material)
    with pytest.raises(KeyStoreError, match="malformed"):
        ks.destroy(a.signer.kid, b"short")
    ks.close()


def test_algorithms(softhsm: Token) -> None:
    ks = _store(softhsm)
    assert all(ks.supports(a) for a in ("ES256", "EdDSA", "PS256"))
    assert not ks.supports("HS256")  # type: ignore[arg-type]
    with pytest.raises(KeyStoreError, match="unsupported algorithm"):
        ks.generate("HS256")  # type: ignore[arg-type]
    es = ks.generate("ES256")
    with pytest.raises(KeyStoreError, match="not found"):  # an EC object is no Edwards key
        ks.load(es.signer.kid, "EdDSA", es.material)
    ks.close()


def test_wrong_pin_or_token_is_a_clear_error(softhsm: Token) -> None:
    with pytest.raises(KeyStoreError, match="cannot open token"):
        Pkcs11KeyStore(library=SOFTHSM_LIB, token_label=softhsm.label, pin="0000")
    with pytest.raises(KeyStoreError, match="cannot open token"):
        Pkcs11KeyStore(library=SOFTHSM_LIB, token_label="no-such-token", pin=softhsm.pin)
    with pytest.raises(KeyStoreError, match="cannot open token"):
        Pkcs11KeyStore(library="/nonexistent/libpkcs11.so", token_label="x", pin="1")


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_key_manager_on_the_token_with_sqlite(
    softhsm: Token, tmp_path: Path, alg: str
) -> None:
    store = SqliteStore(str(tmp_path / "state.db"))
    await store.open()
    config = KeysConfig.model_validate(
        {
            "store": "pkcs11",
            "algorithm": alg,
            "pkcs11": {"token_label": softhsm.label, "pin": softhsm.pin},
        }
    )
    clock = ManualClock()
    m = await open_key_manager(config, store, token_max_lifetime=300, clock=clock)
    try:
        first = (await m.jwks())["keys"][0]["kid"]
        token = await m.sign({"sub": "alice"}, typ="at+jwt")
        registry = quiet_registry((alg,))  # joserfc warns on "EdDSA" (RFC 9864)
        decoded = jwt.decode(token, await m.public_key_set(), registry=registry)
        assert decoded.claims == {"sub": "alice"}
        rows = await store.read(
            "t", lambda c: c.execute("SELECT kid, key_store, material FROM signing_keys").fetchall()
        )
        assert [(r[0], r[1], len(base64.b64decode(r[2]))) for r in rows] == [(first, "pkcs11", 16)]
        # Orderly rotation, then the first key leaves the JWKS and the token.
        await m.rotate()
        clock.advance(600)
        await m.tick()
        clock.advance(300 + 60 + 60)
        await m.tick()
        assert first not in {k["kid"] for k in (await m.jwks())["keys"]}
        with _session(softhsm) as session:
            ids = {
                o[Attribute.ID]
                for o in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            }
        assert len(ids) == 1  # the retired key's pair was destroyed in the token
        # Emergency: the compromised key's pair is destroyed at once.
        new = await m.rotate(emergency=True)
        with _session(softhsm) as session:
            ids = {
                o[Attribute.ID]
                for o in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            }
        assert len(ids) == 1
        token = await m.sign({"sub": "bob"}, typ="at+jwt")
        assert jwt.decode(token, await m.public_key_set(), registry=registry).header["kid"] == new
    finally:
        m.close()
        await store.close()
