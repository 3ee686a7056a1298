"""API9 improper inventory: undocumented endpoints from a wordlist, at the root and under the
API's first path segment, and version swaps of documented paths (``/v1/`` ↔ ``/v2/``, ``/v0/``
inserted). Reported only when the answer is unlike the target's ordinary not-found answer.
"""

from __future__ import annotations

import re

from bastion.scan.checks import register
from bastion.scan.checks._probe import like_not_found, not_found_baseline, path_for, send
from bastion.scan.checks.base import USER_A, Check, ScanContext
from bastion.scan.errors import RequestFailed
from bastion.scan.model import Confidence, Severity

__all__ = ["Inventory", "version_variants"]

WORDLIST = (
    "/debug",
    "/_debug",
    "/admin",
    "/internal",
    "/actuator",
    "/actuator/env",
    "/metrics",
    "/.env",
    "/swagger.json",
    "/openapi.json",
    "/api-docs",
    "/docs",
    "/graphql",
    "/console",
    "/server-status",
    "/.git/config",
    "/config.json",
    "/phpinfo.php",
    "/trace",
    "/heapdump",
)
_VERSION = re.compile(r"/v(\d+)(?=/|$)")


def version_variants(path: str) -> list[str]:
    """Other versions of a concrete path: swapped when it has one, inserted when not."""
    match = _VERSION.search(path)
    if match:
        current = match.group(1)
        return [
            path[: match.start()] + f"/v{n}" + path[match.end() :]
            for n in ("0", "1", "2", "3")
            if n != current
        ]
    head, sep, rest = path.lstrip("/").partition("/")
    if not sep:
        return [f"/v1/{head}"]
    return [f"/{head}/v1/{rest}", f"/{head}/v2/{rest}", f"/{head}/v0/{rest}"]


@register
class Inventory(Check):
    id = "inventory"
    title = "Improper inventory management"
    owasp = "API9"
    cwe = "CWE-1059"
    severity = Severity.MEDIUM
    remediation = (
        "Remove debug, legacy and undocumented endpoints, or document and protect them; "
        "retire old API versions."
    )
    order = 70

    async def run_once(self, ctx: ScanContext) -> None:
        documented = {op.path for op in ctx.spec.operations}
        first = {op.path.split("/")[1] for op in ctx.spec.operations if op.path.count("/") > 1}
        prefixes = ["", *sorted(f"/{p}" for p in first if "{" not in p)]
        base = ctx.spec.base_path
        for prefix in prefixes:
            baseline = await not_found_baseline(ctx, base + prefix)
            for word in WORDLIST:
                path = base + prefix + word
                if prefix + word in documented:
                    continue
                try:
                    reply = await send(ctx, "GET", path, identity=USER_A, from_root=True)
                except RequestFailed:
                    continue
                if not like_not_found(reply, baseline) and reply.status < 500:
                    ctx.report(
                        self.finding(
                            ctx,
                            f"GET {path}",
                            f"an undocumented endpoint answers {reply.status}",
                            confidence=Confidence.FIRM,
                            key=f"endpoint:{path}",
                            evidence=(reply,),
                            title="Undocumented endpoint",
                        )
                    )
        baseline = await not_found_baseline(ctx, base)
        for op in ctx.spec.operations:
            if op.method != "GET":
                continue
            concrete = await path_for(ctx, op)
            if concrete is None:
                continue
            for variant in version_variants(concrete):
                try:
                    reply = await send(ctx, "GET", base + variant, identity=USER_A, from_root=True)
                except RequestFailed:
                    continue
                if not like_not_found(reply, baseline) and reply.status < 500:
                    template = version_variants(op.path)[version_variants(concrete).index(variant)]
                    ctx.report(
                        self.finding(
                            ctx,
                            f"GET {template}",
                            f"another version of {op.path} is still "
                            f"served ({variant} answers {reply.status})",
                            confidence=Confidence.FIRM,
                            key=f"version:{template}",
                            evidence=(reply,),
                            title="Old or shadow API version served",
                        )
                    )
