"""Passthrough relayed by the kernel: nftables rules that forward a latched pair's RTP.

Theory of operation. A passthrough bridge whose two legs need no rewriting (same codec and
payload-type numbers, no SRTP, nothing listening to the audio) only moves datagrams: the
caller's packet to our port A leaves our port B for the callee, and back. Once both legs have
latched, the four addresses of each direction are known and the kernel can do the move itself,
so no packet of the call reaches Python:

    caller C:c  ->  our A:a        becomes        our B:b  ->  callee E:e
    callee E:e  ->  our B:b        becomes        our A:a  ->  caller C:c

This is *stateless* NAT (no conntrack): each direction is rewritten by its own rules, so a flow
that userspace relayed until now (and that conntrack may already know) is taken over at once,
and removing the rules hands the very next packet back to the sockets. For each direction:

- **prerouting** (packets from another host) and **output** (a peer on this host), at the raw
  priority, before conntrack: the packet is marked untracked and its destination rewritten to
  the far end of the other leg. The routing decision that follows sends it out (forwarded:
  ``net.ipv4.ip_forward``/IPv6 ``forwarding`` must be on) or to a local socket; the output
  chain is of type ``route`` so a rewritten local packet is routed again.
- **postrouting**: the rewritten packet's source becomes our address and port on the other
  leg, so the far end sees exactly what the userspace relay would send from.

The rules are fixed, written once with the table; the calls are elements of maps keyed by the
four-tuple (source address, source port, destination address, destination port). Prerouting
and output look the packet up in ``pre_port4``/``pre_port6`` (its new destination port; no
element, no match: the packet is not ours and goes on untouched), then, with that port in the
key, in ``pre_addr`` (its new destination address); postrouting likewise in ``post_port`` (our
source port) then ``post_addr`` (our source address). Each element of ``pre_port`` counts the
packets and bytes of its direction. So a packet costs a few hash lookups whatever the number of
calls, and a call is installed, replaced or removed by adding or deleting its eight elements:
nothing per call in the chains, so neither the kernel nor libnftables does work that grows with
the number of calls when one call changes (measured: about 0.3 ms per change at 800 calls,
against 5-50 ms with a chain per call). RTCP (the RTP port + 1) matches nothing and stays with
the legs, so reports and quality figures go on.

Every change is one batch for libnftables, which applies it as one netlink transaction:
the table is created (after deleting any leftover of a previous run that crashed) at start,
each call's change installs, removes or replaces its elements atomically, and the table goes at
stop. The table and its teardown are JSON documents (libnftables-json(5)); a call's change,
the only batch made per call, is nftables' own text syntax, one command per map: libnftables
takes a fifth less CPU for it than for the same change in JSON (0.21 -> 0.17 ms a transaction
with 200 or 800 calls installed). The counter listing is text too, answered in text: half the
CPU of the JSON listing and its parsing (2.0 against 4.0 ms at 100 calls). Nothing in that
text is free: the table name is checked, each address is one `ipaddress` parsed (no IPv6 zone,
whose text is free) and printed compressed, each port an int. This module builds those batches
and reads the counters out of libnftables' answers; it does no I/O. `media.kernelpath_nft`
runs the batches.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_TABLE",
    "Batch",
    "Direction",
    "ForwardedPair",
    "FourTuple",
    "Leg",
    "counters_of",
    "install_batch",
    "list_counters_command",
    "remove_batch",
    "replace_batch",
    "table_batch",
    "teardown_batch",
]

DEFAULT_TABLE = "omlmedia"
FAMILY = "inet"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,30}\Z")
_KEY = re.compile(r"[A-Za-z0-9]{1,20}\Z")

Batch = dict[str, list[dict[str, Any]]]
"""A libnftables JSON document: ``{"nftables": [command, ...]}``, applied atomically."""


@dataclass(frozen=True)
class Leg:
    """One leg of a latched pair: our address and port (where the far end sends), and the
    far end's latched source address and port."""

    local: tuple[str, int]
    remote: tuple[str, int]


@dataclass(frozen=True)
class Direction:
    """One direction's rewrite: packets from `source` to `via_in` leave from `via_out` to
    `destination`."""

    source: tuple[str, int]
    via_in: tuple[str, int]
    via_out: tuple[str, int]
    destination: tuple[str, int]


@dataclass(frozen=True)
class ForwardedPair:
    """A call's two latched legs to be relayed by the kernel, under `key`."""

    key: str
    """Names the pair in the server's bookkeeping (letters and digits)."""
    a: Leg
    b: Leg

    def __post_init__(self) -> None:
        if not _KEY.match(self.key):
            raise ValueError(f"kernel path key {self.key!r} is not 1-20 letters or digits")
        versions = set()
        for leg in (self.a, self.b):
            for host, port in (leg.local, leg.remote):
                try:
                    versions.add(_version(host))
                except ValueError:
                    raise ValueError(f"{host!r} is not an IP address") from None
                if type(port) is not int or not 0 < port < 0x10000:
                    raise ValueError(f"port {port} is out of range")
        if len(versions) != 1:
            raise ValueError("the kernel path cannot join an IPv4 leg to an IPv6 leg")

    @property
    def version(self) -> int:
        """4 or 6."""
        return _version(self.a.local[0])

    def directions(self) -> dict[str, Direction]:
        """``ab`` (caller to callee) and ``ba``, by suffix."""
        a, b = self.a, self.b
        return {
            "ab": Direction(a.remote, a.local, b.local, b.remote),
            "ba": Direction(b.remote, b.local, a.local, a.remote),
        }

    def tuple_of(self, direction: Direction) -> FourTuple:
        """The four-tuple of `direction`'s packets as they reach us (its counter's key)."""
        source, via_in = direction.source, direction.via_in
        return (_address(source[0]), source[1], _address(via_in[0]), via_in[1])

    def counted(self, suffix: str) -> FourTuple:
        """The counter key of direction `suffix` (``ab`` or ``ba``)."""
        return self._counted[suffix]

    @functools.cached_property
    def _counted(self) -> dict[str, FourTuple]:
        # Read at every counter look-up (media-timeout sweep, removal): worked out once.
        return {suffix: self.tuple_of(d) for suffix, d in self.directions().items()}


def _check_table(table: str) -> None:
    if not _NAME.match(table):
        raise ValueError(f"nftables table name {table!r} is not a plain identifier")


@functools.lru_cache(maxsize=4096)
def _version(host: str) -> int:
    """4 or 6; ValueError when `host` is not an IP address. Cached: a call's pair is built
    from the same few addresses (ours, and the far ends')."""
    return _parsed(host).version


def _parsed(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """`host` parsed; ValueError for anything else, and for an IPv6 address with a zone
    (``fe80::1%eth0``): its zone is free text, and a call's addresses go into nftables' text
    syntax (none of a relayed call's addresses is link-local)."""
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise ValueError(f"{host!r} has a zone")
    return address


@functools.lru_cache(maxsize=4096)
def _address(host: str) -> str:
    """`host` in its compressed form; ValueError when it is not an IP address. Cached: every
    counter listing names each call's far ends again, and parsing them was most of its cost."""
    return _parsed(host).compressed


def _proto(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def _payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def _tuple_key(version: int) -> dict[str, Any]:
    proto = _proto(version)
    return {
        "concat": [
            _payload(proto, "saddr"),
            _payload("udp", "sport"),
            _payload(proto, "daddr"),
            _payload("udp", "dport"),
        ]
    }


FourTuple = tuple[str, int, str, int]
"""(source address, source port, destination address, destination port), addresses compressed."""


def _mangle_from_map(protocol: str, field: str, version: int, name: str) -> dict[str, Any]:
    return {
        "mangle": {
            "key": _payload(protocol, field),
            "value": {"map": {"key": _tuple_key(version), "data": f"@{name}{version}"}},
        }
    }


def _base_chain(table: str, name: str, kind: str, hook: str, prio: int) -> dict[str, Any]:
    return {
        "chain": {
            "family": FAMILY,
            "table": table,
            "name": name,
            "type": kind,
            "hook": hook,
            "prio": prio,
            "policy": "accept",
        }
    }


def _rule(table: str, chain: str, expr: list[dict[str, Any]]) -> dict[str, Any]:
    return {"rule": {"family": FAMILY, "table": table, "chain": chain, "expr": expr}}


MAPS = ("pre_port", "pre_addr", "post_port", "post_addr")


def table_batch(table: str = DEFAULT_TABLE) -> Batch:
    """The server's table from scratch: whatever a previous run left (a crash) is deleted in
    the same transaction, then the maps and the three base chains with their fixed rules."""
    _check_table(table)
    ref = {"family": FAMILY, "name": table}
    commands: list[dict[str, Any]] = [
        {"add": {"table": dict(ref)}},
        {"delete": {"table": dict(ref)}},
        {"add": {"table": dict(ref)}},
    ]
    for name in MAPS:
        for version, kind in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            spec: dict[str, Any] = {
                "family": FAMILY,
                "table": table,
                "name": f"{name}{version}",
                "type": [kind, "inet_service", kind, "inet_service"],
                "map": "inet_service" if name.endswith("_port") else kind,
            }
            if name == "pre_port":
                spec["stmt"] = [{"counter": None}]
            commands.append({"add": {"map": spec}})
    for name, kind, hook, prio in (
        ("prerouting", "filter", "prerouting", -300),
        ("output", "route", "output", -300),
    ):
        commands.append({"add": _base_chain(table, name, kind, hook, prio)})
        for version in (4, 6):
            expr = [
                _mangle_from_map("udp", "dport", version, "pre_port"),
                {"notrack": None},
                _mangle_from_map(_proto(version), "daddr", version, "pre_addr"),
            ]
            commands.append({"add": _rule(table, name, expr)})
    commands.append({"add": _base_chain(table, "postrouting", "filter", "postrouting", 100)})
    for version in (4, 6):
        expr = [
            _mangle_from_map("udp", "sport", version, "post_port"),
            _mangle_from_map(_proto(version), "saddr", version, "post_addr"),
        ]
        commands.append({"add": _rule(table, "postrouting", expr)})
    return {"nftables": commands}


def teardown_batch(table: str = DEFAULT_TABLE) -> Batch:
    """Delete the server's table and everything in it (at stop); harmless when it is gone."""
    _check_table(table)
    ref = {"family": FAMILY, "name": table}
    return {"nftables": [{"add": {"table": dict(ref)}}, {"delete": {"table": dict(ref)}}]}


def _elements(pair: ForwardedPair) -> list[tuple[str, FourTuple, str | int]]:
    """(map, key, value) of every element of `pair`: four per direction."""
    found: list[tuple[str, FourTuple, str | int]] = []
    for d in pair.directions().values():
        four = pair.tuple_of(d)
        source, via_in = four[0:2], four[2:4]
        dest_host, dest_port = _address(d.destination[0]), d.destination[1]
        out_host, out_port = _address(d.via_out[0]), d.via_out[1]
        found += [
            ("pre_port", (*source, *via_in), dest_port),
            ("pre_addr", (*source, via_in[0], dest_port), dest_host),
            ("post_port", (*source, dest_host, dest_port), out_port),
            ("post_addr", (source[0], out_port, dest_host, dest_port), out_host),
        ]
    return found


def _element_text(key: FourTuple, value: str | int | None) -> str:
    # Every part is an address `_address` compressed (hex digits, dots, colons) or an int:
    # nothing of the text comes from outside unparsed.
    text = f"{key[0]} . {key[1]:d} . {key[2]} . {key[3]:d}"
    return text if value is None else f"{text} : {value}"


def _element_lines(verb: str, table: str, pair: ForwardedPair) -> list[str]:
    """One command per map (``add element inet omlmedia pre_port4 { k : v, k : v }``)."""
    by_map: dict[str, list[str]] = {}
    for name, key, value in _elements(pair):
        by_map.setdefault(name, []).append(_element_text(key, value if verb == "add" else None))
    return [
        f"{verb} element {FAMILY} {table} {name}{pair.version:d} {{ {', '.join(found)} }}"
        for name, found in by_map.items()
    ]


def install_batch(pair: ForwardedPair, table: str = DEFAULT_TABLE) -> str:
    """Relay `pair` in the kernel from the next packet on (one transaction)."""
    _check_table(table)
    return "\n".join(_element_lines("add", table, pair))


def remove_batch(pair: ForwardedPair, table: str = DEFAULT_TABLE) -> str:
    """Remove exactly `pair`'s elements (one transaction): the next packet of the call reaches
    the legs' sockets."""
    _check_table(table)
    return "\n".join(_element_lines("delete", table, pair))


def replace_batch(old: ForwardedPair, new: ForwardedPair, table: str = DEFAULT_TABLE) -> str:
    """Swap `old` for `new` in one transaction (a far end that moved): no packet in between
    goes either way."""
    _check_table(table)
    return "\n".join(_element_lines("delete", table, old) + _element_lines("add", table, new))


def list_counters_command(version: int, table: str = DEFAULT_TABLE) -> str:
    """The command that lists the counted map of IP `version` (every call's counters in one
    answer), to be answered in nftables' text syntax: libnftables writes that for less than
    half the CPU of its JSON, with no JSON to parse after (2.0 against 4.0 ms at 100 calls)."""
    _check_table(table)
    return f"list map {FAMILY} {table} pre_port{version:d}"


_COUNTED_TEXT = re.compile(
    r"([0-9A-Fa-f:.]+) \. (\d+) \. ([0-9A-Fa-f:.]+) \. (\d+) counter packets (\d+) bytes (\d+)"
)


def counters_of(text: str) -> dict[FourTuple, tuple[int, int]]:
    """(packets, bytes) by direction (its four-tuple as it reaches us) from libnftables' text
    answer to `list_counters_command`, one element a match (``10.1.0.2 . 30005 . 10.0.0.1 .
    20010 counter packets 3 bytes 516 : 5005``); anything else is skipped."""
    found: dict[FourTuple, tuple[int, int]] = {}
    for match in _COUNTED_TEXT.finditer(text):
        try:
            four = (_address(match[1]), int(match[2]), _address(match[3]), int(match[4]))
        except ValueError:
            continue
        found[four] = (int(match[5]), int(match[6]))
    return found
