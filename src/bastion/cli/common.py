"""What every ``bastion`` sub-command shares: consoles, the one-line failure, config loading,
running a coroutine, a store opened for one command, and pushing a change to gateway nodes.

Sub-command modules (``cli/<group>.py``) import from here, and :mod:`bastion.cli.main` registers
their Typer apps; nothing here imports a sub-command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from bastion.config.load import load_config
from bastion.config.model import BastionConfig
from bastion.events.bus import Event
from bastion.store import open_store
from bastion.store.base import Store

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to bastion.yaml.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


class CliFailure(Exception):
    """A failure the CLI reports as one line, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def load(path: Path) -> BastionConfig:
    """The validated config at ``path`` (ConfigError, exit 2, when it is not)."""
    return load_config(path)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def with_store(cfg: BastionConfig, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Open the configured store, run ``fn(store)``, close the store."""
    store: Store = open_store(cfg.store)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


async def push(cfg: BastionConfig, event: Event) -> None:
    """Push a committed change to every gateway node through Redis (distributed mode).

    A failure only delays the change: nodes also read it from the store's change feed.
    """
    if cfg.cache is None:
        return
    from bastion.events.redis_bus import publish_control, redis_client

    client = redis_client(cfg.cache, timeout=max(1.0, cfg.cluster.redis_timeout))
    try:
        await publish_control(client, cfg.cluster.key_prefix, event)
    except Exception as exc:
        err.print(
            f"warning: Redis did not take the change ({type(exc).__name__}); gateways apply it "
            f"on their next change-feed poll (change_poll_interval {cfg.change_poll_interval}s)",
            highlight=False,
            markup=False,
        )
    finally:
        await client.aclose()
