"""The media addresses a peer's SDP may not name (issue 12, `media.addresses`): loopback and the
server's own host unless it listens on loopback alone, link-local and the cloud metadata address,
multicast and reserved space always, internal networks behind a public server; the legacy hold
and host names (never resolved) pass."""

from __future__ import annotations

import pytest

from media.addresses import MediaAddressPolicy, sdp_addresses
from sip.sdp import SessionDescription

LOOPBACK = MediaAddressPolicy(["127.0.0.1"])
PRIVATE = MediaAddressPolicy(["10.0.0.5"])
PUBLIC = MediaAddressPolicy(["0.0.0.0"], advertise="198.51.100.1")
PUBLIC_LISTEN = MediaAddressPolicy(["8.8.4.4"])


def offer(connection: str, *media_lines: str) -> SessionDescription:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        f"c=IN IP4 {connection}",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0",
        *media_lines,
    ]
    return SessionDescription.parse("\r\n".join(lines) + "\r\n")


def test_the_server_kinds_follow_its_listen_and_advertised_addresses() -> None:
    assert LOOPBACK.local and not LOOPBACK.public
    assert not PRIVATE.local and not PRIVATE.public
    assert not PUBLIC.local and not PUBLIC.public  # 198.51.100.0/24 is documentation space
    assert PUBLIC_LISTEN.public
    assert MediaAddressPolicy(["0.0.0.0"], advertise="8.8.8.8").public
    assert MediaAddressPolicy(["::1", "127.0.0.1"]).local


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("media.localhost.", "loopback"),
        ("10.0.0.5", "own-host"),
        ("169.254.169.254", "link-local"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("[fe80::1%eth0]", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.1.2.3", "reserved"),
    ],
)
def test_a_private_server_refuses_loopback_its_own_host_link_local_and_reserved(
    address: str, why: str
) -> None:
    assert PRIVATE.refusal(address) == why


@pytest.mark.parametrize(
    "address", ["10.0.0.9", "192.168.1.20", "172.16.5.5", "100.64.0.1", "fd00::1", "8.8.8.8"]
)
def test_a_private_server_lets_peers_name_other_internal_and_global_hosts(address: str) -> None:
    assert PRIVATE.refusal(address) is None


@pytest.mark.parametrize(
    "address", ["10.0.0.9", "192.168.1.20", "172.16.5.5", "100.64.0.1", "fd00::1"]
)
def test_a_public_server_refuses_internal_networks(address: str) -> None:
    assert PUBLIC_LISTEN.refusal(address) == "internal"
    assert PUBLIC_LISTEN.refusal("8.8.8.8") is None
    assert PUBLIC_LISTEN.refusal("8.8.4.4") == "own-host"


def test_a_loopback_server_lets_peers_on_its_host_name_loopback() -> None:
    for address in ("127.0.0.1", "127.0.0.5", "::1", "localhost", "10.0.0.9"):
        assert LOOPBACK.refusal(address) is None, address
    assert LOOPBACK.refusal("169.254.169.254") == "link-local"


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "pbx.example.com", "phone.local"])
def test_the_legacy_hold_and_host_names_pass(address: str) -> None:
    # 0.0.0.0 is RFC 2543 hold (nothing is sent); names are never resolved (`RtpLeg.set_remote`).
    assert PUBLIC_LISTEN.refusal(address) is None
    assert PRIVATE.refusal(address) is None


def test_every_address_of_an_sdp_is_checked_stream_rtcp_and_candidates() -> None:
    sdp = offer(
        "192.0.2.10",
        "c=IN IP4 192.0.2.11",
        "a=rtcp:40001 IN IP4 127.0.0.1",
        "a=candidate:1 1 UDP 2130706431 169.254.169.254 40000 typ host",
        "a=candidate:2 1 UDP 2130706431 224.2.1.1/127 40000 typ host",
    )
    assert sdp_addresses(sdp) == [
        "192.0.2.10",
        "192.0.2.11",
        "127.0.0.1",
        "169.254.169.254",
        "224.2.1.1",
    ]
    assert PRIVATE.check(sdp) == ("127.0.0.1", "loopback")
    assert PRIVATE.check(offer("192.0.2.10")) is None
    assert PRIVATE.check(offer("192.0.2.10", "c=IN IP4 169.254.169.254")) == (
        "169.254.169.254",
        "link-local",
    )
    assert LOOPBACK.check(offer("127.0.0.1")) is None
    assert PRIVATE.check(offer("0.0.0.0")) is None


def test_answers_are_remembered_per_address_and_the_memory_stays_bounded() -> None:
    policy = MediaAddressPolicy(["8.8.4.4"])
    for n in range(10_000):
        address = f"10.{n >> 8 & 255}.{n & 255}.1"
        assert policy.refusal(address) == "internal"
        assert len(policy._known) <= 4096
    assert policy.refusal("127.0.0.1") == "loopback"
    assert policy.refusal("127.0.0.1") == "loopback"  # from memory, the same answer
