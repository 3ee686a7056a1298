"""Config reload: a node re-reads its ``bastion.yaml`` and serves the new routes.

Triggers: a ``config.changed`` control event (``bastion config push``, which every node receives
by Redis push or the change feed) and ``SIGHUP``. The file is read and validated exactly as at
start-up; an invalid file, or a route that cannot be built, is logged problem by problem and
changes nothing — the node keeps serving what it had. Sections that a node reads only at start
(listeners, store, cache, …) keep their running values and the log names them: they need a
restart. Reloads never overlap: a trigger during a reload runs one more afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from bastion.config.load import load_config
from bastion.config.model import BastionConfig, gateway_problems
from bastion.errors import ConfigError
from bastion.events.bus import Event
from bastion.gateway.runtime import Gateway

log = logging.getLogger("bastion.gateway.reload")


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes, hex: names a config version in ``config.changed``."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ConfigReloader:
    """Reloads ``gateway``'s routes from ``path``.

    ``prepare`` turns the loaded file into this process's config the same way start-up did
    (per-worker audit files, the embedded issuer of ``bastion up``).
    """

    def __init__(
        self,
        gateway: Gateway,
        path: Path,
        prepare: Callable[[BastionConfig], BastionConfig] = lambda c: c,
    ) -> None:
        self._gateway = gateway
        self._path = path
        self._prepare = prepare
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.reloads = 0
        self.failures = 0
        self.digest: str | None = None

    def attach(self) -> Callable[[], None]:
        """Reload on every ``config.changed`` control event; returns the unsubscribe."""
        return self._gateway.services.bus.subscribe("control", self._on_control)

    def _on_control(self, event: Event) -> None:
        if event.get("type") == "config.changed":
            self.request()

    def request(self) -> None:
        """Reload soon (from the event loop's thread); coalesces with a running reload."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="config-reload")

    async def _run(self) -> None:
        while True:
            self._again = False
            await self.reload_now()
            if not self._again:
                return

    async def reload_now(self) -> bool:
        """Read, validate and apply the file now; True when the new routes are served."""
        try:
            digest = await asyncio.to_thread(file_digest, self._path)
            config = await asyncio.to_thread(load_config, self._path)
            problems = gateway_problems(config)
            if problems:
                raise ConfigError(problems)
            restart = self._gateway.swap_routes(self._prepare(config))
        except ConfigError as exc:
            self.failures += 1
            for problem in exc.problems:
                log.error("config reload refused, still serving the previous routes: %s", problem)
            return False
        except Exception as exc:
            self.failures += 1
            log.error(
                "config reload failed, still serving the previous routes: %s: %s",
                type(exc).__name__,
                exc,
            )
            return False
        self.reloads += 1
        self.digest = digest
        log.info("config reloaded (sha256 %s): %d routes", digest[:12], len(config.routes))
        if restart:
            log.warning(
                "config reload: changes to %s take effect only after a restart",
                ", ".join(restart),
            )
        return True
