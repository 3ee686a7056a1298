"""scan-auth.yaml: parsing, every kind of identity, re-login, secrets redacted."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from bastion.scan.auth import build_identities, jwt_expiry, load_auth, parse_auth
from bastion.scan.client import ScanClient
from bastion.scan.errors import LoginFailed, ScanUsageError
from bastion.scan.redact import Redactor

BASE = {"user_a": {"headers": {"x-user": "1"}}, "user_b": {"headers": {"x-user": "2"}}}


def _parse(**identities: Any) -> Any:
    return parse_auth({"version": 1, "identities": {**BASE, **identities}})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "mapping"),
        ({"identities": {"user_a": {"headers": {}}}}, "user_b is required"),
        ({"identities": {**BASE, "anonymous": {"headers": {}}}}, "reserved"),
        ({"identities": BASE, "extra": 1}, "unknown top-level"),
        ({"identities": {**BASE, "x": {"headers": {}, "api_key": {}}}}, "exactly one"),
        ({"identities": {**BASE, "x": {"headers": {}, "role": "a"}}}, "unknown key"),
        ({"identities": {**BASE, "x": {"login": {"username": "u"}}}}, "username and password"),
        (
            {
                "identities": {
                    **BASE,
                    "x": {"login": {"username": "u", "password": "p", "format": "xml"}},
                }
            },
            "json or form",
        ),
        ({"identities": {**BASE, "x": {"login": {"user": "u"}}}}, "unknown key"),
        (
            {"identities": {**BASE, "x": {"api_key": {"name": "k", "value": "v", "in": "body"}}}},
            "header, query or cookie",
        ),
        ({"identities": {**BASE, "x": {"client_credentials": {"client_id": "c"}}}}, "token_url"),
        (
            {
                "identities": {
                    **BASE,
                    "x": {
                        "client_credentials": {
                            "token_url": "/t",
                            "client_id": "c",
                            "client_secret": "s",
                            "auth_method": "jwt",
                        }
                    },
                }
            },
            "basic or post",
        ),
        ({"identities": {**BASE, "x": {"headers": {"a": ["list"]}}}}, "expected a string"),
        (
            {"identities": {**BASE, "x": {"headers": {"a": "${BASTION_SCAN_UNSET_VAR}"}}}},
            "BASTION_SCAN_UNSET_VAR is not set",
        ),
    ],
)
def test_invalid_files_are_refused(doc: Any, message: str) -> None:
    with pytest.raises(ScanUsageError, match=message):
        parse_auth(doc)


def test_env_expansion_and_file_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCAN_KEY", "k-123456789012345")
    path = tmp_path / "auth.yaml"
    path.write_text(
        "identities:\n  user_a: {headers: {x-user: '1'}}\n  user_b: {headers: {x-user: '2'}}\n"
        "  admin: {id: '9', api_key: {name: X-Key, value: '${SCAN_KEY}'}}\n"
    )
    cfg = load_auth(path)
    assert cfg.identities["admin"].api_key is not None
    assert cfg.identities["admin"].api_key.value == "k-123456789012345"
    assert cfg.identities["admin"].user_id == "9"
    with pytest.raises(ScanUsageError, match="No such file"):
        load_auth(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("identities: [\n")
    with pytest.raises(ScanUsageError, match="invalid YAML"):
        load_auth(tmp_path / "bad.yaml")


async def test_api_key_and_header_identities() -> None:
    cfg = _parse(
        q={"api_key": {"name": "key", "in": "query", "value": "secret-query-key"}},
        c={"api_key": {"name": "sid", "in": "cookie", "value": "secret-cookie"}},
        h={"api_key": {"name": "X-Key", "value": "secret-header-key"}},
    )
    client = ScanClient("http://t.test")
    ids = build_identities(cfg, client, Redactor())
    assert await ids["q"].credentials() == ([], {"key": "secret-query-key"})
    assert await ids["c"].credentials() == ([("cookie", "sid=secret-cookie")], {})
    assert await ids["h"].credentials() == ([("X-Key", "secret-header-key")], {})
    assert await ids["user_a"].credentials() == ([("x-user", "1")], {})
    assert not ids["user_a"].uses_token
    assert not ids["user_a"].may_relogin()
    await client.aclose()


async def test_client_credentials_basic_and_post() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": "cc-token-abcdefghijkl", "expires_in": 60})

    cfg = _parse(
        basic={
            "client_credentials": {
                "token_url": "https://auth.test/token",
                "client_id": "c",
                "client_secret": "s3cret-value",
                "scope": "read",
            }
        },
        post={
            "client_credentials": {
                "token_url": "/token",
                "client_id": "c",
                "client_secret": "s3cret-value",
                "auth_method": "post",
            }
        },
    )
    client = ScanClient("http://t.test", transport=httpx.MockTransport(handler), rate=1000)
    redactor = Redactor()
    ids = build_identities(cfg, client, redactor)
    headers, _ = await ids["basic"].credentials()
    assert headers == [("authorization", "Bearer cc-token-abcdefghijkl")]
    assert seen[0].url.host == "auth.test"  # explicitly configured origin, allowed
    assert (
        seen[0].headers["authorization"] == "Basic " + base64.b64encode(b"c:s3cret-value").decode()
    )
    assert b"scope=read" in seen[0].content
    await ids["post"].credentials()
    assert b"client_secret=s3cret-value" in seen[1].content
    assert ids["post"].expires_at is not None
    text = redactor.redact("cc-token-abcdefghijkl s3cret-value")
    assert "cc-token-abcdefghijkl" not in text
    assert "s3cret-value" not in text
    await client.aclose()


async def test_login_failures_name_the_identity_not_the_secret() -> None:
    answers = iter(
        [
            httpx.Response(401),
            httpx.Response(200, json={"other": 1}),
            httpx.Response(200, json={"access_token": ""}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    cfg = parse_auth(
        {
            "login": {"path": "/login", "format": "form"},
            "identities": {**BASE, "u": {"login": {"username": "u", "password": "pw-very-secret"}}},
        }
    )
    client = ScanClient("http://t.test", transport=httpx.MockTransport(handler), rate=1000)
    ident = build_identities(cfg, client, Redactor())["u"]
    for _ in range(3):
        with pytest.raises(LoginFailed) as info:
            await ident.credentials()
        assert "pw-very-secret" not in str(info.value)
        assert "u:" in str(info.value)
    await client.aclose()


async def test_token_expiry_triggers_a_new_login() -> None:
    key = OctKey.generate_key(256)
    logins = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal logins
        logins += 1
        exp = int(time.time()) + (10 if logins == 1 else 3600)  # the first is nearly expired
        token = jwt.encode({"alg": "HS256"}, {"sub": "u", "exp": exp}, key)
        return httpx.Response(200, json={"access_token": token})

    cfg = parse_auth(
        {
            "login": {"path": "/login", "scheme": ""},
            "identities": {**BASE, "u": {"login": {"username": "u", "password": "pw"}}},
        }
    )
    client = ScanClient("http://t.test", transport=httpx.MockTransport(handler), rate=1000)
    ident = build_identities(cfg, client, Redactor())["u"]
    first, _ = await ident.credentials()
    second, _ = await ident.credentials()  # within the 30 s margin: log in again
    third, _ = await ident.credentials()
    assert logins == 2
    assert first != second
    assert second == third
    assert first[0][0] == "Authorization"
    assert not first[0][1].startswith("Bearer")
    await client.aclose()


def test_jwt_expiry_reads_only_well_formed_tokens() -> None:
    key = OctKey.generate_key(256)
    token = jwt.encode({"alg": "HS256"}, {"exp": 123}, key)
    assert jwt_expiry(token) == 123.0
    assert jwt_expiry(jwt.encode({"alg": "HS256"}, {"exp": "soon"}, key)) is None
    assert jwt_expiry("opaque-token") is None
    assert jwt_expiry("a.b.c") is None
