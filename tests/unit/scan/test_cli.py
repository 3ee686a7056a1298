"""``bastion scan``: exit codes 0/1/2, one line on errors, reports written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from bastion.cli.main import main
from tests.unit.scan.conftest import AUTH, SPEC, LiveServer

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code: object = 0
    try:
        main(["scan", *argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return (code if isinstance(code, int) else 1), out, err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(SPEC))
    auth = tmp_path / "scan-auth.yaml"
    auth.write_text(yaml.safe_dump(AUTH))
    return {"spec": spec, "auth": auth, "out": tmp_path / "out"}


def test_audit_only_gate(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--spec", str(files["spec"]), "--audit-only", "--fail-on", "info"], capsys)
    assert code == 1
    assert "audit.id-path-param" in out
    code, out, _ = _run(["--spec", str(files["spec"]), "--audit-only"], capsys)
    assert code == 0  # audit findings stay below the default gate (high)
    assert "FAILED" not in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fail-on", "severe"], "--fail-on"),
        (["--format", "pdf"], "--format"),
        (["--rate", "fast"], "--rate"),
        (["--target", "http://127.0.0.1:9"], "--auth is required"),
        ([], "--target is required"),
        (["--target", "not-a-url", "--auth", "AUTH"], "--target"),
        (["--target", "http://127.0.0.1:9", "--auth", "AUTH", "--checks", "nope"], "unknown check"),
        (["--target", "http://127.0.0.1:9", "--auth", "AUTH", "--admin", "root"], "--admin"),
        (["--target", "http://127.0.0.1:9", "--auth", "AUTH"], "does not answer"),
        (["--audit-only", "--baseline", "MISSING"], "--baseline"),
    ],
)
def test_usage_and_target_errors_exit_2_with_one_line(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    extra = [str(files["auth"]) if x == "AUTH" else x for x in extra]
    extra = [str(files["out"] / "missing") if x == "MISSING" else x for x in extra]
    code, out, err = _run(["--spec", str(files["spec"]), *extra], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1


def test_bad_spec_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _run(["--spec", str(tmp_path / "none.yaml"), "--audit-only"], capsys)
    assert code == 2
    assert err.startswith("error: spec:")


def test_full_scan_against_a_live_target(
    app: Any, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with LiveServer(app) as live:
        code, out, err = _run(
            [
                "--spec",
                str(files["spec"]),
                "--target",
                live.url,
                "--auth",
                str(files["auth"]),
                "--format",
                "console,sarif,json,junit,html",
                "--out",
                str(files["out"]),
                "--budget",
                "400",
                "--rate",
                "200/s",
                "--fail-on",
                "critical",
            ],
            capsys,
        )
    assert code in (0, 1), err
    assert "Traceback" not in out + err
    assert f"scan on {live.url}" in out
    sarif = json.loads((files["out"] / "bastion-scan.sarif").read_text())
    assert jsonschema_rs.Draft7Validator(SCHEMA).is_valid(sarif)
    report = json.loads((files["out"] / "bastion-scan.json").read_text())
    assert 0 < report["requests"] <= 400
    assert report["failed"] is (code == 1)
    text = (files["out"] / "bastion-scan.json").read_text()
    assert "alice-pass-123" not in text  # our passwords never reach a report
    assert "bob-pass-456" not in text
    assert "1" in app.state.data["notes"]  # nobody deleted alice's seeded note
    # the same scan with its own report as baseline passes even at the lowest gate
    code, out, _ = _run(
        [
            "--spec",
            str(files["spec"]),
            "--audit-only",
            "--fail-on",
            "info",
            "--baseline",
            str(files["out"] / "bastion-scan.json"),
        ],
        capsys,
    )
    assert code == 0


def test_summary_printed_without_the_console_report(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        [
            "--spec",
            str(files["spec"]),
            "--audit-only",
            "--fail-on",
            "info",
            "--format",
            "json",
            "--out",
            str(files["out"]),
        ],
        capsys,
    )
    assert code == 1
    assert "FAILED:" in out
    assert "┃" not in out  # no table
    assert (files["out"] / "bastion-scan.json").exists()


def test_progress_bar_on_a_terminal_and_lines_elsewhere() -> None:
    from io import StringIO

    from rich.console import Console

    from bastion.cli.scan import _progress

    tty = Console(file=StringIO(), force_terminal=True, width=100)
    bar, hook = _progress(tty)
    assert bar is not None
    with bar:
        hook(4, 1, "bola")
        hook(4, 2, "bola GET /x/{id}")
    assert bar.tasks[0].completed == 2
    assert bar.tasks[0].total == 4
    buf = StringIO()
    plain = Console(file=buf, width=100)
    bar, hook = _progress(plain)
    assert bar is None
    for done, what in enumerate(["bola", "bola GET /x", "authn", "authn GET /x"], 1):
        hook(4, done, what)
    assert buf.getvalue().splitlines() == ["[1/4] bola", "[3/4] authn"]
