"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import GatewayHarness


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    """A running gateway with a test upstream (see tests/support/gateway.py)."""
    h = GatewayHarness(tmp_path)
    try:
        yield h
    finally:
        h.close()
