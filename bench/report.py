"""Results of the gateway benchmark: per-round samples, medians, ratios, the table and JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table

from bench.wrk import WrkResult

REFERENCE = "nginx"


def size_key(key: str, size_kb: int) -> str:
    """The result key of target ``key`` measured with ``size_kb`` bodies (``a@100``)."""
    return key if size_kb == 1 else f"{key}@{size_kb}"


def reference_key(key: str) -> str:
    """The nginx-proxy result measured with the same body size as ``key``."""
    _, at, size = key.partition("@")
    return REFERENCE + at + size


def _reference_for(results: list[TargetResult], key: str) -> TargetResult | None:
    ref = reference_key(key)
    return next((r for r in results if r.key == ref and not r.failed), None)


@dataclass(frozen=True)
class RoundSample:
    """One round of one target: a throughput run (with the proxy's CPU) and a paced run."""

    throughput: WrkResult
    cpu_seconds: float
    paced: WrkResult | None
    upstream_cpu_seconds: float = 0.0
    system_seconds: float = 0.0  # the kernel's share of cpu_seconds

    @property
    def system_us_per_request(self) -> float:
        """The kernel's share of :attr:`cpu_us_per_request` (socket reads and writes)."""
        n = self.throughput.requests
        return self.system_seconds / n * 1e6 if n else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """Proxy CPU (all its processes, user + system) per completed request, in µs."""
        n = self.throughput.requests
        return self.cpu_seconds / n * 1e6 if n else 0.0

    @property
    def upstream_cpu_us_per_request(self) -> float:
        """The static upstream's CPU per request in µs (context: it shares the machine)."""
        n = self.throughput.requests
        return self.upstream_cpu_seconds / n * 1e6 if n else 0.0


@dataclass
class TargetResult:
    """Everything measured for one target over all rounds."""

    key: str
    label: str
    rounds: list[RoundSample] = field(default_factory=list)
    peak_rss_kib: int = 0
    total_rss_kib: int = 0
    processes: int = 0
    failed: str | None = None

    def median(self) -> dict[str, float]:
        """Medians over rounds of: rps, cpu_us, paced_rps, p50_ms, p99_ms, errors."""
        if not self.rounds:
            return {}
        paced = [r.paced for r in self.rounds if r.paced is not None]
        out = {
            "rps": statistics.median(r.throughput.rps for r in self.rounds),
            "cpu_us": statistics.median(r.cpu_us_per_request for r in self.rounds),
            "errors": float(
                sum(
                    r.throughput.error_count + (r.paced.error_count if r.paced else 0)
                    for r in self.rounds
                )
            ),
        }
        if paced:
            out["paced_rps"] = statistics.median(p.rps for p in paced)
            out["p50_ms"] = statistics.median(p.p50_ms for p in paced)
            out["p99_ms"] = statistics.median(p.p99_ms for p in paced)
        return out


def ratios(result: TargetResult, reference: TargetResult) -> dict[str, float]:
    """Throughput and CPU ratios to the reference, and added p50/p99 latency in ms."""
    mine, ref = result.median(), reference.median()
    out: dict[str, float] = {}
    if mine and ref and ref["rps"] > 0:
        out["rps_ratio"] = mine["rps"] / ref["rps"]
    if mine and ref and ref["cpu_us"] > 0:
        out["cpu_ratio"] = mine["cpu_us"] / ref["cpu_us"]
    for q in ("p50_ms", "p99_ms"):
        if q in mine and q in ref:
            out[f"added_{q}"] = mine[q] - ref[q]
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def render_table(results: list[TargetResult], console: Console, title: str) -> None:
    """The results table: medians per target, ratios to nginx-proxy (same body size, same
    run)."""
    table = Table(title=title, title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("target", "left"),
        ("req/s", "right"),
        ("x nginx", "right"),
        ("paced req/s", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("+p99 ms", "right"),
        ("CPU µs/req", "right"),
        ("peak RSS MiB", "right"),
        ("errors", "right"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for r in results:
        if r.failed:
            table.add_row(r.label, "[red]failed[/red]", *["—"] * 8)
            continue
        m = r.median()
        ref = _reference_for(results, r.key)
        rat = ratios(r, ref) if ref is not None else {}
        errors = int(m.get("errors", 0))
        table.add_row(
            r.label,
            _fmt(m.get("rps"), ",.0f"),
            _fmt(rat.get("rps_ratio"), ".2f"),
            _fmt(m.get("paced_rps"), ",.0f"),
            _fmt(m.get("p50_ms"), ".2f"),
            _fmt(m.get("p99_ms"), ".2f"),
            "" if r is ref else _fmt(rat.get("added_p99_ms"), "+.2f"),
            _fmt(m.get("cpu_us"), ".1f"),
            f"{r.peak_rss_kib / 1024:.1f}",
            f"[red]{errors}[/red]" if errors else "0",
        )
    console.print(table)
    for r in results:
        if r.failed:
            console.print(f"[red]{r.label}: not measured[/red]\n{r.failed}")


def goal_lines(results: list[TargetResult], workers: int) -> list[str]:
    """Issue 2's goals checked on configuration (a) (JWT, verified-token cache warm)."""
    ref = next((r for r in results if r.key == REFERENCE and not r.failed), None)
    a = next((r for r in results if r.key == "a" and not r.failed), None)
    if ref is None or a is None:
        return []
    m, rat = a.median(), ratios(a, ref)
    want_ratio = 0.30 if workers == 1 else 0.40
    # (what, measured value, limit, True if the value must be at least the limit)
    checks: list[tuple[str, float | None, float, bool]] = [
        (f"throughput >= {want_ratio:.2f}x nginx", rat.get("rps_ratio"), want_ratio, True),
        ("added p99 <= 1 ms at the paced rate", rat.get("added_p99_ms"), 1.0, False),
        ("proxy CPU <= 50 us/request", m.get("cpu_us"), 50.0, False),
        ("peak RSS < 150 MiB per process", a.peak_rss_kib / 1024, 150.0, False),
    ]
    lines = []
    for text, value, limit, at_least in checks:
        if value is None:
            lines.append(f"  ?    {text}: not measured")
            continue
        ok = value >= limit if at_least else value <= limit
        lines.append(f"  {'met ' if ok else 'MISS'} {text}: {value:.2f}")
    return lines


def openapi_lines(results: list[TargetResult]) -> list[str]:
    """The cost of the OpenAPI layers: throughput of (d) over (a) per body size, against the
    issue 4 goal (at least 0.8 on 1 KB bodies)."""
    by_key = {r.key: r for r in results if not r.failed and r.rounds}
    lines = []
    for key in sorted((k for k in by_key if k.partition("@")[0] == "d"), key=len):
        base = by_key.get("a" + key[1:])
        if base is None:
            continue
        d, a = by_key[key].median(), base.median()
        if not a.get("rps"):
            continue
        ratio = d["rps"] / a["rps"]
        # Rounds run (a) and (d) back to back: the median of those pairs' ratios is less
        # exposed to a slow stretch of the machine than the ratio of the two medians.
        pairs = [
            x.throughput.rps / y.throughput.rps
            for x, y in zip(by_key[key].rounds, base.rounds, strict=False)
            if y.throughput.rps > 0
        ]
        paired = statistics.median(pairs) if pairs else ratio
        size = key.partition("@")[2] or "1"
        cpu = d["cpu_us"] - a["cpu_us"]
        text = (
            f"{size} KB: {ratio:.2f} ({d['rps']:,.0f} vs {a['rps']:,.0f} req/s, "
            f"+{cpu:.1f} µs CPU/req; median of the rounds' ratios {paired:.2f})"
        )
        if size == "1":
            met = ratio >= 0.8 and paired >= 0.8
            lines.append(f"  {'met ' if met else 'MISS'} {text}; goal >= 0.80 (both)")
        else:
            lines.append(f"       {text}")
    return lines


def distributed_lines(results: list[TargetResult]) -> list[str]:
    """Throughput of the distributed variants over their embedded twins ((e)/(a), (f)/(b)),
    against the issue 6 goal (at least 0.8)."""
    by_key = {r.key: r for r in results if not r.failed and r.rounds}
    lines = []
    for dist, base in (("e", "a"), ("f", "b")):
        if dist not in by_key or base not in by_key:
            continue
        d, b = by_key[dist].median(), by_key[base].median()
        if not b.get("rps"):
            continue
        ratio = d["rps"] / b["rps"]
        cpu = d["cpu_us"] - b["cpu_us"]
        lines.append(
            f"  {'met ' if ratio >= 0.8 else 'MISS'} ({dist})/({base}): {ratio:.2f} "
            f"({d['rps']:,.0f} vs {b['rps']:,.0f} req/s, {cpu:+.1f} µs CPU/req); goal >= 0.80"
        )
    return lines


def to_json(
    results: list[TargetResult], settings: dict[str, Any], machine: dict[str, Any]
) -> dict[str, Any]:
    """A JSON-ready document: settings, machine, and per target its rounds, medians, ratios."""
    targets: dict[str, Any] = {}
    for r in results:
        ref = _reference_for(results, r.key)
        targets[r.key] = {
            "label": r.label,
            "failed": r.failed,
            "median": r.median(),
            "ratios_to_nginx": ratios(r, ref) if ref is not None and r is not ref else {},
            "peak_rss_kib_per_process": r.peak_rss_kib,
            "peak_rss_kib_sum": r.total_rss_kib,
            "processes": r.processes,
            "rounds": [
                {
                    "throughput": {**asdict(s.throughput), "rps": s.throughput.rps},
                    "paced": {**asdict(s.paced), "rps": s.paced.rps} if s.paced else None,
                    "cpu_seconds": s.cpu_seconds,
                    "cpu_us_per_request": s.cpu_us_per_request,
                    "upstream_cpu_us_per_request": s.upstream_cpu_us_per_request,
                }
                for s in r.rounds
            ],
        }
    return {"settings": settings, "machine": machine, "targets": targets}
