"""Concurrent call caps per digest user and per source address (issue 12, low items).

Like Asterisk's ``call-limit`` and Kamailio's ``dialog`` profiles: a digest user may hold at most
``security.max_calls_per_user`` live calls and an untrusted source address (IPv4 address, IPv6
/64) at most ``security.max_calls_per_source``; the INVITE beyond gets 486 Busy Here with
``Retry-After``. 486, not 503: the cap is about this caller, not about the server, and a 503
tells an upstream proxy to fail over to another server (RFC 3263 §4.3), where the same caller
should not get more calls either. Calls from trunks and from ``security.trusted_networks`` are
not capped per source (a carrier carries many calls from one address); trunks are not digest
users. A slot is released when the call ends, whatever ended it (the core's ``CallEnded``: BYE,
CANCEL, a failure response, a timeout).

Each refusal is counted; the first refusal of a burst (a key at its cap) is logged once, and the
key logs again only after it fell below its cap.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from omlmedia.config import IPNetwork


def source_key(host: str) -> str:
    """The source a call counts against: the IPv4 address, or the IPv6 /64."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True, slots=True)
class CapRefusal:
    """Why a call is over its cap: which cap, the key, and whether to log (the burst's first)."""

    cap: str
    """``user`` or ``source``."""
    key: str
    limit: int
    first_of_burst: bool


@dataclass
class CallCaps:
    """Live calls per digest user and per source, and the refusals beyond the caps."""

    max_per_user: int
    max_per_source: int
    trusted: tuple[IPNetwork, ...] = ()
    refused: int = 0
    """INVITEs refused at a cap since start."""
    _by_user: dict[str, set[object]] = field(default_factory=dict)
    _by_source: dict[str, set[object]] = field(default_factory=dict)
    _held: dict[object, tuple[str | None, str | None]] = field(default_factory=dict)
    _bursting: set[tuple[str, str]] = field(default_factory=set)

    def _trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address.version == net.version and address in net for net in self.trusted)

    def admit(
        self, call: object, *, user: str | None, host: str, trunk: str | None
    ) -> CapRefusal | None:
        """Take a slot for `call` (None) or say which cap it is beyond (nothing taken)."""
        source = None if trunk is not None or self._trusted(host) else source_key(host)
        checks: list[tuple[str, str, dict[str, set[object]], int]] = []
        if user is not None:
            checks.append(("user", user, self._by_user, self.max_per_user))
        if source is not None:
            checks.append(("source", source, self._by_source, self.max_per_source))
        for cap, key, table, limit in checks:
            if len(table.get(key, ())) >= limit:
                self.refused += 1
                first = (cap, key) not in self._bursting
                self._bursting.add((cap, key))
                return CapRefusal(cap, key, limit, first)
        if user is not None:
            self._by_user.setdefault(user, set()).add(call)
        if source is not None:
            self._by_source.setdefault(source, set()).add(call)
        self._held[call] = (user, source)
        return None

    def release(self, call: object) -> None:
        """`call` ended: free its slots (nothing when it held none)."""
        held = self._held.pop(call, None)
        if held is None:
            return
        user, source = held
        if user is not None:
            self._drop("user", user, self._by_user, call, self.max_per_user)
        if source is not None:
            self._drop("source", source, self._by_source, call, self.max_per_source)

    def _drop(
        self, cap: str, key: str, table: dict[str, set[object]], call: object, limit: int
    ) -> None:
        calls = table.get(key)
        if calls is None:
            return
        calls.discard(call)
        if len(calls) < limit:
            self._bursting.discard((cap, key))
        if not calls:
            del table[key]

    def live(self, cap: str, key: str) -> int:
        """Calls `key` holds now under `cap` (``user`` or ``source``)."""
        table = self._by_user if cap == "user" else self._by_source
        return len(table.get(key, ()))
