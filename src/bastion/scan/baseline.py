"""``--baseline FILE``: fingerprints of accepted findings, suppressed from the gate.

Accepted files: the scanner's own JSON report (``findings[].fingerprint`` and
``suppressed[].fingerprint``), a SARIF file of ours (``partialFingerprints``), a JSON list of
fingerprints or ``{"fingerprints": [...]}``, or text with one fingerprint per line (``#``
comments). Anything else is a usage error: a baseline that silently accepts nothing would
look like a pass.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from bastion.scan.errors import ScanUsageError

__all__ = ["load_baseline"]

_FP = re.compile(r"^[0-9a-f]{32}$")
_MAX_BYTES = 50 * 1024 * 1024


def _from_json(doc: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(doc, list):
        found |= {x for x in doc if isinstance(x, str)}
    elif isinstance(doc, dict):
        if isinstance(doc.get("fingerprints"), list):
            found |= {x for x in doc["fingerprints"] if isinstance(x, str)}
        for key in ("findings", "suppressed"):
            for f in doc.get(key) or []:
                if isinstance(f, dict) and isinstance(f.get("fingerprint"), str):
                    found.add(f["fingerprint"])
        for run in doc.get("runs") or []:
            for r in (run.get("results") or []) if isinstance(run, dict) else []:
                pf = r.get("partialFingerprints") if isinstance(r, dict) else None
                if isinstance(pf, dict) and isinstance(pf.get("bastionFingerprint/v1"), str):
                    found.add(pf["bastionFingerprint/v1"])
    return found


def load_baseline(path: Path) -> frozenset[str]:
    """The accepted fingerprints in ``path`` (ScanUsageError when unreadable or invalid)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScanUsageError(f"--baseline: {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_BYTES:
        raise ScanUsageError(f"--baseline: {path}: larger than {_MAX_BYTES} bytes")
    stripped = data.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            found = _from_json(orjson.loads(data))
        except orjson.JSONDecodeError:
            raise ScanUsageError(f"--baseline: {path}: invalid JSON") from None
    else:
        text = data.decode("utf-8", "replace")
        found = {ln.split("#", 1)[0].strip() for ln in text.splitlines()} - {""}
    bad = sorted(f for f in found if not _FP.match(f))
    if bad:
        raise ScanUsageError(f"--baseline: {path}: not a fingerprint: {bad[0][:40]!r}")
    return frozenset(found)
