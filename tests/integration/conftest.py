"""Integration-tier hooks: tests that stop and restart the shared PostgreSQL and Redis
servers (marker ``disruptive``) run after every other test of the session, so no other test
meets a server that is down; and ``hang_guard``, for tests that talk to those servers."""

from __future__ import annotations

import faulthandler
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from bastion.events.redis_bus import redis_client
from tests.support.cluster import REDIS_URL, drop_prefix, new_prefix

HANG_LIMIT = 180  # s; no test of this tier comes near it


@pytest.fixture
def hang_guard() -> Iterator[None]:
    """Fail loudly instead of hanging: dump every thread's stack and exit if one test runs for
    more than :data:`HANG_LIMIT` seconds (a server stopped by another run, a lost reply)."""
    faulthandler.dump_traceback_later(HANG_LIMIT, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "disruptive: stops and restarts the real PostgreSQL/Redis servers; runs last"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the disruptive tests to the end, keeping the order of everything else."""
    calm = [i for i in items if i.get_closest_marker("disruptive") is None]
    disruptive = [i for i in items if i.get_closest_marker("disruptive") is not None]
    items[:] = calm + disruptive


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    """A Redis client on the machine's server (127.0.0.1:6379)."""
    c = redis_client(REDIS_URL, timeout=1.0)
    yield c
    await c.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A fresh key prefix, its keys deleted after the test."""
    p = new_prefix()
    yield p
    await drop_prefix(p)
