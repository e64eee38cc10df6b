"""`webrtc.forwarded.client_address`: X-Forwarded-For names the client only when the TCP peer
is a trusted proxy, and then only its right-most entry that is not a trusted proxy itself;
garbage from a trusted proxy falls back to the peer and is counted."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webrtc.forwarded import MAX_ENTRIES, client_address

PROXIES = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fd00::/64"))


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("10.0.0.1", ["203.0.113.9"], ()) == ("10.0.0.1", False)


def test_an_untrusted_peer_cannot_name_another_client() -> None:
    assert client_address("198.51.100.4", ["203.0.113.9"], PROXIES) == ("198.51.100.4", False)
    assert client_address("198.51.100.4", ["junk"], PROXIES) == ("198.51.100.4", False)


def test_a_trusted_peer_without_the_header_is_the_client() -> None:
    assert client_address("10.0.0.1", [], PROXIES) == ("10.0.0.1", False)


def test_a_trusted_peer_names_the_client() -> None:
    assert client_address("10.0.0.1", ["203.0.113.9"], PROXIES) == ("203.0.113.9", False)


def test_the_right_most_untrusted_entry_wins_so_a_client_cannot_prepend_a_lie() -> None:
    # The client wrote "1.1.1.1"; our proxy appended the address it saw.
    assert client_address("10.0.0.1", ["1.1.1.1, 203.0.113.9"], PROXIES) == (
        "203.0.113.9",
        False,
    )
    # Two of our proxies in a chain: skip the inner one.
    assert client_address("10.0.0.1", ["1.1.1.1, 203.0.113.9, 10.0.0.2"], PROXIES) == (
        "203.0.113.9",
        False,
    )
    # Several header lines are one list, in order.
    assert client_address("10.0.0.1", ["1.1.1.1", "203.0.113.9,10.0.0.2"], PROXIES) == (
        "203.0.113.9",
        False,
    )


def test_only_trusted_entries_give_the_left_most() -> None:
    assert client_address("10.0.0.1", ["10.0.0.7, 10.0.0.2"], PROXIES) == ("10.0.0.7", False)


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("fd00::1", "2001:db8::5", "2001:db8::5"),
        ("fd00::1", "[2001:db8::5]", "2001:db8::5"),
        ("fd00::1", "[2001:db8::5]:4431", "2001:db8::5"),
        ("fd00::1", "203.0.113.9:5555", "203.0.113.9"),
        ("::ffff:10.0.0.1", "203.0.113.9", "203.0.113.9"),  # an IPv4 peer on a dual socket
        ("10.0.0.1", "::ffff:203.0.113.9", "203.0.113.9"),
        ("10.0.0.1", "2001:db8::5, fd00::9", "2001:db8::5"),
    ],
)
def test_ipv6_and_ports(peer: str, header: str, client: str) -> None:
    assert client_address(peer, [header], PROXIES) == (client, False)


@pytest.mark.parametrize(
    "header",
    [
        "unknown",
        "",
        "203.0.113.9,",
        "203.0.113.9, junk",
        "999.1.1.1",
        "[2001:db8::5",
        "[2001:db8::5]x",
        "[2001:db8::5]:port",
        "203.0.113.9:http",
        "fe80::1%eth0",
        "_hidden",
        ", ".join(["203.0.113.9"] * (MAX_ENTRIES + 1)),
    ],
)
def test_garbage_from_a_trusted_proxy_is_the_peer_and_flagged(header: str) -> None:
    assert client_address("10.0.0.1", [header], PROXIES) == ("10.0.0.1", True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=4))
def test_any_header_gives_an_address_never_an_exception(values: list[str]) -> None:
    address, malformed = client_address("10.0.0.1", values, PROXIES)
    ipaddress.ip_address(address)
    assert not malformed or address == "10.0.0.1"
