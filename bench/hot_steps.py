"""CPU cost of the per-request steps of authn, ratelimit and audit, one by one (timeit).

    .venv/bin/python bench/hot_steps.py [--number 20000] [--repeat 7] [--only ratelimit,render]
                                        [--json out.json]

Builds, in process and on the real clock, what ``bench/gateway.py`` configuration (a)/(b)
builds: an authn layer for a JWT issuer (a fresh ES256 key made with joserfc, its JWKS in a
temporary file) and one for API keys (an index over the in-memory store), a ratelimit layer
with two limits (per principal and per IP, 10,000,000/s, never reached), and an
:class:`~bastion.audit.writer.Auditor` with a file sink. Then it times, per request (the
minimum of ``--repeat`` runs of ``--number`` calls, minus the cost of an empty call):

* ``authn jwt (cache hit)`` / ``authn api key``: what the route runner pays for the layer:
  ``check`` and, only when it returns NEEDS_IO, ``on_request`` driven to completion (it never
  suspends here). The JWT cache is warm (one verification before timing).
* ``ratelimit 2 limits``: the same for the ratelimit layer (the RateLimit headers included).
* ``audit snapshot+submit``: :meth:`Auditor.submit` (on the request path).
* ``audit render+serialise``: one record rendered, redacted and serialised (off the path),
  each with its own request id, as in the gateway.
* ``audit file write``: :meth:`FileSink.write` of batches of 100 lines, awaited on an event loop
  (the worker-thread hand-off included; process CPU), per record; ``(sync)`` is the write alone.

Use it to compare versions of the code on one machine; ``bench/inproc.py`` gives the whole
gateway's CPU per request. On a busy machine timings wander; instruction counts do not: run a
step under ``valgrind --tool=callgrind`` with two ``--number`` values (``--repeat 1 --only
STEP``) and divide the difference of the totals by the difference of the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bastion.audit.record import Snapshot, entry, snapshot
from bastion.audit.redact import Redactor
from bastion.audit.sinks import FileSink
from bastion.audit.writer import Auditor
from bastion.core.apikeys import hash_secret, new_api_key
from bastion.core.clock import SystemClock
from bastion.core.exchange import Exchange, Headers, Reply, RequestView
from bastion.core.revocation import RevocationState
from bastion.gateway.layers.audit.config import AuditConfig
from bastion.gateway.layers.authn.apikeys import ApiKeyIndex
from bastion.gateway.layers.authn.config import AuthnConfig, IssuerConfig
from bastion.gateway.layers.authn.jwt import JwtVerifier
from bastion.gateway.layers.authn.layer import AuthnLayer
from bastion.gateway.layers.base import NEEDS_IO, Layer
from bastion.gateway.layers.ratelimit.backend import MemoryRateLimitBackend
from bastion.gateway.layers.ratelimit.config import RateLimitConfig
from bastion.gateway.layers.ratelimit.layer import RateLimitLayer
from bastion.store.base import ApiKeyRecord, ClientRecord
from bastion.store.memory import MemoryStore
from bench.bastion_target import BENCH_AUDIENCE, BENCH_ISSUER, HIGH_RATE, make_jwt_material

PEPPER = b"p" * 32
BATCH = 100
POOL = 20_000  # distinct records rendered in turn


def drive(coro: Coroutine[Any, Any, Reply | None]) -> Reply | None:
    """Run a coroutine that never suspends to completion, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the coroutine suspended: this step needs I/O")


def run_layer(layer: Layer, ex: Exchange) -> Reply | None:
    """What the route runner pays for one layer: check, and on_request only on NEEDS_IO."""
    result = layer.check(ex)
    if result is NEEDS_IO:
        return drive(layer.on_request(ex))
    return result  # type: ignore[return-value]


def request(authorization: str, ip: str = "127.0.0.1") -> Exchange:
    """The request wrk sends in bench/gateway.py: POST /api/echo with a ~1 KB JSON body."""
    headers = Headers(
        [
            ("host", "127.0.0.1:8080"),
            ("content-type", "application/json"),
            ("content-length", "1011"),
            ("authorization", authorization),
        ]
    )
    req = RequestView("POST", "/api/echo", "", headers, peer_ip=ip, client_ip=ip)
    now = time.monotonic()
    return Exchange(req, request_id="1a2b3c4d-2f5e1", started=now, started_wall=time.time())


class Rig:
    """The layers and the auditor of configurations (a) and (b), on the real clock."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.clock = SystemClock()
        material = make_jwt_material(workdir)
        self.token = material.token
        issuer = IssuerConfig(
            issuer=BENCH_ISSUER,
            jwks_file=str(material.jwks_file),
            algorithms=["ES256"],
            audiences=[BENCH_AUDIENCE],
        )
        self.jwt = JwtVerifier([issuer], self.clock, RevocationState(self.clock))
        self.store = MemoryStore()
        self.keys = ApiKeyIndex(self.store, PEPPER, self.clock)
        self.jwt_layer = AuthnLayer(
            AuthnConfig(methods=["jwt"]), jwt=self.jwt, api_keys=None, clock=self.clock
        )
        self.key_layer = AuthnLayer(
            AuthnConfig(methods=["api_key"]), jwt=None, api_keys=self.keys, clock=self.clock
        )
        limits = [
            {"rate": HIGH_RATE, "per": "1s", "key": "principal"},
            {"rate": HIGH_RATE, "per": "1s", "key": "ip"},
        ]
        self.ratelimit = RateLimitLayer(
            "bench",
            RateLimitConfig.model_validate({"limits": limits}),
            MemoryRateLimitBackend(),
            self.clock,
        )
        audit = AuditConfig.model_validate(
            {"sinks": [{"type": "file", "path": str(workdir / "audit.jsonl")}]}
        )
        self.auditor = Auditor(audit, None, None, Redactor())
        self.sink = FileSink(str(workdir / "sink.jsonl"), 1 << 40, 0)
        self.api_key = ""

    async def start(self) -> None:
        await self.jwt.start()
        await self.store.put_client(_client())
        key_id, secret, self.api_key = new_api_key()
        now = self.clock.now()
        record = ApiKeyRecord(
            id=key_id,
            client_id="bench",
            secret_hash=hash_secret(PEPPER, secret),
            scopes=("bench",),
            created_at=now,
            expires_at=now + 86400,
        )
        await self.store.put_api_key(record)
        await self.keys.load()
        await self.sink.open()


def _client() -> ClientRecord:
    return ClientRecord(id="bench", name="bench", created_at=time.time())


def per_call(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Minimum seconds per call of ``fn`` over ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


#: Step name -> (builder of the function to time, requests per call of that function).
Steps = dict[str, tuple[Callable[[], Callable[[], object]], int]]


def steps(rig: Rig) -> Steps:
    """The steps, each a builder of one timed function (built only when selected)."""
    jwt_ex = request(f"Bearer {rig.token}")
    key_ex = request(f"Bearer {rig.api_key}")
    redactor = Redactor()

    def authn_jwt() -> Callable[[], object]:
        layer = rig.jwt_layer
        if drive(layer.on_request(jwt_ex)) is not None or jwt_ex.principal is None:
            raise SystemExit(f"the bench token was refused: {jwt_ex.diagnosis}")
        return lambda: run_layer(layer, jwt_ex)

    def authn_key() -> Callable[[], object]:
        layer = rig.key_layer
        if drive(layer.on_request(key_ex)) is not None:
            raise SystemExit(f"the bench API key was refused: {key_ex.diagnosis}")
        return lambda: run_layer(layer, key_ex)

    def ratelimit() -> Callable[[], object]:
        # Two limits (principal, ip), headers on; what the layer appends is reset each time.
        authn_jwt()  # the principal the verified-token cache hands out
        layer, ex = rig.ratelimit, jwt_ex
        headers = ex.response_headers

        def once() -> None:
            run_layer(layer, ex)
            headers.clear()

        if run_layer(layer, ex) is not None:
            raise SystemExit("the rate limit refused the bench request")
        headers.clear()
        return once

    def completed() -> Exchange:
        authn_jwt()
        ex = jwt_ex
        ex.status, ex.bytes_out, ex.upstream_status, ex.upstream_ms = 200, 1024, 200, 0.42
        return ex

    def submit() -> Callable[[], object]:
        # On the request path; the pending list is emptied per batch (the render's job).
        ex = completed()
        auditor = rig.auditor
        pending, submit = auditor._pending, auditor.submit

        def batch() -> None:
            for _ in range(BATCH):
                submit(ex)
            pending.clear()

        return batch

    def snapshots(count: int) -> list[Snapshot]:
        # Every record has its own request id (the gateway's "<8 hex>-<counter hex>" form).
        ex = completed()
        out = []
        for i in range(count):
            ex.request_id = f"5f3a9c1e-{0x1F000 + i:x}"
            out.append(snapshot(ex, time.monotonic()))
        return out

    def render() -> Callable[[], object]:
        # A pool larger than the redactor's clean-string cache, so no request id is seen
        # twice while remembered: as in the gateway, where every id is new.
        pool = snapshots(POOL)
        batches = itertools.cycle([pool[i : i + BATCH] for i in range(0, POOL, BATCH)])

        def batch() -> None:
            for snap in next(batches):
                entry(snap, redactor)

        return batch

    def file_write() -> Callable[[], object]:
        lines = [entry(snap, redactor).line for snap in snapshots(BATCH)]
        sink = rig.sink
        return lambda: sink._write_lines(lines)

    return {
        "authn jwt (cache hit)": (authn_jwt, 1),
        "authn api key": (authn_key, 1),
        "ratelimit 2 limits": (ratelimit, 1),
        "audit snapshot+submit": (submit, BATCH),
        "audit render+serialise": (render, BATCH),
        "audit file write (sync)": (file_write, BATCH),
    }


def measure(
    number: int, repeat: int, only: list[str] | None = None, awaited: bool = True
) -> dict[str, float]:
    """µs per request of every step (see the module docstring) whose name contains one of
    ``only`` (all by default)."""
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bastion-hot-") as tmp:
        rig = Rig(Path(tmp))
        asyncio.run(rig.start())
        overhead = per_call(lambda: None, number, repeat)
        for name, (build, per) in steps(rig).items():
            if only and not any(o in name for o in only):
                continue
            fn = build()
            calls = max(1, number // per)
            results[name] = max(0.0, per_call(fn, calls, repeat) - overhead) / per * 1e6
        if awaited and (not only or any(o in "audit file write (awaited, CPU)" for o in only)):
            results["audit file write (awaited, CPU)"] = asyncio.run(
                _awaited_write_cpu(rig, max(10, number // BATCH // 4), repeat)
            )
        asyncio.run(rig.sink.aclose())
    return results


async def _awaited_write_cpu(rig: Rig, n: int, repeat: int) -> float:
    """µs of process CPU (the event loop's and the worker thread's) per record of
    ``await FileSink.write(batch of 100)``."""
    redactor = Redactor()
    ex = request(f"Bearer {rig.token}")
    ex.status = 200
    entries = [entry(snapshot(ex, time.monotonic()), redactor) for _ in range(BATCH)]
    sink = rig.sink
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(n):
            await sink.write(entries)
        best = min(best, time.process_time() - t0)
    return best / n / BATCH * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--number", type=int, default=20_000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs; the minimum is kept")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--only", help="comma-separated parts of step names, e.g. 'ratelimit,render'"
    )
    args = parser.parse_args(argv)
    only = [o.strip() for o in args.only.split(",")] if args.only else None
    results = measure(args.number, args.repeat, only)
    width = max(len(k) for k in results)
    for name, us in results.items():
        print(f"{name:<{width}}  {us:7.2f} µs")
    on_path = ("authn jwt (cache hit)", "ratelimit 2 limits", "audit snapshot+submit")
    if all(k in results for k in on_path):
        total = sum(results[k] for k in on_path)
        print(f"{'request path of (a), these steps':<{width}}  {total:7.2f} µs")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
