"""The transport layer: who the client is, whether it may call, and response header hygiene.

First in the chain. On the way in it decides ``client_ip`` (socket address, or the hop our
trusted proxies appended to ``X-Forwarded-For``), applies the CIDR deny/allow lists and the body
size limit (the front end stops reading early; this is the second line), then the run-time IP
blocks every node shares (:mod:`bastion.core.ipblocks`). On the way out it
removes version-disclosing upstream headers and sets the security headers every response
carries. TLS itself (1.2 minimum) is terminated by the front end's SSL context.
"""

from __future__ import annotations

from bastion.core.clientip import IPAddress, IpRules, client_address
from bastion.core.exchange import Exchange, Header, Headers, Reply
from bastion.core.ipblocks import IpBlocklist
from bastion.errors import IpDenied, PayloadTooLarge
from bastion.gateway.layers.base import Layer
from bastion.gateway.layers.transport.config import TransportConfig

NOSNIFF: Header = ("x-content-type-options", "nosniff")
NO_STORE: Header = ("cache-control", "no-store")
NO_CACHE: Header = ("pragma", "no-cache")
_DEFAULTED = frozenset({"x-frame-options", "referrer-policy"})  # set unless the upstream did
_PEERS_MAX = 4096  # distinct socket addresses remembered (emptied when full)
FRAME_DENY: Header = ("x-frame-options", "DENY")
NO_REFERRER: Header = ("referrer-policy", "no-referrer")


class TransportLayer(Layer):
    """Client address, IP rules and body limit in; security headers out.

    ``check`` always sets ``ex.request.client_ip`` (also for requests it refuses, so the
    audit record names the caller) and records ``ex.annotations["xff_invalid"]`` when a
    malformed forwarded hop was ignored (client IP = peer; with IP rules the request is refused,
    as its real address is unknown). Refusals: ``IpDenied`` (403), ``PayloadTooLarge`` (413).
    """

    name = "transport"

    def __init__(self, config: TransportConfig, blocks: IpBlocklist | None = None) -> None:
        self._blocks = blocks if blocks is not None else IpBlocklist()
        self._trusted = config.trusted_proxies
        self._max_body = config.max_body_bytes
        self._rules = IpRules(config.ip_allow, config.ip_deny)
        self._peers: dict[str, tuple[str, IPAddress | None]] = {}
        strip = frozenset(h.strip().lower() for h in config.strip_response_headers)
        hsts: Header = ("strict-transport-security", config.hsts.header_value())
        # Headers removed from a response: the stripped ones plus every header we set ourselves,
        # so no response ever carries two copies of one (four cases: TLS x authenticated).
        self._plans: dict[tuple[bool, bool], tuple[frozenset[str], tuple[Header, ...]]] = {}
        for tls in (False, True):
            for authed in (False, True):
                added = [NOSNIFF]
                if tls:
                    added.append(hsts)
                if authed:
                    added += [NO_STORE, NO_CACHE]
                drop = strip | {name for name, _ in added}
                self._plans[(tls, authed)] = (drop, tuple(added))
        # Indexed by "authenticated" (False, True), one tuple per TLS-ness.
        self._plans_plain = (self._plans[(False, False)], self._plans[(False, True)])
        self._plans_tls = (self._plans[(True, False)], self._plans[(True, True)])

    def check(self, ex: Exchange) -> Reply | None:
        """Set the client IP; refuse denied addresses and oversized bodies."""
        req = ex.request
        if self._trusted:
            xff = req.headers.get_all("x-forwarded-for")
            client = client_address(req.peer_ip, xff, self._trusted)
            ip, address = client.ip, client.address
            if client.xff_invalid:
                ex.record_finding("xff_invalid", True)
                # The peer is then one of our proxies, likely inside ip_allow and outside
                # ip_deny: garbage in a hop must not buy the proxy's standing. Unknown → refused
                # by any rule.
                address = None
        else:
            # The socket address decides: the same few peers over and over, so remembered.
            peer = self._peers.get(req.peer_ip)
            if peer is None:
                client = client_address(req.peer_ip, [], 0)
                peer = (client.ip, client.address)
                if len(self._peers) >= _PEERS_MAX:
                    self._peers.clear()
                self._peers[req.peer_ip] = peer
            ip, address = peer
        req.client_ip = ip
        if not self._rules.empty:
            why = self._rules.check(address)
            if why is not None:
                return ex.deny(IpDenied(diagnosis=why))
        if not self._blocks.empty:
            why = self._blocks.check(address)
            if why is not None:
                return ex.deny(IpDenied(diagnosis=why))
        size = len(req.body)
        if size <= self._max_body:
            declared = req.headers.get("content-length")
            # A streamed body is refused before it is read. isascii: str.isdigit accepts '²',
            # which int() refuses; 18 digits: int() refuses > 4300 and nothing real is longer.
            if declared is not None and declared.isascii() and declared.isdigit():
                size = int(declared) if len(declared) <= 18 else 10**18
            if size <= self._max_body:
                return None
        return ex.deny(
            PayloadTooLarge(
                f"The request body is larger than {self._max_body} bytes.",
                diagnosis=f"body of {size} bytes exceeds max_body_bytes {self._max_body}",
            )
        )

    def on_response(self, ex: Exchange, status: int, headers: Headers) -> None:
        """Strip disclosing headers, set nosniff, HSTS (TLS), no-store (authenticated),
        and framing/referrer defaults the upstream did not choose. One pass over the headers."""
        plans = self._plans_tls if ex.request.tls else self._plans_plain
        drop, added = plans[ex.principal is not None]
        kept: list[Header] = []
        has_frame = has_referrer = False
        for item in headers.items:
            name = item[0]
            if name in drop:
                continue
            if name in _DEFAULTED:
                if name[0] == "x":
                    has_frame = True
                else:
                    has_referrer = True
            kept.append(item)
        kept += added
        if not has_frame:
            kept.append(FRAME_DENY)
        if not has_referrer:
            kept.append(NO_REFERRER)
        headers.items = kept
