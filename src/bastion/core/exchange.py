"""Plain values that travel through the gateway chain.

Nothing here does I/O. Front ends (our HTTP server, the ASGI adapter) build a
:class:`RequestView`; layers read it, set ``exchange.principal`` and annotations, and either
let the exchange continue or answer it with a :class:`Reply`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion.errors import PROBLEM_CONTENT_TYPE, BastionError

Header = tuple[str, str]


class Headers:
    """Request or response header list with lower-cased names (latin-1 decoded values).

    Keeps order and duplicates, as HTTP does. ``get`` returns the first value.
    """

    def __init__(self, items: list[Header] | None = None) -> None:
        self.items: list[Header] = items if items is not None else []

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (lower-case), or ``default``."""
        for k, v in self.items:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (lower-case), in order."""
        return [v for k, v in self.items if k == name]

    def add(self, name: str, value: str) -> None:
        self.items.append((name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` by one value."""
        self.remove(name)
        self.items.append((name, value))

    def remove(self, *names: str) -> None:
        """Drop every header whose name is in ``names`` (lower-case)."""
        self.items = [(k, v) for k, v in self.items if k not in names]

    def __contains__(self, name: object) -> bool:
        return any(k == name for k, _ in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:  # never print values: they may hold secrets
        return f"Headers({[k for k, _ in self.items]!r})"


@dataclass
class RequestView:
    """What a layer may know about a request. All values are untrusted client input,
    except ``peer_ip`` (the socket address) and ``tls`` (set by the front end)."""

    method: str
    path: str  # raw path as sent, without query string
    query: str  # raw query string, without '?'
    headers: Headers
    peer_ip: str
    tls: bool = False
    body: bytes = b""
    http_version: str = "1.1"
    # Filled by the transport layer from peer_ip and trusted X-Forwarded-For hops.
    client_ip: str = ""

    @property
    def host(self) -> str:
        """The Host header without a port, lower-cased ('' if absent)."""
        h = self.headers.get("host") or ""
        if h.startswith("["):
            return h[: h.find("]") + 1].lower()
        return h.split(":", 1)[0].lower()

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass(frozen=True)
class Principal:
    """Who is calling, once authenticated. ``kind`` is ``jwt`` or ``api_key``."""

    kind: str
    subject: str
    client_id: str | None = None
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    issuer: str | None = None
    key_id: str | None = None  # API key id (never the secret) or JWT jti
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # The x-bastion-* lines sent upstream, computed on first use (gateway.forward).
    upstream_headers: str | None = field(default=None, compare=False, hash=False, repr=False)


@dataclass
class Reply:
    """A response the gateway produces itself (it never reaches the upstream)."""

    status: int
    headers: list[Header] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def problem(cls, err: BastionError, instance: str | None = None) -> Reply:
        """A problem+json reply for ``err``, with the error's own headers."""
        headers = [("content-type", PROBLEM_CONTENT_TYPE), *err.headers]
        return cls(err.status, headers, err.problem_bytes(instance))


@dataclass
class Exchange:
    """Per-request state. Created by the front end, discarded after the audit record.

    Layers hold no per-request state on ``self``; everything about one request lives here.
    """

    request: RequestView
    request_id: str
    started: float  # time.monotonic() at the first byte of the request
    started_wall: float  # time.time() at the same moment, for @timestamp
    route_name: str = ""
    principal: Principal | None = None
    # Headers every response to this exchange carries (HSTS, CORS, RateLimit ...),
    # whether it comes from the upstream or from a Reply.
    response_headers: list[Header] = field(default_factory=list)
    # Outcome for the audit record.
    status: int = 0
    decision: str = "allow"  # allow | deny | error
    reason: str = ""  # stable code of the deciding error, e.g. "authn.failed"
    diagnosis: str = ""  # internal detail, e.g. "jwt: token expired" (never a secret)
    bytes_out: int = 0
    upstream_status: int | None = None
    upstream_ms: float | None = None
    annotations: dict[str, Any] = field(default_factory=dict)
    # What the audit record shows under bastion.findings: shadow mode's would-be refusals,
    # report-only findings, ownership denials (see :meth:`record_finding`). None: nothing.
    findings: dict[str, Any] | None = None

    def record_finding(self, key: str, value: Any) -> None:
        """Annotate ``key`` and show it in the audit record (redacted there). ``value``: a
        string, number, boolean, or a dict/list of them; the record reads it at the end of
        the exchange, so a dict may still be filled in after this call."""
        self.annotations[key] = value
        found = self.findings
        if found is None:
            self.findings = {key: value}
        else:
            found[key] = value

    def deny(self, err: BastionError) -> Reply:
        """Record ``err`` as this exchange's decision and return its problem reply."""
        self.decision = "deny" if err.status < 500 else "error"
        self.reason = err.code
        self.diagnosis = err.diagnosis or err.detail or ""
        return Reply.problem(err, instance=f"urn:bastion:request:{self.request_id}")
