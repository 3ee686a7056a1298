"""Running the gateway: listeners, signals, graceful shutdown, worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from bastion.config.model import BastionConfig
from bastion.events.bus import EventBus
from bastion.gateway import server as server_module
from bastion.gateway.layers.audit.config import FileSink
from bastion.gateway.layers.authn.config import IssuerConfig
from bastion.gateway.reload import ConfigReloader
from bastion.gateway.runtime import Gateway
from bastion.gateway.server import HttpProtocol, server_tls_context
from bastion.gateway.services import GatewayServices
from bastion.openapi import fastcheck

log = logging.getLogger("bastion.gateway")


def compiled() -> bool:
    """True when the front end runs from a mypyc build (``make native``), not from sources."""
    return not server_module.__file__ or not server_module.__file__.endswith(".py")


@dataclass
class RunningGateway:
    """A started gateway: its bound addresses, and how to stop it."""

    gateway: Gateway
    servers: list[asyncio.Server] = field(default_factory=list)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every listener, in config order (ports resolved if 0 was asked)."""
        out = []
        for srv in self.servers:
            sock = srv.sockets[0].getsockname()
            out.append((sock[0], sock[1]))
        return out

    async def aclose(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight requests end (up to ``grace`` s), flush audit."""
        for srv in self.servers:
            srv.close()
        for srv in self.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(srv.wait_closed(), grace)
        await self.gateway.aclose()


async def start_gateway(
    config: BastionConfig, services: GatewayServices | None = None
) -> RunningGateway:
    """Start services and every listener. Raises OSError if a port cannot be bound."""
    services = services or GatewayServices.create(config)
    gateway = Gateway(config, services)
    await gateway.start()
    running = RunningGateway(gateway)
    loop = asyncio.get_running_loop()
    try:
        for listener in config.listeners:
            ctx = None
            if listener.tls is not None:
                pw = listener.tls.key_password
                ctx = server_tls_context(
                    listener.tls.cert,
                    listener.tls.key,
                    pw.get_secret_value() if pw else None,
                    listener.tls.min_version,
                )
            tls = ctx is not None
            srv = await loop.create_server(
                lambda tls=tls: HttpProtocol(gateway, config.server, tls),
                listener.host,
                listener.port,
                ssl=ctx,
                reuse_port=config.server.workers > 1,
                backlog=2048,
                ssl_handshake_timeout=config.server.header_timeout if ctx else None,
            )
            running.servers.append(srv)
    except BaseException:
        await running.aclose()
        raise
    return running


def with_local_issuer(config: BastionConfig) -> BastionConfig:
    """``config`` with the embedded authorization server among the trusted issuers.

    ``bastion up`` runs both: the gateway then validates the server's RFC 9068 tokens out of
    the box, fetching the JWKS from its loopback address (plain HTTP only when the server has no
    TLS, and never off the machine). An issuer configured by hand with the same name wins.
    """
    auth = config.auth
    if auth is None or any(i.issuer == auth.issuer for i in config.issuers):
        return config
    host = auth.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    tls = auth.tls_cert is not None
    issuer = IssuerConfig(
        issuer=auth.issuer,
        jwks_url=f"{'https' if tls else 'http'}://{host}:{auth.port}/jwks",  # type: ignore[arg-type]
        algorithms=[auth.keys.algorithm],
        jwks_refresh=min(300.0, max(1.0, auth.keys.jwks_max_age / 2)),
        unsafe_allow_http_jwks=not tls,
        # Its ID tokens are signed with the same keys: only RFC 9068 access tokens may pass.
        require_at_jwt=True,
    )
    return config.model_copy(update={"issuers": [*config.issuers, issuer]})


async def serve_forever(
    config: BastionConfig,
    *,
    with_auth: bool = False,
    source: ConfigSource | None = None,
    wait_for_auth: bool = False,
) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully.

    ``with_auth`` (``bastion up``): the authorization server of ``config.auth`` runs in this
    process too, started first (the gateway fetches its JWKS at start-up), on the same event
    bus, so a token it revokes is refused by this gateway at once; and so does the admin API
    when the file has a ``control`` section (on ``control.bind``, same bus).

    ``source``: the file ``config`` came from and how it was prepared for this process; then
    ``SIGHUP`` and ``config.changed`` events reload the routes from it.

    ``wait_for_auth``: another worker runs the authorization server; wait (up to 30 s) until it
    listens, so this gateway's first JWKS fetch finds its keys.
    """
    auth = None
    control = None
    services = None
    if wait_for_auth and config.auth is not None:
        await _wait_listening(config.auth.host, config.auth.port, 30.0)
    with_control = with_auth and config.control is not None
    if with_auth and (config.auth is not None or with_control):
        bus = EventBus()
        if config.auth is not None:
            from bastion.authserver.serve import start_auth_server

            auth = await start_auth_server(config, bus=bus, follow_feed=False)
        if with_control:
            # The admin API, like the authorization server: in this process, on the same bus,
            # so a key or token it revokes is refused by this gateway at once.
            from bastion.control.serve import start_control_server

            try:
                control = await start_control_server(config, bus=bus)
            except BaseException:
                if auth is not None:
                    await auth.aclose()
                raise
        services = GatewayServices.create(config, bus=bus)
    try:
        running = await start_gateway(config, services)
    except BaseException:
        if control is not None:
            await control.aclose()
        if auth is not None:
            await auth.aclose()
        raise
    # What start-up built lives as long as the process: keep it out of the cyclic collector's
    # scans, which would otherwise walk it again on every full collection.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if source is not None:
        reloader = ConfigReloader(running.gateway, source.path, source.prepare)
        reloader.attach()
        loop.add_signal_handler(signal.SIGHUP, reloader.request)
    for (host, port), lst in zip(running.addresses, config.listeners, strict=True):
        log.info("listening on %s://%s:%d", "https" if lst.tls else "http", host, port)
    log.info("per-request modules: %s", "compiled (mypyc)" if compiled() else "plain Python")
    log.info(
        "JSON fast path: %s",
        "bastion_fastcheck" if fastcheck.available() else "not installed (orjson + jsonschema-rs)",
    )
    try:
        await stop.wait()
    finally:
        await running.aclose()
        if control is not None:
            await control.aclose()
        if auth is not None:
            await auth.aclose()


@dataclass(frozen=True)
class ConfigSource:
    """Where a process's config came from, for reloads: the file, and the steps that made
    this process's config of it (per-worker audit files, the embedded issuer)."""

    path: Path
    with_auth: bool = False
    workers: int = 1
    index: int | None = None

    def prepare(self, config: BastionConfig) -> BastionConfig:
        if self.with_auth:
            config = with_local_issuer(config)
        if self.index is not None:
            server = config.server.model_copy(update={"workers": self.workers})
            config = worker_config(config.model_copy(update={"server": server}), self.index)
        return config


async def _wait_listening(host: str, port: int, patience: float) -> None:
    """Return once ``host:port`` accepts connections, or after ``patience`` s (then the gateway
    starts anyway: its JWKS refresh and unknown-kid refetch catch up later)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    deadline = asyncio.get_running_loop().time() + patience
    while asyncio.get_running_loop().time() < deadline:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    log.warning("the authorization server on %s:%d is not listening yet", host, port)


def run(
    config: BastionConfig,
    *,
    with_auth: bool = False,
    source: ConfigSource | None = None,
    wait_for_auth: bool = False,
) -> None:
    """Run the gateway (and with ``with_auth`` the authorization server) on uvloop (blocking)."""
    import uvloop

    uvloop.run(
        serve_forever(config, with_auth=with_auth, source=source, wait_for_auth=wait_for_auth)
    )


def worker_config(config: BastionConfig, index: int) -> BastionConfig:
    """The config of worker ``index``: file audit sinks get a per-worker file, because several
    processes rotating one file would lose records."""
    sinks = []
    for s in config.audit.sinks:
        if isinstance(s, FileSink):
            p = Path(s.path)
            s = s.model_copy(update={"path": str(p.with_name(f"{p.stem}.w{index}{p.suffix}"))})
        sinks.append(s)
    audit = config.audit.model_copy(update={"sinks": sinks})
    return config.model_copy(update={"audit": audit})


def _worker_main(
    config: BastionConfig,
    index: int,
    with_auth: bool = False,
    path: Path | None = None,
    both: bool = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s w{index} %(levelname)s %(name)s: %(message)s"
    )
    source = None
    if path is not None:
        source = ConfigSource(path, both, config.server.workers, index)
    run(
        worker_config(config, index),
        with_auth=with_auth,
        source=source,
        wait_for_auth=both and not with_auth,  # `up`: worker 0 runs the authorization server
    )


def run_workers(
    config: BastionConfig, workers: int, *, with_auth: bool = False, path: Path | None = None
) -> int:
    """Run ``workers`` processes sharing the listening ports (SO_REUSEPORT). Returns an exit code.

    ``with_auth``: the authorization server runs too, in the first worker only (it listens on
    one port of its own); every worker trusts its tokens. ``path``: the file ``config`` was
    loaded from; each process reloads its routes from it on ``SIGHUP`` (forwarded to every
    worker) and on ``config.changed`` events.
    """
    if with_auth:
        config = with_local_issuer(config)
    if workers <= 1:
        run(config, with_auth=with_auth, source=ConfigSource(path, with_auth) if path else None)
        return 0
    config = config.model_copy(
        update={"server": config.server.model_copy(update={"workers": workers})}
    )
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(config, i, with_auth and i == 0, path, with_auth),
            daemon=False,
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        sent = signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, sent)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    code = 0
    for p in procs:
        p.join()
        code = code or (p.exitcode or 0)
    return code
