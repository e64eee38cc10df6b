"""The SIP security baseline: trusted sources, per-source flood limiting, fail2ban events.

Theory of operation. :class:`RateLimiter` is a token bucket per source address, in the spirit of
Kamailio's ``pike`` module: a source may send ``max_requests`` requests in a burst and
``max_requests`` per ``window`` seconds on average. A source that runs its bucket dry is banned
for ``ban_time`` seconds, during which every request from it is dropped without an answer
(RFC 3261 §26.1.5: answering a flood only amplifies it). IPv6 sources are counted per /64, since
one host commonly owns a whole /64. Buckets are kept in least-recently-seen order and dropped once
idle for a whole window (a full bucket carries no information); bans are kept in expiry order and
dropped when they end; both tables have a hard size cap, so memory is bounded whatever the traffic.

:func:`security_event` renders the one log line fail2ban reads (``contrib/fail2ban``). Values that
come from the network are quoted and every character that could end a field (space, quote,
backslash, control and non-printable characters) is escaped, so a hostile user name or Call-ID can
neither forge a field nor start a new line.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Iterable
from enum import Enum

__all__ = [
    "RateLimiter",
    "SecurityError",
    "SourcePolicy",
    "Verdict",
    "security_event",
]

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_CACHE_LIMIT = 4096
_MAX_FIELD = 256


class SecurityError(ValueError):
    """A bad trusted-network entry, limiter setting or security event field."""


def _parse_ip(text: str) -> _IPAddress | None:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class SourcePolicy:
    """Matches source addresses against trusted networks (CIDR, IPv4 and IPv6; RFC 4632, RFC 4291).

    A bare address is a /32 (or /128). IPv4-mapped IPv6 sources (``::ffff:192.0.2.1``) match IPv4
    networks. Results are cached per address string, so a lookup on the hot path is one dict hit.
    """

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        networks: list[_IPNetwork] = []
        for entry in trusted:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise SecurityError("Trusted network is not a valid CIDR") from None
        self.networks: tuple[_IPNetwork, ...] = tuple(networks)
        self._cache: dict[str, bool] = {}

    def is_trusted(self, ip: str) -> bool:
        """True when ``ip`` lies in one of the trusted networks; False for anything unparsable."""
        cached = self._cache.get(ip)
        if cached is not None:
            return cached
        address = _parse_ip(ip)
        trusted = address is not None and any(
            address.version == net.version and address in net for net in self.networks
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[ip] = trusted
        return trusted

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, str) and self.is_trusted(ip)


class Verdict(Enum):
    """What :meth:`RateLimiter.check` decided for one request."""

    ALLOW = "allow"
    DROP = "drop"
    """Dropped silently: the source is banned."""
    BAN = "ban"
    """Dropped silently, and this request started the ban (log it once)."""


class RateLimiter:
    """Per-source flood protection, pike-style (Kamailio ``pike``; RFC 3261 §26.1.5).

    ``max_requests`` per ``window`` seconds (token bucket, burst ``max_requests``); a source over
    the limit is banned for ``ban_time`` seconds. Sources trusted by ``policy`` are never limited.
    ``max_sources`` caps each table: past it, the least recently seen bucket (or the oldest ban)
    is dropped first.
    """

    def __init__(
        self,
        max_requests: int,
        window: float,
        ban_time: float,
        *,
        policy: SourcePolicy | None = None,
        max_sources: int = 65536,
        ipv6_prefix: int = 64,
    ) -> None:
        if max_requests < 1 or window <= 0 or ban_time < 0 or max_sources < 1:
            raise SecurityError("Rate limit settings must be positive")
        if not 1 <= ipv6_prefix <= 128:
            raise SecurityError("IPv6 prefix length must be 1..128")
        self.max_requests = max_requests
        self.window = window
        self.ban_time = ban_time
        self.policy = policy
        self.max_sources = max_sources
        self.ipv6_prefix = ipv6_prefix
        self._rate = max_requests / window
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        self._bans: dict[str, float] = {}
        self._v6_keys: dict[str, str] = {}

    def _key(self, ip: str) -> str:
        if ":" not in ip:
            return ip
        key = self._v6_keys.get(ip)
        if key is None:
            address = _parse_ip(ip)
            if isinstance(address, ipaddress.IPv6Address):
                net = ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False)
                key = str(net)
            else:
                key = str(address) if address is not None else ip
            if len(self._v6_keys) >= _CACHE_LIMIT:
                self._v6_keys.clear()
            self._v6_keys[ip] = key
        return key

    def _expire(self, now: float) -> None:
        bans = self._bans
        while bans:
            first = next(iter(bans))
            if bans[first] > now:
                break
            del bans[first]
        buckets = self._buckets
        idle = now - self.window
        while buckets:
            first = next(iter(buckets))
            if buckets[first][1] > idle:
                break
            del buckets[first]

    def check(self, ip: str, now: float) -> Verdict:
        """Count one request from ``ip`` at ``now`` and decide whether it may be processed."""
        if self.policy is not None and self.policy.is_trusted(ip):
            return Verdict.ALLOW
        self._expire(now)
        key = self._key(ip)
        if key in self._bans:
            return Verdict.DROP
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_sources:
                buckets.popitem(last=False)
            buckets[key] = [self.max_requests - 1.0, now]
            return Verdict.ALLOW
        tokens = bucket[0] + (now - bucket[1]) * self._rate
        if tokens > self.max_requests:
            tokens = self.max_requests
        bucket[1] = now
        buckets.move_to_end(key)
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return Verdict.ALLOW
        del buckets[key]
        if self.ban_time <= 0:
            return Verdict.DROP
        bans = self._bans
        if len(bans) >= self.max_sources:
            del bans[next(iter(bans))]
        bans[key] = now + self.ban_time
        return Verdict.BAN

    def is_banned(self, ip: str, now: float) -> bool:
        """True while ``ip`` (or its IPv6 network) is banned at ``now``; counts nothing.

        A limiter that counts failures rather than requests (digest failures, see
        :class:`sip.ua.UserAgent`) asks this for every request and :meth:`check` only on a failure.
        """
        bans = self._bans
        if not bans or (self.policy is not None and self.policy.is_trusted(ip)):
            return False
        key = self._key(ip)
        end = bans.get(key)
        if end is None:
            return False
        if end > now:
            return True
        self._expire(now)
        return False

    def allow(self, ip: str, now: float) -> bool:
        """True when a request from ``ip`` at ``now`` may be processed; False: drop it silently."""
        return self.check(ip, now) is Verdict.ALLOW

    def banned(self, now: float) -> list[tuple[str, float]]:
        """Sources banned at ``now`` (an address, or an IPv6 network) with the end of their ban."""
        self._expire(now)
        return list(self._bans.items())

    def unban(self, ip: str) -> bool:
        """Lift the ban on ``ip`` (or its IPv6 network); True when there was one."""
        return self._bans.pop(self._key(ip), None) is not None

    @property
    def tracked_sources(self) -> int:
        """Buckets currently held (sources seen within the last window)."""
        return len(self._buckets)


_REASON = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x21), 0x22, 0x5C, 0x7F]}


def _escape(value: str | None) -> str:
    if value is None:
        return '""'
    if len(value) > _MAX_FIELD:
        value = value[:_MAX_FIELD] + "..."
    text = value.translate(_ESCAPES)
    if not text.isascii():
        text = "".join(
            c if c.isascii() or (c.isprintable() and not c.isspace()) else f"\\u{ord(c):04x}"
            for c in text
        )
    return f'"{text}"'


def security_event(
    reason: str,
    source_ip: str,
    source_port: int,
    method: str | None,
    call_id: str | None,
    user: str | None,
) -> str:
    """The fail2ban line for one rejected request (RFC 3261 §26.1.5, §22).

    ``SECURITY reason=<token> src=<ip> port=<p> method="..." call_id="..." user="..."``.

    ``reason`` must be a token (letters, digits, ``_.-``), ``source_ip`` an IP address and
    ``source_port`` 0..65535, else :class:`SecurityError`. The three values that come from the wire
    are quoted with every space, quote, backslash, control or non-printable character escaped
    (``\\x20``, ``\\x22``, ``\\u2028``...), truncated to 256 characters, so they never contain
    white space or a bare quote.
    """
    if not _REASON.fullmatch(reason):
        raise SecurityError("Security event reason is not a token")
    address = _parse_ip(source_ip)
    if address is None:
        raise SecurityError("Security event source is not an IP address")
    if isinstance(source_port, bool) or not isinstance(source_port, int):
        raise SecurityError("Security event port is not valid")
    if not 0 <= source_port <= 65535:
        raise SecurityError("Security event port is not valid")
    return (
        f"SECURITY reason={reason} src={address} port={source_port} method={_escape(method)}"
        f" call_id={_escape(call_id)} user={_escape(user)}"
    )
