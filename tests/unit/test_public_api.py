"""What users import from ``bastion`` is exactly the documented set; ``protect`` is lazy."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bastion

DOCUMENTED = {
    "BastionConfig",
    "BastionError",
    "ConfigError",
    "__version__",
    "load_config",
    "protect",
}


def test_all_is_exactly_the_documented_set() -> None:
    assert sorted(bastion.__all__) == sorted(DOCUMENTED)
    assert len(bastion.__all__) == len(set(bastion.__all__))


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_each_public_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from bastion import {name}", namespace)  # noqa: S102 - a fixed, trusted statement
    assert namespace[name] is getattr(bastion, name)


def test_public_names_are_the_real_objects() -> None:
    from bastion.config.load import load_config
    from bastion.config.model import BastionConfig
    from bastion.errors import BastionError, ConfigError
    from bastion.gateway.asgi import protect

    assert bastion.load_config is load_config
    assert bastion.BastionConfig is BastionConfig
    assert bastion.BastionError is BastionError
    assert issubclass(bastion.ConfigError, bastion.BastionError)
    assert bastion.ConfigError is ConfigError
    assert bastion.protect is protect
    assert isinstance(bastion.__version__, str)
    assert bastion.__version__


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from bastion import *", namespace)  # noqa: S102 - a fixed, trusted statement
    assert set(namespace) - {"__builtins__"} == DOCUMENTED


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'gateway_internals'"):
        bastion.gateway_internals  # noqa: B018 - the attribute access is the test


def test_protect_is_imported_lazily() -> None:
    """``import bastion`` must not load the gateway (and its event-loop machinery); the first
    use of ``bastion.protect`` does. Run in a fresh interpreter: this one has loaded it."""
    code = (
        "import sys, bastion\n"
        "assert 'bastion.gateway.asgi' not in sys.modules, 'asgi imported eagerly'\n"
        "assert 'protect' not in vars(bastion), 'protect bound at import'\n"
        "p = bastion.protect\n"
        "assert 'bastion.gateway.asgi' in sys.modules\n"
        "assert p is sys.modules['bastion.gateway.asgi'].protect\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
