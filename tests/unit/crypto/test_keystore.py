"""The key-store helpers: RFC 7638 thumbprints (the kid), public JWKs that carry nothing private."""

from __future__ import annotations

import pytest
from joserfc.jwk import ECKey, OKPKey, RSAKey

from bastion.crypto.keystore import KeyStoreError, Signer, check_kid, public_jwk, thumbprint

# RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
        "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
        "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rfc7638_section_3_1_vector() -> None:
    assert thumbprint(RFC7638_KEY) == RFC7638_THUMBPRINT


def test_thumbprint_ignores_non_required_members() -> None:
    bare = {"kty": "RSA", "n": RFC7638_KEY["n"], "e": "AQAB"}
    assert thumbprint(bare) == thumbprint({**bare, "kid": "x", "use": "sig", "alg": "PS256"})


@pytest.mark.parametrize(
    "jwk",
    [{"kty": "oct", "k": "AAAA"}, {"kty": "EC", "crv": "P-256", "x": "!!"}, {}],
)
def test_thumbprint_refuses_unsupported_or_broken_keys(jwk: dict[str, str]) -> None:
    with pytest.raises(KeyStoreError):
        thumbprint(jwk)


@pytest.mark.parametrize(
    ("key", "alg", "members"),
    [
        (ECKey.generate_key("P-256"), "ES256", {"kty", "crv", "x", "y"}),
        (OKPKey.generate_key("Ed25519"), "EdDSA", {"kty", "crv", "x"}),
        (RSAKey.generate_key(2048), "PS256", {"kty", "n", "e"}),
    ],
)
def test_public_jwk_has_no_private_members(key: ECKey, alg: str, members: set[str]) -> None:
    jwk = public_jwk(key, alg)  # type: ignore[arg-type]
    assert set(jwk) == members | {"kid", "alg", "use"}
    assert jwk["kid"] == key.thumbprint()
    assert jwk["use"] == "sig"
    for private in ("d", "p", "q", "dp", "dq", "qi"):
        assert private not in jwk


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (ECKey.generate_key("P-384"), "ES256"),  # wrong curve
        (ECKey.generate_key("P-256"), "PS256"),  # wrong type
        (OKPKey.generate_key("X25519"), "EdDSA"),  # a key-agreement curve
        (RSAKey.generate_key(2048), "ES256"),
    ],
)
def test_public_jwk_refuses_a_key_that_does_not_fit_the_algorithm(key: ECKey, alg: str) -> None:
    with pytest.raises(KeyStoreError):
        public_jwk(key, alg)  # type: ignore[arg-type]


def test_public_jwk_refuses_missing_members() -> None:
    with pytest.raises(KeyStoreError, match="lacks"):
        public_jwk({"kty": "EC", "crv": "P-256", "x": "AA"}, "ES256")


def test_check_kid_refuses_material_of_another_key() -> None:
    key = ECKey.generate_key("P-256")
    jwk = public_jwk(key, "ES256")
    signer = Signer(kid=jwk["kid"], alg="ES256", jwk=jwk, sign=lambda m: m)
    assert check_kid(jwk["kid"], signer) is signer
    with pytest.raises(KeyStoreError, match="another key"):
        check_kid("someone-else", signer)
