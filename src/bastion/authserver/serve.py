"""Running the authorization server: under uvicorn on its own port, alone (``bastion auth
serve``) or in the gateway's process and event loop (``bastion up``).

The store is opened here (SQLite migrates itself; PostgreSQL must be upgraded with
``bastion db upgrade``). Revocations are pushed through Redis when ``cache`` is set, and always
reach other nodes through the store's change feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from dataclasses import dataclass

import uvicorn

from bastion.authserver.asgi import AuthAsgiApp
from bastion.authserver.oauth.context import Push, no_push
from bastion.authserver.server import AuthServer, open_auth_server
from bastion.config.model import BastionConfig
from bastion.errors import ConfigError
from bastion.events.bus import Event, EventBus
from bastion.store import open_store
from bastion.store.base import Store

log = logging.getLogger("bastion.authserver")


@dataclass
class RunningAuthServer:
    """A started authorization server: its address, and how to stop it."""

    server: AuthServer
    store: Store
    uvicorn: uvicorn.Server
    task: asyncio.Task[None]
    owns_store: bool

    @property
    def address(self) -> tuple[str, int]:
        for srv in self.uvicorn.servers:
            for sock in srv.sockets:
                name = sock.getsockname()
                return str(name[0]), int(name[1])
        raise RuntimeError("the authorization server is not listening")

    async def aclose(self) -> None:
        self.uvicorn.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.uvicorn.shutdown()
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
        app = AuthAsgiApp(server)
        uconfig = uvicorn.Config(
            app,
            lifespan="off",  # started below: a failure must raise here, not exit the process
            loop="none",
            http="httptools",
            access_log=False,
            log_level="warning",
            server_header=False,
            date_header=False,
            ssl_certfile=auth.tls_cert,
            ssl_keyfile=auth.tls_key,
            log_config=None,
        )
        uconfig.load()
        # Bound here so a port in use is an OSError for the caller (uvicorn would exit).
        family = socket.AF_INET6 if ":" in auth.host else socket.AF_INET
        sock = socket.create_server((auth.host, auth.port), family=family, backlog=2048)
        try:
            await server.start()
            userver = uvicorn.Server(uconfig)
            userver.lifespan = uconfig.lifespan_class(uconfig)  # what Server.serve would set
            await userver.startup(sockets=[sock])
        except BaseException:
            sock.close()
            await server.aclose()
            raise
        task = asyncio.get_running_loop().create_task(userver.main_loop())
    except BaseException:
        if owns_store:
            await store.close()
        raise
    running = RunningAuthServer(server, store, userver, task, owns_store)
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
