"""The interface between the scan runner and the checks: :class:`Check` and :class:`ScanContext`.

How to write a check
====================

One module per check under ``bastion/scan/checks/`` (``bola.py``, ``authn.py`` …). Every
module of the package is imported by the registry, so a new file is all it takes::

    from bastion.scan.checks import register
    from bastion.scan.checks.base import USER_A, USER_B, Check, ScanContext
    from bastion.scan.model import Confidence, Severity
    from bastion.scan.spec import ScanOperation

    @register
    class Bola(Check):
        id = "bola"                     # stable: goes into every fingerprint
        title = "Broken object level authorization"
        owasp = "API1"                  # key of bastion.scan.model.OWASP
        cwe = "CWE-639"
        remediation = "Check on every request that the object belongs to the caller."
        needs = frozenset({USER_A, USER_B})   # skipped (and said so) when one is missing
        order = 10                      # lower runs earlier; account-locking checks run last

        def applies_to(self, op: ScanOperation) -> bool:
            return op.method == "GET" and bool(op.params_in("path"))

        async def run_operation(self, ctx: ScanContext, op: ScanOperation) -> None:
            path = ctx.fill_path(op, {"invoice_id": "7"})
            mine = await ctx.send("GET", path, identity=USER_A, operation=op)
            theirs = await ctx.send("GET", path, identity=USER_B, operation=op)
            if mine.ok and theirs.ok and theirs.body == mine.body:
                ctx.report(self.finding(
                    ctx, op, "user_b reads user_a's invoice",
                    severity=Severity.HIGH, confidence=Confidence.CERTAIN,
                    evidence=(mine, theirs), key="read",
                ))

The runner calls, per check, :meth:`Check.run_once` (target-wide probes: CORS, inventory,
login attacks) and then :meth:`Check.run_operation` for every operation
:meth:`Check.applies_to` accepts; the progress bar advances per call. A check keeps no state
between scans (the runner makes a fresh instance per scan) and may keep state between its own
calls within one scan (``run_once`` runs first).

What the context offers
-----------------------

* ``ctx.spec`` — the document: ``ctx.spec.operations`` (:class:`~bastion.scan.spec.
  ScanOperation`: ``method``, ``path`` template, ``label``, ``params_in("path")``,
  ``body_schema``, ``response_schema(status)``, ``is_admin_like``, ``is_public``,
  ``security``, ``raw`` …), ``ctx.spec.match(method, path)``,
  ``ctx.spec.documented_methods(path)``, ``ctx.spec.document`` (raw).
* ``await ctx.send(method, path, identity=USER_A | USER_B | ADMIN | ANONYMOUS | <name>,
  params=, headers=, json=, data=, content=, timeout=, operation=, from_root=,
  follow_redirects=, authenticate=)`` → :class:`~bastion.scan.client.Reply` (``status``,
  ``headers``, ``body``, ``text``, ``json()`` (None if not JSON), ``elapsed`` seconds,
  ``ok``). ``path`` is concrete and relative to the API base (the spec's server path is
  prefixed); ``from_root=True`` sends it relative to the target origin instead (inventory
  probes like ``/.env``). ``identity`` adds that identity's credentials (logging in when
  needed, again on expiry or a 401); ``ANONYMOUS`` adds none; with ``authenticate=False``
  the identity is only a label and you pass your own ``headers`` (forged tokens). Headers you
  pass win over the identity's.
* ``ctx.has(name)``, ``ctx.identity(name)`` (``user_id``, ``username``, ``password``,
  ``uses_token``, ``token`` — the current bearer token, after ``await ctx.token(name)``).
* ``ctx.auth.login`` — the login endpoint of scan-auth.yaml (:class:`~bastion.scan.auth.
  LoginSpec`: ``path``, ``method``, ``format``, field names, ``token_path``) or None.
* ``ctx.fill_path(op, {"id": "7"})`` → the concrete path (other parameters from their schema
  examples); ``ctx.sample_body(op)`` → a body valid for the operation's JSON schema.
* ``ctx.canary`` — the SSRF listener (or None): ``token = ctx.canary.new_token()``,
  ``ctx.canary.url(token)``, ``await ctx.canary.wait(token, seconds=1.0)`` → hit or None. It
  listens on 127.0.0.1: ``ctx.target_is_local`` says whether the target can reach it.
* ``ctx.ledger`` — objects the scanner created. ``POST`` answers with a ``Location`` header
  or a JSON ``id`` are recorded automatically; ``ctx.ledger.record(path, op.label, identity)``
  for anything else. ``ctx.ledger.owns(path)``. Ledger paths are relative to the target URL
  with the spec's base path: ``ctx.api_path(path)``.
* Tests: :func:`bastion.scan.session.open_session` builds a context over an in-process ASGI
  app (``transport=httpx.ASGITransport(app)``).
* ``ctx.redactor.add(secret)`` — register another secret of ours (a forged token stays
  readable, a cracked key should not).

Budget and safety
-----------------

* Every request counts against the global budget (default 2000) and the rate limit (default
  20/s: a 60 s scan is at most ~1200 requests *for all checks together*, so aim for a few
  dozen per check plus a handful per operation). Before a burst, ask
  ``ctx.can_spend(n)`` and skip (``ctx.skip(self, reason)``) if not. When the budget runs out
  :class:`~bastion.scan.errors.BudgetExhausted` propagates and the runner stops the scan.
* :meth:`ScanContext.send` enforces the safety policy (:mod:`bastion.scan.safety`): it raises
  :class:`~bastion.scan.errors.SafetyRefused` (nothing sent, nothing spent) for account
  mutations without ``--allow-account-mutation`` and for ``PUT``/``PATCH``/``DELETE`` on
  objects the scanner did not create. Ask first with ``ctx.allowed(method, path)`` or catch it.
  Create the objects you want to write to or delete (``POST`` as ``USER_A``), then use them.
* :class:`~bastion.scan.errors.RequestFailed` (timeout, connection reset) is raised for no
  answer: catch it when it is a signal (time-based probes), otherwise let it propagate — the
  runner records the check's operation as errored and goes on.
* Off-origin URLs are refused (:class:`~bastion.scan.errors.OffOrigin`).

Findings
--------

``self.finding(ctx, op, detail, severity=, confidence=, evidence=(reply, …), key=, title=,
owasp=, cwe=, remediation=)`` builds a :class:`~bastion.scan.model.Finding` with the class's
defaults and a redacted reproduction of each reply (our tokens shortened, bodies cut), and
``ctx.report(finding)`` records it. ``op`` may be None for target-wide findings. ``key`` must
not contain run-specific values (server-minted ids, tokens, timings): it separates findings of
one check on one operation (a parameter name, a property, a header) and goes into the stable
fingerprint. Report only what you can show; say how sure you are with ``confidence``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote, urljoin, urlsplit

from bastion.scan.auth import ADMIN, ANONYMOUS, USER_A, USER_B, AuthConfig, Identity
from bastion.scan.canary import Canary
from bastion.scan.client import UNSET, Reply, ScanClient, origin_of
from bastion.scan.errors import SafetyRefused, ScanUsageError
from bastion.scan.model import Confidence, Exchange, Finding, Severity
from bastion.scan.redact import Redactor, excerpt
from bastion.scan.safety import Decision, Ledger, SafetyPolicy
from bastion.scan.sample import sample_value
from bastion.scan.spec import ScanOperation, ScanSpec

__all__ = [
    "ADMIN",
    "ANONYMOUS",
    "USER_A",
    "USER_B",
    "Check",
    "ScanContext",
    "Skip",
]


_BODY_LIMIT = 2048


@dataclass(frozen=True, slots=True)
class Skip:
    """A check (or one of its operations) that did not run, and why."""

    check: str
    reason: str
    operation: str | None = None


class Check:
    """Base class of every check; see the module docstring for how to write one."""

    id: ClassVar[str] = ""
    title: ClassVar[str] = ""
    owasp: ClassVar[str] = ""
    cwe: ClassVar[str] = ""
    remediation: ClassVar[str] = ""
    #: Identities without which the check cannot run (it is skipped and reported as such).
    needs: ClassVar[frozenset[str]] = frozenset({USER_A})
    #: Lower runs earlier. Checks that may lock accounts or disturb the target run last (>= 90).
    order: ClassVar[int] = 50
    #: Default severity of this check's findings when ``finding()`` is not told otherwise.
    severity: ClassVar[Severity] = Severity.MEDIUM

    def applies_to(self, op: ScanOperation) -> bool:
        """Whether :meth:`run_operation` should be called for ``op`` (default: never)."""
        return False

    async def run_once(self, ctx: ScanContext) -> None:
        """Target-wide probes; runs before any :meth:`run_operation` of this check."""

    async def run_operation(self, ctx: ScanContext, op: ScanOperation) -> None:
        """Probes for one operation."""

    def finding(
        self,
        ctx: ScanContext,
        op: ScanOperation | str | None,
        detail: str,
        *,
        severity: Severity | None = None,
        confidence: Confidence = Confidence.FIRM,
        evidence: tuple[Reply | Exchange, ...] = (),
        key: str = "",
        title: str | None = None,
        owasp: str | None = None,
        cwe: str | None = None,
        remediation: str | None = None,
        notes: tuple[str, ...] = (),
    ) -> Finding:
        """A finding with this check's defaults and redacted evidence. ``op``: the
        operation, an operation label ("GET /x" for undocumented endpoints) or None;
        ``notes[i]`` annotates ``evidence[i]`` (e.g. "as user_b")."""
        label = op.label if isinstance(op, ScanOperation) else op
        exchanges = tuple(
            e if isinstance(e, Exchange) else ctx.exchange(e, notes[i] if i < len(notes) else "")
            for i, e in enumerate(evidence)
        )
        return Finding(
            check=self.id,
            title=title or self.title,
            owasp=owasp or self.owasp,
            cwe=cwe or self.cwe,
            severity=severity or self.severity,
            confidence=confidence,
            operation=label,
            detail=ctx.redactor.redact(detail),
            remediation=remediation or self.remediation,
            evidence=exchanges,
            key=key,
        )


@dataclass
class ScanContext:
    """Everything a check may use during one scan (see the module docstring)."""

    spec: ScanSpec
    client: ScanClient
    auth: AuthConfig
    identities: Mapping[str, Identity]
    safety: SafetyPolicy
    ledger: Ledger
    redactor: Redactor
    canary: Canary | None = None
    findings: list[Finding] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    # -- identities --------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """Whether the identity is configured (``ANONYMOUS`` always is)."""
        return name == ANONYMOUS or name in self.identities

    def identity(self, name: str) -> Identity:
        found = self.identities.get(name)
        if found is None:
            raise ScanUsageError(f"identity {name!r} is not configured in scan-auth.yaml")
        return found

    async def token(self, name: str) -> str | None:
        """The identity's current bearer token (logging in if needed), None for API-key and
        static-header identities."""
        ident = self.identity(name)
        if not ident.uses_token:
            return None
        await ident.credentials()
        return ident.token

    @property
    def target_is_local(self) -> bool:
        """Whether the target runs on this machine (loopback): only then can it reach the
        canary, so an SSRF check against a remote target should say it could not test."""
        from bastion.openapi.loader import is_loopback

        return is_loopback(urlsplit(self.client.origin).hostname or "")

    # -- requests ----------------------------------------------------------------------------
    def api_path(self, path: str) -> str:
        """``path`` with the spec's server base path prefixed, unless ``--target`` already
        ends with it (``--target https://api.example/v1`` with ``servers: [{url: /v1}]``)."""
        if not path.startswith("/"):
            path = "/" + path
        base = self.spec.base_path
        if base and self.client.prefix.endswith(base):
            return path
        return base + path

    def allowed(self, method: str, path: str, operation: ScanOperation | None = None) -> Decision:
        """The safety policy's decision for a concrete API path (no request sent)."""
        op = operation
        if op is None:
            op, _ = self.spec.match(method, path)
        text = f"{op.operation_id or ''} {op.summary}" if op else ""
        return self.safety.decide(
            method, self.api_path(path), template=op.path if op else None, text=text
        )

    def can_spend(self, n: int) -> bool:
        """Whether ``n`` more requests fit in the budget."""
        return self.client.budget.remaining >= n

    async def send(
        self,
        method: str,
        path: str,
        *,
        identity: str = USER_A,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        json: Any = UNSET,
        data: dict[str, str] | None = None,
        content: bytes | str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the HTTP timeout
        operation: ScanOperation | None = None,
        from_root: bool = False,
        follow_redirects: bool = False,
        authenticate: bool = True,
    ) -> Reply:
        """Send one request as ``identity`` (see the module docstring). Raises SafetyRefused,
        BudgetExhausted, RequestFailed, OffOrigin."""
        method = method.upper()
        full = path if from_root else self.api_path(path)
        decision = self._decide(method, full, path, operation, from_root)
        if not decision.allowed:
            raise SafetyRefused(f"{method} {path}: {decision.reason}")
        ident = None
        if identity != ANONYMOUS:
            ident = self.identity(identity)
        # The same request again after a re-login: one argument list serves both sends.
        args = (
            ident,
            method,
            full,
            params,
            headers,
            json,
            data,
            content,
            timeout,
            follow_redirects,
            authenticate,
            identity,
        )
        reply = await self._send_as(*args)
        if reply.status == 401 and ident is not None and authenticate and ident.may_relogin():
            await ident.refresh()
            reply = await self._send_as(*args)
        if method == "POST" and reply.status in (200, 201) and not from_root:
            self._record_created(reply, full, operation, identity)
        if method == "DELETE" and reply.ok:
            self.ledger.mark_deleted(full)
        return reply

    def _decide(
        self, method: str, full: str, path: str, operation: ScanOperation | None, from_root: bool
    ) -> Decision:
        op = operation
        if op is None and not from_root:
            op, _ = self.spec.match(method, path)
        text = f"{op.operation_id or ''} {op.summary}" if op else ""
        return self.safety.decide(method, full, template=op.path if op else None, text=text)

    async def _send_as(
        self,
        ident: Identity | None,
        method: str,
        full: str,
        params: Any,
        headers: Mapping[str, str] | None,
        json: Any,
        data: dict[str, str] | None,
        content: bytes | str | None,
        timeout: float | None,  # noqa: ASYNC109 - the HTTP timeout
        follow_redirects: bool,
        authenticate: bool,
        label: str,
    ) -> Reply:
        merged: list[tuple[str, str]] = []
        query: dict[str, Any] = {}
        given = {k.lower() for k in (headers or {})}
        if ident is not None and authenticate:
            creds, query = await ident.credentials()
            merged = [(k, v) for k, v in creds if k.lower() not in given]
        merged.extend((headers or {}).items())
        if query:  # an API key in the query: added to the check's own parameters
            if params is None or isinstance(params, Mapping):
                params = {**query, **dict(params or {})}
            else:
                given_names = {str(k) for k, _v in params}
                params = [*params, *((k, v) for k, v in query.items() if k not in given_names)]
        return await self.client.request(
            method,
            full,
            params=params,
            headers=merged,
            json=json,
            data=data,
            content=content,
            timeout=timeout,
            follow_redirects=follow_redirects,
            identity=label,
        )

    def _record_created(
        self, reply: Reply, full: str, op: ScanOperation | None, identity: str
    ) -> None:
        """Record what a successful POST created: its ``Location`` (same origin only), else
        the collection path plus the JSON ``id``. Ledger paths are relative to the target URL,
        like the paths :meth:`send` decides on."""
        label = op.label if op else f"POST {full}"
        location = reply.headers.get("location")
        if location:
            absolute = urljoin(reply.url, location)
            try:
                same_origin = origin_of(absolute) == self.client.origin
            except ValueError:
                same_origin = False
            if same_origin:
                path = urlsplit(absolute).path
                prefix = self.client.prefix
                if prefix and path.startswith(prefix + "/"):
                    path = path[len(prefix) :]
                self.ledger.record(path, label, identity)
                return
        doc = reply.json()
        if isinstance(doc, dict):
            oid = doc.get("id")
            if isinstance(oid, str | int) and not isinstance(oid, bool) and str(oid):
                collection = urlsplit(full).path.rstrip("/")
                self.ledger.record(collection + "/" + quote(str(oid), safe=""), label, identity)

    # -- building blocks ---------------------------------------------------------------------
    def fill_path(self, op: ScanOperation, values: Mapping[str, Any] | None = None) -> str:
        """The concrete path of ``op`` (relative to the API base), parameters from ``values``
        or else their schema's example/default/type."""
        values = values or {}
        path = op.path
        for p in op.params_in("path"):
            value = values[p.name] if p.name in values else sample_value(p.schema)
            path = path.replace("{" + p.name + "}", quote(str(value), safe=""))
        return path

    def sample_body(self, op: ScanOperation, *, all_properties: bool = False) -> Any:
        """A JSON body for ``op`` (None if it takes none): required properties (all with
        ``all_properties``) filled from examples/defaults/types."""
        schema = op.body_schema
        if schema is None:
            return None
        return sample_value(schema, all_properties=all_properties)

    def exchange(self, reply: Reply, note: str = "") -> Exchange:
        """A redacted, shortened :class:`Exchange` for a report."""
        red = self.redactor
        note = note or f"as {reply.identity}, {reply.elapsed:.2f} s"
        return Exchange(
            method=reply.method,
            url=red.redact(reply.url),
            request_headers=tuple(
                (k, red.header(k, v))
                for k, v in reply.request_headers
                if k.lower() not in ("user-agent", "accept-encoding", "connection", "accept")
            ),
            request_body=excerpt(
                red.redact(reply.request_body.decode("utf-8", "replace")), _BODY_LIMIT
            ),
            status=reply.status,
            response_headers=tuple((k, red.header(k, v)) for k, v in reply.headers.multi_items()),
            response_body=excerpt(red.redact(reply.text), _BODY_LIMIT),
            note=note,
        )

    # -- results -----------------------------------------------------------------------------
    def report(self, finding: Finding) -> None:
        """Record a finding (a second one with the same fingerprint is dropped)."""
        if any(f.fingerprint == finding.fingerprint for f in self.findings):
            return
        self.findings.append(finding)

    def skip(self, check: Check, reason: str, op: ScanOperation | None = None) -> None:
        """Say that (part of) a check did not run and why: shown in every report."""
        self.skips.append(Skip(check.id, reason, op.label if op else None))
