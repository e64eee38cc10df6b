"""The nodes' signed headers (`omlmedia.signed_header`): one format for offers and monitor legs,
with domains that keep either from passing for the other, and one replay cache."""

from __future__ import annotations

from omlmedia import signed_header
from omlmedia.crossnode import OfferHeader, sign_offer, verify_offer
from omlmedia.monitor_remote import MonitorRequest, sign_monitor, verify_monitor
from sip.endpoint import Endpoint

SECRET = b"s" * 32
OFFER = OfferHeader("c;1@a", "sales q", "+54 11", "a", "camp/1")
MONITOR = MonitorRequest("c;1@a", "whisper", "sue é", "a")


def test_offer_and_monitor_headers_keep_their_wire_format_and_signature() -> None:
    # the values the nodes exchanged before the signing code was shared: a node of either
    # version verifies the other's headers
    assert sign_offer(SECRET, "agent1", OFFER, 1000.0, "n1") == (
        "c%3B1%40a;queue=sales%20q;caller=%2B54%2011;node=a;campaign=camp%2F1;ts=1000;nonce=n1"
        ";sig=1cfb4dc41fb332057146cc81bcdb86f58f1cfbd99845c15636520518f8fdd7e1"
    )
    assert sign_monitor(SECRET, MONITOR, 1000.0, "n2") == (
        "c%3B1%40a;mode=whisper;supervisor=sue%20%C3%A9;node=a;ts=1000;nonce=n2"
        ";sig=15de087bbce8bb2978670f4dea26b05831e8590ad26984017ac3bff3549661b3"
    )


def test_an_offer_never_passes_for_a_monitor_leg_nor_the_reverse() -> None:
    offer = sign_offer(SECRET, "monitor", OFFER, 1000.0, "n1")
    monitor = sign_monitor(SECRET, MONITOR, 1000.0, "n2")
    assert verify_offer(SECRET, "monitor", offer, 1000.0) == (OFFER, "n1")
    assert verify_monitor(SECRET, monitor, 1000.0) == (MONITOR, "n2")
    assert verify_monitor(SECRET, offer, 1000.0) is None
    assert verify_offer(SECRET, "monitor", monitor, 1000.0) is None
    # the same fields signed under another domain do not verify either
    fields = [("mode", "listen"), ("supervisor", "sue"), ("node", "a")]
    other = signed_header.sign(SECRET, ("offer",), "c1", fields, 1000.0, "n3")
    assert verify_monitor(SECRET, other, 1000.0) is None
    names = ("mode", "supervisor", "node")
    assert signed_header.verify(SECRET, ("offer",), other, names, 1000.0, 30.0) == (
        "c1",
        dict(fields),
        "n3",
    )


def test_verify_refuses_a_missing_repeated_or_extra_name_a_stale_time_and_a_long_nonce() -> None:
    names = ("a", "b")
    value = signed_header.sign(SECRET, ("d",), "x", [("a", "1"), ("b", "2")], 1000.0, "n")
    assert signed_header.verify(SECRET, ("d",), value, names, 1030.0, 30.0) is not None
    assert signed_header.verify(SECRET, ("d",), value, names, 1031.0, 30.0) is None
    assert signed_header.verify(SECRET, ("d",), value, ("a",), 1000.0, 30.0) is None
    assert signed_header.verify(SECRET, ("d",), value + ";c=3", names, 1000.0, 30.0) is None
    assert signed_header.verify(SECRET, ("d",), value + ";a=1", names, 1000.0, 30.0) is None
    long_nonce = signed_header.sign(SECRET, ("d",), "x", [("a", "1"), ("b", "2")], 1000.0, "n" * 65)
    assert signed_header.verify(SECRET, ("d",), long_nonce, names, 1000.0, 30.0) is None


def test_nonces_refuse_a_replay_within_the_window_and_forget_older_ones() -> None:
    nonces = signed_header.Nonces(60.0)
    assert nonces.fresh("n1", 1000.0)
    assert not nonces.fresh("n1", 1059.0)
    assert nonces.fresh("n2", 1061.0)  # prunes n1, seen more than the window ago
    assert nonces.fresh("n1", 1061.0)


def test_node_sources_name_a_node_by_address_in_clear_and_by_its_host_over_the_link() -> None:
    nodes = {"a": Endpoint("udp", "10.0.0.1", 5060), "b": Endpoint("udp", "10.0.0.2", 5060)}
    clear = signed_header.NodeSources(nodes, "b")
    assert clear.sender(Endpoint("udp", "10.0.0.1", 5060)) == "a"
    assert clear.sender(Endpoint("udp", "10.0.0.1", 5070)) is None
    assert clear.sender(Endpoint("udp", "10.0.0.2", 5060)) is None  # itself
    assert clear.named("a", "a", Endpoint("udp", "10.0.0.1", 5060)) == "a"
    assert clear.named("a", "c", Endpoint("udp", "10.0.0.1", 5060)) is None
    linked = signed_header.NodeSources(nodes, "b", lambda source: source.port == 5061)
    assert linked.sender(Endpoint("udp", "10.0.0.1", 5060)) is None
    assert linked.sender(Endpoint("udp", "10.0.0.1", 5061)) == ""
    assert linked.named("", "a", Endpoint("udp", "10.0.0.1", 5061)) == "a"
    assert linked.named("", "a", Endpoint("udp", "10.0.0.9", 5061)) is None  # not a's host
    assert linked.is_node_host("10.0.0.1")
    assert not linked.is_node_host("10.0.0.9")
