"""Cryptographic material: certificates for loopback TLS (``certs``); key stores come next."""

from bastion.crypto.certs import (
    CertificateAuthority,
    generate_ca,
    generate_ca_and_leaf,
    generate_self_signed,
    write_self_signed,
)

__all__ = [
    "CertificateAuthority",
    "generate_ca",
    "generate_ca_and_leaf",
    "generate_self_signed",
    "write_self_signed",
]
