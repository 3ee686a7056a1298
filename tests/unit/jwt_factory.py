"""Test-only helpers: keys made at test time, signed tokens, and a real local JWKS server.

No key material is ever committed: every key here is generated when the tests run.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey

from bastion.gateway.layers.authn.config import IssuerConfig

ISSUER = "https://idp.test"
AUDIENCE = "https://api.test"
NOW = 1_700_000_000.0  # ManualClock's default wall time
HMAC_SECRET = "an-hmac-secret-of-at-least-32-bytes!!"


def ec_key(kid: str) -> ECKey:
    """A fresh P-256 private key with ``kid``."""
    return ECKey.generate_key("P-256", parameters={"kid": kid})


def rsa_key(kid: str) -> RSAKey:
    """A fresh RSA-2048 private key with ``kid``."""
    return RSAKey.generate_key(2048, parameters={"kid": kid})


def jwks(*keys: Key) -> dict[str, Any]:
    """The public JWKS of ``keys`` (with their kids)."""
    return {"keys": [k.as_dict(private=False) for k in keys]}


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid access-token claims at ``NOW``; ``None`` values remove a claim."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": AUDIENCE,
        "exp": int(NOW) + 600,
        "iat": int(NOW) - 10,
        "jti": "jti-1",
        "client_id": "client-1",
        "scope": "read write",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    key: Key, alg: str = "ES256", header: dict[str, Any] | None = None, **claim_overrides: Any
) -> str:
    """A compact JWT signed by ``key`` with ``alg``; header gets the key's kid and ``typ``."""
    hdr: dict[str, Any] = {"alg": alg, "typ": "at+jwt"}
    if key.kid is not None:
        hdr["kid"] = key.kid
    hdr.update(header or {})
    hdr = {k: v for k, v in hdr.items() if v is not None}
    return jwt.encode(hdr, claims(**claim_overrides), key, algorithms=[alg])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """Token bytes assembled by hand: how an attacker builds ``alg: none`` or confused tokens."""
    h = b64(json.dumps(header, separators=(",", ":")).encode())
    p = b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{h}.{p}.{b64(signature)}"


def issuer_config(**kw: Any) -> IssuerConfig:
    """An IssuerConfig for ``ISSUER`` with test-friendly defaults (override anything)."""
    base: dict[str, Any] = {"issuer": ISSUER, "audiences": [AUDIENCE]}
    base.update(kw)
    return IssuerConfig.model_validate(base)


class JwksServer:
    """A real HTTP server on 127.0.0.1 (port 0) serving a JWKS, counting its hits.

    Set ``status`` to make it answer errors, or ``body`` to serve raw bytes.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.status = 200
        self.body: bytes | None = None
        self.hits = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer._lock:
                    outer.hits += 1
                    status, body = outer.status, outer.body
                    if body is None:
                        body = json.dumps(outer.document).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/jwks.json"

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
