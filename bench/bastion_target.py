"""Bastion as a benchmark target: its three configurations, their credentials, starting it.

(a) ``jwt``: ES256 JWT (a JWKS file made here, one token signed here), rate limits, audit to a file.
(b) ``api_key``: an API key created with ``bastion keys create``, rate limits, audit to a file.
(c) ``none``: a pure proxy — no authentication (``unsafe_allow_anonymous``), no rate limits; the
    audit file stays on by default so that (c) differs from (a)/(b) only by authn and ratelimit
    (``audit=False`` gives an empty sink list instead).
(d) ``openapi``: (a) plus the route's OpenAPI document (``openapi.yaml``, written by
    :func:`write_openapi_spec`): the request matched and validated against it, its scopes
    checked (authz) and the response filtered (schema allow-list, sensitive-data detectors).
    (d) against (a) is the cost of the OpenAPI layers.
(e) ``jwt`` on distributed mode: (a) with the PostgreSQL store and the Redis rate limiter
    (``cache:``), revocation push and event streams — issue 6's "≥ 0.8 of embedded" is (e)/(a).
(f) ``api_key`` on distributed mode: (b) the same way; (f)/(b).

Every file of a target lives in its work directory and the config refers to it by a relative
path: the gateway and the CLI run with that directory as their working directory.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from joserfc import jwt
from joserfc.jwk import ECKey

from bench.processes import ChildFailed, Children, log_tail, wait_for_port

VARIANTS: dict[str, str] = {
    "a": "jwt",
    "b": "api_key",
    "c": "none",
    "d": "openapi",
    "e": "jwt",
    "f": "api_key",
}
#: Distributed variants and the embedded variant each is compared with.
DISTRIBUTED: dict[str, str] = {"e": "a", "f": "b"}
LABELS: dict[str, str] = {
    "a": "bastion (a) jwt",
    "b": "bastion (b) api-key",
    "c": "bastion (c) pure",
    "d": "bastion (d) jwt+openapi",
    "e": "bastion (e) jwt, pg+redis",
    "f": "bastion (f) api-key, pg+redis",
}
LEGEND: dict[str, str] = {
    "a": "JWT ES256 (verified-token cache warm) + 2 rate limits + audit to a file",
    "b": "API key (Bearer) + 2 rate limits + audit to a file",
    "c": "no authn, no rate limits; audit to a file unless --no-audit-pure",
    "d": "(a) + OpenAPI request validation, scope check (authz) and response filtering",
    "e": "(a) on distributed mode: PostgreSQL store, Redis rate limits, push and streams",
    "f": "(b) on distributed mode: PostgreSQL store, Redis rate limits, push and streams",
}
#: Paths of the benchmark's document, by body size in KiB (request and response alike).
SIZE_PATHS: dict[int, str] = {1: "/api/echo", 100: "/api/echo100"}
#: Order items in the request body for each size (~125 bytes each, see post.lua).
SIZE_ITEMS: dict[int, int] = {1: 8, 100: 820}
SPEC_FILE = "openapi.yaml"
BENCH_ISSUER = "https://issuer.bench.test"
BENCH_AUDIENCE = "bench-api"
BENCH_KID = "bench-es256-1"
PEPPER_ENV = "BASTION_API_KEY_PEPPER"
HIGH_RATE = 10_000_000  # per second: a limit that is evaluated on every request but never hit
AUDIT_MAX_BYTES = 64 * 1024 * 1024  # with one backup, at most 128 MiB of audit per target


@dataclass(frozen=True)
class JwtMaterial:
    """The issuer's public JWKS (a file) and one access token it signed."""

    jwks_file: Path
    token: str


def make_jwt_material(
    directory: Path, *, lifetime_s: int = 3600, now: float | None = None
) -> JwtMaterial:
    """A fresh ES256 key: its public JWKS written to ``directory/jwks.json``, one signed token.

    The token carries ``iss``, ``aud``, ``sub``, ``client_id``, ``scope``, ``iat``, ``nbf``,
    ``exp`` (``lifetime_s`` from now) and a random ``jti``. The private key is never written.
    """
    key = ECKey.generate_key(
        "P-256", parameters={"kid": BENCH_KID, "alg": "ES256", "use": "sig"}, private=True
    )
    jwks_file = directory / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [key.as_dict(private=False)]}), encoding="utf-8")
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": BENCH_ISSUER,
        "aud": BENCH_AUDIENCE,
        "sub": "bench-user",
        "client_id": "bench",
        "scope": "bench",
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime_s,
        "jti": secrets.token_hex(16),
    }
    token = jwt.encode({"alg": "ES256", "kid": BENCH_KID, "typ": "at+jwt"}, claims, key)
    return JwtMaterial(jwks_file=jwks_file, token=token)


def bastion_config(
    variant: str,
    *,
    port: int,
    upstream_port: int,
    workers: int = 1,
    audit: bool = True,
    store: str | None = None,
    cache: str | None = None,
    key_prefix: str | None = None,
) -> dict[str, Any]:
    """The ``bastion.yaml`` document of configuration ``variant`` ('a' to 'f').

    Paths are relative to the target's work directory (``jwks.json``, ``audit.jsonl``,
    ``bastion.db``). Variants 'b' and 'f' refer to the pepper as ``${BASTION_API_KEY_PEPPER}``.
    ``audit`` only matters for 'c'. 'e' and 'f' need ``store`` (a PostgreSQL URL whose schema
    is upgraded), ``cache`` (a Redis URL) and a ``key_prefix`` of their own.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {sorted(VARIANTS)}")
    file_sink = {
        "type": "file",
        "path": "audit.jsonl",
        "max_bytes": AUDIT_MAX_BYTES,
        "backups": 1,
    }
    limits = [
        {"rate": HIGH_RATE, "per": "1s", "key": "principal"},
        {"rate": HIGH_RATE, "per": "1s", "key": "ip"},
    ]
    route: dict[str, Any] = {
        "name": "bench",
        "path_prefix": "/",
        "upstream": f"http://127.0.0.1:{upstream_port}",
    }
    doc: dict[str, Any] = {
        "version": 1,
        "store": "sqlite:///bastion.db",
        "listeners": [{"name": "bench", "bind": f"127.0.0.1:{port}"}],
        "server": {"workers": workers},
        "audit": {"sinks": [file_sink]},
        "routes": [route],
    }
    if variant in DISTRIBUTED:
        if not (store and cache and key_prefix):
            raise ValueError(f"variant {variant!r} needs store, cache and key_prefix")
        doc["store"] = store
        doc["cache"] = cache
        doc["cluster"] = {"nodes": workers, "key_prefix": key_prefix}
    if variant in ("a", "d", "e"):
        doc["issuers"] = [
            {
                "issuer": BENCH_ISSUER,
                "jwks_file": "jwks.json",
                "algorithms": ["ES256"],
                "audiences": [BENCH_AUDIENCE],
            }
        ]
        route["authn"] = {"methods": ["jwt"]}
        route["ratelimit"] = {"limits": limits}
        if variant == "d":
            route["openapi"] = {"spec": SPEC_FILE}
    elif variant in ("b", "f"):
        doc["api_keys"] = {"pepper": "${" + PEPPER_ENV + "}"}
        route["authn"] = {"methods": ["api_key"]}
        route["ratelimit"] = {"limits": limits}
    else:
        route["authn"] = {"methods": [], "unsafe_allow_anonymous": True}
        route["ratelimit"] = {"limits": []}
        if not audit:
            doc["audit"] = {"sinks": []}
    return doc


def openapi_document() -> dict[str, Any]:
    """The document of configuration (d): ``POST`` of an order (``post.lua``'s body) on every
    path of :data:`SIZE_PATHS`, answered by an acknowledgement (the static upstream's body);
    the token's ``bench`` scope required."""
    text = {"type": "string", "maxLength": 200}
    item = {
        "type": "object",
        "additionalProperties": False,
        "required": ["sku", "name", "quantity", "unit_price_cents", "note"],
        "properties": {
            "sku": {"type": "string", "maxLength": 32},
            "name": text,
            "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
            "unit_price_cents": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000},
            "note": text,
        },
    }
    order = {
        "type": "object",
        "additionalProperties": False,
        "required": ["order_id", "customer", "currency", "items"],
        "properties": {
            "order_id": {"type": "string", "maxLength": 64},
            "customer": {"type": "string", "maxLength": 64},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "items": {"type": "array", "maxItems": 10_000, "items": item},
        },
    }
    ack = {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "status", "items"],
        "properties": {
            "id": {"type": "string", "maxLength": 64},
            "status": {"type": "string", "enum": ["accepted", "rejected"]},
            "items": {
                "type": "array",
                "maxItems": 10_000,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "sku": {"type": "string", "maxLength": 32},
                        "quantity": {"type": "integer", "minimum": 0},
                        "ok": {"type": "boolean"},
                    },
                },
            },
        },
    }
    operation = {
        "operationId": "",
        "requestBody": {"required": True, "content": {"application/json": {"schema": order}}},
        "responses": {
            "200": {"description": "accepted", "content": {"application/json": {"schema": ack}}}
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bastion benchmark", "version": "1"},
        "security": [{"bearerAuth": ["bench"]}],
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            path: {"post": {**operation, "operationId": f"echo{size}k"}}
            for size, path in SIZE_PATHS.items()
        },
    }


def order_body(items: int) -> bytes:
    """The request body ``post.lua`` sends with ``BENCH_BODY_ITEMS=items`` (same bytes)."""
    parts = [
        f'{{"sku":"SKU-{i:04d}","name":"Widget number {i}","quantity":{i % 5 + 1},'
        f'"unit_price_cents":{1000 + 37 * i},"note":"standard shipping, no gift wrap"}}'
        for i in range(1, items + 1)
    ]
    head = '{"order_id":"ord_0123456789abcdef","customer":"cus_42","currency":"EUR","items":['
    return (head + ",".join(parts) + "]}").encode()


def write_openapi_spec(directory: Path) -> Path:
    """Write :func:`openapi_document` as ``directory/openapi.yaml`` (for configuration (d))."""
    path = directory / SPEC_FILE
    path.write_text(yaml.safe_dump(openapi_document(), sort_keys=False), encoding="utf-8")
    return path


def write_config(directory: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as ``directory/bastion.yaml`` and return the path."""
    path = directory / "bastion.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def new_pepper() -> str:
    """A random 32-byte pepper, hex-encoded (64 characters)."""
    return secrets.token_hex(32)


def run_bastion(
    binary: Path,
    directory: Path,
    env: Mapping[str, str],
    command: tuple[str, ...],
    options: tuple[str, ...] = (),
) -> str:
    """Run ``bastion COMMAND -c bastion.yaml OPTIONS`` in ``directory`` and return its stdout;
    ChildFailed with the tail of the CLI's own error output when it exits non-zero."""
    name = " ".join(("bastion", *command))
    out = subprocess.run(
        [str(binary), *command, "-c", "bastion.yaml", *options],
        capture_output=True,
        text=True,
        cwd=directory,
        env=dict(env),
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        raise ChildFailed(f"{name} exited with {out.returncode}: {out.stderr[-800:]}")
    return out.stdout


def create_api_key(binary: Path, directory: Path, env: Mapping[str, str]) -> str:
    """Run ``bastion keys create --client bench --json`` and return the new key's secret form.

    The CLI prints ``{"id": …, "key": …}``; the key is never echoed in an error message.
    """
    stdout = run_bastion(
        binary, directory, env, ("keys", "create"), ("--client", "bench", "--json")
    )
    try:
        key = json.loads(stdout)["key"]
    except (ValueError, KeyError, TypeError):
        raise ChildFailed("bastion keys create did not print {'id': ..., 'key': ...}") from None
    if not isinstance(key, str) or not key:
        raise ChildFailed("bastion keys create printed an empty key")
    return key


def upgrade_schema(binary: Path, directory: Path, env: Mapping[str, str]) -> None:
    """Run ``bastion db upgrade -c bastion.yaml`` (a PostgreSQL store needs it before a node
    starts); ChildFailed with the CLI's own one-line error when it fails."""
    run_bastion(binary, directory, env, ("db", "upgrade"))


def start_bastion(
    children: Children, binary: Path, directory: Path, port: int, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """Start ``bastion gateway -c bastion.yaml`` in ``directory`` and wait for its port."""
    log = directory / "gateway.log"
    proc = children.start(
        [str(binary), "gateway", "-c", "bastion.yaml"], log=log, env=env, cwd=directory
    )
    wait_for_port(port, proc, log, timeout=30)
    return proc


def smoke_request(
    port: int, body: bytes, authorization: str | None, path: str = "/api/echo"
) -> None:
    """One POST of ``body`` to ``path`` as wrk will send it; ChildFailed unless the answer is
    a 200.

    Only the status and the problem ``code`` are reported, never the credential.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ChildFailed(f"smoke request to port {port} failed: {exc}") from None
    finally:
        conn.close()
    if resp.status != 200:
        code = ""
        with contextlib.suppress(ValueError, AttributeError):
            code = str(json.loads(payload).get("code", ""))
        raise ChildFailed(f"smoke request to port {port} got {resp.status} {code}".rstrip())


def describe_failure(directory: Path, exc: Exception) -> str:
    """Why a target could not be measured, with the tail of its gateway log if not already there."""
    message = str(exc)
    tail = log_tail(directory / "gateway.log", 8)
    return message if not tail or tail in message else f"{message}\n{tail}"
