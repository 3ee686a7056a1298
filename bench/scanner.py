"""`bastion scan` against Schemathesis on the vulnerable example API: time, requests, and which
planted flaws (examples/ground_truth.yaml) each tool finds.

    .venv/bin/python bench/scanner.py                       # both tools, vulnerable mode
    .venv/bin/python bench/scanner.py --json scanner.json   # also write the numbers
    .venv/bin/python bench/scanner.py --secure              # + our scan of the secure mode
    .venv/bin/python bench/scanner.py --skip-schemathesis

What it does, each tool against a freshly started `examples/saas_api.py --vulnerable` on a free
loopback port (a fresh process per tool, so one tool's side effects — created users, a failed
login streak — never help or hurt the other):

1. **bastion scan**: `.venv/bin/bastion scan --spec examples/openapi.yaml --auth
   examples/scan-auth.yaml` with the default budget (2000) and rate (20/s), JSON report; the wall
   time of the whole command and the request count from the report.
2. **Schemathesis 4.32.5**, installed by this script into `bench/.venv-schemathesis` (its own
   venv, so the project's dependencies are untouched; git-ignored): `schemathesis run --checks
   all` with the same two users (user_a, user_b of scan-auth.yaml) logging in through a Web
   Fuzzing Commons auth file and listed as `peers` under `[auth.wfc]`, which enables its
   object-level-authorization check; JSON report.

Mapping findings to flaws: a flaw counts as found by `bastion scan` when a finding matches one of
the flaw's `scan` entries (check id and key). Schemathesis knows nothing of OWASP categories: one
of its failures counts for a flaw when it is on one of the flaw's operations and its kind is
evidence of the flaw's CWE (`ST_TYPES`): object-level authorization violation → BOLA (CWE-639);
response schema violation → data exposure (CWE-213/200/359); accepted invalid data → mass
assignment (CWE-915) or a parameter without a bound (CWE-770 with a query trigger); server error
→ error disclosure (CWE-209) only, not injection; undocumented method answered → CWE-650. Flaws
outside the contract (shadow endpoints, CORS, headers, login attacks) cannot be reached by a
contract-driven fuzzer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from bench.processes import Children, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
ST_VENV = BENCH / ".venv-schemathesis"
ST_VERSION = "4.32.5"
SPEC = ROOT / "examples" / "openapi.yaml"
AUTH = ROOT / "examples" / "scan-auth.yaml"
GROUND_TRUTH = ROOT / "examples" / "ground_truth.yaml"

#: Schemathesis failure types → the CWEs of the planted flaws they reveal when they are on one
#: of the flaw's operations. Deliberately narrow: a 500 on the export operation is not a command
#: injection finding, only a stack-trace one.
ST_TYPES: dict[str, set[str]] = {
    "ObjectLevelAuthorizationViolation": {"CWE-639"},
    "IgnoredAuth": {"CWE-306", "CWE-287"},
    "JsonSchemaError": {"CWE-213", "CWE-200", "CWE-359"},
    "AcceptedNegativeData": {"CWE-915", "CWE-770"},
    "ServerError": {"CWE-209"},
    "UnsupportedMethodResponse": {"CWE-650"},
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _owasp_code(text: str) -> str:
    return text.split(":", 1)[0].strip().upper()


def _start_api(children: Children, work: Path, name: str, vulnerable: bool) -> str:
    port = free_port()
    log = work / f"{name}.log"
    argv = [sys.executable, str(ROOT / "examples" / "saas_api.py"), "--port", str(port)]
    if vulnerable:
        argv.append("--vulnerable")
    proc = children.start(argv, log=log, cwd=ROOT)
    wait_for_port(port, proc, log)
    return f"http://127.0.0.1:{port}"


def run_bastion(target: str, out: Path) -> dict[str, Any]:
    """`bastion scan` as a user runs it; wall time includes process start-up."""
    argv = [
        str(ROOT / ".venv" / "bin" / "bastion"),
        "scan",
        "--spec",
        str(SPEC),
        "--target",
        target,
        "--auth",
        str(AUTH),
        "--format",
        "json",
        "--out",
        str(out),
        "--fail-on",
        "critical",
    ]
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    elapsed = time.monotonic() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"bastion scan exited {done.returncode}: {done.stderr.strip()}")
    report = json.loads((out / "bastion-scan.json").read_text())
    return {"seconds": elapsed, "report": report}


def ensure_schemathesis() -> Path:
    """bench/.venv-schemathesis with schemathesis==4.32.5 (created or repaired as needed)."""
    exe = ST_VENV / "bin" / "schemathesis"
    if exe.exists():
        got = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
        if ST_VERSION in got.stdout:
            return exe
    _log(f"installing schemathesis=={ST_VERSION} into {ST_VENV.relative_to(ROOT)} …")
    if not (ST_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(ST_VENV)], check=True)
    subprocess.run(
        [
            str(ST_VENV / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"schemathesis=={ST_VERSION}",
        ],
        check=True,
    )
    return exe


def _wfc_auth(auth: dict[str, Any]) -> dict[str, Any]:
    """user_a and user_b of scan-auth.yaml as a Web Fuzzing Commons auth document."""
    shared = auth.get("login") or {}
    entries = []
    for name in ("user_a", "user_b"):
        ident = auth["identities"][name]
        login = {**shared, **ident["login"]}
        scheme = login.get("scheme", "Bearer")
        entries.append(
            {
                "name": name,
                "loginEndpointAuth": {
                    "verb": login.get("method", "POST"),
                    "endpoint": login["path"],
                    "contentType": "application/json"
                    if login.get("format", "json") == "json"
                    else "application/x-www-form-urlencoded",
                    "payloadUserPwd": {
                        "username": login["username"],
                        "password": login["password"],
                        "usernameField": login.get("username_field", "username"),
                        "passwordField": login.get("password_field", "password"),
                    },
                    "token": {
                        "extractFrom": "body",
                        "extractSelector": "/"
                        + login.get("token_path", "access_token").replace(".", "/"),
                        "sendIn": "header",
                        "sendName": login.get("header", "Authorization"),
                        "sendTemplate": f"{scheme} {{token}}" if scheme else "{token}",
                    },
                },
            }
        )
    return {"auth": entries}


def run_schemathesis(exe: Path, target: str, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    auth = yaml.safe_load(AUTH.read_text())
    (work / "auth.json").write_text(json.dumps(_wfc_auth(auth), indent=2))
    (work / "schemathesis.toml").write_text(
        '[auth.wfc]\npath = "auth.json"\npeers = ["user_a", "user_b"]\n'
    )
    argv = [
        str(exe),
        "run",
        str(SPEC),
        "--url",
        target,
        "--checks",
        "all",
        "--report",
        "json",
        "--report-dir",
        str(work / "report"),
        "--no-color",
    ]
    start = time.monotonic()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=work,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    elapsed = time.monotonic() - start
    (work / "schemathesis.out").write_text(done.stdout + done.stderr)
    reports = sorted((work / "report").glob("json-*.json"))
    if not reports:
        raise RuntimeError(
            f"schemathesis wrote no report (exit {done.returncode}); "
            f"see {work / 'schemathesis.out'}"
        )
    return {"seconds": elapsed, "report": json.loads(reports[-1].read_text())}


def _ops(flaw: dict[str, Any]) -> set[str]:
    return {f"{o['method'].upper()} {o['path']}" for o in flaw.get("operations") or []}


def bastion_found(flaw: dict[str, Any], findings: list[dict[str, Any]]) -> list[str]:
    hits = []
    for want in flaw.get("scan") or []:
        for f in findings:
            if (
                f["kind"] == "active"
                and f["check"] == want.get("check")
                and ("key" not in want or f["key"] == want["key"])
            ):
                hits.append(f"{f['check']}:{f['key']}")
    return sorted(set(hits))


def _bound_flaw(flaw: dict[str, Any]) -> bool:
    """A CWE-770 flaw about a parameter's bound (limit=100000), not a burst or a body size."""
    trigger = flaw.get("trigger") or {}
    request = trigger.get("request") or {}
    return bool(request.get("query")) and not trigger.get("repeat")


def schemathesis_found(flaw: dict[str, Any], failures: list[dict[str, Any]]) -> list[str]:
    cwe = flaw.get("cwe", "")
    ops = _ops(flaw)
    hits = []
    for failure in failures:
        kind = failure.get("type", "")
        if cwe not in ST_TYPES.get(kind, set()):
            continue
        if kind == "AcceptedNegativeData" and cwe == "CWE-770" and not _bound_flaw(flaw):
            continue
        for op in failure.get("operations") or []:
            if op in ops:
                hits.append(f"{failure.get('code')} {failure.get('type')} on {op}")
    return sorted(set(hits))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="Also write the results as JSON.")
    parser.add_argument("--skip-schemathesis", action="store_true")
    parser.add_argument(
        "--secure",
        action="store_true",
        help="Also scan the secure mode with bastion scan (false positives).",
    )
    args = parser.parse_args(argv)
    flaws: list[dict[str, Any]] = yaml.safe_load(GROUND_TRUTH.read_text())["flaws"]
    results: dict[str, Any] = {"flaws": len(flaws)}
    with tempfile.TemporaryDirectory(prefix="bastion-bench-scan-") as tmp, Children() as kids:
        work = Path(tmp)
        target = _start_api(kids, work, "api-bastion", vulnerable=True)
        _log(f"bastion scan → {target}")
        ours = run_bastion(target, work / "bastion")
        findings = ours["report"]["findings"]
        results["bastion"] = {
            "seconds": round(ours["seconds"], 2),
            "requests": ours["report"]["requests"],
            "budget": ours["report"]["budget"],
            "active_findings": sum(1 for f in findings if f["kind"] == "active"),
            "audit_findings": sum(1 for f in findings if f["kind"] == "audit"),
            "found": {fl["id"]: bastion_found(fl, findings) for fl in flaws},
        }
        if args.secure:
            secure = _start_api(kids, work, "api-secure", vulnerable=False)
            _log(f"bastion scan (secure mode) → {secure}")
            clean = run_bastion(secure, work / "bastion-secure")
            active = [f for f in clean["report"]["findings"] if f["kind"] == "active"]
            results["bastion_secure"] = {
                "seconds": round(clean["seconds"], 2),
                "requests": clean["report"]["requests"],
                "active_findings": [f"{f['check']}:{f['key']} {f['operation']}" for f in active],
            }
        if not args.skip_schemathesis:
            exe = ensure_schemathesis()
            st_target = _start_api(kids, work, "api-schemathesis", vulnerable=True)
            _log(f"schemathesis {ST_VERSION} → {st_target}")
            theirs = run_schemathesis(exe, st_target, work / "schemathesis")
            report = theirs["report"]
            failures = report.get("failures") or []
            results["schemathesis"] = {
                "version": report.get("schemathesis_version"),
                "seconds": round(theirs["seconds"], 2),
                "test_cases": (report.get("test_cases") or {}).get("generated"),
                "failure_kinds": [f"{f.get('code')} {f.get('type')}" for f in failures],
                "auth": report.get("auth"),
                "found": {fl["id"]: schemathesis_found(fl, failures) for fl in flaws},
            }
    _print(flaws, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _print(flaws: list[dict[str, Any]], results: dict[str, Any]) -> None:
    ours = results["bastion"]
    theirs = results.get("schemathesis")
    width = max(len(f["id"]) for f in flaws)
    head = f"{'planted flaw':<{width}}  {'OWASP':<9}  {'bastion scan':<12}"
    print(head + ("  schemathesis" if theirs else ""))
    for fl in flaws:
        mark = "found" if ours["found"][fl["id"]] else "MISSED"
        row = f"{fl['id']:<{width}}  {_owasp_code(fl['owasp']):<9}  {mark:<12}"
        if theirs:
            row += "  " + ("found" if theirs["found"][fl["id"]] else "-")
        print(row)
    n = len(flaws)
    got = sum(1 for v in ours["found"].values() if v)
    print()
    print(
        f"bastion scan: {got}/{n} planted flaws in {ours['seconds']:.1f} s, "
        f"{ours['requests']} requests (budget {ours['budget']}), "
        f"{ours['active_findings']} active + {ours['audit_findings']} audit findings"
    )
    if "bastion_secure" in results:
        sec = results["bastion_secure"]
        print(
            f"bastion scan, secure mode: {len(sec['active_findings'])} active findings in "
            f"{sec['seconds']:.1f} s, {sec['requests']} requests"
            + (": " + "; ".join(sec["active_findings"]) if sec["active_findings"] else "")
        )
    if theirs:
        got_st = sum(1 for v in theirs["found"].values() if v)
        print(
            f"schemathesis {theirs['version']}: {got_st}/{n} planted flaws in "
            f"{theirs['seconds']:.1f} s, {theirs['test_cases']} test cases; failure kinds: "
            + ", ".join(theirs["failure_kinds"])
        )
        if theirs.get("auth"):
            print(f"schemathesis auth state: {json.dumps(theirs['auth'])}")


if __name__ == "__main__":
    sys.exit(main())
