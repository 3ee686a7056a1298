"""Client address from trusted proxy hops, and CIDR allow/deny rules."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

import pytest

from bastion.core.clientip import (
    IpRules,
    client_address,
    forwarded_hops,
    normalize_network,
    parse_ip,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", IPv4Address("192.0.2.1")),
        ("  192.0.2.1 ", IPv4Address("192.0.2.1")),
        ("2001:db8::1", IPv6Address("2001:db8::1")),
        ("2001:DB8:0::1", IPv6Address("2001:db8::1")),
        ("::ffff:10.1.2.3", IPv4Address("10.1.2.3")),  # dual-stack socket form of IPv4
        ("::ffff:a01:203", IPv4Address("10.1.2.3")),
        ("unknown", None),
        ("192.0.2.1:8080", None),
        ("[2001:db8::1]", None),
        ("010.0.0.1", None),  # leading zeros: octal on some stacks, refused
        ("1.2.3", None),
        ("", None),
        ("evil.example", None),
    ],
)
def test_parse_ip(text: str, expected: IPv4Address | IPv6Address | None) -> None:
    assert parse_ip(text) == expected


def test_mapped_networks_become_ipv4() -> None:
    assert normalize_network(IPv6Network("::ffff:10.0.0.0/104")) == IPv4Network("10.0.0.0/8")
    assert normalize_network(IPv6Network("2001:db8::/32")) == IPv6Network("2001:db8::/32")
    assert normalize_network(IPv4Network("10.0.0.0/8")) == IPv4Network("10.0.0.0/8")
    assert normalize_network(IPv6Network("::/64")) == IPv6Network("::/64")  # wider than mapped


def test_forwarded_hops_join_every_header_in_order() -> None:
    assert forwarded_hops(["a, b", " ,c", "d"]) == ["a", "b", "c", "d"]


def test_no_trusted_proxy_means_the_socket_is_the_client() -> None:
    got = client_address("198.51.100.9", ["1.2.3.4"], 0)
    assert got.ip == "198.51.100.9"
    assert not got.xff_invalid


def test_one_trusted_proxy_takes_the_hop_it_appended() -> None:
    got = client_address("10.0.0.2", ["198.51.100.9"], 1)
    assert got.ip == "198.51.100.9"
    assert got.address == IPv4Address("198.51.100.9")


def test_spoofed_prefix_cannot_choose_the_client_ip() -> None:
    # The attacker sends "X-Forwarded-For: 1.2.3.4"; our proxy appends the real peer.
    got = client_address("10.0.0.2", ["1.2.3.4, 198.51.100.9"], 1)
    assert got.ip == "198.51.100.9"
    # Sent as a separate header line before the proxy's: same result.
    got = client_address("10.0.0.2", ["1.2.3.4", "198.51.100.9"], 1)
    assert got.ip == "198.51.100.9"
    # Garbage in the client's part is not our concern: the trusted hop is valid.
    got = client_address("10.0.0.2", ["<script>, 198.51.100.9"], 1)
    assert got.ip == "198.51.100.9"
    assert not got.xff_invalid


def test_two_trusted_proxies_take_the_second_hop_from_the_right() -> None:
    got = client_address("10.0.0.3", ["1.2.3.4, 198.51.100.9, 10.0.0.2"], 2)
    assert got.ip == "198.51.100.9"


def test_fewer_hops_than_trusted_proxies_takes_the_leftmost() -> None:
    assert client_address("10.0.0.3", ["198.51.100.9"], 3).ip == "198.51.100.9"


@pytest.mark.parametrize("values", [[], [""], [" , "]])
def test_no_hops_falls_back_to_the_peer(values: list[str]) -> None:
    got = client_address("10.0.0.3", values, 1)
    assert got.ip == "10.0.0.3"
    assert not got.xff_invalid


@pytest.mark.parametrize("hop", ["unknown", "198.51.100.9:443", "_hidden", "1.2.3.4.5"])
def test_malformed_trusted_hop_falls_back_to_the_peer(hop: str) -> None:
    got = client_address("10.0.0.2", [f"1.2.3.4, {hop}"], 1)
    assert got.ip == "10.0.0.2"
    assert got.xff_invalid


def test_mapped_peer_and_hops_are_normalised() -> None:
    assert client_address("::ffff:198.51.100.9", [], 0).ip == "198.51.100.9"
    assert client_address("10.0.0.2", ["::ffff:198.51.100.9"], 1).ip == "198.51.100.9"
    assert client_address("2001:DB8::1", [], 0).ip == "2001:db8::1"


def test_unparsable_peer_is_kept_as_text_without_address() -> None:
    got = client_address("unix-socket", [], 0)
    assert got.ip == "unix-socket"
    assert got.address is None


def nets(*cidrs: str) -> list[IPv4Network | IPv6Network]:
    return [ip_network(c) for c in cidrs]


def addr(text: str) -> IPv4Address | IPv6Address | None:
    return parse_ip(text)


def test_no_rules_admit_everyone_even_unknown() -> None:
    rules = IpRules()
    assert rules.empty
    assert rules.check(addr("203.0.113.1")) is None
    assert rules.check(None) is None


def test_deny_list() -> None:
    rules = IpRules(deny=nets("203.0.113.0/24", "2001:db8:bad::/48"))
    assert rules.check(addr("203.0.113.77")) == "203.0.113.77 is in ip_deny 203.0.113.0/24"
    assert rules.check(addr("203.0.114.1")) is None
    assert rules.check(addr("2001:db8:bad:1::5")) is not None
    assert rules.check(addr("2001:db8:900d::5")) is None


def test_allow_list_admits_only_its_networks() -> None:
    rules = IpRules(allow=nets("10.0.0.0/8", "2001:db8::/32"))
    assert rules.check(addr("10.200.0.1")) is None
    assert rules.check(addr("11.0.0.1")) == "11.0.0.1 is not in ip_allow"
    assert rules.check(addr("2001:db8:1::1")) is None
    assert rules.check(addr("2001:db9::1")) is not None


def test_ipv4_allow_list_refuses_ipv6_callers() -> None:
    rules = IpRules(allow=nets("10.0.0.0/8"))
    assert rules.check(addr("::1")) is not None
    assert rules.check(addr("::a00:1")) is not None  # IPv4-compatible, not mapped: stays IPv6


def test_deny_wins_over_allow() -> None:
    rules = IpRules(allow=nets("10.0.0.0/8"), deny=nets("10.6.6.0/24"))
    assert rules.check(addr("10.6.6.6")) == "10.6.6.6 is in ip_deny 10.6.6.0/24"
    assert rules.check(addr("10.6.7.6")) is None


def test_mapped_address_cannot_sidestep_an_ipv4_rule() -> None:
    rules = IpRules(deny=nets("10.0.0.0/8"))
    assert rules.check(addr("::ffff:10.1.2.3")) is not None


def test_mapped_network_in_config_matches_ipv4_callers() -> None:
    rules = IpRules(allow=nets("::ffff:192.0.2.0/120"))
    assert rules.check(addr("192.0.2.9")) is None
    assert rules.check(addr("192.0.3.9")) is not None


@pytest.mark.parametrize("kind", ["allow", "deny"])
def test_unknown_address_fails_closed_when_rules_exist(kind: str) -> None:
    rules = IpRules(**{kind: nets("10.0.0.0/8")})
    assert rules.check(None) == "client address unknown"
