"""docs/configuration.md stays true: reference current, every key listed, example valid.

The generated reference is compared with what ``docs/gen_config_reference.py`` would write now,
so CI fails when a config model changes and nobody regenerated the page. The list of expected
keys is computed here independently of the generator, so a generator bug that drops keys
fails too.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

import bastion.gateway.server  # noqa: F401 - registers RequestTimeout in the error tree
from bastion.config.check import check_config
from bastion.config.load import parse_config
from bastion.config.model import BastionConfig, LayerSettings, gateway_problems
from bastion.errors import ConfigError, all_error_classes

DOCS = Path(__file__).resolve().parents[2] / "docs"
CONFIG_DOC = DOCS / "configuration.md"
ARCHITECTURE_DOC = DOCS / "architecture.md"


def _load_generator() -> ModuleType:
    name = "gen_config_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DOCS / "gen_config_reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def generated_section(text: str) -> str:
    start, end = text.index(gen.BEGIN), text.index(gen.END)
    return text[start:end]


def _models_in(ann: Any) -> tuple[list[type[BaseModel]], bool]:
    """Models anywhere in an annotation, and whether they sit in a list."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann], False
    models: list[type[BaseModel]] = []
    in_list = get_origin(ann) is list
    for arg in get_args(ann):
        found, listed = _models_in(arg)
        models += [m for m in found if m not in models]
        in_list = in_list or (listed or (bool(found) and get_origin(ann) is list))
    return models, in_list


def leaf_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Dotted paths of every scalar key, ``[]`` after list fields."""
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        models, in_list = _models_in(field.annotation)
        if not models:
            yield path
        for m in models:
            yield from leaf_paths(m, path + ("[]" if in_list else ""))


def expected_paths() -> set[str]:
    """Every leaf key; per-route layer keys under their documented ``defaults.`` name."""
    layer_prefixes = tuple(f"routes[].{layer}." for layer in LayerSettings.model_fields)
    paths = set(leaf_paths(LayerSettings, "defaults"))
    for path in leaf_paths(BastionConfig):
        if path.startswith(layer_prefixes):
            path = "defaults." + path.removeprefix("routes[].")
        paths.add(path)
    return paths


# -- the generated reference ----------------------------------------------------------------------
def test_reference_is_up_to_date() -> None:
    """Fails when a config model changed: run python docs/gen_config_reference.py."""
    assert gen.main(["--check"]) == 0


def test_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    text = CONFIG_DOC.read_text(encoding="utf-8")
    stale.write_text(text.replace("| `server.max_headers` |", "| `server.max_hedaers` |"))
    assert gen.main(["--check", "--file", str(stale)]) == 1
    stale.write_text(text.replace(gen.BEGIN, ""))
    assert gen.main(["--check", "--file", str(stale)]) == 2


def test_every_leaf_key_is_in_the_generated_section() -> None:
    section = generated_section(CONFIG_DOC.read_text(encoding="utf-8"))
    missing = sorted(p for p in expected_paths() if f"| `{p}` |" not in section)
    assert missing == []


def test_leaf_walk_sees_nested_lists_and_unions() -> None:
    """The independent walk above must itself reach the deep keys it is meant to check."""
    paths = expected_paths()
    for deep in (
        "listeners[].tls.cert",
        "defaults.ratelimit.limits[].rate",
        "defaults.transport.hsts.preload",
        "defaults.authn.verify_limit.burst",
        "audit.sinks[].path",
        "audit.sinks[].type",
    ):
        assert deep in paths


def test_required_keys_and_readable_types() -> None:
    rows = {r.path: r for r in gen.all_rows()}
    assert rows["listeners[].bind"].default == "**required**"
    assert rows["defaults.transport.ip_allow"].type == "list of CIDR"
    assert rows["api_keys.pepper"].type == "secret"
    assert rows["server.header_timeout"].type == "duration, > 0"
    assert rows["server.header_timeout"].default == "`10s`"
    assert rows["audit.flush_interval"].default == "`200ms`"
    assert rows["defaults.authn.methods"].type == 'list of ("jwt" \\| "api_key")'
    assert rows["defaults.authn.verify_limit"].default == "`{rate: 100, per: 1s, burst: 200}`"


def test_every_key_has_a_description() -> None:
    """From the model, else from the generator's FALLBACK (which must name real keys)."""
    rows = list(gen.all_rows())
    assert [r.path for r in rows if not r.description] == []
    paths = {r.path for r in rows}
    assert set(gen.FALLBACK) <= paths


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "200ms"), (10, "10s"), (60, "1m"), (90, "90s"), (3600, "1h"), (180 * 86400, "180d")],
)
def test_durations_print_in_config_syntax(seconds: float, text: str) -> None:
    assert gen.fmt_duration(seconds) == text


# -- the hand-written parts -----------------------------------------------------------------------
def example_yaml() -> str:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- example:[^>]*-->\n```yaml\n(.*?)```", text, re.DOTALL)
    assert match is not None, "the annotated example block is missing"
    return match.group(1)


def test_example_is_valid_and_warns_as_documented(tmp_path: Path) -> None:
    password = tmp_path / "tls_password"
    password.write_text("correct horse\n")
    source = example_yaml().replace(
        "file:/run/secrets/bastion_tls_key_password", f"file:{password}"
    )
    cfg = parse_config(yaml.safe_load(source), {"BASTION_API_KEY_PEPPER": "p" * 40})
    assert gateway_problems(cfg) == []
    assert cfg.routes[1].transport.trusted_proxies == 1  # defaults merged key by key
    assert [lim.rate for lim in cfg.routes[0].ratelimit.limits] == [5, 100]  # list replaced
    assert cfg.listeners[0].tls is not None
    key_password = cfg.listeners[0].tls.key_password
    assert key_password is not None
    assert key_password.get_secret_value() == "correct horse"
    findings = [str(f) for f in check_config(cfg)]
    assert findings == [
        "server.workers: 2 workers without `cache`: each worker enforces every rate limit on its "
        "own (a client gets up to that many times the limit) and learns revocations only from "
        "the store's change feed",
        "routes[2].authn.unsafe_allow_anonymous: route accepts anonymous requests",
    ]
    assert f"warning {findings[0]}" in CONFIG_DOC.read_text(encoding="utf-8")


def test_example_fails_without_its_environment() -> None:
    with pytest.raises(ConfigError, match="BASTION_API_KEY_PEPPER"):
        parse_config(yaml.safe_load(example_yaml()), {})


def test_architecture_names_every_error_code() -> None:
    text = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    # Only Bastion's own classes: a test module may define a subclass of its own.
    codes = {cls.code for cls in all_error_classes() if cls.__module__.startswith("bastion.")}
    assert sorted(c for c in codes if f"`{c}`" not in text) == []
