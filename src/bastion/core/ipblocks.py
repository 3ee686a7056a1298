"""IP addresses and networks blocked at run time, for a time, on every gateway node.

An operator (``bastion ip block``, later the admin API and the detection engine) writes an
:class:`~bastion.store.base.IpBlock` to the store, which appends an ``ip.blocked`` change in the
same transaction; the change reaches every node by Redis push or by the change feed, and
:meth:`IpBlocklist.apply` adds it here. ``ip.unblocked`` lifts one before it ends. A node that
starts loads the active blocks with :meth:`IpBlocklist.load`.

Checked by the transport layer after the static ``ip_deny``/``ip_allow`` rules, for the client
address it decided (so a block names the real client behind trusted proxies, never the proxy).
The empty list costs one attribute test per request. Entries are kept until they expire (swept
lazily); single addresses are a dict lookup, networks a short scan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from ipaddress import ip_network
from typing import Any

from bastion.core.clientip import IPAddress, IPNetwork, normalize_network

log = logging.getLogger("bastion.ipblocks")

#: Longest block accepted from an event or the CLI: a year. Longer belongs in ``ip_deny``.
MAX_BLOCK_SECONDS = 366 * 86_400


def parse_network(text: str) -> IPNetwork:
    """``text`` (an address or a CIDR, host bits allowed) as a normalised network; IPv4-mapped
    IPv6 becomes IPv4. ValueError, with a message fit for a user, when it is neither."""
    raw = text.strip()
    if not raw or any(c.isspace() for c in raw):
        raise ValueError(f"{text!r} is not an IP address or CIDR network")
    try:
        net = ip_network(raw, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
    return normalize_network(net)


class IpBlocklist:
    """The node's current run-time blocks. Use from one event loop.

    ``now`` is the wall clock (blocks end at a wall-clock time that every node shares).
    """

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._hosts: dict[IPAddress, tuple[float, str]] = {}
        self._nets: dict[IPNetwork, tuple[float, str]] = {}
        self.empty = True

    def __len__(self) -> int:
        return len(self._hosts) + len(self._nets)

    def _refresh(self) -> None:
        self.empty = not self._hosts and not self._nets

    def block(self, net: IPNetwork, until: float, reason: str = "") -> None:
        """Block ``net`` until ``until`` (wall-clock seconds); a longer existing block wins."""
        net = normalize_network(net)
        if net.prefixlen == net.max_prefixlen:
            table: dict[Any, tuple[float, str]] = self._hosts
            key: Any = net.network_address
        else:
            table, key = self._nets, net
        current = table.get(key)
        if current is None or current[0] < until:
            table[key] = (until, reason)
        self._refresh()

    def unblock(self, net: IPNetwork) -> bool:
        """Lift the block of exactly ``net``; False when there was none."""
        net = normalize_network(net)
        if net.prefixlen == net.max_prefixlen:
            found = self._hosts.pop(net.network_address, None) is not None
        else:
            found = self._nets.pop(net, None) is not None
        self._refresh()
        return found

    def load(self, blocks: Iterable[Any]) -> None:
        """Replace the list with ``blocks`` (records with ``cidr``, ``expires_at``, ``reason``,
        ``lifted_at``), skipping lifted ones and any whose network does not parse."""
        self._hosts.clear()
        self._nets.clear()
        for b in blocks:
            if getattr(b, "lifted_at", None) is not None:
                continue
            try:
                self.block(parse_network(b.cidr), float(b.expires_at), str(b.reason or ""))
            except (ValueError, TypeError):
                log.warning("stored IP block %r ignored: not a network", getattr(b, "cidr", None))
        self._refresh()

    def apply(self, event: dict[str, Any]) -> None:
        """Apply an ``ip.blocked`` (``cidr``, ``until``, ``reason``) or ``ip.unblocked``
        (``cidr``) control event; other events are ignored, malformed ones logged and ignored."""
        kind = event.get("type")
        if kind not in ("ip.blocked", "ip.unblocked"):
            return
        try:
            net = parse_network(str(event["cidr"]))
            if kind == "ip.unblocked":
                self.unblock(net)
                return
            until = float(event["until"])
        except (KeyError, TypeError, ValueError):
            log.warning("malformed %s event ignored", kind)
            return
        if until > self._now() + MAX_BLOCK_SECONDS:
            until = self._now() + MAX_BLOCK_SECONDS
        reason = event.get("reason")
        self.block(net, until, reason if isinstance(reason, str) else "")

    def check(self, addr: IPAddress | None) -> str | None:
        """None when ``addr`` is not blocked; otherwise why (for the audit diagnosis). An
        unknown address is refused while any block exists (fail closed, like ``ip_deny``)."""
        if self.empty:
            return None
        if addr is None:
            return "client address unknown while IP blocks are active"
        now = self._now()
        hit = self._hosts.get(addr)
        if hit is not None:
            if hit[0] > now:
                return _why(str(addr), hit)
            del self._hosts[addr]
            self._refresh()
        if self._nets:
            expired = []
            found: str | None = None
            for net, entry in self._nets.items():
                if entry[0] <= now:
                    expired.append(net)
                elif found is None and net.version == addr.version and addr in net:
                    found = _why(str(net), entry)
            for net in expired:
                del self._nets[net]
            if expired:
                self._refresh()
            return found
        return None

    def active(self) -> list[tuple[str, float, str]]:
        """``(cidr, until, reason)`` of every block still in force, for listings."""
        now = self._now()
        out = [(str(a), u, r) for a, (u, r) in self._hosts.items() if u > now]
        out += [(str(n), u, r) for n, (u, r) in self._nets.items() if u > now]
        return sorted(out)


def _why(what: str, entry: tuple[float, str]) -> str:
    until, reason = entry
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
    text = f"{what} is blocked until {stamp}"
    return f"{text} ({reason})" if reason else text
