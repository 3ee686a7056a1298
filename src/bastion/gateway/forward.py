"""What the gateway sends upstream and what it passes back: pure header policy.

Request side: hop-by-hop headers are dropped (RFC 9110 §7.6.1, including every name listed in
``Connection``), ``X-Forwarded-*`` are set by us from what the transport layer decided (a
client cannot plant them), identity headers ``x-bastion-*`` carry the authenticated principal
(any client-sent ``x-bastion-*`` is removed first), and the credential itself is hidden from
the upstream unless the route says otherwise. Response side: hop-by-hop and framing headers
are dropped; the front end sets its own framing.
"""

from __future__ import annotations

from urllib.parse import quote

from bastion.core.exchange import Exchange, Header, Headers, Principal

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
# Set by us, never passed through from the client.
_OURS = frozenset(
    {
        "host",
        "content-length",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
        "forwarded",
        "x-request-id",
    }
)
_CREDENTIALS = frozenset({"authorization", "x-api-key"})
RESPONSE_DROP = HOP_BY_HOP | {"content-length"}
_SAFE = " !#$%&'()*+,-./:;<=>?@[]^_`{|}~"


def header_safe(value: str) -> str:
    """``value`` made safe for a header line: control characters and non-latin-1 characters
    are percent-encoded, so a claim such as ``sub: "x\\r\\nX-Admin: 1"`` cannot inject a header."""
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe=_SAFE + "0123456789")


def connection_tokens(headers: Headers) -> frozenset[str]:
    """Header names the client listed in ``Connection`` (hop-by-hop by declaration)."""
    values = headers.get_all("connection")
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


_SKIP = HOP_BY_HOP | _OURS
_SKIP_HIDING = _SKIP | _CREDENTIALS


def identity_headers(principal: Principal) -> str:
    """The ``x-bastion-*`` header lines that tell the upstream who called (computed once per
    principal object: the verified-token cache and the API-key index hand out the same one)."""
    block = principal.upstream_headers
    if block is None:
        lines = [
            f"x-bastion-auth: {principal.kind}\r\n"
            f"x-bastion-subject: {header_safe(principal.subject)}\r\n"
        ]
        if principal.client_id:
            lines.append(f"x-bastion-client-id: {header_safe(principal.client_id)}\r\n")
        if principal.scopes:
            lines.append(f"x-bastion-scopes: {header_safe(' '.join(sorted(principal.scopes)))}\r\n")
        if principal.kind == "api_key" and principal.key_id:
            lines.append(f"x-bastion-key-id: {header_safe(principal.key_id)}\r\n")
        block = "".join(lines)
        object.__setattr__(principal, "upstream_headers", block)  # a cache, not state
    return block


def _client_headers(items: list[Header], skip: frozenset[str], listed: frozenset[str]) -> list[str]:
    return [
        f"{name}: {value}\r\n"
        for name, value in items
        if name not in skip and name not in listed and not name.startswith("x-bastion-")
    ]


# What upstream_request_head does with a client header, by name (cached per name).
_PASS, _SKIP_IT, _HOST, _CONNECTION, _CREDENTIAL = "pass", "skip", "host", "connection", "cred"
_ACTIONS: dict[str, str] = {}
_FORWARDED_HOST: dict[str, str] = {}  # Host value -> its x-forwarded-host line
_CACHE_MAX = 4096


def _action(name: str) -> str:
    if name == "host":
        act = _HOST
    elif name == "connection":
        act = _CONNECTION
    elif name in _SKIP or name.startswith("x-bastion-"):
        act = _SKIP_IT
    elif name in _CREDENTIALS:
        act = _CREDENTIAL
    else:
        act = _PASS
    if len(_ACTIONS) >= _CACHE_MAX:
        _ACTIONS.clear()
    _ACTIONS[name] = act
    return act


def upstream_request_head(
    ex: Exchange,
    target: str,
    host_header: str,
    hide_credentials: bool,
    body_length: int,
    trusted_proxies: int,
) -> bytes:
    """The request line and headers sent upstream, ending with the blank line.

    ``X-Forwarded-For`` is the peer address alone when no proxy is trusted (a client-sent list
    is dropped), else the received list plus the peer address.
    """
    req = ex.request
    principal = ex.principal
    hiding = hide_credentials and principal is not None
    skip = _SKIP_HIDING if hiding else _SKIP
    parts = [f"{req.method} {target} HTTP/1.1\r\nhost: {host_header}\r\n"]
    append = parts.append
    host = None
    listing = False
    actions = _ACTIONS
    for name, value in req.headers.items:
        act = actions.get(name)
        if act is None:
            act = _action(name)
        if act is _PASS:
            append(f"{name}: {value}\r\n")
        elif act is _CREDENTIAL:
            if not hiding:
                append(f"{name}: {value}\r\n")
        elif act is _HOST:
            if host is None:
                host = value
        elif act is _CONNECTION:
            listing = True
        # _SKIP_IT: hop-by-hop, ours, or x-bastion-*: never from the client
    if listing:
        # Names the client declared hop-by-hop in Connection are not forwarded either.
        listed = connection_tokens(req.headers) - _SKIP
        if listed:
            parts[1:] = _client_headers(req.headers.items, skip, listed)
    if trusted_proxies:
        # Behind trusted proxies: keep the list they built, append the hop we saw.
        received = ", ".join(req.headers.get_all("x-forwarded-for"))
        xff = f"{received}, {req.peer_ip}" if received else req.peer_ip
    else:
        xff = req.peer_ip
    parts.append(
        f"x-forwarded-for: {xff}\r\n"
        f"x-forwarded-proto: {'https' if req.tls else 'http'}\r\n"
        f"x-request-id: {ex.request_id}\r\n"
    )
    if host:
        line = _FORWARDED_HOST.get(host)
        if line is None:
            line = f"x-forwarded-host: {header_safe(host)}\r\n"
            if len(_FORWARDED_HOST) >= _CACHE_MAX:
                _FORWARDED_HOST.clear()
            _FORWARDED_HOST[host] = line
        parts.append(line)
    if principal is not None:
        parts.append(identity_headers(principal))
    if body_length or req.method in ("POST", "PUT", "PATCH"):
        parts.append(f"content-length: {body_length}\r\n\r\n")
    else:
        parts.append("\r\n")
    return "".join(parts).encode("latin-1")


HEADER_NAME_CACHE: dict[bytes, str] = {}
HEADER_NAME_CACHE_MAX = 4096


def header_name(raw: bytes) -> str:
    """A raw header name as a lower-case str, from a bounded cache (names repeat endlessly)."""
    name = HEADER_NAME_CACHE.get(raw)
    if name is None:
        name = raw.decode("latin-1").lower()
        if len(HEADER_NAME_CACHE) < HEADER_NAME_CACHE_MAX:
            HEADER_NAME_CACHE[raw] = name
    return name


#: Connection values that name no other header (the usual ones): nothing more to drop.
_PLAIN_CONNECTION = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"keep-alive, close", b"upgrade"}
)


def response_headers_from_upstream(raw: list[tuple[bytes, bytes]]) -> Headers:
    """Upstream response headers as :class:`Headers`, minus hop-by-hop and framing headers."""
    items: list[tuple[str, str]] = []
    listed: set[str] | None = None
    names = HEADER_NAME_CACHE
    for name, value in raw:
        lname = names.get(name) or header_name(name)
        if lname in RESPONSE_DROP:
            if lname == "connection" and value not in _PLAIN_CONNECTION:
                if listed is None:
                    listed = set()
                listed.update(t.strip().lower() for t in value.decode("latin-1").split(","))
            continue
        items.append((lname, value.decode("latin-1")))
    if listed:
        items = [(k, v) for k, v in items if k not in listed]
    return Headers(items)
