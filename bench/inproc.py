"""The gateway's own CPU per request, without a kernel, wrk or nginx: the Python cost alone.

    .venv/bin/python bench/inproc.py                      # (a), (c) and (d), 20,000 requests each
    .venv/bin/python bench/inproc.py --only a --requests 50000 --rounds 5
    .venv/bin/python bench/inproc.py --only a --profile   # cProfile, top functions by own time

The real front end (:class:`bastion.gateway.server.HttpProtocol`) and the real upstream client
(:class:`bastion.gateway.upstream.UpstreamConnection`) run on uvloop with fake transports: a
client transport that sends the next request as soon as a response was written (``--connections``
such clients at once, like ``wrk -c``), and an upstream transport that answers every request
with the ~1 KB JSON the benchmark's nginx sends, on the next loop iteration. Configurations are
those of ``bench/gateway.py`` (``bench/bastion_target.py``), audit file included. What it prints
is process CPU time (all threads: the audit writer too) divided by the requests answered —
the figure to compare with issue 2's 50 µs goal, minus the kernel's share of a real run.
Use it to compare versions of the code on one machine; ``bench/gateway.py`` is the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
import yaml

from bastion.config.load import load_config
from bastion.gateway.runtime import Gateway
from bastion.gateway.server import HttpProtocol
from bastion.gateway.services import GatewayServices
from bastion.gateway.upstream import UpstreamConnection, UpstreamPool
from bench.bastion_target import (
    bastion_config,
    make_jwt_material,
    order_body,
    write_openapi_spec,
)
from bench.gateway import STATIC_BODY

UPSTREAM_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 08:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%b"
    % (len(STATIC_BODY.encode()), STATIC_BODY.encode())
)


class _UpstreamTransport:
    """Answers each request written to it on the next loop iteration."""

    def __init__(self, conn: UpstreamConnection, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self._loop = loop

    def write(self, data: bytes) -> None:
        self._loop.call_soon(self._conn.data_received, UPSTREAM_RESPONSE)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def fake_pool(pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
    """Make ``pool`` open fake connections instead of sockets."""

    async def open_connection(factory: Callable[[], asyncio.Protocol]) -> object:
        conn = factory()
        assert isinstance(conn, UpstreamConnection)
        conn.connection_made(_UpstreamTransport(conn, loop))  # type: ignore[arg-type]
        return conn

    pool.open_connection = open_connection


class _ClientTransport:
    """One keep-alive client: sends the next request when a response has been written."""

    def __init__(self, driver: _Driver) -> None:
        self._driver = driver
        self.proto: HttpProtocol | None = None

    def write(self, data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 "):
            self._driver.answered(self, data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self._driver.closed(self)

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Driver:
    def __init__(self, loop: asyncio.AbstractEventLoop, request: bytes, total: int) -> None:
        self.loop = loop
        self.request = request
        self.remaining = total
        self.answered_count = 0
        self.statuses: dict[bytes, int] = {}
        self.done = loop.create_future()

    def send(self, t: _ClientTransport) -> None:
        if self.remaining > 0:
            self.remaining -= 1
            assert t.proto is not None
            self.loop.call_soon(t.proto.data_received, self.request)

    def answered(self, t: _ClientTransport, data: bytes) -> None:
        status = data[9:12]
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.answered_count += 1
        if self.remaining > 0:
            self.send(t)
        elif not self.done.done() and self.answered_count >= self.total:
            self.done.set_result(None)

    def closed(self, t: _ClientTransport) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError("the gateway closed a client connection"))

    total = 0


def build_request(token: str | None, body: bytes) -> bytes:
    lines = [b"POST /api/echo HTTP/1.1", b"Host: 127.0.0.1:8080"]
    if token:
        lines.append(b"Authorization: Bearer " + token.encode())
    lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(body), b"", b""]
    return b"\r\n".join(lines) + body


async def run_variant(
    variant: str,
    work: Path,
    requests: int,
    connections: int,
    rounds: int,
    profile: bool,
    warmup: int = 2000,
    gc_threshold: int = 0,
    audit: bool = True,
) -> list[float]:
    loop = asyncio.get_running_loop()
    jwt_material = make_jwt_material(work)
    write_openapi_spec(work)
    doc = bastion_config(variant, port=18080, upstream_port=18081, audit=audit)
    (work / "bastion.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        config = load_config(work / "bastion.yaml")
        services = GatewayServices.create(config)
        gateway = Gateway(config, services)
        await gateway.start()
    finally:
        os.chdir(cwd)
    for route in gateway.routes:
        if route.pool is not None:
            fake_pool(route.pool, loop)
    gc.collect()  # as serve_forever does after start-up
    gc.freeze()
    if gc_threshold:
        gc.set_threshold(gc_threshold, *gc.get_threshold()[1:])
    token = jwt_material.token if variant in ("a", "d") else None
    request = build_request(token, order_body(8))
    results: list[float] = []
    try:
        for rnd in range(rounds + 1):  # round 0 warms caches and pools
            n = requests if rnd else warmup
            driver = _Driver(loop, request, n)
            driver.total = n
            clients = []
            for _ in range(connections):
                t = _ClientTransport(driver)
                proto = HttpProtocol(gateway, config.server, tls=False)
                t.proto = proto
                proto.connection_made(t)  # type: ignore[arg-type]
                clients.append(t)
            prof = cProfile.Profile() if profile and rnd == rounds else None
            cpu0 = time.process_time()
            if prof is not None:
                prof.enable()
            if rnd and os.environ.get("INPROC_CALLGRIND"):  # run under valgrind: count this round
                subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True)
            for t in clients:
                driver.send(t)
            await driver.done
            # Let the audit writer catch up: its CPU belongs to these requests.
            auditor = services.auditor
            while auditor.buffered:
                await asyncio.sleep(0.001)
            if prof is not None:
                prof.disable()
            if rnd and os.environ.get("INPROC_CALLGRIND"):
                subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True)
            cpu = time.process_time() - cpu0
            for t in clients:
                assert t.proto is not None
                t.proto.connection_lost(None)
            if driver.statuses.keys() != {b"200"}:
                raise SystemExit(f"({variant}) unexpected statuses: {driver.statuses}")
            if rnd:
                results.append(cpu / n * 1e6)
            if prof is not None:
                pstats.Stats(prof).sort_stats("tottime").print_stats(35)
    finally:
        await gateway.aclose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", default="a,c,d", help="configurations, e.g. a,c (default a,c,d)")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2000, help="requests before measuring")
    parser.add_argument("--profile", action="store_true", help="cProfile the last round")
    parser.add_argument("--no-audit-pure", action="store_true", help="(c) without audit sinks")
    parser.add_argument("--gc-threshold", type=int, default=0, help="gen-0 threshold to try")
    args = parser.parse_args(argv)
    for variant in args.only.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bastion-inproc-{variant}-") as tmp:
            samples = uvloop.run(
                run_variant(
                    variant,
                    Path(tmp),
                    args.requests,
                    args.connections,
                    args.rounds,
                    args.profile,
                    args.warmup,
                    args.gc_threshold,
                    not args.no_audit_pure,
                )
            )
        rounded = ", ".join(f"{s:.1f}" for s in samples)
        print(f"({variant}) CPU µs/request: median {statistics.median(samples):.1f}  [{rounded}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
