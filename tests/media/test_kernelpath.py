"""The kernel path's rule-set builder (sans-IO): what each batch asks of nftables."""

from __future__ import annotations

from typing import Any

import pytest

from media.kernelpath import (
    ForwardedPair,
    Leg,
    counters_of,
    install_batch,
    list_counters_batch,
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


def rewrite(batch: dict[str, list[dict[str, Any]]], chain: str) -> list[Any]:
    (rule,) = [r for r in commands(batch, "add", "rule") if r["chain"] == chain]
    return list(rule["expr"])


def elements(batch: dict[str, list[dict[str, Any]]], verb: str, name: str) -> list[Any]:
    return [e["elem"][0] for e in commands(batch, verb, "element") if e["name"] == name]


def test_table_batch_replaces_any_leftover_table_in_the_same_transaction() -> None:
    batch = table_batch()["nftables"]
    ref = {"family": "inet", "name": "omlmedia"}
    assert batch[:3] == [
        {"add": {"table": ref}},
        {"delete": {"table": ref}},
        {"add": {"table": ref}},
    ]
    maps = {m["name"]: m["type"] for m in commands({"nftables": batch}, "add", "map")}
    assert maps["pre4"] == ["ipv4_addr", "inet_service", "ipv4_addr", "inet_service"]
    assert maps["post6"] == ["ipv6_addr", "inet_service", "ipv6_addr", "inet_service"]
    hooks = {
        c["name"]: (c["type"], c["hook"], c["prio"])
        for c in commands({"nftables": batch}, "add", "chain")
    }
    # Before conntrack (raw, -300); output re-routes a rewritten local packet; SNAT after routing.
    assert hooks == {
        "prerouting": ("filter", "prerouting", -300),
        "output": ("route", "output", -300),
        "postrouting": ("filter", "postrouting", 100),
    }
    lookups = {
        (r["chain"], r["expr"][0]["vmap"]["data"])
        for r in commands({"nftables": batch}, "add", "rule")
    }
    assert lookups == {
        ("prerouting", "@pre4"),
        ("prerouting", "@pre6"),
        ("output", "@pre4"),
        ("output", "@pre6"),
        ("postrouting", "@post4"),
        ("postrouting", "@post6"),
    }


def test_teardown_deletes_the_table_even_when_it_is_already_gone() -> None:
    ref = {"family": "inet", "name": "omlmedia"}
    assert teardown_batch()["nftables"] == [{"add": {"table": ref}}, {"delete": {"table": ref}}]


def test_install_rewrites_each_direction_to_the_other_legs_far_end_from_our_port() -> None:
    batch = install_batch(V4)
    assert elements(batch, "add", "pre4") == [
        [{"concat": ["198.18.1.2", 5000, "198.18.1.1", 20000]}, {"goto": {"target": "k42_ab_pre"}}],
        [{"concat": ["198.18.2.2", 4000, "198.18.2.1", 20002]}, {"goto": {"target": "k42_ba_pre"}}],
    ]
    assert elements(batch, "add", "post4") == [
        [{"concat": ["198.18.1.2", 5000, "198.18.2.2", 4000]}, {"goto": {"target": "k42_ab_post"}}],
        [{"concat": ["198.18.2.2", 4000, "198.18.1.2", 5000]}, {"goto": {"target": "k42_ba_post"}}],
    ]
    assert rewrite(batch, "k42_ab_pre") == [
        {"notrack": None},
        {
            "mangle": {
                "key": {"payload": {"protocol": "ip", "field": "daddr"}},
                "value": "198.18.2.2",
            }
        },
        {"mangle": {"key": {"payload": {"protocol": "udp", "field": "dport"}}, "value": 4000}},
        {"counter": "k42_ab"},
    ]
    assert rewrite(batch, "k42_ba_post") == [
        {
            "mangle": {
                "key": {"payload": {"protocol": "ip", "field": "saddr"}},
                "value": "198.18.1.1",
            }
        },
        {"mangle": {"key": {"payload": {"protocol": "udp", "field": "sport"}}, "value": 20000}},
    ]
    assert [c["name"] for c in commands(batch, "add", "counter")] == ["k42_ab", "k42_ba"]


def test_install_of_an_ipv6_pair_uses_the_ipv6_maps_and_compressed_addresses() -> None:
    batch = install_batch(V6)
    assert elements(batch, "add", "pre4") == [] and elements(batch, "add", "post4") == []
    assert elements(batch, "add", "pre6")[0][0] == {
        "concat": ["fd00:18:1::2", 5000, "fd00:18:1::1", 20000]
    }
    assert rewrite(batch, "k43_ab_pre")[1]["mangle"]["key"]["payload"]["protocol"] == "ip6"


def test_remove_deletes_exactly_the_pairs_elements_chains_and_counters() -> None:
    batch = remove_batch(V4)
    added = install_batch(V4)
    assert [e["elem"][0] for e in commands(batch, "delete", "element")] == [
        e["elem"][0][0] for e in commands(added, "add", "element")
    ]
    deleted_chains = [c["name"] for c in commands(batch, "delete", "chain")]
    assert deleted_chains == [c["name"] for c in commands(added, "add", "chain")]
    assert [c["name"] for c in commands(batch, "flush", "chain")] == deleted_chains
    assert [c["name"] for c in commands(batch, "delete", "counter")] == ["k42_ab", "k42_ba"]
    assert commands(batch, "delete", "table") == []
    # The map elements go before the chains they jump to.
    verbs = [next(iter(c.values())) for c in batch["nftables"]]
    first_chain = next(i for i, c in enumerate(verbs) if "chain" in c)
    assert all("element" in c for c in verbs[:first_chain])


def test_replace_is_the_removal_and_the_installation_in_one_batch() -> None:
    moved = ForwardedPair("42", V4.a, Leg(V4.b.local, ("198.18.2.2", 4002)))
    assert replace_batch(V4, moved)["nftables"] == (
        remove_batch(V4)["nftables"] + install_batch(moved)["nftables"]
    )


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (Leg(("198.18.1.1", 1), ("fd00::1", 2)), V4.b, "IPv4 leg to an IPv6 leg"),
        (Leg(("pbx.example", 1), ("198.18.1.2", 2)), V4.b, "is not an IP address"),
        (Leg(("198.18.1.1", 0), ("198.18.1.2", 2)), V4.b, "port 0 is out of range"),
        (V4.a, Leg(("198.18.1.1", 1), ("198.18.1.2", 65536)), "port 65536 is out of range"),
    ],
)
def test_a_pair_that_the_kernel_cannot_relay_is_refused(a: Leg, b: Leg, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ForwardedPair("1", a, b)


@pytest.mark.parametrize("key", ["", "a b", "x;flush", "1" * 21])
def test_a_key_that_could_not_name_a_chain_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="letters or digits"):
        ForwardedPair(key, V4.a, V4.b)


def test_a_table_name_that_is_not_an_identifier_is_refused() -> None:
    with pytest.raises(ValueError, match="plain identifier"):
        table_batch("omlmedia; flush ruleset")


def test_counters_are_read_from_the_listing_of_our_table_only() -> None:
    answer = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {
                "counter": {
                    "family": "inet",
                    "table": "omlmedia",
                    "name": "k1_ab",
                    "packets": 3,
                    "bytes": 600,
                }
            },
            {
                "counter": {
                    "family": "inet",
                    "table": "other",
                    "name": "k1_ba",
                    "packets": 9,
                    "bytes": 9,
                }
            },
            {"counter": {"family": "inet", "table": "omlmedia", "name": "k1_ba", "packets": "x"}},
            "garbage",
        ]
    }
    assert counters_of(answer) == {"k1_ab": (3, 600)}
    assert counters_of({}) == {} and counters_of({"nftables": "x"}) == {}
    assert list_counters_batch()["nftables"] == [
        {"list": {"counters": {"family": "inet", "table": "omlmedia"}}}
    ]


def test_net_admin_is_read_from_the_effective_capabilities() -> None:
    assert has_net_admin("Name:\tx\nCapEff:\t0000000000001000\n")
    assert not has_net_admin("CapEff:\t0000000000000400\n")
    assert not has_net_admin("CapEff:\tzz\n") and not has_net_admin("")
