"""The console: a summary line, the findings table, skips, errors and created objects.

Uses ``rich``; when the output is not a terminal (CI logs), rich drops colours and the
console is made wide enough that the table does not wrap into unreadable columns.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bastion.scan.model import Severity
from bastion.scan.runner import ScanResult

__all__ = ["make_console", "print_result", "print_summary"]

_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
}


def make_console(stderr: bool = False) -> Console:
    """A console for scan output: 160 columns and no colour when not a terminal."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, width=160, no_color=True, highlight=False)


def print_result(console: Console, result: ScanResult, fail_on: Severity) -> None:
    """The findings table, skips, errors, created objects, then :func:`print_summary`."""
    wide = console.width >= 120  # narrow terminals: drop the columns a reader needs least
    columns = ["severity", "conf.", "OWASP", "check", "operation", "finding", "fingerprint"]
    if not wide:
        columns = [c for c in columns if c not in ("conf.", "fingerprint")]
    table = Table(title=None, show_lines=False, expand=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for f in result.findings:
        cells = {
            "severity": f"[{_STYLE[f.severity.value]}]{f.severity.value}[/]",
            "conf.": f.confidence.value,
            "OWASP": f.owasp,
            "check": f.check,
            "operation": f.operation or "-",
            "finding": f.title,
            "fingerprint": f.fingerprint[:12],
        }
        table.add_row(*(cells[c] for c in columns))
    if result.findings:
        console.print(table)
    for s in result.skips:
        where = f" on {s.operation}" if s.operation else ""
        console.print(f"skipped {s.check}{where}: {s.reason}", markup=False, highlight=False)
    for e in result.errors:
        console.print(f"error: {e}", markup=False, highlight=False)
    if result.created:
        console.print("objects the scanner created:", highlight=False)
        for o in result.created:
            state = " (deleted)" if o.deleted else ""
            console.print(
                f"  {o.path}  by {o.operation} as {o.identity}{state}",
                markup=False,
                highlight=False,
            )
    if result.suppressed:
        console.print(
            f"{len(result.suppressed)} findings suppressed by the baseline", highlight=False
        )
    print_summary(console, result, fail_on)


def print_summary(console: Console, result: ScanResult, fail_on: Severity) -> None:
    """The counts and, when the gate fails, the verdict: printed even when the console report
    itself was not asked for."""
    counts = ", ".join(f"{n} {s}" for s, n in result.counts().items() if n) or "no findings"
    active = sum(1 for f in result.findings if f.kind == "active")
    where = f" on {result.target}" if result.target else ""
    budget = f", {result.requests}/{result.budget} requests" if not result.audit_only else ""
    console.print(
        f"scan{where}: {counts} ({active} active) in {result.duration:.1f} s{budget}"
        + (" [budget spent: scan stopped early]" if result.budget_exhausted else ""),
        markup=False,
        highlight=False,
    )
    failing = result.failing(fail_on)
    if failing:
        console.print(
            f"FAILED: {len(failing)} findings at or above {fail_on.value}",
            style="bold red",
            markup=False,
            highlight=False,
        )
