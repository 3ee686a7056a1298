"""Reporters: one module per format, each a pure function from a
:class:`~bastion.scan.runner.ScanResult` to text (the console reporter prints instead).

:func:`write_reports` writes the file formats into a directory: ``bastion-scan.sarif``,
``bastion-scan.junit.xml``, ``bastion-scan.json``, ``bastion-scan.html``.
"""

from __future__ import annotations

from pathlib import Path

from bastion.scan.model import Severity
from bastion.scan.report.html import render_html
from bastion.scan.report.json_report import render_json
from bastion.scan.report.junit import render_junit
from bastion.scan.report.sarif import render_sarif
from bastion.scan.runner import ScanResult

__all__ = ["FILE_FORMATS", "FORMATS", "write_reports"]

FILE_FORMATS = {
    "sarif": "bastion-scan.sarif",
    "junit": "bastion-scan.junit.xml",
    "json": "bastion-scan.json",
    "html": "bastion-scan.html",
}
FORMATS = ("console", *FILE_FORMATS)


def write_reports(
    result: ScanResult, formats: list[str], out_dir: Path, fail_on: Severity
) -> list[Path]:
    """Write every file format in ``formats`` to ``out_dir`` (created); the paths written."""
    wanted = [f for f in formats if f in FILE_FORMATS]
    if not wanted:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for fmt in wanted:
        if fmt == "sarif":
            text = render_sarif(result)
        elif fmt == "junit":
            text = render_junit(result, fail_on)
        elif fmt == "json":
            text = render_json(result, fail_on)
        else:
            text = render_html(result, fail_on)
        path = out_dir / FILE_FORMATS[fmt]
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
