"""API8 security misconfiguration: CORS that reflects an arbitrary origin (or ``null``, or a
suffix/prefix trick on the target's host) with credentials; stack traces, debugger pages and
SQL errors in error answers (classified by signature); missing HSTS on HTTPS; TLS below 1.2;
version numbers in ``Server``/``X-Powered-By`` and kin; methods that work but are not in the
spec (tried only on objects the scanner created). Default credentials: see ``login``.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import warnings
from urllib.parse import urlsplit

from bastion.scan.checks import register
from bastion.scan.checks._probe import path_for, send, throttled
from bastion.scan.checks.base import USER_A, Check, ScanContext
from bastion.scan.client import Reply
from bastion.scan.errors import RequestFailed, SafetyRefused
from bastion.scan.model import Confidence, Severity
from bastion.scan.spec import ScanOperation

__all__ = ["Misconfig", "error_signature", "old_tls_version"]

SIGNATURES = (
    ("python-traceback", re.compile(r"Traceback \(most recent call last\)")),
    ("java-stack-trace", re.compile(r"\n\s+at [\w$.]+\([\w$]+\.java:\d+\)")),
    ("dotnet-stack-trace", re.compile(r"\n\s+at System\.[\w.]+\(")),
    ("node-stack-trace", re.compile(r"\n\s+at .+ \(/[^)]+\.js:\d+:\d+\)")),
    ("php-error", re.compile(r"(Fatal error|Warning): .+ on line \d+")),
    ("werkzeug-debugger", re.compile(r"Werkzeug Debugger|__debugger__")),
    ("django-debug", re.compile(r"You're seeing this error because you have DEBUG = True")),
    (
        "sql-error",
        re.compile(
            r"(sqlite3\.\w*Error|SQL syntax.*MySQL|PG::\w+Error|psycopg2?\.\w+|ORA-\d{5}|"
            r"SQLSTATE\[|Unclosed quotation mark|syntax error at or near)"
        ),
    ),
)
VERSION_HEADERS = (
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-runtime",
    "x-version",
    "x-generator",
    "x-backend-server",
)
_VERSION = re.compile(r"\d+\.\d+")
EVIL_ORIGIN = "https://evil.bastion-scan.invalid"


async def old_tls_version(host: str, port: int, timeout: float = 5.0) -> str | None:  # noqa: ASYNC109
    """The protocol a server agrees to when offered only TLS 1.0 and 1.1 (None: it refuses,
    or does not answer). The offer needs OpenSSL's security level 0, where those live now."""
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is what we test
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # we test the protocol, not the certificate
        try:
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            return None
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context), timeout
        )
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    version = writer.get_extra_info("ssl_object").version()
    writer.close()
    return str(version)


def error_signature(text: str) -> str | None:
    """The kind of leak in an error page (``python-traceback``, ``sql-error`` …), or None."""
    for name, pattern in SIGNATURES:
        if pattern.search(text):
            return name
    return None


@register
class Misconfig(Check):
    id = "misconfig"
    title = "Security misconfiguration"
    owasp = "API8"
    cwe = "CWE-16"
    severity = Severity.MEDIUM
    remediation = "Harden the defaults: see the finding's detail."
    order = 80  # after the checks that create objects (undocumented methods use them)

    def applies_to(self, op: ScanOperation) -> bool:
        return op.method in ("POST", "PUT", "PATCH") and op.json_body is not None

    async def run_once(self, ctx: ScanContext) -> None:
        probe = await self._probe_target(ctx)
        if probe is None:
            ctx.skip(self, "no GET that user_a may call: CORS and headers not checked")
        else:
            op, path, reply = probe
            self._versions(ctx, reply)
            await self._cors(ctx, op, path)
            if urlsplit(ctx.client.base_url).scheme == "https":
                if "strict-transport-security" not in reply.headers:
                    ctx.report(
                        self.finding(
                            ctx,
                            None,
                            "HTTPS answers carry no Strict-Transport-Security header",
                            severity=Severity.LOW,
                            key="hsts",
                            cwe="CWE-319",
                            evidence=(reply,),
                            title="Missing HSTS",
                            remediation="Send Strict-Transport-Security with max-age >= 1 year.",
                        )
                    )
                await self._old_tls(ctx)
        await self._undocumented_methods(ctx)

    async def _probe_target(self, ctx: ScanContext) -> tuple[ScanOperation, str, Reply] | None:
        for op in ctx.spec.operations:
            if op.method != "GET":
                continue
            path = await path_for(ctx, op)
            if path is None:
                continue
            reply = await send(ctx, "GET", path, identity=USER_A, operation=op)
            if reply.ok:
                return op, path, reply
        return None

    def _versions(self, ctx: ScanContext, reply: Reply) -> None:
        for name in VERSION_HEADERS:
            value = reply.headers.get(name)
            if value and _VERSION.search(value):
                ctx.report(
                    self.finding(
                        ctx,
                        None,
                        f"{name}: {value} discloses software versions",
                        severity=Severity.LOW,
                        key=f"version-header:{name}",
                        cwe="CWE-200",
                        evidence=(reply,),
                        title="Version disclosure in a response header",
                        confidence=Confidence.CERTAIN,
                        remediation="Remove version numbers from response headers.",
                    )
                )

    async def _cors(self, ctx: ScanContext, op: ScanOperation, path: str) -> None:
        """Arbitrary and ``null`` origins first; then, for each origin the target does allow
        (its own, the spec's servers'), that origin's host used as a prefix and as a suffix of
        an attacker's host — what a ``startswith``/``endswith``/unanchored regex check lets in."""
        tries = [
            ("cors-reflect", EVIL_ORIGIN, "an arbitrary origin"),
            ("cors-null", "null", "the 'null' origin (sandboxed frames, files)"),
        ]
        for key, origin, what in tries:
            if await self._cors_try(ctx, op, path, key, origin, what):
                return  # the broadest one found says it all
        for allowed in await self._allowed_origins(ctx, op, path):
            parts = urlsplit(allowed)
            host = parts.netloc
            bypasses = (
                (
                    "cors-prefix-match",
                    f"{parts.scheme}://{host}.bastion-scan.invalid",
                    f"an attacker's host that starts with {host}",
                ),
                (
                    "cors-suffix-match",
                    f"{parts.scheme}://bastion-scan{host}",
                    f"an attacker's host that ends with {host}",
                ),
            )
            for key, origin, what in bypasses:
                if await self._cors_try(ctx, op, path, key, origin, what):
                    return

    async def _allowed_origins(self, ctx: ScanContext, op: ScanOperation, path: str) -> list[str]:
        candidates = [ctx.client.origin]
        for server in ctx.spec.document.get("servers") or []:
            url = server.get("url") if isinstance(server, dict) else None
            if isinstance(url, str) and "://" in url:
                parts = urlsplit(url)
                candidates.append(f"{parts.scheme}://{parts.netloc}")
        allowed: list[str] = []
        for origin in dict.fromkeys(candidates):
            reply = await send(
                ctx, "GET", path, identity=USER_A, operation=op, headers={"Origin": origin}
            )
            if reply.headers.get("access-control-allow-origin") == origin:
                allowed.append(origin)
        return allowed

    async def _cors_try(
        self, ctx: ScanContext, op: ScanOperation, path: str, key: str, origin: str, what: str
    ) -> bool:
        reply = await send(
            ctx, "GET", path, identity=USER_A, operation=op, headers={"Origin": origin}
        )
        allowed = reply.headers.get("access-control-allow-origin")
        creds = reply.headers.get("access-control-allow-credentials", "").lower() == "true"
        if allowed != origin or not creds:
            return False
        ctx.report(
            self.finding(
                ctx,
                None,
                f"CORS allows {what} with credentials: that site can read the "
                "answers with the user's cookies or credentials",
                severity=Severity.HIGH,
                confidence=Confidence.CERTAIN,
                key=key,
                cwe="CWE-942",
                evidence=(reply,),
                title="Permissive CORS",
                remediation="Allow an exact list of origins; never reflect the Origin header "
                "or accept 'null'.",
            )
        )
        return True

    async def _old_tls(self, ctx: ScanContext) -> None:
        parts = urlsplit(ctx.client.base_url)
        version = await old_tls_version(parts.hostname or "", parts.port or 443)
        if version is not None:
            ctx.report(
                self.finding(
                    ctx,
                    None,
                    f"the server completes a {version} handshake",
                    severity=Severity.MEDIUM,
                    confidence=Confidence.CERTAIN,
                    key="tls-version",
                    cwe="CWE-326",
                    title="TLS below 1.2 accepted",
                    remediation="Accept TLS 1.2 and 1.3 only.",
                )
            )

    async def run_operation(self, ctx: ScanContext, op: ScanOperation) -> None:
        path = await path_for(ctx, op)
        if path is None:
            return
        try:
            reply = await send(
                ctx,
                op.method,
                path,
                identity=USER_A,
                operation=op,
                content=b'{"bastion-scan": ',
                headers={"content-type": "application/json"},
            )
        except (SafetyRefused, RequestFailed):
            return
        kind = error_signature(reply.text) if reply.status >= 400 else None
        if kind is not None:
            ctx.report(
                self.finding(
                    ctx,
                    op,
                    f"a malformed body gets a {reply.status} showing a {kind}",
                    confidence=Confidence.CERTAIN,
                    key="error-disclosure",
                    cwe="CWE-209",
                    evidence=(reply,),
                    title="Stack trace or internal error in the response",
                    remediation="Answer errors with a generic message; log the details.",
                )
            )

    async def _undocumented_methods(self, ctx: ScanContext) -> None:
        for obj in list(ctx.ledger.objects):
            if obj.deleted:
                continue
            rel = obj.path[len(ctx.spec.base_path) :] if ctx.spec.base_path else obj.path
            documented = ctx.spec.documented_methods(rel)
            if not documented:
                continue
            for method in ("PUT", "PATCH", "DELETE"):
                if method in documented:
                    continue
                try:
                    reply = await send(ctx, method, rel, identity=obj.identity, json={})
                except (SafetyRefused, RequestFailed):
                    continue
                if reply.ok and not throttled(reply):
                    template = next(
                        (o.path for o in ctx.spec.operations if ctx.spec.match("GET", rel)[0] is o),
                        rel,
                    )
                    ctx.report(
                        self.finding(
                            ctx,
                            f"{method} {template}",
                            f"{method} works on {template} although "
                            "the contract does not declare it",
                            confidence=Confidence.CERTAIN,
                            key=f"method:{method}",
                            cwe="CWE-650",
                            evidence=(reply,),
                            title="Undocumented method works",
                            remediation="Route only the documented methods (405 for the rest).",
                        )
                    )
