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
  priority, before conntrack: the packet is marked untracked, its destination rewritten to the
  far end of the other leg, and counted in the direction's named counter. The routing decision
  that follows sends it out (forwarded: ``net.ipv4.ip_forward``/IPv6 ``forwarding`` must be on)
  or to a local socket; the output chain is of type ``route`` so a rewritten local packet is
  routed again.
- **postrouting**: the rewritten packet's source becomes our address and port on the other
  leg, so the far end sees exactly what the userspace relay would send from.

The table (``inet``, one for IPv4 and IPv6) holds four verdict maps keyed by the full
four-tuple (source address, source port, destination address, destination port): ``pre4`` /
``pre6`` looked up in prerouting and output, ``post4`` / ``post6`` in postrouting. A pair adds
one element per direction and map, each jumping (``goto``) to a chain of its own holding the
rewrite; so a packet costs one hash lookup whatever the number of calls, and a call is removed
by deleting its elements, chains and counters by name: no rule handles to remember. RTCP (the
RTP port + 1) matches nothing and stays with the legs, so reports and quality figures go on.

Every change is one JSON batch for libnftables, which applies it as one netlink transaction:
the table is created (after deleting any leftover of a previous run that crashed) at start,
each call's change installs, removes or replaces its elements atomically, and the table goes at
stop. This module builds those batches and reads the counters out of libnftables' answers; it
does no I/O. `media.kernelpath_nft` runs the batches.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_TABLE",
    "Batch",
    "Direction",
    "ForwardedPair",
    "Leg",
    "counters_of",
    "install_batch",
    "list_counters_batch",
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
    """A call's two latched legs to be relayed by the kernel, under `key` (letters and
    digits: it names the call's chains and counters)."""

    key: str
    a: Leg
    b: Leg

    def __post_init__(self) -> None:
        if not _KEY.match(self.key):
            raise ValueError(f"kernel path key {self.key!r} is not 1-20 letters or digits")
        versions = set()
        for leg in (self.a, self.b):
            for host, port in (leg.local, leg.remote):
                try:
                    address = ipaddress.ip_address(host)
                except ValueError:
                    raise ValueError(f"{host!r} is not an IP address") from None
                if not 0 < port < 0x10000:
                    raise ValueError(f"port {port} is out of range")
                versions.add(address.version)
        if len(versions) != 1:
            raise ValueError("the kernel path cannot join an IPv4 leg to an IPv6 leg")

    @property
    def version(self) -> int:
        """4 or 6."""
        return ipaddress.ip_address(self.a.local[0]).version

    def directions(self) -> dict[str, Direction]:
        """``ab`` (caller to callee) and ``ba``, by suffix."""
        a, b = self.a, self.b
        return {
            "ab": Direction(a.remote, a.local, b.local, b.remote),
            "ba": Direction(b.remote, b.local, a.local, a.remote),
        }

    def counter(self, suffix: str) -> str:
        """The named counter of direction `suffix` (``ab`` or ``ba``)."""
        return f"k{self.key}_{suffix}"


def _check_table(table: str) -> None:
    if not _NAME.match(table):
        raise ValueError(f"nftables table name {table!r} is not a plain identifier")


def _address(host: str) -> str:
    return ipaddress.ip_address(host).compressed


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


def _element(source: tuple[str, int], destination: tuple[str, int]) -> dict[str, list[str | int]]:
    return {"concat": [_address(source[0]), source[1], _address(destination[0]), destination[1]]}


def _mangle(protocol: str, field: str, value: str | int) -> dict[str, Any]:
    return {"mangle": {"key": _payload(protocol, field), "value": value}}


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


def _lookup(table: str, chain: str, version: int, stage: str) -> dict[str, Any]:
    return _rule(
        table, chain, [{"vmap": {"key": _tuple_key(version), "data": f"@{stage}{version}"}}]
    )


def table_batch(table: str = DEFAULT_TABLE) -> Batch:
    """The server's table from scratch: whatever a previous run left (a crash) is deleted in
    the same transaction, then the maps and the three base chains are created."""
    _check_table(table)
    ref = {"family": FAMILY, "name": table}
    commands: list[dict[str, Any]] = [
        {"add": {"table": dict(ref)}},
        {"delete": {"table": dict(ref)}},
        {"add": {"table": dict(ref)}},
    ]
    for stage in ("pre", "post"):
        for version, kind in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            commands.append(
                {
                    "add": {
                        "map": {
                            "family": FAMILY,
                            "table": table,
                            "name": f"{stage}{version}",
                            "type": [kind, "inet_service", kind, "inet_service"],
                            "map": "verdict",
                        }
                    }
                }
            )
    chains = (
        ("prerouting", "filter", "prerouting", -300, "pre"),
        ("output", "route", "output", -300, "pre"),
        ("postrouting", "filter", "postrouting", 100, "post"),
    )
    for name, kind, hook, prio, stage in chains:
        commands.append({"add": _base_chain(table, name, kind, hook, prio)})
        for version in (4, 6):
            commands.append({"add": _lookup(table, name, version, stage)})
    return {"nftables": commands}


def teardown_batch(table: str = DEFAULT_TABLE) -> Batch:
    """Delete the server's table and everything in it (at stop); harmless when it is gone."""
    _check_table(table)
    ref = {"family": FAMILY, "name": table}
    return {"nftables": [{"add": {"table": dict(ref)}}, {"delete": {"table": dict(ref)}}]}


def _map_element(
    table: str, stage: str, version: int, key: dict[str, Any], target: str | None
) -> dict[str, Any]:
    entry: Any = [key, {"goto": {"target": target}}] if target is not None else key
    return {
        "element": {
            "family": FAMILY,
            "table": table,
            "name": f"{stage}{version}",
            "elem": [entry],
        }
    }


def _install_commands(table: str, pair: ForwardedPair) -> list[dict[str, Any]]:
    version = pair.version
    proto = _proto(version)
    commands: list[dict[str, Any]] = []
    for suffix, d in pair.directions().items():
        counter = pair.counter(suffix)
        pre, post = f"{counter}_pre", f"{counter}_post"
        commands += [
            {"add": {"counter": {"family": FAMILY, "table": table, "name": counter}}},
            {"add": {"chain": {"family": FAMILY, "table": table, "name": pre}}},
            {"add": {"chain": {"family": FAMILY, "table": table, "name": post}}},
            {
                "add": _rule(
                    table,
                    pre,
                    [
                        {"notrack": None},
                        _mangle(proto, "daddr", _address(d.destination[0])),
                        _mangle("udp", "dport", d.destination[1]),
                        {"counter": counter},
                    ],
                )
            },
            {
                "add": _rule(
                    table,
                    post,
                    [
                        _mangle(proto, "saddr", _address(d.via_out[0])),
                        _mangle("udp", "sport", d.via_out[1]),
                    ],
                )
            },
            {"add": _map_element(table, "pre", version, _element(d.source, d.via_in), pre)},
            {"add": _map_element(table, "post", version, _element(d.source, d.destination), post)},
        ]
    return commands


def _remove_commands(table: str, pair: ForwardedPair) -> list[dict[str, Any]]:
    version = pair.version
    commands: list[dict[str, Any]] = []
    for d in pair.directions().values():
        commands += [
            {"delete": _map_element(table, "pre", version, _element(d.source, d.via_in), None)},
            {
                "delete": _map_element(
                    table, "post", version, _element(d.source, d.destination), None
                )
            },
        ]
    for suffix in pair.directions():
        counter = pair.counter(suffix)
        for chain in (f"{counter}_pre", f"{counter}_post"):
            ref = {"family": FAMILY, "table": table, "name": chain}
            commands += [{"flush": {"chain": dict(ref)}}, {"delete": {"chain": dict(ref)}}]
        commands.append(
            {"delete": {"counter": {"family": FAMILY, "table": table, "name": counter}}}
        )
    return commands


def install_batch(pair: ForwardedPair, table: str = DEFAULT_TABLE) -> Batch:
    """Relay `pair` in the kernel from the next packet on (one transaction)."""
    _check_table(table)
    return {"nftables": _install_commands(table, pair)}


def remove_batch(pair: ForwardedPair, table: str = DEFAULT_TABLE) -> Batch:
    """Remove exactly `pair`'s elements, chains and counters (one transaction): the next
    packet of the call reaches the legs' sockets."""
    _check_table(table)
    return {"nftables": _remove_commands(table, pair)}


def replace_batch(old: ForwardedPair, new: ForwardedPair, table: str = DEFAULT_TABLE) -> Batch:
    """Swap `old` for `new` in one transaction (a far end that moved): no packet in between
    goes either way."""
    _check_table(table)
    return {"nftables": _remove_commands(table, old) + _install_commands(table, new)}


def list_counters_batch(table: str = DEFAULT_TABLE) -> Batch:
    """The command that lists the table's counters (all calls in one answer)."""
    _check_table(table)
    return {"nftables": [{"list": {"counters": {"family": FAMILY, "table": table}}}]}


def counters_of(answer: dict[str, Any], table: str = DEFAULT_TABLE) -> dict[str, tuple[int, int]]:
    """(packets, bytes) by counter name from libnftables' JSON answer to a listing; entries of
    other tables and anything malformed are skipped."""
    found: dict[str, tuple[int, int]] = {}
    entries = answer.get("nftables") if isinstance(answer, dict) else None
    if not isinstance(entries, list):
        return found
    for entry in entries:
        counter = entry.get("counter") if isinstance(entry, dict) else None
        if not isinstance(counter, dict) or counter.get("table") != table:
            continue
        name, packets, size = counter.get("name"), counter.get("packets"), counter.get("bytes")
        if isinstance(name, str) and isinstance(packets, int) and isinstance(size, int):
            found[name] = (packets, size)
    return found
