"""``bastion scan``: the API security scanner for CI (see docs/scanner.md).

Exit codes: 0 nothing at or above ``--fail-on``; 1 findings at or above it; 2 a usage or
target error (one line, never a traceback).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from bastion.cli.common import CliFailure
from bastion.scan.auth import ADMIN, AuthConfig, load_auth
from bastion.scan.baseline import load_baseline
from bastion.scan.client import parse_rate
from bastion.scan.errors import ScanError, ScanUsageError, TargetError
from bastion.scan.model import Severity
from bastion.scan.report import FORMATS, write_reports
from bastion.scan.report.console import make_console, print_result, print_summary
from bastion.scan.runner import ProgressHook, ScanResult, run_audit, run_scan
from bastion.scan.session import ScanOptions
from bastion.scan.spec import load_scan_spec

__all__ = ["scan"]

log = logging.getLogger("bastion.scan")


def _formats(text: str) -> list[str]:
    names = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise ScanUsageError(
            f"--format: unknown {bad[0]!r} (use {', '.join(FORMATS)})"
            if bad
            else "--format: name at least one format"
        )
    return names


def _with_admin(auth: AuthConfig, admin: str | None) -> AuthConfig:
    if admin is None or admin == ADMIN:
        return auth
    if admin not in auth.identities:
        raise ScanUsageError(f"--admin: no identity {admin!r} in the auth file")
    ids = dict(auth.identities)
    ids[ADMIN] = ids.pop(admin)
    return AuthConfig(identities=ids, login=auth.login)


def _progress(console: Console) -> tuple[Progress | None, ProgressHook]:
    """A rich progress bar on a terminal; one line per started check elsewhere (CI logs)."""
    if console.is_terminal:
        bar = Progress(
            TextColumn("[bold]scanning[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=True,
        )
        task = bar.add_task("", total=None)

        def hook(total: int, done: int, what: str) -> None:
            bar.update(task, total=total, completed=done, description=what)

        return bar, hook
    last = {"check": ""}

    def line_hook(total: int, done: int, what: str) -> None:
        check = what.split(" ", 1)[0]
        if check != last["check"]:
            last["check"] = check
            console.print(f"[{done}/{total}] {check}", markup=False, highlight=False)

    return None, line_hook


def scan(
    spec: Annotated[str, typer.Option("--spec", help="OpenAPI document: a file or URL.")],
    target: Annotated[
        str | None, typer.Option("--target", help="Base URL of the API to scan.")
    ] = None,
    auth: Annotated[
        Path | None, typer.Option("--auth", help="scan-auth.yaml: the identities to use.")
    ] = None,
    admin: Annotated[
        str | None,
        typer.Option(
            "--admin",
            help="Identity in the auth file to use as the administrator "
            "(default: the one named 'admin').",
        ),
    ] = None,
    budget: Annotated[int, typer.Option(min=1, max=1_000_000, help="Request budget.")] = 2000,
    rate: Annotated[str, typer.Option(help="Request rate, e.g. 20/s or 600/min.")] = "20/s",
    timeout: Annotated[float, typer.Option(min=0.5, max=300, help="Seconds per request.")] = 10.0,
    fmt: Annotated[
        str, typer.Option("--format", help="Comma-separated: console,sarif,junit,json,html.")
    ] = "console",
    out: Annotated[Path, typer.Option("--out", help="Directory for report files.")] = Path(
        "scan-report"
    ),
    fail_on: Annotated[
        str,
        typer.Option(
            "--fail-on", help="Exit 1 on findings at or above: critical, high, medium, low, info."
        ),
    ] = "high",
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="Accepted findings (a JSON report, SARIF, or fingerprints one per line).",
        ),
    ] = None,
    audit_only: Annotated[
        bool, typer.Option("--audit-only", help="Only the static contract audit.")
    ] = False,
    allow_account_mutation: Annotated[
        bool,
        typer.Option(
            "--allow-account-mutation",
            help="Also call operations that change credentials or accounts.",
        ),
    ] = False,
    checks: Annotated[
        str | None, typer.Option("--checks", help="Only these check ids (comma-separated).")
    ] = None,
    unsafe_no_verify_tls: Annotated[
        bool,
        typer.Option("--unsafe-no-verify-tls", help="Do not verify the target's TLS certificate."),
    ] = False,
) -> None:
    """Scan an API for the OWASP API Top 10 and audit its OpenAPI contract."""
    console = make_console()
    # httpx logs every request at INFO: thousands of lines that would bury the report.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        formats = _formats(fmt)
        threshold = Severity.parse(fail_on)
        per_second = parse_rate(rate)
    except ValueError as exc:
        raise CliFailure(f"--fail-on: {exc}", 2) from None
    except ScanUsageError as exc:
        raise CliFailure(str(exc), 2) from None
    try:
        result = _run(
            spec,
            target,
            auth,
            admin,
            budget,
            per_second,
            timeout,
            audit_only,
            allow_account_mutation,
            checks,
            unsafe_no_verify_tls,
            console,
        )
        if baseline is not None:
            result.apply_baseline(load_baseline(baseline))
        written = write_reports(result, formats, out, threshold)
    except (ScanUsageError, TargetError) as exc:
        raise CliFailure(str(exc), 2) from None
    except ScanError as exc:
        raise CliFailure(str(exc), 2) from None
    except OSError as exc:
        raise CliFailure(f"--out: {exc.strerror or exc}", 2) from None
    if "console" in formats:
        print_result(console, result, threshold)
    else:
        print_summary(console, result, threshold)
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False)
    if result.failing(threshold):
        raise typer.Exit(1)


def _run(
    spec_source: str,
    target: str | None,
    auth_path: Path | None,
    admin: str | None,
    budget: int,
    rate: float,
    timeout: float,
    audit_only: bool,
    allow_account_mutation: bool,
    check_ids: str | None,
    unsafe_no_verify_tls: bool,
    console: Console,
) -> ScanResult:
    spec = load_scan_spec(spec_source)
    if audit_only:
        return run_audit(spec)
    if target is None:
        raise ScanUsageError("--target is required (or use --audit-only)")
    if auth_path is None:
        raise ScanUsageError("--auth is required (or use --audit-only)")
    auth = _with_admin(load_auth(auth_path), admin)
    options = ScanOptions(
        budget=budget,
        rate=rate,
        timeout=timeout,
        allow_account_mutation=allow_account_mutation,
        verify_tls=not unsafe_no_verify_tls,
    )
    if unsafe_no_verify_tls:
        log.warning("--unsafe-no-verify-tls: the target's TLS certificate is not verified")
    selected = None
    if check_ids:
        from bastion.scan.checks import registered_checks

        wanted = {c.strip() for c in check_ids.split(",") if c.strip()}
        known = {c.id: c for c in registered_checks()}
        unknown = sorted(wanted - set(known))
        if unknown:
            raise ScanUsageError(
                f"--checks: unknown check {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        selected = [known[c] for c in sorted(wanted)]
    bar, hook = _progress(console)

    async def go() -> ScanResult:
        return await run_scan(spec, target, auth, options, checks=selected, progress=hook)

    if bar is not None:
        with bar:
            return asyncio.run(go())
    return asyncio.run(go())
