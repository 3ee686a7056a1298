"""Running the gateway: listeners, signals, graceful shutdown, worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from bastion.config.model import BastionConfig
from bastion.gateway.layers.audit.config import FileSink
from bastion.gateway.runtime import Gateway
from bastion.gateway.server import HttpProtocol, server_tls_context
from bastion.gateway.services import GatewayServices

log = logging.getLogger("bastion.gateway")


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


async def serve_forever(config: BastionConfig) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully."""
    running = await start_gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for (host, port), lst in zip(running.addresses, config.listeners, strict=True):
        log.info("listening on %s://%s:%d", "https" if lst.tls else "http", host, port)
    try:
        await stop.wait()
    finally:
        await running.aclose()


def run(config: BastionConfig) -> None:
    """Run the gateway in this process on uvloop (blocking)."""
    import uvloop

    uvloop.run(serve_forever(config))


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


def _worker_main(config: BastionConfig, index: int) -> None:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s w{index} %(levelname)s %(name)s: %(message)s"
    )
    run(worker_config(config, index))


def run_workers(config: BastionConfig, workers: int) -> int:
    """Run ``workers`` processes sharing the listening ports (SO_REUSEPORT). Returns an exit code."""
    if workers <= 1:
        run(config)
        return 0
    config = config.model_copy(
        update={"server": config.server.model_copy(update={"workers": workers})}
    )
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(config, i), daemon=False) for i in range(workers)
    ]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for p in procs:
        p.join()
        code = code or (p.exitcode or 0)
    return code
