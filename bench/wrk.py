"""Running ``wrk`` with ``bench/post.lua`` and reading the ``BENCH_RESULT`` line it prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

POST_SCRIPT = Path(__file__).resolve().parent / "post.lua"
RESULT_PREFIX = "BENCH_RESULT "


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds; ``errors`` counts socket errors and >= 400s."""

    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        """Socket errors plus responses with status >= 400."""
        return sum(self.errors.values())


class WrkFailed(RuntimeError):
    """wrk did not run, or printed no result line."""


def parse_wrk_output(stdout: str) -> WrkResult:
    """The result of the ``BENCH_RESULT {json}`` line that ``post.lua``'s ``done()`` prints."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            doc = json.loads(line[len(RESULT_PREFIX) :])
            lat = doc["latency_us"]
            return WrkResult(
                requests=int(doc["requests"]),
                duration_s=int(doc["duration_us"]) / 1e6,
                p50_ms=float(lat["p50"]) / 1000,
                p90_ms=float(lat["p90"]) / 1000,
                p99_ms=float(lat["p99"]) / 1000,
                p999_ms=float(lat["p999"]) / 1000,
                mean_ms=float(lat["mean"]) / 1000,
                max_ms=float(lat["max"]) / 1000,
                errors={k: int(v) for k, v in doc["errors"].items()},
            )
    raise WrkFailed("no BENCH_RESULT line in wrk's output:\n" + stdout[-2000:])


def wrk_command(
    url: str,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    rate: float = 0.0,
    timeout_s: float = 2.0,
) -> list[str]:
    """The wrk command line; ``rate`` > 0 paces the run to that many requests/s in total."""
    binary = shutil.which("wrk")
    if binary is None:
        raise WrkFailed("wrk is not installed (Debian: apt-get install wrk)")
    per_thread_rate = rate / threads
    per_thread_conns = connections // threads
    return [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        str(POST_SCRIPT),
        url,
        "--",
        f"{per_thread_rate:.3f}",
        str(per_thread_conns),
    ]


def run_wrk(
    url: str,
    *,
    connections: int,
    duration_s: float,
    authorization: str | None = None,
    rate: float = 0.0,
    threads: int = 1,
    path: str = "/api/echo",
    body_items: int = 8,
    form: str | None = None,
    timeout_s: float = 2.0,
) -> WrkResult:
    """Run wrk against ``url`` (POST ``path`` with a JSON order of ``body_items`` items, ~1 KB
    for 8, or with ``form`` as an application/x-www-form-urlencoded body) and return its
    parsed result.

    ``authorization`` and ``form`` are passed to the Lua script through the environment, never
    on the command line, so tokens, API keys and client secrets do not show up in process
    listings.
    """
    argv = wrk_command(
        url,
        connections=connections,
        duration_s=duration_s,
        threads=threads,
        rate=rate,
        timeout_s=timeout_s,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_AUTHORIZATION", "BENCH_FORM")}
    env["BENCH_PATH"] = path
    env["BENCH_BODY_ITEMS"] = str(body_items)
    if authorization:
        env["BENCH_AUTHORIZATION"] = authorization
    if form:
        env["BENCH_FORM"] = form
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env,
            timeout=duration_s + 30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise WrkFailed(f"wrk did not finish within {duration_s + 30:.0f}s") from None
    if out.returncode != 0:
        raise WrkFailed(f"wrk exited with {out.returncode}: {out.stderr.strip()[-1000:]}")
    return parse_wrk_output(out.stdout)
