"""Who is the client, and may it call: client IP from trusted proxy hops, and CIDR rules.

Pure functions of plain values. The socket address (``peer``) is the only address we observe
ourselves; every ``X-Forwarded-For`` entry is client input except the ones our own trusted
proxies appended. With ``trusted_proxies = n`` the client is the n-th entry from the right
(werkzeug's ``ProxyFix(x_for=n)``): a client may prepend anything, it never gets to choose the
hop our nearest proxies wrote. IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``, as dual-stack
sockets report IPv4 peers) are normalised to IPv4 everywhere, so a rule on ``10.0.0.0/8``
cannot be sidestepped by writing the same address the other way.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import NamedTuple

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_MAPPED = IPv6Network("::ffff:0:0/96")


def parse_ip(text: str) -> IPAddress | None:
    """The address in ``text`` (surrounding spaces allowed), IPv4-mapped IPv6 as IPv4;
    None when it is not exactly one IP address (ports, names and brackets are refused)."""
    parsed = _parse(text)
    return parsed[0] if parsed is not None else None


@lru_cache(maxsize=4096)
def _parse(text: str) -> tuple[IPAddress, str] | None:
    # Cached with its canonical text: str() of an address costs more than the whole lookup.
    try:
        addr = ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr, str(addr)


def normalize_network(net: IPNetwork) -> IPNetwork:
    """``::ffff:a.b.c.d/n`` (n ≥ 96) as the IPv4 network it covers; others unchanged."""
    if isinstance(net, IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return IPv4Network((mapped, net.prefixlen - 96))
    return net


class ClientAddress(NamedTuple):
    """The caller's address as the gateway decided it. ``address`` is None only when even
    the peer address is unusable; ``xff_invalid`` says a malformed hop was ignored."""

    ip: str
    address: IPAddress | None
    xff_invalid: bool = False


def forwarded_hops(xff_values: Iterable[str]) -> list[str]:
    """Every entry of all ``X-Forwarded-For`` header values, in order, blanks dropped."""
    return [h.strip() for v in xff_values for h in v.split(",") if h.strip()]


def client_address(peer: str, xff_values: list[str], trusted_proxies: int) -> ClientAddress:
    """Decide the client address from the socket ``peer`` and the ``X-Forwarded-For`` values.

    ``trusted_proxies = 0``: the peer is the client (headers ignored). ``n > 0``: the n-th hop
    from the right of all XFF values joined in order; with fewer hops, the leftmost; with none,
    the peer. A malformed chosen hop falls back to the peer with ``xff_invalid`` set.
    """
    peer_parsed = _parse(peer)
    if peer_parsed is None:
        fallback = ClientAddress(peer, None)
    else:
        fallback = ClientAddress(peer_parsed[1], peer_parsed[0])
    if trusted_proxies <= 0 or not xff_values:
        return fallback
    hops = forwarded_hops(xff_values)
    if not hops:
        return fallback
    chosen = _parse(hops[-trusted_proxies] if len(hops) >= trusted_proxies else hops[0])
    if chosen is None:
        return ClientAddress(fallback.ip, fallback.address, xff_invalid=True)
    return ClientAddress(chosen[1], chosen[0])


class IpRules:
    """CIDR allow/deny lists compiled once. Deny wins; a non-empty allow list admits only
    its networks; an unknown address (None) is refused whenever any rule exists (fail closed).
    """

    def __init__(self, allow: Iterable[IPNetwork] = (), deny: Iterable[IPNetwork] = ()) -> None:
        allow_n = [normalize_network(n) for n in allow]
        deny_n = [normalize_network(n) for n in deny]
        self._allow4, self._allow6 = _compile(allow_n)
        self._deny4, self._deny6 = _compile(deny_n)
        self.has_allow = bool(allow_n)
        self.empty = not allow_n and not deny_n

    def check(self, addr: IPAddress | None) -> str | None:
        """None when ``addr`` may call; otherwise why not (for the audit diagnosis)."""
        if self.empty:
            return None
        if addr is None:
            return "client address unknown"
        v4 = addr.version == 4
        value = int(addr)
        hit = _match(self._deny4 if v4 else self._deny6, value)
        if hit is not None:
            return f"{addr} is in ip_deny {hit}"
        if self.has_allow and _match(self._allow4 if v4 else self._allow6, value) is None:
            return f"{addr} is not in ip_allow"
        return None


_Compiled = tuple[tuple[int, int, str], ...]


def _compile(nets: list[IPNetwork]) -> tuple[_Compiled, _Compiled]:
    v4 = tuple((int(n.netmask), int(n.network_address), str(n)) for n in nets if n.version == 4)
    v6 = tuple((int(n.netmask), int(n.network_address), str(n)) for n in nets if n.version == 6)
    return v4, v6


def _match(nets: _Compiled, value: int) -> str | None:
    for mask, network, text in nets:
        if value & mask == network:
            return text
    return None
