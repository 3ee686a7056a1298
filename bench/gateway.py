"""Gateway benchmark: Bastion against nginx as a keep-alive reverse proxy, on loopback.

Starts a static upstream (nginx answering every request with a fixed ~1 KB JSON body), nginx as a
plain keep-alive reverse proxy to it (the reference), and Bastion in up to four configurations
(see ``bench/bastion_target.py``). With (d), the OpenAPI layers, (a) and (d) and nginx are also
measured with ~100 KB request and response bodies, and the cost of the OpenAPI layers is
printed as the throughput ratio (d)/(a) per body size. Each target gets a short warm-up, then in every round a
throughput run (``wrk -t1 -c50``, proxy CPU read from ``/proc`` around it) and a paced latency
run (20 connections at ~2k requests/s). Rounds are interleaved, targets rotate their position
from round to round, and the table reports medians and ratios to nginx-proxy from the same run.

    .venv/bin/python bench/gateway.py [--duration 10] [--rounds 3] [--workers 1]
                                      [--only a,b,c,d] [--sizes 1,100] [--json out.json]

Distributed mode (issue 6): ``--only a,b,e,f`` adds (e) = (a) and (f) = (b) on the PostgreSQL
store and the Redis rate limiter (``--store``/``--cache``; a fresh PostgreSQL schema and Redis
key prefix per run, removed at the end) and prints (e)/(a) and (f)/(b).

Everything binds 127.0.0.1; every child process is killed on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console

from bench import bastion_target as bt
from bench.backends import postgres_schema, redis_prefix
from bench.nginx import (
    nginx_version,
    reverse_proxy_conf,
    start_nginx,
    static_upstream_conf,
    write_static_files,
)
from bench.processes import ChildFailed, Children, free_port, session_stat
from bench.report import (
    REFERENCE,
    RoundSample,
    TargetResult,
    distributed_lines,
    goal_lines,
    openapi_lines,
    render_table,
    size_key,
    to_json,
)
from bench.wrk import WrkFailed, run_wrk

REPO = Path(__file__).resolve().parent.parent
NATIVE = REPO / "build" / "native"  # tools/build_native.py
STATIC_BODY = json.dumps(
    {
        "id": "ord_0123456789abcdef",
        "status": "accepted",
        "items": [{"sku": f"SKU-{i:04d}", "quantity": i % 5 + 1, "ok": True} for i in range(20)],
    },
    separators=(",", ":"),
)
#: The static upstream's answer on the 100 KB path: the same shape, 2,200 items (~95 KB).
BIG_BODY = json.dumps(
    {
        "id": "ord_0123456789abcdef",
        "status": "accepted",
        "items": [{"sku": f"SKU-{i:05d}", "quantity": i % 5 + 1, "ok": True} for i in range(2200)],
    },
    separators=(",", ":"),
)


@dataclass
class Target:
    """A running proxy under test: where it listens, its process session, its credential."""

    key: str
    label: str
    port: int
    session_id: int
    authorization: str | None = None
    size_kb: int = 1

    @property
    def path(self) -> str:
        return bt.SIZE_PATHS[self.size_kb]

    @property
    def body_items(self) -> int:
        return bt.SIZE_ITEMS[self.size_kb]

    def sized(self, size_kb: int) -> Target:
        """The same running proxy, measured with ``size_kb`` bodies (its own result row)."""
        label = f"{self.label}, {size_kb} KB"
        return Target(
            size_key(self.key, size_kb),
            label,
            self.port,
            self.session_id,
            self.authorization,
            size_kb,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see ``bench/README.md``)."""
    p = argparse.ArgumentParser(description="Bastion vs nginx reverse-proxy benchmark.")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    p.add_argument("--workers", type=int, default=1, help="Bastion server.workers = nginx workers")
    p.add_argument("--only", default="a,b,c,d", help="Bastion configurations: a,b,c,d,e,f")
    p.add_argument(
        "--sizes",
        default="1,100",
        help="body sizes in KB for the OpenAPI comparison of (d), (a) and nginx (1,100); "
        "1 KB is always measured",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--connections", type=int, default=50, help="throughput connections (50)")
    p.add_argument("--paced-connections", type=int, default=20, help="latency connections (20)")
    p.add_argument("--rate", type=float, default=2000.0, help="paced total requests/s (2000)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    p.add_argument("--no-audit-pure", action="store_true", help="(c) without audit sinks")
    p.add_argument(
        "--store",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL server for (e)/(f); a schema of its own is made and dropped",
    )
    p.add_argument("--cache", default="redis://127.0.0.1:6379/0", help="Redis for (e)/(f)")
    p.add_argument("--bastion", type=Path, default=REPO / ".venv" / "bin" / "bastion")
    p.add_argument(
        "--pure",
        action="store_true",
        help="run Bastion as plain Python from src/ even when build/native exists (make native)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(bt.VARIANTS))
    if unknown:
        p.error(f"--only: unknown configuration(s) {unknown}; use {', '.join(bt.VARIANTS)}")
    if "d" in only and "a" not in only:
        only.insert(0, "a")  # (d) is measured against (a): the same gateway without OpenAPI
    for dist, base in bt.DISTRIBUTED.items():
        if dist in only and base not in only:
            only.insert(0, base)  # (e)/(f) are measured against their embedded twins
    args.only = only
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not sizes or any(not s.isdigit() or int(s) not in bt.SIZE_PATHS for s in sizes):
        p.error(f"--sizes: use some of {sorted(bt.SIZE_PATHS)}")
    args.sizes = sorted({int(s) for s in sizes})
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 300 or not 1 <= args.workers <= 64:
        p.error("--rounds 1..20, --duration 1..300 s, --workers 1..64")
    return args


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def start_bastion_targets(
    args: argparse.Namespace,
    children: Children,
    workdir: Path,
    upstream_port: int,
    console: Console,
    distributed: dict[str, str],
) -> tuple[list[Target], list[TargetResult]]:
    """Start each requested Bastion configuration; a failure is recorded, not fatal.

    ``distributed`` holds the ``store``, ``cache`` and ``key_prefix`` of (e) and (f)."""
    targets: list[Target] = []
    failed: list[TargetResult] = []
    binary: Path = args.bastion
    if not args.only:
        return targets, failed
    if not binary.exists():
        reason = f"{binary} does not exist (the gateway CLI is not installed yet)"
        console.print(f"[yellow]Skipping Bastion: {reason}[/yellow]")
        return targets, [TargetResult(k, bt.LABELS[k], failed=reason) for k in args.only]
    env = {**os.environ, bt.PEPPER_ENV: bt.new_pepper()}
    if not args.pure and (NATIVE / ".built").exists():
        # The per-request modules compiled with mypyc (tools/build_native.py), as shipped.
        env["PYTHONPATH"] = str(NATIVE)
        console.print(f"Bastion runs compiled per-request modules from {NATIVE}")
    else:
        env.pop("PYTHONPATH", None)
        why = "--pure" if args.pure else f"{NATIVE} is not built (make native)"
        console.print(f"[yellow]Bastion runs as plain Python ({why})[/yellow]")
    for key in args.only:
        directory = workdir / f"bastion-{key}"
        directory.mkdir()
        port = free_port()
        try:
            doc = bt.bastion_config(
                key,
                port=port,
                upstream_port=upstream_port,
                workers=args.workers,
                audit=not args.no_audit_pure,
                **(distributed if key in bt.DISTRIBUTED else {}),
            )
            bt.write_config(directory, doc)
            if key in bt.DISTRIBUTED:
                bt.upgrade_schema(binary, directory, env)
            authorization = None
            if key in ("a", "d", "e"):
                authorization = "Bearer " + bt.make_jwt_material(directory).token
            elif key in ("b", "f"):
                authorization = "Bearer " + bt.create_api_key(binary, directory, env)
            if key == "d":
                bt.write_openapi_spec(directory)
            proc = bt.start_bastion(children, binary, directory, port, env)
            for size in sorted({1, *args.sizes}) if key in ("a", "d") else [1]:
                body = bt.order_body(bt.SIZE_ITEMS[size])
                bt.smoke_request(port, body, authorization, bt.SIZE_PATHS[size])
        except ChildFailed as exc:
            reason = bt.describe_failure(directory, exc)
            console.print(f"[red]{bt.LABELS[key]} could not start:[/red] {reason}")
            failed.append(TargetResult(key, bt.LABELS[key], failed=reason))
            continue
        targets.append(Target(key, bt.LABELS[key], port, proc.pid, authorization))
    return targets, failed


def measure_round(args: argparse.Namespace, target: Target, upstream_session: int) -> RoundSample:
    """One throughput run with the proxy's (and upstream's) CPU time around it, one paced run."""
    url = f"http://127.0.0.1:{target.port}{target.path}"
    body = {"path": target.path, "body_items": target.body_items}
    # The previous target's audit file is still being written back to disk: without this,
    # that writeback (kernel threads, and throttled writes) lands in this target's round.
    os.sync()
    up_before = session_stat(upstream_session).cpu_seconds
    before = session_stat(target.session_id)
    throughput = run_wrk(
        url,
        connections=args.connections,
        duration_s=args.duration,
        authorization=target.authorization,
        **body,
    )
    after = session_stat(target.session_id)
    cpu = after.cpu_seconds - before.cpu_seconds
    up_cpu = session_stat(upstream_session).cpu_seconds - up_before
    paced = run_wrk(
        url,
        connections=args.paced_connections,
        duration_s=args.duration,
        authorization=target.authorization,
        rate=args.rate,
        **body,
    )
    system = after.system_seconds - before.system_seconds
    return RoundSample(throughput, cpu, paced, upstream_cpu_seconds=up_cpu, system_seconds=system)


def run(args: argparse.Namespace, console: Console) -> list[TargetResult]:
    """Start everything, measure all rounds, return one result per target (nginx first)."""
    workdir = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    www = Path(tempfile.mkdtemp(prefix="bastion-bench-www-"))  # public: the static bodies only
    try:
        with Children() as children, contextlib.ExitStack() as backends:
            distributed: dict[str, str] = {}
            if any(k in bt.DISTRIBUTED for k in args.only):
                distributed = {
                    "store": backends.enter_context(postgres_schema(args.store)),
                    "cache": args.cache,
                    "key_prefix": backends.enter_context(redis_prefix(args.cache)),
                }
            up_port, proxy_port = free_port(), free_port()
            up_prefix, proxy_prefix = workdir / "nginx-upstream", workdir / "nginx-proxy"
            big = {bt.SIZE_PATHS[100]: BIG_BODY}
            write_static_files(www, big)
            upstream = start_nginx(
                children,
                up_prefix,
                static_upstream_conf(up_prefix, up_port, STATIC_BODY, files=big, files_root=www),
                up_port,
            )
            proxy = start_nginx(
                children,
                proxy_prefix,
                reverse_proxy_conf(proxy_prefix, proxy_port, up_port, args.workers),
                proxy_port,
            )
            targets = [Target(REFERENCE, "nginx-proxy", proxy_port, proxy.pid)]
            bastion, failed = start_bastion_targets(
                args, children, workdir, up_port, console, distributed
            )
            targets += bastion
            if any(t.key == "d" for t in bastion):
                # The OpenAPI comparison at other sizes: nginx, (a) and (d) again.
                sized = [t for t in targets if t.key in (REFERENCE, "a", "d")]
                targets += [t.sized(kb) for kb in args.sizes if kb != 1 for t in sized]
            per_run = args.duration * 2 + 1
            estimate = len(targets) * (args.warmup + 1 + args.rounds * per_run)
            console.print(
                f"{len(targets)} target(s), {args.rounds} round(s) of {args.duration:.0f}s runs: "
                f"about {estimate / 60:.1f} min. Work directory: {workdir}"
            )
            results = {t.key: TargetResult(t.key, t.label) for t in targets}
            for t in targets:
                run_wrk(
                    f"http://127.0.0.1:{t.port}{t.path}",
                    connections=args.connections,
                    duration_s=args.warmup,
                    authorization=t.authorization,
                    path=t.path,
                    body_items=t.body_items,
                )
            for rnd in range(args.rounds):
                order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
                for t in order:
                    sample = measure_round(args, t, upstream.pid)
                    results[t.key].rounds.append(sample)
                    console.print(
                        f"  round {rnd + 1}/{args.rounds} {t.label}: "
                        f"{sample.throughput.rps:,.0f} req/s, "
                        f"{sample.cpu_us_per_request:.1f} µs CPU/req "
                        f"(kernel {sample.system_us_per_request:.1f}; "
                        f"upstream {sample.upstream_cpu_us_per_request:.1f}), "
                        f"p99 {sample.paced.p99_ms if sample.paced else 0:.2f} ms"
                    )
            for t in targets:
                stat = session_stat(t.session_id)
                res = results[t.key]
                res.peak_rss_kib, res.total_rss_kib = stat.max_rss_kib, stat.total_rss_kib
                res.processes = stat.processes
            return [results[t.key] for t in targets] + failed
    finally:
        if args.keep:
            console.print(f"Kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(www, ignore_errors=True)


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nginx": nginx_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 when every requested target was measured without errors."""
    args = parse_args(argv)
    console = Console(width=max(120, Console().width))
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGHUP, _raise_on_sigterm)
    try:
        results = run(args, console)
    except (ChildFailed, WrkFailed) as exc:
        console.print(f"[red]benchmark aborted:[/red] {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; all child processes stopped[/yellow]")
        return 130
    title = (
        f"POST JSON (~1 KB unless the row says 100 KB), wrk -t1 -c{args.connections} -d{args.duration:.0f}s; latency at "
        f"{args.rate:,.0f} req/s over {args.paced_connections} connections; "
        f"workers={args.workers}; median of {args.rounds}"
    )
    render_table(results, console, title)
    console.print(
        "nginx-proxy: nginx keep-alive reverse proxy (upstream keepalive 64), access log off"
    )
    for r in results:
        if r.key in bt.LEGEND:
            console.print(f"{r.label}: {bt.LEGEND[r.key]}")
    goals = goal_lines(results, args.workers)
    if goals:
        console.print("Issue 2 goals, configuration (a):")
        for line in goals:
            console.print(line, markup=False)
    openapi = openapi_lines(results)
    if openapi:
        console.print("Issue 4: cost of the OpenAPI layers, throughput (d) / (a) in the same run:")
        for line in openapi:
            console.print(line, markup=False)
    dist = distributed_lines(results)
    if dist:
        console.print("Issue 6: distributed over embedded, throughput in the same run:")
        for line in dist:
            console.print(line, markup=False)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    if args.json is not None:
        doc = to_json(results, {**settings, "argv": sys.argv}, machine_info())
        args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        console.print(f"Results written to {args.json}")
    bad = any(r.failed or r.median().get("errors", 0) for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
