"""The compiled build (``make native``, tools/build_native.py) is what runs when asked for.

``make test`` runs the gateway's tests a second time with ``PYTHONPATH=build/native`` and
``BASTION_EXPECT_NATIVE=1``: this test then fails unless every module the build lists was
imported from its C extension, so that second run cannot silently test plain Python again.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from bastion.gateway.serve import compiled

BUILT = Path(__file__).resolve().parents[2] / "build" / "native" / ".built"

pytestmark = pytest.mark.skipif(
    os.environ.get("BASTION_EXPECT_NATIVE") != "1", reason="runs in make test's compiled pass"
)


def test_every_listed_module_is_the_compiled_one() -> None:
    listed = BUILT.read_text(encoding="utf-8").split()
    assert listed, "the build lists no module"
    for path in listed:
        name = path.removesuffix(".py").replace("/", ".")
        module = importlib.import_module(name)
        assert module.__file__ is not None
        assert module.__file__.endswith(".so"), f"{name} came from {module.__file__}"
    assert compiled()
