"""Which peer-supplied media addresses the server may send RTP to (issue 12).

A caller's SDP names where its media goes (``c=`` lines, RFC 8866 §5.7; ``a=rtcp`` addresses,
RFC 3605; ICE candidates, RFC 8839). Believed blindly, it turns the media relay into a packet
cannon aimed at whatever the caller picks: the server's own services on loopback, the cloud
metadata endpoint (169.254.169.254), or hosts of the internal network behind an internet-facing
server. `MediaAddressPolicy.refusal` says which addresses are refused and why; the application
answers an offer that names one with 488 (`MediaAddressPolicy.check`), so nothing is ever sent
there and nothing latches. Sans-IO: no sockets, no name lookups, no clock.

The rules, from what the server itself is:

- unspecified (``0.0.0.0``, ``::``) is the legacy hold (RFC 3264 §8.4): allowed, nothing is sent;
- loopback, and the server's own addresses, only on a server that listens on loopback alone (the
  demo: every peer is on this host);
- link-local (169.254.0.0/16 with the metadata address, fe80::/10), multicast and reserved
  (240.0.0.0/4, 0.0.0.0/8) never;
- internal (RFC 1918, RFC 6598 100.64.0.0/10, IPv6 ULA fc00::/7) only on a server that is not
  public (none of its listen or advertised addresses is global);
- host names are never resolved (`media.leg.RtpLeg.set_remote` sends nothing to one), except
  ``localhost`` names, which are loopback by definition (RFC 6761 §6.3).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from sip.sdp import SessionDescription

__all__ = ["MediaAddressPolicy", "sdp_addresses"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_INTERNAL = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
"""RFC 1918, RFC 6598 (carrier-grade NAT) and RFC 4193 (unique local) space."""
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_KNOWN_MAX = 4096


def _address(text: str) -> IPAddress | None:
    """`text` as an IP address (an IPv4-mapped IPv6 address as its IPv4 one), None for a name."""
    try:
        ip = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def sdp_addresses(sdp: SessionDescription) -> list[str]:
    """Every address `sdp` asks media to be sent to: the session and stream ``c=``, ``a=rtcp``
    addresses and ICE candidates' connection addresses; a multicast ``/ttl`` suffix dropped."""
    found: list[str] = []
    if sdp.connection is not None:
        found.append(sdp.connection.address)
    for media in sdp.media:
        if media.connection is not None:
            found.append(media.connection.address)
        if media.rtcp is not None and media.rtcp.connection is not None:
            found.append(media.rtcp.connection.address)
        for attribute in media.attributes:
            if attribute.name == "candidate" and attribute.value:
                fields = attribute.value.split()
                if len(fields) >= 5:
                    found.append(fields[4])
    return [address.split("/", 1)[0] for address in found]


class MediaAddressPolicy:
    """The addresses this server refuses to send media to (see the module's rules).

    `listen` are the server's listen addresses (wildcards included), `advertise` the address it
    writes in its SDP when set. The server is *local* when every listen address is loopback, and
    *public* when one of its listen addresses or its advertised address is a global one."""

    def __init__(self, listen: Iterable[str], advertise: str | None = None) -> None:
        listened = [_address(a) for a in listen]
        ours = [ip for ip in [*listened, _address(advertise or "")] if ip is not None]
        self.local = bool(listened) and all(ip is not None and ip.is_loopback for ip in listened)
        """Every listen address is loopback: peers live on this host (the demo)."""
        self.public = any(ip.is_global for ip in ours)
        """A listen or advertised address is global: internal addresses are refused."""
        self.own = frozenset(ip for ip in ours if not ip.is_unspecified)
        """The server's own addresses (a wildcard names none)."""
        self._known: dict[str, str | None] = {}
        """Answers by address text: peers name the same few addresses call after call, and
        parsing one costs tens of microseconds (bounded: cleared when full)."""

    def refusal(self, address: str) -> str | None:
        """Why media may not be sent to `address` (``loopback``, ``own-host``, ``link-local``,
        ``multicast``, ``reserved``, ``internal``), None when it may."""
        known = self._known
        try:
            return known[address]
        except KeyError:
            pass
        if len(known) >= _KNOWN_MAX:
            known.clear()
        why = known[address] = self._refusal(address)
        return why

    def _refusal(self, address: str) -> str | None:
        ip = _address(address)
        if ip is None:
            name = address.rstrip(".").lower()
            is_localhost = name == "localhost" or name.endswith(".localhost")
            return "loopback" if is_localhost and not self.local else None
        if ip.is_unspecified:
            return None
        if ip.is_loopback:
            return None if self.local else "loopback"
        if ip in self.own:
            return None if self.local else "own-host"
        if ip.is_link_local:
            return "link-local"
        if ip.is_multicast:
            return "multicast"
        if ip.is_reserved or ip in _THIS_NETWORK:
            return "reserved"
        if self.public and any(ip in network for network in _INTERNAL):
            return "internal"
        return None

    def check(self, sdp: SessionDescription) -> tuple[str, str] | None:
        """The first address of `sdp` media may not go to, and why; None when every one may."""
        for address in sdp_addresses(sdp):
            why = self.refusal(address)
            if why is not None:
                return address, why
        return None
