"""Compile the gateway's per-request modules with mypyc: ``build/native`` (``make native``).

The result is a full copy of the ``bastion`` package in which the modules of
:data:`NATIVE_MODULES` are C extensions (mypyc, from the same type-checked sources; the ``.py``
files stay beside them and are what ``src/`` holds). Python prefers an extension to a source
file of the same name, so a process started with ``PYTHONPATH=build/native`` runs the compiled
front end; without it, everything runs from ``src/`` as plain Python. ``make test`` runs the
whole suite on ``src/`` (with coverage) and the gateway's tests again on this build;
``bench/gateway.py`` starts the gateway on it when it exists (``docs/benchmarks.md``).

    .venv/bin/python tools/build_native.py [OUT]     # default build/native, ~2 minutes
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Modules on the per-request path of the gateway (front end, pool, header policy, exchange
#: values, the route runtime and the layers every request meets), compiled together.
NATIVE_MODULES = [
    "bastion/audit/record.py",
    "bastion/audit/redact.py",
    "bastion/audit/writer.py",
    "bastion/core/clientip.py",
    "bastion/core/clock.py",
    "bastion/core/exchange.py",
    "bastion/core/gcra.py",
    "bastion/core/ipblocks.py",
    "bastion/core/paths.py",
    "bastion/core/revocation.py",
    "bastion/gateway/forward.py",
    "bastion/openapi/spec.py",
    "bastion/gateway/runtime.py",
    "bastion/gateway/server.py",
    "bastion/gateway/services.py",
    "bastion/gateway/upstream.py",
    "bastion/gateway/layers/authn/apikeys.py",
    "bastion/gateway/layers/authn/jwt.py",
    "bastion/gateway/layers/authn/layer.py",
    "bastion/gateway/layers/authz/layer.py",
    "bastion/gateway/layers/cors/layer.py",
    "bastion/gateway/layers/openapi/layer.py",
    "bastion/gateway/layers/ratelimit/backend.py",
    "bastion/gateway/layers/ratelimit/layer.py",
    "bastion/gateway/layers/response_filter/layer.py",
    "bastion/gateway/layers/response_filter/walk.py",
    "bastion/gateway/layers/transport/layer.py",
]

#: A module whose ``__file__`` proves the build is the one imported.
PROBE = "bastion.gateway.server"


def build(out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(
        ROOT / "src" / "bastion",
        tmp / "bastion",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"),
    )
    env = {**os.environ, "MYPYC_OPT_LEVEL": "3"}
    result = subprocess.run(  # noqa: S603 - our own interpreter and module list
        [sys.executable, "-m", "mypyc", *NATIVE_MODULES],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"mypyc failed (exit {result.returncode}); nothing replaced in {out}")
    shutil.rmtree(tmp / "build", ignore_errors=True)  # generated C and objects
    probe = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", f"import {PROBE} as m; print(m.__file__)"],
        env={**os.environ, "PYTHONPATH": str(tmp)},
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or not probe.stdout.strip().endswith(".so"):
        sys.stderr.write(probe.stderr[-4000:])
        raise SystemExit(f"the compiled build does not import: {probe.stdout.strip()}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    (out / ".built").write_text("\n".join(NATIVE_MODULES) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "build" / "native"
    build(out.resolve())
    print(f"compiled {len(NATIVE_MODULES)} modules into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
