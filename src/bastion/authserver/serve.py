"""Running the authorization server on its own port with its own HTTP front end
(:mod:`bastion.authserver.front`), alone (``bastion auth serve``) or in the gateway's process
and event loop (``bastion up``). To run it under another ASGI server instead, build an
:class:`~bastion.authserver.asgi.AuthAsgiApp` around :func:`open_auth_server`'s result.

The store is opened here (SQLite migrates itself; PostgreSQL must be upgraded with
``bastion db upgrade``). Revocations are pushed through Redis when ``cache`` is set, and always
reach other nodes through the store's change feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

from bastion.authserver.front import AuthHttpProtocol, FrontLimits
from bastion.authserver.oauth.context import Push, no_push
from bastion.authserver.server import AuthServer, open_auth_server
from bastion.config.model import BastionConfig
from bastion.errors import ConfigError
from bastion.events.bus import Event, EventBus
from bastion.gateway.server import server_tls_context
from bastion.store import open_store
from bastion.store.base import Store

log = logging.getLogger("bastion.authserver")


@dataclass
class RunningAuthServer:
    """A started authorization server: its address, and how to stop it."""

    server: AuthServer
    store: Store
    listener: asyncio.Server
    owns_store: bool

    @property
    def address(self) -> tuple[str, int]:
        name = self.listener.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def aclose(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight requests end (up to ``grace`` s), stop background
        work, close the store if it was opened here."""
        self.listener.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listener.wait_closed(), grace)
        await self.server.aclose()
        if self.owns_store:
            await self.store.close()


def _redis_push(config: BastionConfig) -> Push:
    if config.cache is None:
        return no_push
    from bastion.events.redis_bus import publish_control, redis_client

    client = redis_client(config.cache, timeout=max(1.0, config.cluster.redis_timeout))

    async def push(event: Event) -> None:
        await publish_control(client, config.cluster.key_prefix, event)

    return push


async def start_auth_server(
    config: BastionConfig,
    *,
    store: Store | None = None,
    bus: EventBus | None = None,
    follow_feed: bool = True,
) -> RunningAuthServer:
    """Open the store (unless given, already open), build the server, listen. OSError if the
    port cannot be bound; ConfigError if the file has no ``auth`` section.

    ``follow_feed=False`` when ``bus`` is shared with a gateway whose change feed already
    publishes every change on it."""
    auth = config.auth
    if auth is None:
        raise ConfigError(["auth: the file has no `auth` section"])
    owns_store = store is None
    if store is None:
        store = open_store(config.store, spool_dir=config.cluster.audit_spool_dir)
        await store.open()
    try:
        server = await open_auth_server(
            auth,
            store,
            bus=bus,
            push=_redis_push(config),
            poll_interval=config.change_poll_interval,
            follow_feed=follow_feed,
        )
        ctx = None
        if auth.tls_cert is not None and auth.tls_key is not None:
            ctx = server_tls_context(auth.tls_cert, auth.tls_key, None, "1.2")
        limits = FrontLimits(
            max_body=auth.max_body_bytes,
            header_timeout=config.server.header_timeout,
            body_timeout=config.server.body_timeout,
            keepalive_timeout=config.server.keepalive_timeout,
        )
        await server.start()
        tls = ctx is not None
        try:
            listener = await asyncio.get_running_loop().create_server(
                lambda: AuthHttpProtocol(server, limits, tls),
                auth.host,
                auth.port,
                ssl=ctx,
                backlog=2048,
                ssl_handshake_timeout=config.server.header_timeout if ctx else None,
            )
        except BaseException:
            await server.aclose()
            raise
    except BaseException:
        if owns_store:
            await store.close()
        raise
    running = RunningAuthServer(server, store, listener, owns_store)
    host, port = running.address
    scheme = "https" if auth.tls_cert else "http"
    log.info("authorization server %s listening on %s://%s:%d", auth.issuer, scheme, host, port)
    return running


async def serve_forever(config: BastionConfig) -> None:
    """``bastion auth serve``: run until SIGINT/SIGTERM."""
    running = await start_auth_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await running.aclose()


def run(config: BastionConfig) -> None:
    """Run the authorization server in this process on uvloop (blocking)."""
    import uvloop

    uvloop.run(serve_forever(config))
