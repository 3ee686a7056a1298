"""The gateway's HTTPS listener: TLS 1.2 is the floor, ciphers are forward-secret AEAD only,
and a client that does not speak TLS (or speaks it too slowly) is dropped.

Refusing an old protocol only means something if the client really offered it, so the TLS 1.0
and 1.1 tests first prove, against a permissive TLS server run here, that this machine's
OpenSSL can still negotiate that version (``@SECLEVEL=0``); only then is the gateway's refusal
the server's doing.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.gateway import GatewayHarness

pytestmark = pytest.mark.integration

OLD_VERSIONS = {"TLSv1": "-tls1", "TLSv1.1": "-tls1_1"}


def old_version_client(version: str) -> ssl.SSLContext:
    """A client that offers only ``version`` (TLSv1 or TLSv1.1), with every cipher enabled."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # the ssl module deprecates naming these versions at all
        warnings.simplefilter("ignore", DeprecationWarning)
        tls_version = ssl.TLSVersion.TLSv1_1 if version == "TLSv1.1" else ssl.TLSVersion.TLSv1
        ctx.minimum_version = ctx.maximum_version = tls_version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


@contextmanager
def permissive_server(gateway: GatewayHarness) -> Iterator[int]:
    """A one-connection-at-a-time TLS server that accepts TLS 1.0+ with any cipher: the control
    that shows whether a client can offer an old version on this machine."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(gateway.tmp / "cert.pem", gateway.tmp / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # the client closes after the handshake
            except OSError:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(10)
        listener.close()


def handshake(port: int, ctx: ssl.SSLContext, server_hostname: str | None = None) -> str:
    """The negotiated version; raises OSError (ssl.SSLError included) if the handshake fails."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname=server_hostname) as tls,
    ):
        return tls.version() or ""


def s_client(port: int, flag: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", flag,
         "-cipher", "DEFAULT@SECLEVEL=0"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip


def s_client_negotiated(result: subprocess.CompletedProcess[str]) -> bool:
    """True if s_client completed a handshake (a cipher was agreed)."""
    return result.returncode == 0 and "Cipher is (NONE)" not in result.stdout


@pytest.mark.parametrize("version", sorted(OLD_VERSIONS))
def test_old_tls_versions_refused(gateway: GatewayHarness, version: str) -> None:
    with permissive_server(gateway) as control_port:
        try:
            python_can_offer = handshake(control_port, old_version_client(version)) == version
        except OSError:
            python_can_offer = False
        openssl_can_offer = (
            not python_can_offer
            and shutil.which("openssl") is not None
            and s_client_negotiated(s_client(control_port, OLD_VERSIONS[version]))
        )
    if python_can_offer:
        negotiated: str | None
        try:
            negotiated = handshake(gateway.https_port, old_version_client(version))
        except OSError:  # ssl.SSLError, or the connection closed or reset by the server
            negotiated = None
        assert negotiated is None, f"the gateway negotiated {negotiated}"
    elif openssl_can_offer:
        assert not s_client_negotiated(s_client(gateway.https_port, OLD_VERSIONS[version]))
    else:
        # Neither Python's ssl nor the openssl tool can offer this version here (the library
        # was built without it), so the refusal cannot be provoked. What is left to check:
        # a client allowing everything down to TLS 1.0 still ends up on TLS 1.2 or later.
        ctx = gateway.tls_context()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        assert handshake(gateway.https_port, ctx, "localhost") in ("TLSv1.2", "TLSv1.3")
    # The listener is still healthy after the refused handshake.
    assert gateway.request("GET", "/public/echo", tls=True).status == 200


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_accepted(gateway: GatewayHarness, version: ssl.TLSVersion) -> None:
    ctx = gateway.tls_context()
    ctx.minimum_version = ctx.maximum_version = version
    with (
        socket.create_connection(("127.0.0.1", gateway.https_port), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        assert tls.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
        assert tls.compression() is None
        assert tls.selected_alpn_protocol() in (None, "http/1.1")
        tls.sendall(b"GET /public/echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")
    assert b"strict-transport-security: max-age=" in reply


def test_tls_1_2_cipher_is_ecdhe_aead_chosen_by_the_server(gateway: GatewayHarness) -> None:
    ctx = gateway.tls_context()
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    # The client prefers a CBC suite: the server's own preference must win.
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE+AESGCM:ECDHE+CHACHA20")
    with (
        socket.create_connection(("127.0.0.1", gateway.https_port), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        cipher = tls.cipher()
        assert tls.compression() is None
    assert cipher is not None
    name, protocol, _bits = cipher
    assert protocol == "TLSv1.2"
    assert name.startswith("ECDHE-")
    assert "GCM" in name or "CHACHA20" in name


@pytest.mark.parametrize(
    "ciphers",
    [
        "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA",  # forward secret, but CBC
        "AES128-GCM-SHA256:AES256-GCM-SHA384",  # AEAD, but static RSA key exchange
    ],
)
def test_tls_1_2_weak_suites_refused(gateway: GatewayHarness, ciphers: str) -> None:
    ctx = gateway.tls_context()
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    with pytest.raises(ssl.SSLError):
        handshake(gateway.https_port, ctx, "localhost")


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or resets), and how long that took."""
    started = time.monotonic()
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def test_plain_http_on_the_https_port_gets_no_clear_text_answer(gateway: GatewayHarness) -> None:
    with socket.create_connection(("127.0.0.1", gateway.https_port), timeout=10) as sock:
        sock.sendall(b"GET /public/echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data, _ = read_until_closed(sock)
    assert b"HTTP/" not in data
    assert b"echo" not in data
    assert b"{" not in data
    assert len(data) < 64  # at most a TLS alert record
    assert not gateway.upstream.requests


@pytest.mark.parametrize(
    "first_bytes",
    [b"", b"\x16\x03\x01\x02\x00"],  # nothing at all; a record header announcing 512 bytes
    ids=["silent", "partial-client-hello"],
)
def test_slow_handshake_closed_after_the_handshake_timeout(
    gateway: GatewayHarness, first_bytes: bytes
) -> None:
    timeout = gateway.config.server.header_timeout
    assert timeout == 2
    with socket.create_connection(("127.0.0.1", gateway.https_port), timeout=15) as sock:
        sock.sendall(first_bytes)
        data, elapsed = read_until_closed(sock)
    assert b"HTTP/" not in data
    # Closed by the timeout (not at once, and not after the 15 s this client would wait).
    assert timeout * 0.75 <= elapsed <= timeout + 5
    assert gateway.request("GET", "/public/echo", tls=True).status == 200
