"""The client's address behind a reverse proxy (``X-Forwarded-For``, from trusted proxies only).

Behind HAProxy (``contrib/haproxy/haproxy.cfg``) every page's TCP peer is HAProxy itself, so
everything keyed by the source address (the login lockout per source and per (account, source),
the web-caller limiter, the ``SECURITY`` lines fail2ban reads) would count all pages as one
source. `client_address` is the one rule for taking the source address wherever it matters for
security:

- the TCP peer is not in ``[security] trusted_proxies``: the peer is the client, any
  ``X-Forwarded-For`` it sends is ignored (anyone can write the header);
- the peer is a trusted proxy: the client is the right-most ``X-Forwarded-For`` entry that is not
  itself a trusted proxy (entries to its left were written by the client or by proxies we do not
  know, so they cannot be believed); if every entry is a trusted proxy, the left-most one;
- a malformed header from a trusted proxy (an entry that is not an IP address): the peer, and
  `ProxyTrust.malformed` counts it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web

__all__ = ["PROXY_TRUST_KEY", "ProxyTrust", "client_address", "request_source"]

logger = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_ENTRIES = 64
"""More ``X-Forwarded-For`` entries than this is treated as malformed (bounded work)."""


def _parse(text: str) -> IPAddress | None:
    """An address as an ``X-Forwarded-For`` entry or a peer writes it: ``192.0.2.1``,
    ``2001:db8::1``, ``[2001:db8::1]``, ``[2001:db8::1]:443`` or ``192.0.2.1:443``; an
    IPv4-mapped IPv6 address is its IPv4 address. None when it is none of those."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :]
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def client_address(
    peer: str, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]
) -> tuple[str, bool]:
    """The client's address for a request whose TCP peer is `peer` and which carried the
    ``X-Forwarded-For`` header values `forwarded_for` (each may list several entries), and
    whether the header was malformed (then the answer is `peer`). See the module's rules."""
    values = list(forwarded_for)
    if not trusted or not values:
        return peer, False
    peer_address = _parse(peer)
    if peer_address is None or not _trusted(peer_address, trusted):
        return peer, False
    entries = [entry for value in values for entry in value.split(",")]
    if len(entries) > MAX_ENTRIES:
        return peer, True
    parsed: list[IPAddress] = []
    for entry in entries:
        address = _parse(entry)
        if address is None:
            return peer, True
        parsed.append(address)
    for address in reversed(parsed):
        if not _trusted(address, trusted):
            return str(address), False
    return str(parsed[0]), False


@dataclass(slots=True)
class ProxyTrust:
    """The proxies whose ``X-Forwarded-For`` is believed, and how many malformed ones came."""

    networks: tuple[IPNetwork, ...] = ()
    malformed: int = 0


PROXY_TRUST_KEY = web.AppKey("proxy_trust", ProxyTrust)
"""Set on the pages' application (or a parent of the application serving the request)."""


def request_source(request: web.Request) -> tuple[str, int]:
    """The source address and port of `request` for security purposes (lockout, limits,
    ``SECURITY`` log lines). The port is the TCP peer's, or 0 when the address came from
    ``X-Forwarded-For`` (the client's port is not forwarded)."""
    peer_info = request.transport.get_extra_info("peername") if request.transport else None
    peer, port = (str(peer_info[0]), int(peer_info[1])) if peer_info else ("0.0.0.0", 0)
    trust = request.config_dict.get(PROXY_TRUST_KEY)
    if trust is None or not trust.networks:
        return peer, port
    address, malformed = client_address(
        peer, request.headers.getall("X-Forwarded-For", ()), trust.networks
    )
    if malformed:
        trust.malformed += 1
        logger.debug("malformed X-Forwarded-For from trusted proxy %s", peer)
        return peer, port
    return address, (port if address == peer else 0)
