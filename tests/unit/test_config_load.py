"""Config loading: env and file references, defaults merging, one clear message per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import load_config, parse_config
from bastion.config.types import parse_duration
from bastion.errors import ConfigError

PEPPER = "p" * 40


def base(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "listeners": [{"bind": "127.0.0.1:8080"}],
        "api_keys": {"pepper": PEPPER},
        "defaults": {"authn": {"methods": ["api_key"]}, "ratelimit": {"limits": [{"rate": 10}]}},
        "routes": [{"name": "api", "path_prefix": "/api", "upstream": "http://127.0.0.1:9001"}],
    }
    doc.update(over)
    return doc


def problems(doc: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env or {})
    return info.value.problems


def test_valid_config_applies_defaults_to_routes() -> None:
    cfg = parse_config(base(), {})
    route = cfg.routes[0]
    assert route.authn.methods == ["api_key"]
    assert route.ratelimit.limits[0].rate == 10
    assert route.transport.max_body_bytes == 1_048_576  # built-in default
    assert route.transport.hsts.max_age >= 31_536_000


def test_route_overrides_defaults_field_by_field() -> None:
    doc = base(
        defaults={
            "transport": {"max_body_bytes": 2048, "trusted_proxies": 1},
            "authn": {"methods": ["api_key"]},
        },
        routes=[
            {
                "name": "a",
                "upstream": "http://127.0.0.1:9001",
                "transport": {"max_body_bytes": 10},
            }
        ],
    )
    route = parse_config(doc, {}).routes[0]
    assert route.transport.max_body_bytes == 10
    assert route.transport.trusted_proxies == 1


def test_every_problem_reported_with_location() -> None:
    doc = base(
        routes=[
            {"name": "a", "upstream": "http://127.0.0.1:9001"},
            {
                "name": "b",
                "upstream": "http://127.0.0.1:9001",
                "ratelimit": {"limits": [{"rate": 5}, {"rate": -1}]},
            },
            {"name": "c", "upstream": "http://127.0.0.1:9001", "surprise": True},
        ]
    )
    found = problems(doc)
    assert "routes[1].ratelimit.limits[1].rate: Input should be greater than 0" in found
    assert "routes[2].surprise: unknown key (not part of the configuration schema)" in found
    assert len(found) == 2


def test_unknown_top_level_key_is_an_error() -> None:
    assert problems(base(listners=[])) == [
        "listners: unknown key (not part of the configuration schema)"
    ]


def test_env_reference_expanded_and_missing_env_reported() -> None:
    cfg = parse_config(base(api_keys={"pepper": "${PEP}"}), {"PEP": PEPPER})
    assert cfg.api_keys.pepper is not None
    assert cfg.api_keys.pepper.get_secret_value() == PEPPER
    assert problems(base(api_keys={"pepper": "${NOPE}"})) == [
        "api_keys.pepper: environment variable NOPE is not set"
    ]


def test_file_reference_for_secrets(tmp_path: Path) -> None:
    f = tmp_path / "pepper"
    f.write_text(PEPPER + "\n")
    cfg = parse_config(base(api_keys={"pepper": f"file:{f}"}), {})
    assert cfg.api_keys.pepper is not None
    assert cfg.api_keys.pepper.get_secret_value() == PEPPER
    # The secret never shows in a repr or a dump.
    assert PEPPER not in repr(cfg)
    missing = problems(base(api_keys={"pepper": f"file:{tmp_path / 'none'}"}))
    assert len(missing) == 1
    assert missing[0].startswith("api_keys.pepper: cannot read secret file")


def test_short_pepper_refused() -> None:
    assert problems(base(api_keys={"pepper": "short"})) == [
        "api_keys: pepper must be at least 32 bytes"
    ]


def test_cors_wildcard_with_credentials_refused() -> None:
    doc = base(
        defaults={
            "authn": {"methods": ["api_key"]},
            "cors": {"allow_origins": ["*"], "allow_credentials": True},
        }
    )
    found = problems(doc)
    assert any("allow_origins '*' together with allow_credentials is refused" in p for p in found)


def test_anonymous_route_must_be_explicit() -> None:
    doc = base(routes=[{"name": "a", "upstream": "http://127.0.0.1:1", "authn": {"methods": []}}])
    assert any("unsafe_allow_anonymous" in p for p in problems(doc))
    ok = base(
        routes=[
            {
                "name": "a",
                "upstream": "http://127.0.0.1:1",
                "authn": {"methods": [], "unsafe_allow_anonymous": True},
            }
        ]
    )
    assert parse_config(ok, {}).routes[0].authn.unsafe_allow_anonymous


def test_cross_checks_jwt_without_issuer_and_api_key_without_pepper_and_duplicates() -> None:
    doc = base(
        api_keys={},
        routes=[
            {"name": "a", "upstream": "http://127.0.0.1:1", "authn": {"methods": ["jwt"]}},
            {"name": "a", "upstream": "http://127.0.0.1:1", "authn": {"methods": ["api_key"]}},
        ],
    )
    found = problems(doc)
    assert "routes[0].authn.methods: 'jwt' needs at least one entry in issuers" in found
    assert "routes[1].authn.methods: 'api_key' needs api_keys.pepper" in found
    assert "routes[1].name: 'a' is used by an earlier route" in found


@pytest.mark.parametrize(
    ("issuer", "message"),
    [
        (
            {"issuer": "i", "jwks_file": "x", "algorithms": ["none"]},
            "algorithm 'none' is never allowed",
        ),
        (
            {"issuer": "i", "jwks_file": "x", "algorithms": ["HS256"]},
            "HMAC algorithms need hmac_secret",
        ),
        (
            {"issuer": "i", "hmac_secret": "s" * 40, "algorithms": ["RS256"]},
            "only HS256/HS384/HS512",
        ),
        ({"issuer": "i", "jwks_url": "http://idp.example/jwks"}, "jwks_url must be https"),
        ({"issuer": "i"}, "set exactly one of jwks_url, jwks_file, hmac_secret"),
        ({"issuer": "i", "hmac_secret": "short", "algorithms": ["HS256"]}, "at least 32 bytes"),
    ],
)
def test_issuer_algorithm_confusion_refused_at_config_time(
    issuer: dict[str, object], message: str
) -> None:
    found = problems(base(issuers=[issuer]))
    assert any(message in p for p in found), found


def test_no_half_config_on_yaml_error(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("listeners: [\n  - bind: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert "line" in info.value.problems[0]


def test_file_must_be_a_mapping(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(f)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("/nonexistent/bastion.yaml")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(5, 5.0), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 weeks", "-1", True, None, "1hh"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_bad_bind_and_prefix() -> None:
    found = problems(
        base(
            listeners=[{"bind": "nowhere"}],
            routes=[{"name": "a", "upstream": "http://127.0.0.1:1", "path_prefix": "/a/../b"}],
        )
    )
    assert any(p.startswith("listeners[0].bind:") for p in found)
    assert any(p.startswith("routes[0].path_prefix:") for p in found)


def test_hsts_below_one_year_refused() -> None:
    doc = base(
        defaults={"authn": {"methods": ["api_key"]}, "transport": {"hsts": {"max_age": 3600}}}
    )
    assert any("hsts.max_age" in p for p in problems(doc))


def test_errors_under_defaults_keep_their_location_and_route_errors_still_reported() -> None:
    doc = base(
        defaults={"authn": {"methods": ["api_key"]}, "bogus": 1},
        routes=[{"name": "a", "upstream": "http://127.0.0.1:1", "surprise": 2}],
    )
    found = problems(doc)
    assert "defaults.bogus: unknown key (not part of the configuration schema)" in found
    assert "routes[0].surprise: unknown key (not part of the configuration schema)" in found
