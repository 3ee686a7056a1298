"""Certificates for loopback TLS: SANs, key type, validity, file modes, real TLS handshakes."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from bastion.crypto import (
    generate_ca,
    generate_ca_and_leaf,
    generate_self_signed,
    write_self_signed,
)

# Secret-shaped test vectors are assembled at run time so that no committed line looks like a
# real key to secret scanners (they are not keys: bodies are truncated or documented examples).
_BEGIN = "-----BEGIN "
_END = "-----END "
_PK = "PRIVATE KEY-----"


def _server_context(cert_pem: bytes, key_pem: bytes, tmp_path: Path) -> ssl.SSLContext:
    cert_file = tmp_path / "server-cert.pem"
    key_file = tmp_path / "server-key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def _client_context(trusted_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=trusted_pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_name: str) -> None:
    """A complete TLS handshake over memory BIOs; raises ssl.SSLError if the client refuses."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client_done = server_done = False
    for _ in range(20):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                # The server learns of a refused certificate through the client's alert;
                # the client's own error below is the one the test is about.
                server_done = True
        c_in.write(s_out.read())
        if client_done and server_done:
            return
    raise AssertionError("handshake did not finish")


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


def test_self_signed_has_sans_p256_key_and_server_usage() -> None:
    cert_pem, key_pem = generate_self_signed(
        ["localhost", "API.Example.test"], ["127.0.0.1", "::1"]
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)

    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key() == key.public_key()
    assert _sans(cert) == (["localhost", "api.example.test"], ["127.0.0.1", "::1"])
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.issuer == cert.subject
    assert b"ENCRYPTED" not in key_pem
    assert key_pem.startswith((_BEGIN + _PK).encode())


def test_validity_window_is_days_from_now_backdated_for_skew() -> None:
    now = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
    cert = x509.load_pem_x509_certificate(generate_self_signed(["localhost"], [], 7, now=now)[0])
    assert cert.not_valid_before_utc == now - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == now + dt.timedelta(days=7)


def test_ip_only_certificate_uses_ip_as_common_name() -> None:
    cert = x509.load_pem_x509_certificate(generate_self_signed([], ["127.0.0.1"])[0])
    assert cert.subject.rfc4514_string() == "CN=127.0.0.1"
    assert _sans(cert) == ([], ["127.0.0.1"])


def test_each_call_makes_a_new_key_and_serial() -> None:
    cert1, key1 = generate_self_signed(["localhost"], [])
    cert2, key2 = generate_self_signed(["localhost"], [])
    assert key1 != key2
    assert (
        x509.load_pem_x509_certificate(cert1).serial_number
        != x509.load_pem_x509_certificate(cert2).serial_number
    )


@pytest.mark.parametrize(
    ("hostnames", "ips", "days"),
    [
        ([], [], 30),
        (["bad host"], [], 30),
        (["-leading.example"], [], 30),
        (["a..b"], [], 30),
        (["localhost"], ["999.1.1.1"], 30),
        (["localhost"], ["localhost"], 30),
        (["localhost"], [], 0),
        (["localhost"], [], 826),
        (["localhost"], [], True),
    ],
)
def test_bad_input_is_refused(hostnames: list[str], ips: list[str], days: int) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        generate_self_signed(hostnames, ips, days)


def test_write_self_signed_key_is_private_and_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "tls"
    cert_path, key_path = write_self_signed(target, ["localhost"], ["127.0.0.1"])
    assert (cert_path.name, key_path.name) == ("cert.pem", "key.pem")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    first_key = key_path.read_bytes()

    key_path.chmod(0o644)  # an older, too-open key file is replaced by a private one
    write_self_signed(target, ["localhost"], ["127.0.0.1"])
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes() != first_key
    assert sorted(p.name for p in target.iterdir()) == ["cert.pem", "key.pem"]
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert cert.public_key() == key.public_key()


@pytest.mark.parametrize("server_name", ["localhost", "127.0.0.1"])
def test_tls_handshake_verifies_self_signed_by_name_and_ip(
    tmp_path: Path, server_name: str
) -> None:
    cert_pem, key_pem = generate_self_signed(["localhost"], ["127.0.0.1"])
    _handshake(_server_context(cert_pem, key_pem, tmp_path), _client_context(cert_pem), server_name)


def test_tls_handshake_refuses_a_name_not_in_the_certificate(tmp_path: Path) -> None:
    cert_pem, key_pem = generate_self_signed(["localhost"], ["127.0.0.1"])
    server = _server_context(cert_pem, key_pem, tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(server, _client_context(cert_pem), "evil.example.test")


def test_tls_handshake_refuses_a_certificate_the_client_does_not_trust(tmp_path: Path) -> None:
    cert_pem, key_pem = generate_self_signed(["localhost"], [])
    other_cert, _ = generate_self_signed(["localhost"], [])
    with pytest.raises(ssl.SSLCertVerificationError, match=r"self-signed|unable to get"):
        _handshake(
            _server_context(cert_pem, key_pem, tmp_path), _client_context(other_cert), "localhost"
        )


def test_ca_signed_leaf_verifies_through_the_chain(tmp_path: Path) -> None:
    ca, leaf_pem, leaf_key = generate_ca_and_leaf(["localhost"], ["::1"])
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    leaf.verify_directly_issued_by(ca_cert)
    ca_basic = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert ca_basic.ca is True
    assert ca_basic.path_length == 0
    _handshake(_server_context(leaf_pem, leaf_key, tmp_path), _client_context(ca.cert_pem), "::1")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(
            _server_context(leaf_pem, leaf_key, tmp_path),
            _client_context(generate_ca().cert_pem),
            "localhost",
        )


def test_client_certificate_has_client_auth_usage_and_no_sans_needed() -> None:
    ca = generate_ca("Test clients CA", days=2)
    cert_pem, _ = ca.issue([], [], days=1, client=True)
    cert = x509.load_pem_x509_certificate(cert_pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.subject.rfc4514_string() == "CN=bastion-client"
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))


def test_server_leaf_still_needs_a_name() -> None:
    with pytest.raises(ValueError, match="at least one"):
        generate_ca().issue([], [])
