"""Run-time IP blocks: what a node refuses after an ``ip.blocked`` event, and for how long."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from bastion.core.ipblocks import MAX_BLOCK_SECONDS, IpBlocklist, parse_network
from bastion.store.base import IpBlock


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def blocked(event: dict[str, object], clock: Clock | None = None) -> IpBlocklist:
    blocks = IpBlocklist(clock or Clock())
    blocks.apply(event)
    return blocks


def test_empty_list_admits_everyone_even_unknown_addresses() -> None:
    blocks = IpBlocklist(Clock())
    assert blocks.empty
    assert blocks.check(ip_address("192.0.2.1")) is None
    assert blocks.check(None) is None


def test_single_address_block_until_it_expires() -> None:
    clock = Clock()
    blocks = blocked({"type": "ip.blocked", "cidr": "192.0.2.1", "until": 1060.0}, clock)
    why = blocks.check(ip_address("192.0.2.1"))
    assert why is not None
    assert "192.0.2.1 is blocked until" in why
    assert blocks.check(ip_address("192.0.2.2")) is None
    clock.t = 1060.0
    assert blocks.check(ip_address("192.0.2.1")) is None
    assert blocks.empty  # swept when found expired


def test_network_block_covers_its_addresses_only() -> None:
    blocks = blocked(
        {"type": "ip.blocked", "cidr": "198.51.100.77/24", "until": 2000.0, "reason": "scan"}
    )
    why = blocks.check(ip_address("198.51.100.200"))
    assert why is not None
    assert "198.51.100.0/24" in why
    assert "(scan)" in why
    assert blocks.check(ip_address("198.51.101.1")) is None
    assert blocks.check(ip_address("2001:db8::1")) is None  # other family: no TypeError


def test_ipv6_and_ipv4_mapped_forms_are_one_address() -> None:
    blocks = blocked({"type": "ip.blocked", "cidr": "::ffff:203.0.113.9", "until": 2000.0})
    assert blocks.check(ip_address("203.0.113.9")) is not None
    v6 = blocked({"type": "ip.blocked", "cidr": "2001:db8:1::/48", "until": 2000.0})
    assert v6.check(ip_address("2001:db8:1:ffff::1")) is not None
    assert v6.check(ip_address("2001:db8:2::1")) is None


def test_unknown_address_is_refused_while_blocks_exist() -> None:
    blocks = blocked({"type": "ip.blocked", "cidr": "192.0.2.0/24", "until": 2000.0})
    assert blocks.check(None) == "client address unknown while IP blocks are active"


def test_unblock_lifts_exactly_that_network() -> None:
    blocks = blocked({"type": "ip.blocked", "cidr": "192.0.2.0/24", "until": 2000.0})
    blocks.apply({"type": "ip.blocked", "cidr": "192.0.2.5", "until": 2000.0})
    blocks.apply({"type": "ip.unblocked", "cidr": "192.0.2.0/24"})
    assert blocks.check(ip_address("192.0.2.6")) is None
    assert blocks.check(ip_address("192.0.2.5")) is not None
    assert blocks.unblock(parse_network("192.0.2.5")) is True
    assert blocks.unblock(parse_network("192.0.2.5")) is False
    assert blocks.empty


def test_a_shorter_block_does_not_shorten_a_longer_one() -> None:
    clock = Clock()
    blocks = blocked({"type": "ip.blocked", "cidr": "192.0.2.1", "until": 5000.0}, clock)
    blocks.apply({"type": "ip.blocked", "cidr": "192.0.2.1", "until": 1100.0})
    clock.t = 2000.0
    assert blocks.check(ip_address("192.0.2.1")) is not None


def test_block_longer_than_the_maximum_is_capped() -> None:
    clock = Clock()
    blocks = blocked({"type": "ip.blocked", "cidr": "192.0.2.1", "until": 1e18}, clock)
    clock.t = 1000.0 + MAX_BLOCK_SECONDS + 1
    assert blocks.check(ip_address("192.0.2.1")) is None


@pytest.mark.parametrize(
    "event",
    [
        {"type": "ip.blocked", "until": 2000.0},
        {"type": "ip.blocked", "cidr": "not-an-ip", "until": 2000.0},
        {"type": "ip.blocked", "cidr": "192.0.2.1", "until": "soon"},
        {"type": "ip.blocked", "cidr": "192.0.2.1"},
        {"type": "ip.blocked", "cidr": "192.0.2.1 10.0.0.1", "until": 2000.0},
        {"type": "ip.unblocked"},
        {"type": "token.revoked", "jti": "x", "expires_at": 5.0},
    ],
)
def test_malformed_or_foreign_events_change_nothing(event: dict[str, object]) -> None:
    blocks = blocked(event)
    assert blocks.empty


def test_load_replaces_skips_lifted_and_unparseable_rows() -> None:
    blocks = blocked({"type": "ip.blocked", "cidr": "10.0.0.1", "until": 2000.0})
    blocks.load(
        [
            IpBlock("192.0.2.0/24", "r", 1.0, 2000.0),
            IpBlock("198.51.100.1/32", "", 1.0, 2000.0, lifted_at=5.0),
            IpBlock("garbage", "", 1.0, 2000.0),
        ]
    )
    assert blocks.check(ip_address("10.0.0.1")) is None
    assert blocks.check(ip_address("192.0.2.9")) is not None
    assert blocks.check(ip_address("198.51.100.1")) is None
    assert [c for c, _, _ in blocks.active()] == ["192.0.2.0/24"]


@pytest.mark.parametrize("text", ["", "  ", "10.0.0.1/33", "example.com", "10.0.0.1 /8"])
def test_parse_network_refuses_non_networks(text: str) -> None:
    with pytest.raises(ValueError, match="is not an IP address or CIDR network"):
        parse_network(text)
