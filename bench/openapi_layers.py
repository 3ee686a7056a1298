"""Micro-benchmark of the OpenAPI enforcement layers (openapi, authz, response_filter).

Builds the three layers exactly as the gateway benchmark's configuration (d) does
(``bench/bastion_target.py``: the document of :func:`~bench.bastion_target.write_openapi_spec`,
default layer configs) and times, per request, each step the gateway runs:

- ``openapi check``: the request (``post.lua``'s ~1 KB order, POST /api/echo) matched and
  validated;
- ``authz check``: the bench token's scope checked;
- ``response_filter``: ``check`` (request side), ``on_response`` + ``wants_response_body`` +
  ``on_response_body`` on the static upstream's ~1 KB acknowledgement (``bench/gateway.py``).

The same on the 100 KB path (820 order items, the ~95 KB acknowledgement). Prints µs per
step (``timeit``, min of 7 repeats), and the total per request. No sockets, no event loop
unless a layer still needs one (an ``async`` hook is driven by hand, without a loop).

Run: ``.venv/bin/python -m bench.openapi_layers [--repeat 7] [--json]``. On a shared machine
timings are noisy; ``--instructions [--size 100]`` counts instructions per step instead (under
``valgrind --tool=callgrind``: a run that calls one step N times minus a run that calls none,
divided by N; several minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):  # run as a script: make `bench.*` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bastion.core.clock import SystemClock
from bastion.core.exchange import Exchange, Headers, Principal, Reply, RequestView
from bastion.events.bus import EventBus
from bastion.gateway.layers.authz.config import AuthzConfig
from bastion.gateway.layers.authz.layer import AuthzLayer
from bastion.gateway.layers.base import NEEDS_IO, Layer
from bastion.gateway.layers.openapi.config import OpenApiConfig
from bastion.gateway.layers.openapi.layer import OpenApiLayer
from bastion.gateway.layers.response_filter.config import ResponseFilterConfig
from bastion.gateway.layers.response_filter.layer import ResponseFilterLayer
from bastion.openapi.spec import load_spec
from bench import bastion_target as bt
from bench.gateway import BIG_BODY, STATIC_BODY

PRINCIPAL = Principal(
    "jwt",
    "bench-user",
    client_id="bench",
    scopes=frozenset({"bench"}),
    issuer=bt.BENCH_ISSUER,
    key_id="0123456789abcdef0123456789abcdef",
)


def _drive(coro: Any) -> Any:
    """Run a coroutine that never awaits real I/O to completion without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the layer awaited I/O")


def decide(layer: Layer, ex: Exchange) -> Reply | None:
    """What the runner does: ``check``, and ``on_request`` only when it asks for I/O."""
    result = layer.check(ex)
    if result is NEEDS_IO:
        return _drive(layer.on_request(ex))  # type: ignore[no-any-return]
    return result  # type: ignore[return-value]


class Layers:
    """The three layers of configuration (d), built as ``bastion.gateway.runtime`` builds them."""

    def __init__(self, directory: Path) -> None:
        spec_path = bt.write_openapi_spec(directory)
        cfg = OpenApiConfig(spec=str(spec_path))
        spec = load_spec(str(spec_path), cfg.spec_options())
        self.openapi = OpenApiLayer(cfg, spec, route_prefix="/", strip_prefix=False)
        self.authz = AuthzLayer(AuthzConfig(), spec, bus=EventBus(), clock=SystemClock())
        self.response_filter = ResponseFilterLayer(ResponseFilterConfig(), spec.operations)


def request_exchange(path: str, body: bytes) -> Exchange:
    """The request as the front end hands it over (wrk's headers, the JWT principal set by
    authn)."""
    headers = Headers(
        [
            ("host", "127.0.0.1:8080"),
            ("content-length", str(len(body))),
            ("content-type", "application/json"),
            ("authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig"),
        ]
    )
    view = RequestView("POST", path, "", headers, "127.0.0.1", body=body, client_ip="127.0.0.1")
    ex = Exchange(view, "0123456789abcdef", 0.0, 0.0, route_name="bench")
    ex.principal = PRINCIPAL
    return ex


def response_headers(body: bytes) -> Headers:
    """nginx's answer head (``bench/nginx.py``'s static upstream)."""
    return Headers(
        [
            ("server", "nginx"),
            ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("connection", "keep-alive"),
        ]
    )


def steps(
    layers: Layers, path: str, req_body: bytes, resp_body: bytes
) -> dict[str, Callable[[], Any]]:
    """One callable per step; each builds the exchange state the step needs from a template
    made once (the copy costs are measured separately as ``(setup)`` and subtracted)."""
    oa, az, rf = layers.openapi, layers.authz, layers.response_filter

    # A prepared exchange after the openapi layer, for authz and the response side.
    done = request_exchange(path, req_body)
    assert decide(oa, done) is None, done.diagnosis
    assert decide(az, done) is None, done.diagnosis
    assert decide(rf, done) is None
    annotations = dict(done.annotations)

    def fresh() -> Exchange:
        return request_exchange(path, req_body)

    def after_openapi() -> Exchange:
        ex = request_exchange(path, req_body)
        ex.annotations.update(annotations)
        return ex

    def openapi_step() -> Any:
        ex = fresh()
        if decide(oa, ex) is not None:
            raise AssertionError(ex.diagnosis)

    def authz_step() -> Any:
        ex = after_openapi()
        if decide(az, ex) is not None:
            raise AssertionError(ex.diagnosis)

    def rf_request_step() -> Any:
        ex = after_openapi()
        decide(rf, ex)

    def respond(body: bytes) -> bytes | Reply:
        ex = after_openapi()
        headers = response_headers(body)
        rf.on_response(ex, 200, headers)
        limit = rf.wants_response_body(ex, 200, headers)
        if limit < len(body):
            raise AssertionError(f"limit {limit}")
        return rf.on_response_body(ex, 200, headers, body)

    def rf_response_step() -> Any:
        out = respond(resp_body)
        if out is not resp_body and out != resp_body:
            raise AssertionError("the clean body was changed")

    # The slow path: the same answer with one item holding an undeclared property, or a card
    # number (not part of the total: the benchmark's upstream sends clean bodies).
    doc = orjson.loads(resp_body)
    middle = len(doc["items"]) // 2
    doc["items"][middle]["cost_cents"] = 150
    undeclared = orjson.dumps(doc)
    del doc["items"][middle]["cost_cents"]
    doc["items"][middle]["sku"] = "4111 1111 1111 1111"
    card = orjson.dumps(doc)

    def rf_undeclared_step() -> Any:
        out = respond(undeclared)
        if not isinstance(out, bytes) or b"cost_cents" in out:
            raise AssertionError("the undeclared property was kept")

    def rf_card_step() -> Any:
        out = respond(card)
        if not isinstance(out, bytes) or b"4111 1111" in out:
            raise AssertionError("the card number was kept")

    def setup_fresh() -> Any:
        fresh()

    def setup_after() -> Any:
        after_openapi()

    def setup_response() -> Any:
        after_openapi()
        response_headers(resp_body)

    return {
        "openapi check": openapi_step,
        "authz check": authz_step,
        "response_filter check": rf_request_step,
        "response_filter response": rf_response_step,
        "(slow path: 1 undeclared)": rf_undeclared_step,
        "(slow path: 1 card number)": rf_card_step,
        "(setup fresh)": setup_fresh,
        "(setup after)": setup_after,
        "(setup response)": setup_response,
    }


SETUP_OF = {
    "openapi check": "(setup fresh)",
    "authz check": "(setup after)",
    "response_filter check": "(setup after)",
    "response_filter response": "(setup response)",
    "(slow path: 1 undeclared)": "(setup response)",
    "(slow path: 1 card number)": "(setup response)",
}
#: The steps of every request of the gateway benchmark (summed as ``total``).
PER_REQUEST = (
    "openapi check",
    "authz check",
    "response_filter check",
    "response_filter response",
)


def measure(fn: Callable[[], Any], repeat: int) -> float:
    """µs per call: min of ``repeat`` runs, each long enough (~0.2 s) to be stable."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(number, 10)
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def run(repeat: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-openapi-") as tmp:
        layers = Layers(Path(tmp))
        for size, path in bt.SIZE_PATHS.items():
            req_body = bt.order_body(bt.SIZE_ITEMS[size])
            resp_body = (STATIC_BODY if size == 1 else BIG_BODY).encode()
            fns = steps(layers, path, req_body, resp_body)
            raw = {name: measure(fn, repeat) for name, fn in fns.items()}
            net = {name: max(raw[name] - raw[setup], 0.0) for name, setup in SETUP_OF.items()}
            net["total"] = sum(net[name] for name in PER_REQUEST)
            label = f"{size} KB (request {len(req_body)} B, response {len(resp_body)} B)"
            results[label] = net
    return results


def call_step(step: str, calls: int, size: int = 1) -> None:
    """Warm every step up, then call ``step`` (none: '') ``calls`` times (for callgrind)."""
    with tempfile.TemporaryDirectory(prefix="bench-openapi-") as tmp:
        layers = Layers(Path(tmp))
        body = (STATIC_BODY if size == 1 else BIG_BODY).encode()
        fns = steps(layers, bt.SIZE_PATHS[size], bt.order_body(bt.SIZE_ITEMS[size]), body)
        for fn in fns.values():
            for _ in range(200 if size == 1 else 5):
                fn()
        if step:
            fn = fns[step]
            for _ in range(calls):
                fn()


def _instructions(step: str, calls: int, size: int) -> int:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(Path(__file__).resolve()),
            "--call-step",
            step,
            "--calls",
            str(calls),
            "--size",
            str(size),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : ([0-9]+)", out.stderr)
    if found is None:
        raise RuntimeError(out.stderr[-2000:])
    return int(found.group(1))


def instructions(calls: int, size: int) -> dict[str, float]:
    """Instructions per call of each step, setup subtracted."""
    base = _instructions("", calls, size)
    names = [*SETUP_OF, *sorted(set(SETUP_OF.values()))]
    per = {name: (_instructions(name, calls, size) - base) / calls for name in names}
    net = {name: per[name] - per[setup] for name, setup in SETUP_OF.items()}
    net["total"] = sum(net[name] for name in PER_REQUEST)
    return net


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timeit repeats (min is kept)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions (callgrind) instead"
    )
    parser.add_argument(
        "--size", type=int, choices=sorted(bt.SIZE_PATHS), default=1, help="KB (--instructions)"
    )
    parser.add_argument(
        "--calls", type=int, default=None, help="calls per count (default 2000 for 1 KB, 40)"
    )
    parser.add_argument("--call-step", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    calls = args.calls if args.calls is not None else (2000 if args.size == 1 else 40)
    if args.call_step is not None:
        call_step(args.call_step, calls, args.size)
        return 0
    if args.instructions:
        counts = instructions(calls, args.size)
        if args.json:
            print(json.dumps(counts, indent=2))
        else:
            for name, n in counts.items():
                print(f"  {name:<26} {n:11,.0f} instructions")
        return 0
    results = run(args.repeat)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for label, row in results.items():
        print(label)
        for name, us in row.items():
            print(f"  {name:<26} {us:9.2f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
