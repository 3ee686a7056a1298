"""`bastion config check` warnings: each dangerous setting is named with its location."""

from __future__ import annotations

from bastion.config import parse_config
from bastion.config.check import check_config

PEPPER = "p" * 40


def warnings_for(doc: dict[str, object]) -> list[str]:
    return [str(f) for f in check_config(parse_config(doc, {}))]


def test_safe_config_has_no_warnings() -> None:
    doc = {
        "listeners": [{"bind": "127.0.0.1:8443", "tls": {"cert": "c", "key": "k"}, "public": True}],
        "issuers": [{"issuer": "https://idp", "jwks_file": "j", "audiences": ["api"]}],
        "api_keys": {"pepper": PEPPER},
        "routes": [
            {"name": "a", "upstream": "http://127.0.0.1:1", "ratelimit": {"limits": [{"rate": 5}]}}
        ],
    }
    assert warnings_for(doc) == []


def test_dangerous_settings_warned() -> None:
    doc = {
        "listeners": [{"bind": "0.0.0.0:8080"}],
        "issuers": [{"issuer": "https://idp", "jwks_file": "j"}],
        "api_keys": {"pepper": PEPPER},
        "routes": [
            {"name": "a", "upstream": "http://10.0.0.5:1"},
            {
                "name": "b",
                "upstream": "http://127.0.0.1:1",
                "authn": {"methods": [], "unsafe_allow_anonymous": True},
                "proxy": {"unsafe_expose_upstream_errors": True},
                "cors": {"allow_origins": ["*"]},
                "ratelimit": {"limits": [{"rate": 1}], "enforce": False},
            },
        ],
    }
    found = warnings_for(doc)
    assert any(w.startswith("listeners[0]: 0.0.0.0:8080 has no TLS") for w in found)
    assert any(w.startswith("issuers[0].audiences: no audience") for w in found)
    assert "routes[0].ratelimit: route 'a' has no rate limit" in found
    assert any(w.startswith("routes[0].authn.audience") and "missing aud" in w for w in found)
    assert any(w.startswith("routes[0].upstream") for w in found)
    assert any(w.startswith("routes[1].authn.unsafe_allow_anonymous") for w in found)
    assert any(w.startswith("routes[1].proxy.unsafe_expose_upstream_errors") for w in found)
    assert any(w.startswith("routes[1].cors.allow_origins") for w in found)
    assert any(w.startswith("routes[1].ratelimit.enforce") for w in found)


def test_route_audience_silences_missing_aud() -> None:
    doc = {
        "listeners": [{"bind": "127.0.0.1:8080"}],
        "issuers": [{"issuer": "https://idp", "jwks_file": "j"}],
        "routes": [
            {
                "name": "a",
                "upstream": "http://127.0.0.1:1",
                "authn": {"methods": ["jwt"], "audience": "api"},
                "ratelimit": {"limits": [{"rate": 5}]},
            }
        ],
    }
    found = warnings_for(doc)
    assert not any("missing aud" in w for w in found)


def test_workers_without_cache_and_plain_remote_redis_warned() -> None:
    base_doc = {
        "listeners": [{"bind": "127.0.0.1:8080"}],
        "api_keys": {"pepper": PEPPER},
        "routes": [
            {
                "name": "a",
                "upstream": "http://127.0.0.1:1",
                "ratelimit": {"limits": [{"rate": 5}]},
                "authn": {"methods": ["api_key"]},
            }
        ],
    }
    found = warnings_for({**base_doc, "server": {"workers": 4}})
    assert any(w.startswith("server.workers: 4 workers without `cache`") for w in found)
    found = warnings_for({**base_doc, "cache": "redis://10.1.2.3:6379/0"})
    assert any(w.startswith("cache: Redis reached without TLS") for w in found)
    assert not any(
        w.startswith("cache")
        for w in warnings_for({**base_doc, "cache": "redis://127.0.0.1:6379/0"})
    )
