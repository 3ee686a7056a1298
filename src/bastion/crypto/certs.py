"""Short-lived X.509 certificates for the demo, tests and benchmarks (ECDSA P-256).

These certificates are for loopback and test use: ``make demo`` serves HTTPS with a self-signed
one, and tests build a private CA to check chain verification and, later, client certificates.
Production deployments bring their own certificates (``listeners[].tls``).

Every function returns PEM bytes; private keys are unencrypted PKCS#8, so whoever writes them to
disk must restrict the file's mode (:func:`write_self_signed` writes the key with mode 0600).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_DAYS = 825
"""Longest validity accepted, in days (the CA/Browser Forum's old ceiling for leaf certificates)."""

BACKDATE = dt.timedelta(minutes=5)
"""``notBefore`` is set this far in the past so that small clock skews do not reject a new cert."""

_DNS_NAME = re.compile(r"^(\*\.)?(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class CertificateAuthority:
    """A private CA able to issue leaf certificates. ``cert_pem`` is what clients trust."""

    cert_pem: bytes
    key_pem: bytes

    def issue(
        self,
        hostnames: list[str],
        ip_addresses: list[str],
        days: int = 30,
        *,
        client: bool = False,
        now: dt.datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """A leaf (cert PEM, key PEM) signed by this CA; ``client=True`` makes a client cert.

        A server certificate needs at least one hostname or IP address; a client certificate may
        have none (its subject is then ``bastion-client``). Raises ``ValueError`` on bad input.
        """
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        ca_key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key must be an EC private key")
        names, ips = _validate(hostnames, ip_addresses, days, allow_empty=client)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _subject(names, ips, fallback="bastion-client")
        builder = _base_builder(subject, ca_cert.subject, key.public_key(), days, now)
        builder = (
            _add_sans(builder, names, ips)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        cert = builder.sign(ca_key, hashes.SHA256())
        return _cert_pem(cert), _key_pem(key)


def generate_self_signed(
    hostnames: list[str],
    ip_addresses: list[str],
    days: int = 30,
    *,
    now: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A self-signed server certificate (cert PEM, key PEM) for the given names and IPs.

    ``hostnames`` are DNS names (``localhost``, ``api.example.test``, ``*.example.test``);
    ``ip_addresses`` are IPv4/IPv6 literals. At least one of the two must be given; the first one
    becomes the subject's common name. Clients verify it by trusting the certificate itself.
    ``now`` (timezone-aware) is for tests. Raises ``ValueError`` on bad input.
    """
    names, ips = _validate(hostnames, ip_addresses, days, allow_empty=False)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _subject(names, ips, fallback="bastion")
    builder = _base_builder(subject, subject, key.public_key(), days, now)
    builder = (
        _add_sans(builder, names, ips)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
    )
    cert = builder.sign(key, hashes.SHA256())
    return _cert_pem(cert), _key_pem(key)


def generate_ca(
    common_name: str = "Bastion test CA", days: int = 30, *, now: dt.datetime | None = None
) -> CertificateAuthority:
    """A new private CA (self-signed, may sign leaves only: ``pathLen`` 0)."""
    if not common_name or len(common_name) > 64:
        raise ValueError("common_name must be 1 to 64 characters")
    _check_days(days)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _base_builder(subject, subject, key.public_key(), days, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert_pem=_cert_pem(cert), key_pem=_key_pem(key))


def generate_ca_and_leaf(
    hostnames: list[str], ip_addresses: list[str], days: int = 30
) -> tuple[CertificateAuthority, bytes, bytes]:
    """A new CA and a server leaf it signed: ``(ca, leaf cert PEM, leaf key PEM)``."""
    ca = generate_ca(days=days)
    cert_pem, key_pem = ca.issue(hostnames, ip_addresses, days)
    return ca, cert_pem, key_pem


def write_self_signed(
    directory: Path,
    hostnames: list[str],
    ip_addresses: list[str],
    days: int = 30,
) -> tuple[Path, Path]:
    """Write a new self-signed pair as ``cert.pem`` and ``key.pem`` in ``directory``.

    Creates the directory (mode 0700) if needed. The key file is created with mode 0600 (also when
    it replaces an older one); both files are replaced atomically. Returns (cert path, key path).
    """
    cert_pem, key_pem = generate_self_signed(hostnames, ip_addresses, days)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    _write_atomic(key_path, key_pem, 0o600)
    _write_atomic(cert_path, cert_pem, 0o644)
    return cert_path, key_path


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # mkstemp creates the file with mode 0600, so the key is never readable by others, not even
    # for a moment; the final mode is set before the rename makes the file visible.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be an integer between 1 and {MAX_DAYS}")


def _validate(
    hostnames: list[str], ip_addresses: list[str], days: int, *, allow_empty: bool
) -> tuple[list[str], list[IpAddress]]:
    _check_days(days)
    names: list[str] = []
    for name in hostnames:
        lowered = name.lower()
        if len(lowered) > 253 or not _DNS_NAME.match(lowered):
            raise ValueError(f"{name!r} is not a DNS name (use ASCII/punycode labels)")
        names.append(lowered)
    ips: list[IpAddress] = []
    for text in ip_addresses:
        try:
            ips.append(ipaddress.ip_address(text))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address") from None
    if not names and not ips and not allow_empty:
        raise ValueError("give at least one hostname or IP address")
    return names, ips


def _subject(names: list[str], ips: list[IpAddress], *, fallback: str) -> x509.Name:
    common_name = names[0] if names else str(ips[0]) if ips else fallback
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _base_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    days: int,
    now: dt.datetime | None,
) -> x509.CertificateBuilder:
    start = (now or dt.datetime.now(dt.UTC)) - BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + BACKDATE + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _add_sans(
    builder: x509.CertificateBuilder, names: list[str], ips: list[IpAddress]
) -> x509.CertificateBuilder:
    if not names and not ips:
        return builder
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    general += [x509.IPAddress(ip) for ip in ips]
    return builder.add_extension(x509.SubjectAlternativeName(general), critical=False)


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
