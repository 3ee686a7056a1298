"""Misconfiguration: CORS reflection, tracebacks, version header and an undocumented DELETE on
the vulnerable example; none on the secure one."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.crypto.certs import write_self_signed
from bastion.scan.auth import parse_auth
from bastion.scan.checks.bfla import Bfla
from bastion.scan.checks.misconfig import Misconfig, error_signature, old_tls_version
from bastion.scan.session import ScanOptions, open_session
from bastion.scan.spec import scan_spec_from_document
from tests.unit.scan.checks.conftest import Target, run_check


async def test_vulnerable_api_is_misconfigured(target: Target) -> None:
    async with target(True) as ctx:
        await run_check(Bfla(), ctx)  # creates invoices the undocumented DELETE may use
        found = await run_check(Misconfig(), ctx)
    keys = {(f.operation, f.key) for f in found}
    assert (None, "cors-reflect") in keys
    assert (None, "version-header:x-runtime") in keys
    assert ("POST /api/invoices", "error-disclosure") in keys
    assert ("DELETE /api/invoices/{invoice_id}", "method:DELETE") in keys


async def test_secure_api_gives_nothing(target: Target) -> None:
    async with target(False) as ctx:
        await run_check(Bfla(), ctx)
        assert await run_check(Misconfig(), ctx) == []


def test_signatures() -> None:
    assert error_signature("Traceback (most recent call last):\n  File") == "python-traceback"
    assert error_signature("sqlite3.OperationalError: near") == "sql-error"
    assert error_signature('{"error": "internal"}') is None


async def tls_server(tmp_path: Path, oldest: ssl.TLSVersion) -> asyncio.Server:
    write_self_signed(tmp_path, hostnames=["localhost"], ip_addresses=["127.0.0.1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        context.minimum_version = oldest
        context.set_ciphers("DEFAULT:@SECLEVEL=0")

    async def hang_up(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    return await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=context)


@pytest.mark.parametrize(
    ("oldest", "expected"),
    [(ssl.TLSVersion.TLSv1, "TLSv1.1"), (ssl.TLSVersion.TLSv1_2, None)],
)
async def test_old_tls_is_detected_only_where_accepted(
    tmp_path: Path, oldest: ssl.TLSVersion, expected: str | None
) -> None:
    server = await tls_server(tmp_path, oldest)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await old_tls_version("127.0.0.1", port) == expected
    finally:
        server.close()
        await server.wait_closed()
    assert await old_tls_version("127.0.0.1", port, timeout=1.0) is None  # nobody listens


def starts_with_cors(exact: bool) -> Any:
    """Allows https://app.example with credentials — by prefix (a bypass) or exactly."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        origin = dict(scope["headers"]).get(b"origin", b"").decode()
        ok = origin == "https://app.example" if exact else origin.startswith("https://app.example")
        headers = [(b"content-type", b"application/json")]
        if ok:
            headers += [
                (b"access-control-allow-origin", origin.encode()),
                (b"access-control-allow-credentials", b"true"),
            ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})

    return app


@pytest.mark.parametrize(("exact", "keys"), [(False, ["cors-prefix-match"]), (True, [])])
async def test_cors_bypass_of_the_allowed_origin(exact: bool, keys: list[str]) -> None:
    spec = scan_spec_from_document(
        {
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "servers": [{"url": "https://app.example"}],
            "paths": {"/x": {"get": {"responses": {"200": {"description": "ok"}}}}},
        }
    )
    auth = parse_auth(
        {
            "version": 1,
            "identities": {"user_a": {"headers": {"x": "a"}}, "user_b": {"headers": {"x": "b"}}},
        }
    )
    async with open_session(
        spec,
        "http://testserver",
        auth,
        ScanOptions(canary=False),
        transport=httpx.ASGITransport(app=starts_with_cors(exact)),
    ) as ctx:
        await Misconfig().run_once(ctx)
        assert [f.key for f in ctx.findings] == keys
