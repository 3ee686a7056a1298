"""API2 authentication, the token side: no token, a garbage token, ``alg: none``, the signature
stripped or altered with the claims kept, a weak HMAC key (a wordlist of common secrets plus
short numeric keys, bounded in time), and — once the key is known — an expired token and a
wrong ``iss``/``aud`` re-signed with it.

Each forged token is sent to one protected ``GET`` that answers user_a; it counts only when the
answer is a 2xx like user_a's own (a 429 or a different page proves nothing). Login-side tests
(enumeration, lockout, default credentials) live in :mod:`bastion.scan.checks.login`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
import warnings
from typing import Any

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from joserfc.util import urlsafe_b64decode

from bastion.scan.checks import register
from bastion.scan.checks._probe import path_for, send, throttled
from bastion.scan.checks.base import ANONYMOUS, USER_A, Check, ScanContext
from bastion.scan.client import Reply
from bastion.scan.model import Confidence, Severity
from bastion.scan.spec import ScanOperation

__all__ = ["Authn", "crack_hmac_key"]

#: Secrets people sign tokens with (frameworks' defaults, tutorials, placeholders).
WEAK_KEYS = (
    "secret",
    "secretkey",
    "secret-key",
    "secret_key",
    "jwt",
    "jwt-secret",
    "jwt_secret",
    "jwtsecret",
    "changeme",
    "change-me",
    "changeit",
    "password",
    "passw0rd",
    "123456",
    "1234567890",
    "key",
    "private",
    "default",
    "test",
    "testing",
    "dev",
    "development",
    "admin",
    "qwerty",
    "your-256-bit-secret",
    "your_jwt_secret",
    "mysecret",
    "my-secret",
    "my_secret",
    "supersecret",
    "super-secret",
    "topsecret",
    "s3cr3t",
    "token",
    "auth",
    "hmac",
    "hs256",
    "example",
    "letmein",
    "welcome",
    "notsecret",
    "insecure",
    "api",
    "apikey",
    "app",
    "application",
    "shhhhh",
    "keyboard cat",
    "gottacatchemall",
    "abc123",
)
HMAC_ALGS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
#: Numeric keys are tried up to this many digits, and for at most this many seconds.
MAX_DIGITS = 6
CRACK_SECONDS = 2.0


def crack_hmac_key(token: str, *, seconds: float = CRACK_SECONDS) -> bytes | None:
    """The HMAC key of ``token`` if it is a common secret or a short number, else None.
    joserfc reads the token; each guess is one HMAC, compared in constant time."""
    try:
        sig = jws.extract_compact(token.encode())
    except (JoseError, ValueError):
        return None
    digest = HMAC_ALGS.get(str(sig.protected.get("alg")))
    if digest is None:
        return None
    parts = sig.segments
    signing_input = parts["header"] + b"." + parts["payload"]
    try:
        wanted = urlsafe_b64decode(parts["signature"])
    except ValueError:
        return None
    deadline = time.monotonic() + seconds
    numbers = (str(n) for d in range(1, MAX_DIGITS + 1) for n in range(10 ** (d - 1), 10**d))
    for i, guess in enumerate(itertools.chain(WEAK_KEYS, ("0",), numbers)):
        key = guess.encode()
        if hmac.compare_digest(hmac.new(key, signing_input, digest).digest(), wanted):
            return key
        if i % 4096 == 0 and time.monotonic() > deadline:
            return None
    return None


def _sign(claims: dict[str, Any], key: bytes, alg: str) -> str:
    with warnings.catch_warnings():  # joserfc warns about short keys: they are the point
        warnings.simplefilter("ignore")
        return jwt.encode({"alg": alg, "typ": "JWT"}, claims, OctKey.import_key(key))


def _unsigned(claims: dict[str, Any]) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode(
            {"alg": "none", "typ": "JWT"},
            claims,
            None,  # type: ignore[arg-type]  # alg none takes no key
            algorithms=["none"],
        )


@register
class Authn(Check):
    id = "authn"
    title = "Broken authentication"
    owasp = "API2"
    cwe = "CWE-287"
    severity = Severity.HIGH
    remediation = (
        "Verify every token: an allow-list of algorithms (never 'none'), the signature, exp, iss "
        "and aud; sign with a random key of at least 256 bits kept out of the code."
    )
    order = 20

    async def run_once(self, ctx: ScanContext) -> None:
        target = await self._target(ctx)
        if target is None:
            ctx.skip(self, "no protected GET that user_a may call")
            return
        op, path, mine = target
        await self._no_token(ctx, op, path, mine)
        token = await ctx.token(USER_A) or _static_bearer(ctx)
        if token is None or token.count(".") != 2:
            ctx.skip(self, "user_a's credential is not a JWT: token forgery not tried")
            return
        payload = _claims_of(token)
        if not payload:
            ctx.skip(self, "user_a's token has no readable claims")
            return
        head, body, sig = token.split(".")
        flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
        # Three forgeries of user_a's own token, each tried the same way: one loop serves all.
        forgeries = (
            (
                _unsigned(payload),
                "alg-none",
                "a token with alg 'none' and no signature is accepted",
            ),
            (
                f"{head}.{body}.",
                "signature-stripped",
                "a token whose signature was removed is accepted",
            ),
            (
                f"{head}.{body}.{flipped}",
                "signature-altered",
                "a token whose signature was altered is accepted",
            ),
        )
        for forged, finding_key, detail in forgeries:
            await self._try(
                ctx, op, path, mine, forged, finding_key, detail, "CWE-347", Severity.CRITICAL
            )
        key = await asyncio.to_thread(crack_hmac_key, token)  # CPU-bound: off the loop
        if key is None:
            return
        ctx.redactor.add(key.decode("latin-1"), keep_prefix=False)
        alg = str(jws.extract_compact(token.encode()).protected.get("alg"))
        ctx.report(
            self.finding(
                ctx,
                op,
                f"user_a's token is signed with {alg} under a guessable key (a common secret or "
                "a short number): anyone can mint tokens for any user",
                severity=Severity.CRITICAL,
                confidence=Confidence.CERTAIN,
                key="weak-hmac-key",
                cwe="CWE-521",
                title="JWT signed with a weak HMAC key",
                evidence=(mine,),
            )
        )
        now = int(time.time())
        expired = {**payload, "iat": now - 7200, "exp": now - 3600}
        await self._try(
            ctx,
            op,
            path,
            mine,
            _sign(expired, key, alg),
            "expired",
            "a token that expired an hour ago is accepted",
            "CWE-613",
            Severity.HIGH,
        )
        foreign = {
            **payload,
            "iss": "https://issuer.bastion-scan.invalid",
            "aud": "https://audience.bastion-scan.invalid",
        }
        await self._try(
            ctx,
            op,
            path,
            mine,
            _sign(foreign, key, alg),
            "wrong-iss-aud",
            "a token from another issuer, for another audience, is accepted",
            "CWE-287",
            Severity.HIGH,
        )

    async def _target(self, ctx: ScanContext) -> tuple[ScanOperation, str, Reply] | None:
        for op in ctx.spec.operations:
            if op.method != "GET" or op.is_public:
                continue
            path = await path_for(ctx, op)
            if path is None:
                continue
            mine = await send(ctx, "GET", path, identity=USER_A, operation=op)
            if mine.ok:
                return op, path, mine
        return None

    async def _no_token(self, ctx: ScanContext, op: ScanOperation, path: str, mine: Reply) -> None:
        anon = await send(ctx, "GET", path, identity=ANONYMOUS, operation=op)
        if _accepted(anon, mine):
            ctx.report(
                self.finding(
                    ctx,
                    op,
                    "the operation answers without any credential as it does for user_a",
                    confidence=Confidence.CERTAIN,
                    key="no-token",
                    evidence=(mine, anon),
                    notes=("as user_a", "without a credential"),
                    cwe="CWE-306",
                )
            )
        await self._try(
            ctx,
            op,
            path,
            mine,
            "bastion-scan-garbage-token",
            "garbage-token",
            "a random string is accepted as a bearer token",
            "CWE-287",
            Severity.HIGH,
        )

    async def _try(
        self,
        ctx: ScanContext,
        op: ScanOperation,
        path: str,
        mine: Reply,
        token: str,
        key: str,
        detail: str,
        cwe: str,
        severity: Severity,
    ) -> None:
        reply = await send(
            ctx,
            "GET",
            path,
            identity=USER_A,
            authenticate=False,
            operation=op,
            headers={"Authorization": f"Bearer {token}"},
        )
        if _accepted(reply, mine):
            ctx.report(
                self.finding(
                    ctx,
                    op,
                    detail,
                    severity=severity,
                    confidence=Confidence.CERTAIN,
                    key=key,
                    cwe=cwe,
                    evidence=(mine, reply),
                    notes=("with user_a's token", f"with a forged token ({key})"),
                )
            )


def _static_bearer(ctx: ScanContext) -> str | None:
    """user_a's bearer token when scan-auth.yaml gives it as a static header."""
    for name, value in ctx.identity(USER_A).spec.headers:
        scheme, _, token = value.partition(" ")
        if name.lower() == "authorization" and scheme.lower() == "bearer" and token:
            return token.strip()
    return None


def _accepted(reply: Reply, mine: Reply) -> bool:
    """A forged request got what user_a gets: same 2xx status and the same body."""
    if throttled(reply) or not reply.ok or reply.status != mine.status:
        return False
    return reply.body == mine.body or (reply.json() is not None and reply.json() == mine.json())


def _claims_of(token: str) -> dict[str, Any]:
    """The token's claims read without checking the signature (we only copy them)."""
    try:
        payload = jws.extract_compact(token.encode()).payload
    except (JoseError, ValueError):
        return {}
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}
