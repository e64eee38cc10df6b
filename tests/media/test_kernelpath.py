"""The kernel path's rule-set builder (sans-IO): what each batch asks of nftables."""

from __future__ import annotations

from typing import Any

import pytest

from media.kernelpath import (
    ForwardedPair,
    Leg,
    counters_of,
    install_batch,
    list_counters_command,
    remove_batch,
    replace_batch,
    table_batch,
    teardown_batch,
)
from media.kernelpath_nft import has_net_admin

V4 = ForwardedPair(
    "42",
    Leg(("198.18.1.1", 20000), ("198.18.1.2", 5000)),
    Leg(("198.18.2.1", 20002), ("198.18.2.2", 4000)),
)
V6 = ForwardedPair(
    "43",
    Leg(("fd00:18:1::1", 20000), ("fd00:18:1:0::2", 5000)),
    Leg(("fd00:18:2::1", 20002), ("fd00:18:2::2", 4000)),
)


def commands(batch: dict[str, list[dict[str, Any]]], verb: str, kind: str) -> list[Any]:
    return [c[verb][kind] for c in batch["nftables"] if verb in c and kind in c[verb]]


def elements(batch: dict[str, list[dict[str, Any]]], verb: str) -> list[tuple[str, Any]]:
    return [(e["name"], e["elem"][0]) for e in commands(batch, verb, "element")]


def test_table_batch_replaces_any_leftover_table_in_the_same_transaction() -> None:
    batch = table_batch()
    ref = {"family": "inet", "name": "omlmedia"}
    assert batch["nftables"][:3] == [
        {"add": {"table": ref}},
        {"delete": {"table": ref}},
        {"add": {"table": ref}},
    ]
    maps = {
        m["name"]: (m["type"][0], m["map"], m.get("stmt")) for m in commands(batch, "add", "map")
    }
    assert maps == {
        "pre_port4": ("ipv4_addr", "inet_service", [{"counter": None}]),
        "pre_addr4": ("ipv4_addr", "ipv4_addr", None),
        "post_port4": ("ipv4_addr", "inet_service", None),
        "post_addr4": ("ipv4_addr", "ipv4_addr", None),
        "pre_port6": ("ipv6_addr", "inet_service", [{"counter": None}]),
        "pre_addr6": ("ipv6_addr", "ipv6_addr", None),
        "post_port6": ("ipv6_addr", "inet_service", None),
        "post_addr6": ("ipv6_addr", "ipv6_addr", None),
    }
    hooks = {c["name"]: (c["type"], c["hook"], c["prio"]) for c in commands(batch, "add", "chain")}
    # Before conntrack (raw, -300); output re-routes a rewritten local packet; SNAT after routing.
    assert hooks == {
        "prerouting": ("filter", "prerouting", -300),
        "output": ("route", "output", -300),
        "postrouting": ("filter", "postrouting", 100),
    }


def test_the_fixed_rules_rewrite_the_port_first_then_the_address_keyed_by_the_new_port() -> None:
    rules = {
        (r["chain"], i % 2): r["expr"] for i, r in enumerate(commands(table_batch(), "add", "rule"))
    }
    pre4 = rules[("prerouting", 0)]
    assert [next(iter(e)) for e in pre4] == ["mangle", "notrack", "mangle"]
    assert pre4[0]["mangle"]["key"] == {"payload": {"protocol": "udp", "field": "dport"}}
    assert pre4[0]["mangle"]["value"]["map"]["data"] == "@pre_port4"
    assert pre4[2]["mangle"]["key"] == {"payload": {"protocol": "ip", "field": "daddr"}}
    assert pre4[2]["mangle"]["value"]["map"]["data"] == "@pre_addr4"
    assert rules[("output", 0)] == pre4
    pre6 = rules[("prerouting", 1)]
    assert pre6[2]["mangle"]["key"] == {"payload": {"protocol": "ip6", "field": "daddr"}}
    post4 = rules[("postrouting", 0)]
    assert [e["mangle"]["key"]["payload"]["field"] for e in post4] == ["sport", "saddr"]
    assert [e["mangle"]["value"]["map"]["data"] for e in post4] == ["@post_port4", "@post_addr4"]


def test_teardown_deletes_the_table_even_when_it_is_already_gone() -> None:
    ref = {"family": "inet", "name": "omlmedia"}
    assert teardown_batch()["nftables"] == [{"add": {"table": ref}}, {"delete": {"table": ref}}]


def test_install_rewrites_each_direction_to_the_other_legs_far_end_from_our_port() -> None:
    # One command per map, both directions' elements in it: caller -> our A becomes our B ->
    # callee (first element), callee -> our B becomes our A -> caller (second).
    assert install_batch(V4).splitlines() == [
        "add element inet omlmedia pre_port4 { 198.18.1.2 . 5000 . 198.18.1.1 . 20000 : 4000, "
        "198.18.2.2 . 4000 . 198.18.2.1 . 20002 : 5000 }",
        "add element inet omlmedia pre_addr4 { 198.18.1.2 . 5000 . 198.18.1.1 . 4000 : "
        "198.18.2.2, 198.18.2.2 . 4000 . 198.18.2.1 . 5000 : 198.18.1.2 }",
        "add element inet omlmedia post_port4 { 198.18.1.2 . 5000 . 198.18.2.2 . 4000 : 20002, "
        "198.18.2.2 . 4000 . 198.18.1.2 . 5000 : 20000 }",
        "add element inet omlmedia post_addr4 { 198.18.1.2 . 20002 . 198.18.2.2 . 4000 : "
        "198.18.2.1, 198.18.2.2 . 20000 . 198.18.1.2 . 5000 : 198.18.1.1 }",
    ]
    assert V4.counted("ab") == ("198.18.1.2", 5000, "198.18.1.1", 20000)
    assert V4.counted("ba") == ("198.18.2.2", 4000, "198.18.2.1", 20002)


def test_install_of_an_ipv6_pair_uses_the_ipv6_maps_and_compressed_addresses() -> None:
    lines = install_batch(V6, "t6").splitlines()
    assert [line.split(" {")[0] for line in lines] == [
        f"add element inet t6 {name}6"
        for name in ("pre_port", "pre_addr", "post_port", "post_addr")
    ]
    assert lines[0] == (
        "add element inet t6 pre_port6 { fd00:18:1::2 . 5000 . fd00:18:1::1 . 20000 : 4000, "
        "fd00:18:2::2 . 4000 . fd00:18:2::1 . 20002 : 5000 }"
    )


def test_remove_deletes_exactly_the_pairs_elements() -> None:
    def keys(line: str) -> tuple[str, list[str]]:
        head, _, body = line.partition(" { ")
        return head.split()[-1], [e.split(" : ")[0] for e in body.removesuffix(" }").split(", ")]

    removed = remove_batch(V4).splitlines()
    assert all(line.startswith("delete element inet omlmedia ") for line in removed)
    assert [keys(line) for line in removed] == [
        keys(line) for line in install_batch(V4).splitlines()
    ]
    assert " : " not in remove_batch(V4)


def test_replace_is_the_removal_and_the_installation_in_one_batch() -> None:
    moved = ForwardedPair("42", V4.a, Leg(V4.b.local, ("198.18.2.2", 4002)))
    assert replace_batch(V4, moved) == remove_batch(V4) + "\n" + install_batch(moved)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (Leg(("198.18.1.1", 1), ("fd00::1", 2)), V4.b, "IPv4 leg to an IPv6 leg"),
        (Leg(("pbx.example", 1), ("198.18.1.2", 2)), V4.b, "is not an IP address"),
        (Leg(("198.18.1.1", 0), ("198.18.1.2", 2)), V4.b, "port 0 is out of range"),
        (V4.a, Leg(("198.18.1.1", 1), ("198.18.1.2", 65536)), "port 65536 is out of range"),
        # What goes into nftables' text is a parsed address or an int, never free text:
        (Leg(("fe80::1%x }; flush ruleset", 1), ("fe80::2", 2)), V4.b, "is not an IP address"),
        (V4.a, Leg(("198.18.1.1", 1), ("198.18.1.2", "2 }; flush ruleset")), "out of range"),  # type: ignore[arg-type]
        (V4.a, Leg(("198.18.1.1", 1), ("198.18.1.2", 2.5)), "out of range"),  # type: ignore[arg-type]
    ],
)
def test_a_pair_that_the_kernel_cannot_relay_is_refused(a: Leg, b: Leg, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ForwardedPair("1", a, b)


@pytest.mark.parametrize("key", ["", "a b", "x;flush", "1" * 21])
def test_a_key_that_is_not_a_short_name_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="letters or digits"):
        ForwardedPair(key, V4.a, V4.b)


def test_a_table_name_that_is_not_an_identifier_is_refused() -> None:
    with pytest.raises(ValueError, match="plain identifier"):
        table_batch("omlmedia; flush ruleset")


def test_counters_are_read_from_the_text_listing_of_the_counted_map() -> None:
    # What libnftables 1.0.6 answers to `list map inet omlmedia pre_port6` (tabs and all).
    answer = (
        "table inet omlmedia {\n\tmap pre_port6 {\n\t\ttype ipv6_addr . inet_service . "
        "ipv6_addr . inet_service : inet_service\n\t\tcounter\n\t\telements = { "
        "fd00:18:1:0::2 . 5000 . fd00:18:1::1 . 20000 counter packets 3 bytes 600 : 4000,\n"
        "\t\t\t     fd00:18:2::2 . 4000 . fd00:18:2::1 . 20002 counter packets 4 bytes 688 : "
        "5000 }\n\t}\n}\n"
    )
    assert counters_of(answer) == {
        ("fd00:18:1::2", 5000, "fd00:18:1::1", 20000): (3, 600),
        ("fd00:18:2::2", 4000, "fd00:18:2::1", 20002): (4, 688),
    }
    # Not an address (only the pattern's characters): skipped.
    assert counters_of("1.2.3 . 1 . 4.5.6.7 . 2 counter packets 1 bytes 2") == {}
    assert counters_of("") == {}
    assert list_counters_command(6) == "list map inet omlmedia pre_port6"
    with pytest.raises(ValueError, match="plain identifier"):
        list_counters_command(4, "omlmedia; flush ruleset")


def test_net_admin_is_read_from_the_effective_capabilities() -> None:
    assert has_net_admin("Name:\tx\nCapEff:\t0000000000001000\n")
    assert not has_net_admin("CapEff:\t0000000000000400\n")
    assert not has_net_admin("CapEff:\tzz\n") and not has_net_admin("")
