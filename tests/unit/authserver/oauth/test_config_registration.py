"""AuthConfig rules, client registration rules, and the issuer `bastion up` adds for itself."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion.authserver.oauth.registration import RegistrationError, new_client
from bastion.config.load import parse_config
from bastion.config.model import gateway_problems
from bastion.errors import ConfigError
from bastion.gateway.serve import with_local_issuer
from tests.unit.authserver.oauth.harness import PEPPER, config


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"issuer": "http://auth.example"}, "https"),
        ({"issuer": "https://auth.example?x=1"}, "no query"),
        ({"issuer": "https://auth.example#f"}, "no query"),
        ({"client_secret_pepper": "short"}, "32 bytes"),
        ({"access_token_ttl": "2h"}, "3600"),
        ({"code_ttl": "11m"}, "600"),
        ({"tls_cert": "/c.pem"}, "both"),
        ({"refresh": {"idle_timeout": "40d"}}, "absolute_lifetime"),
        ({"bind": "nowhere"}, "host:port"),
    ],
)
def test_config_refuses(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**over)


def test_config_accepts_http_on_loopback_and_strips_the_slash() -> None:
    assert config(issuer="http://127.0.0.1:9000/").issuer == "http://127.0.0.1:9000"
    assert config(issuer="http://localhost:9000").issuer == "http://localhost:9000"
    assert config(issuer="http://[::1]:9000").issuer == "http://[::1]:9000"


def register(**over: Any) -> tuple[Any, str | None]:
    args: dict[str, Any] = {
        "client_id": "web",
        "name": "",
        "auth_method": "client_secret_basic",
        "grant_types": ("client_credentials",),
        "scopes": ("read",),
        "redirect_uris": (),
        "audiences": (),
        "jwks": None,
        "pepper": PEPPER.encode(),
        "now": 1.0,
    }
    args.update(over)
    return new_client(**args)


def test_a_secret_client_gets_a_256_bit_secret_stored_only_as_hmac() -> None:
    client, secret = register()
    assert secret is not None
    assert secret.startswith("bcs_")
    assert len(secret) == 4 + 43
    assert secret not in repr(client)
    assert len(client.secrets) == 1
    assert len(client.secrets[0].hash) == 64


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"client_id": "-x"}, "client id"),
        ({"client_id": "a b"}, "client id"),
        ({"auth_method": "tls_client_auth"}, "auth method"),
        ({"grant_types": ()}, "at least one grant"),
        ({"grant_types": ("password",)}, "not supported"),
        ({"grant_types": ("implicit",)}, "not supported"),
        ({"auth_method": "none"}, "public client"),
        ({"grant_types": ("refresh_token",)}, "comes with authorization_code"),
        ({"grant_types": ("authorization_code",)}, "redirect URI"),
        (
            {"grant_types": ("authorization_code",), "redirect_uris": ("http://app.example/cb",)},
            "https",
        ),
        (
            {"grant_types": ("authorization_code",), "redirect_uris": ("https://app/cb#frag",)},
            "fragment",
        ),
        ({"grant_types": ("authorization_code",), "redirect_uris": ("/relative",)}, "https"),
        ({"scopes": ("a b",)}, "scope"),
        ({"scopes": ('a"',)}, "scope"),
        ({"auth_method": "private_key_jwt"}, "JWKS"),
        ({"auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "EC", "d": "x"}]}}, "public"),
        ({"jwks": {"keys": []}}, "only for private_key_jwt"),
        (
            {
                "auth_method": "none",
                "grant_types": ("authorization_code",),
                "redirect_uris": ("https://app/cb",),
                "introspect": True,
            },
            "cannot introspect",
        ),
        ({"grant_types": ("urn:bastion:permission:introspect",)}, "not supported"),
    ],
)
def test_registration_rules(over: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        register(**over)


def test_loopback_http_redirects_and_public_clients_are_fine() -> None:
    client, secret = register(
        auth_method="none",
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=("http://127.0.0.1:8765/cb", "https://app.example/cb"),
    )
    assert secret is None
    assert client.public


BASE: dict[str, Any] = {
    "listeners": [{"bind": "127.0.0.1:8080"}],
    "routes": [{"name": "api", "upstream": "http://127.0.0.1:9001", "authn": {"methods": ["jwt"]}}],
    "auth": {"issuer": "http://127.0.0.1:9000", "client_secret_pepper": PEPPER},
}


def test_up_trusts_its_own_authorization_server() -> None:
    cfg = parse_config(BASE, {})
    assert cfg.issuers == []  # a jwt route without issuers is fine when auth is configured
    local = with_local_issuer(cfg)
    (issuer,) = local.issuers
    assert issuer.issuer == "http://127.0.0.1:9000"
    assert str(issuer.jwks_url) == "http://127.0.0.1:9000/jwks"
    assert issuer.unsafe_allow_http_jwks
    assert issuer.algorithms == ["ES256"]
    assert with_local_issuer(local) is local  # an issuer of that name already there wins


def test_auth_only_files_load_and_the_gateway_refuses_them() -> None:
    cfg = parse_config({"auth": BASE["auth"]}, {})
    assert gateway_problems(cfg) == [
        "listeners: at least one listener is required to run the gateway",
        "routes: at least one route is required to run the gateway",
    ]


def test_auth_needs_its_own_port() -> None:
    doc = {**BASE, "auth": {**BASE["auth"], "bind": "127.0.0.1:8080"}}
    with pytest.raises(ConfigError, match="port of its own"):
        parse_config(doc, {})
