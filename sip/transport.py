"""The asyncio SIP transports: UDP, TCP and TLS (RFC 3261 §18).

This is the thin I/O adapter under the sans-IO transaction layer. It owns the listening sockets and
the stream connections, hands every complete message to ``on_message(data, source)`` and sends what
it is given with ``send(data, destination)``. It never parses more than the stream framing needs
(:func:`sip.message.parse_stream`) and never raises to its callers: send failures are reported
through ``on_error(destination)``, peer misbehaviour is counted in :class:`TransportStats` and ends
at most the offending connection.

Stream connections are keyed by the peer's ``Endpoint`` whichever side opened them, so a response
to a request that arrived over TCP or TLS goes back over the same connection (RFC 3261 §18.2.2),
and requests to a peer reuse an open connection (§18.1.1). Double-CRLF pings are answered with a
CRLF pong (RFC 5626 §3.5.1) and count as activity for the idle timeout.

Bounds. Stream connections are capped in total and per source (an IPv4 address, an IPv6 /64,
since one host commonly owns a whole /64); the last ``reserved_connections`` of the total are
kept for sources the ``trusted`` predicate names (trunks) and for our own outbound connections, so
strangers filling the table shut out neither the PBX nor a call to a trunk. Trusted sources are
not capped per source. A connection we accepted must deliver a complete message within
``first_message_timeout`` (a TLS one must finish its handshake within ``connect_timeout`` first),
and any connection without traffic for ``idle_timeout`` is closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sip.endpoint import Endpoint
from sip.message import parse_stream
from sip.tls import CRL_POLL_SECONDS, MutualContexts

logger = logging.getLogger(__name__)

MessageCallback = Callable[[bytes, Endpoint], None]
ErrorCallback = Callable[[Endpoint], None]

_PING = b"\r\n\r\n"
_PONG = b"\r\n"
_UDP_KEEPALIVE_MAX = 4
_CLOSE_GRACE = 1.0
_LITERAL_CACHE_SIZE = 4096
_SOURCE_CACHE_SIZE = 4096
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


class TransportConfigError(ValueError):
    """The transports were configured or used with invalid arguments."""


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Resource limits of :class:`SipTransports` (RFC 3261 §18, RFC 5626 §3.5.1, RFC 5923 §11).

    ``max_message_size`` bounds a datagram and a framed stream message (headers plus body);
    ``idle_timeout`` closes a stream connection without traffic in either direction; the connection
    caps apply to concurrent stream connections (``max_connections_per_ip`` to inbound ones per
    source: an IPv4 address or an IPv6 /64; untrusted inbound ones stop ``reserved_connections``
    short of ``max_connections``); ``connect_timeout`` bounds an outbound connect and an inbound
    TLS handshake; ``first_message_timeout`` is how long an inbound connection may stay open before
    its first complete message; ``max_write_buffer`` is the unsent backlog at which a stream
    connection to a peer that does not read is aborted.
    """

    max_message_size: int = 65535
    idle_timeout: float = 120.0
    max_connections: int = 4096
    max_connections_per_ip: int = 64
    connect_timeout: float = 10.0
    max_write_buffer: int = 1 << 20
    reserved_connections: int = 0
    first_message_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_message_size < 64:
            raise TransportConfigError("max_message_size must be at least 64")
        if (
            not self.idle_timeout > 0
            or not self.connect_timeout > 0
            or not self.first_message_timeout > 0
        ):
            raise TransportConfigError("timeouts must be positive")
        if self.max_connections < 1 or self.max_connections_per_ip < 1:
            raise TransportConfigError("connection caps must be at least 1")
        if not 0 <= self.reserved_connections < self.max_connections:
            raise TransportConfigError("reserved_connections must be from 0 to max_connections - 1")
        if self.max_write_buffer < self.max_message_size:
            raise TransportConfigError("max_write_buffer must hold one message")


@dataclass(slots=True)
class TransportStats:
    """Counters of :class:`SipTransports`; read them, never write them.

    ``dropped`` counts discarded input: oversize datagrams and stream connections closed for an
    oversized or unframeable message. ``keepalives`` counts CRLF pings answered and tiny UDP
    keep-alive datagrams ignored. ``send_errors`` counts sends reported through ``on_error``;
    ``callback_errors`` counts exceptions raised by ``on_message`` or ``on_error``.
    """

    datagrams_in: int = 0
    datagrams_out: int = 0
    stream_messages_in: int = 0
    stream_messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: int = 0
    keepalives: int = 0
    connections_open: int = 0
    connections_total: int = 0
    connections_rejected: int = 0
    connections_idle_closed: int = 0
    connections_silent_closed: int = 0
    """Inbound connections closed for sending no complete message in time."""
    send_errors: int = 0
    callback_errors: int = 0


def _drop_message(data: bytes, source: Endpoint) -> None:
    """The default ``on_message``: nothing is listening yet."""


def _ignore_error(destination: Endpoint) -> None:
    """The default ``on_error``."""


def _trust_nobody(host: str) -> bool:
    """The default ``trusted``."""
    return False


def source_key(host: str) -> str:
    """What a source is counted by: an IPv4 address as it is, an IPv6 address by its /64 (an
    IPv4-mapped one as its IPv4 address); anything else as it is."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.strip("[]").partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


@dataclass(frozen=True, slots=True)
class Internal:
    """A private TLS listener and the peers reached through it (`SipTransports.start`)."""

    port: int
    """Where it listens (on the transports' host)."""
    server_context: ssl.SSLContext
    """Requires the peer's certificate (mutual TLS)."""
    client_context: ssl.SSLContext
    """For connections to `peers`."""
    peers: frozenset[tuple[str, int]]
    """The (host, port) of the other ends' internal listeners."""
    contexts: MutualContexts | None = None
    """Where `server_context` and `client_context` come from when they follow a CRL file: its
    changes are polled every `CRL_POLL_SECONDS` and open internal connections whose peer
    certificate a new CRL revokes are closed."""


class SipTransports:
    """The listening sockets and stream connections of one SIP process (RFC 3261 §18).

    ``on_message(data, source)`` receives exactly one complete message per call;
    ``on_error(destination)`` is told about every send that could not be carried out. Both may be
    replaced at any time. A UDP destination must be an IP literal (RFC 3263 resolution belongs to
    the layer above; a name is reported through ``on_error``, never resolved on the loop). A TCP or
    TLS destination may be a name: the loop resolves it off-thread and TLS verifies the server's
    certificate against it (RFC 5922 §7.1). Outbound connections leave from the listening host
    unless it is a wildcard.
    """

    def __init__(
        self,
        on_message: MessageCallback | None = None,
        on_error: ErrorCallback | None = None,
        *,
        limits: TransportLimits | None = None,
        trusted: Callable[[str], bool] | None = None,
    ) -> None:
        self.on_message: MessageCallback = on_message or _drop_message
        self.on_error: ErrorCallback = on_error or _ignore_error
        self.trusted: Callable[[str], bool] = trusted or _trust_nobody
        """Whether a source IP is a trusted peer's: it may use the reserved connections and is not
        capped per source. May be replaced at any time."""
        self.limits = limits or TransportLimits()
        self.stats = TransportStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpProtocol | None = None
        self._servers: dict[str, asyncio.Server] = {}
        self._local: dict[str, Endpoint] = {}
        self._tls_client_context: ssl.SSLContext | None = None
        self._internal_client_context: ssl.SSLContext | None = None
        self._internal_peers: frozenset[tuple[str, int]] = frozenset()
        self._crl: MutualContexts | None = None
        self._crl_handle: asyncio.TimerHandle | None = None
        self._connections: dict[Endpoint, _StreamConnection] = {}
        self._live: set[_StreamConnection] = set()
        self._per_source: dict[str, int] = {}
        self._connecting: set[asyncio.Task[None]] = set()
        self._literal_hosts: dict[str, bool] = {}
        self._outbound_local: tuple[str, int] | None = None
        self._started = False
        self._closed = False

    async def start(
        self,
        *,
        host: str,
        udp_port: int | None = None,
        tcp_port: int | None = None,
        tls_port: int | None = None,
        tls_server_context: ssl.SSLContext | None = None,
        tls_client_context: ssl.SSLContext | None = None,
        internal: Internal | None = None,
    ) -> None:
        """Bind the listeners asked for (port 0: ephemeral) on ``host`` (RFC 3261 §18.2.1).

        ``tls_client_context`` enables outbound TLS connections; without it, TLS sends fail through
        ``on_error``. ``internal`` adds a private TLS listener with its own contexts (mutual TLS
        between the nodes of a cluster): connections it accepts, and those opened to its peers,
        are `is_internal`. If a bind fails, what was already bound is closed and the ``OSError``
        propagates.
        """
        if self._started:
            raise TransportConfigError("transports already started")
        if tls_port is not None and tls_server_context is None:
            raise TransportConfigError("a TLS port needs a server context")
        self._started = True
        loop = self._loop = asyncio.get_running_loop()
        self._tls_client_context = tls_client_context
        if host not in _WILDCARDS:
            self._outbound_local = (host, 0)
        try:
            if udp_port is not None:
                udp, protocol = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(host, udp_port)
                )
                self._udp = udp
                self._udp_protocol = protocol
                self._local["udp"] = _bound_endpoint("udp", udp.get_extra_info("sockname"))
            if internal is not None:
                self._internal_client_context = internal.client_context
                self._internal_peers = frozenset(internal.peers)
                self._crl = internal.contexts
                if self._crl is not None and self._crl.crl is not None:
                    self._crl_handle = loop.call_later(CRL_POLL_SECONDS, self._poll_crl)
            for kind, port, context in (
                ("tcp", tcp_port, None),
                ("tls", tls_port, tls_server_context),
                ("internal", None if internal is None else internal.port, None),
            ):
                if kind == "internal" and internal is not None:
                    context = internal.server_context
                if port is None:
                    continue
                server = await loop.create_server(
                    lambda kind=kind: _StreamConnection(
                        self, "tls" if kind == "internal" else kind, None, kind == "internal"
                    ),
                    host,
                    port,
                    ssl=context,
                    ssl_handshake_timeout=self.limits.connect_timeout if context else None,
                    backlog=1024,
                )
                self._servers[kind] = server
                bound = server.sockets[0].getsockname()
                self._local[kind] = _bound_endpoint("tls" if kind == "internal" else kind, bound)
        except BaseException:
            await self.close()
            raise

    def local_endpoint(self, transport: str) -> Endpoint:
        """The bound address of the ``udp``, ``tcp`` or ``tls`` listener, for Via and Contact."""
        try:
            return self._local[transport]
        except KeyError:
            raise TransportConfigError("transport is not listening") from None

    def is_internal(self, endpoint: Endpoint) -> bool:
        """Whether `endpoint` is reached over the internal TLS link: one of its peers' listeners,
        or a connection its listener accepted (the peer's certificate chained to its CA)."""
        if endpoint.transport != "tls" or not self._internal_peers:
            return False
        if (endpoint.host, endpoint.port) in self._internal_peers:
            return True
        connection = self._connections.get(endpoint)
        return connection is not None and connection.internal

    @property
    def connection_count(self) -> int:
        """Stream connections currently open (both directions)."""
        return len(self._live)

    def send(self, data: bytes, destination: Endpoint) -> None:
        """Send one message without blocking (RFC 3261 §18.1.1, §18.2.2).

        UDP: one datagram. TCP/TLS: over the open connection to the peer's host and port, whichever
        side opened it, else over a new connection (data is queued until it is established).
        Failures are reported through ``on_error(destination)``, never raised.
        """
        if destination.transport == "udp":
            udp, udp_protocol = self._udp, self._udp_protocol
            host = destination.host
            literal = self._literal_hosts.get(host)
            if literal is None:
                literal = self._remember_literal(host)
            if udp is None or udp_protocol is None or not literal:
                self._send_failed(destination)
                return
            udp_protocol.sending_to = destination
            try:
                udp.sendto(data, (host, destination.port))
            except Exception:
                udp_protocol.sending_to = None
                self._send_failed(destination)
                return
            if udp_protocol.sending_to is None:
                return
            udp_protocol.sending_to = None
            stats = self.stats
            stats.datagrams_out += 1
            stats.bytes_out += len(data)
            return
        connection = self._connections.get(destination)
        if connection is None or connection.is_closing():
            connection = self._open(destination)
            if connection is None:
                return
        connection.send(data)

    async def close(self) -> None:
        """Close every listener and connection and wait until they are closed."""
        self._closed = True
        if self._crl_handle is not None:
            self._crl_handle.cancel()
            self._crl_handle = None
        for task in list(self._connecting):
            task.cancel()
        if self._connecting:
            await asyncio.wait(list(self._connecting))
        for server in self._servers.values():
            server.close()
        live = list(self._live)
        for connection in live:
            connection.close()
        waiters = [connection.closed for connection in live]
        if waiters:
            _, pending = await asyncio.wait(waiters, timeout=_CLOSE_GRACE)
            if pending:
                for connection in live:
                    connection.abort()
                await asyncio.wait(pending, timeout=_CLOSE_GRACE)
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()
        self._connections.clear()
        udp_protocol = self._udp_protocol
        if self._udp is not None and udp_protocol is not None:
            self._udp.close()
            await asyncio.wait([udp_protocol.closed], timeout=_CLOSE_GRACE)
        self._udp = None
        self._udp_protocol = None

    def _poll_crl(self) -> None:
        """Apply a changed CRL file (`MutualContexts.reload`): new handshakes already use it;
        here the open internal connections whose peer certificate it revokes are closed."""
        contexts, loop = self._crl, self._loop
        if contexts is None or loop is None or self._closed:
            return
        try:
            if contexts.reload():
                for connection in list(self._live):
                    transport = connection.transport
                    if not connection.internal or transport is None:
                        continue
                    tls = transport.get_extra_info("ssl_object")
                    if tls is not None and contexts.is_revoked(tls.getpeercert(binary_form=True)):
                        logger.warning(
                            "closing %s: its certificate is revoked", connection.endpoint
                        )
                        connection.abort()
        finally:
            self._crl_handle = loop.call_later(CRL_POLL_SECONDS, self._poll_crl)

    def _remember_literal(self, host: str) -> bool:
        try:
            ipaddress.ip_address(host)
            literal = True
        except ValueError:
            literal = False
        if len(self._literal_hosts) >= _LITERAL_CACHE_SIZE:
            self._literal_hosts.clear()
        self._literal_hosts[host] = literal
        return literal

    def _open(self, destination: Endpoint) -> _StreamConnection | None:
        loop = self._loop
        context: ssl.SSLContext | None = None
        internal = False
        if destination.transport == "tls":
            internal = (destination.host, destination.port) in self._internal_peers
            context = self._internal_client_context if internal else self._tls_client_context
            if context is None:
                self._send_failed(destination)
                return None
        elif destination.transport != "tcp":
            self._send_failed(destination)
            return None
        if loop is None or self._closed or len(self._live) >= self.limits.max_connections:
            self._send_failed(destination)
            return None
        connection = _StreamConnection(self, destination.transport, destination, internal)
        self._connections[destination] = connection
        task = loop.create_task(self._connect(connection, context))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return connection

    async def _connect(self, connection: _StreamConnection, context: ssl.SSLContext | None) -> None:
        destination = connection.endpoint
        assert destination is not None and self._loop is not None
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                await self._loop.create_connection(
                    lambda: connection,
                    destination.host,
                    destination.port,
                    ssl=context,
                    server_hostname=destination.host if context is not None else None,
                    local_addr=self._outbound_local,
                )
        except asyncio.CancelledError:
            self._forget(connection)
            raise
        except Exception as exc:
            logger.debug("connect to %s failed: %r", destination, exc)
            self._forget(connection)
            if not self._closed:
                self._send_failed(destination)

    def _admit(self, connection: _StreamConnection, inbound: bool) -> bool:
        endpoint = connection.endpoint
        assert endpoint is not None
        limits = self.limits
        if inbound:
            if self._closed:
                return False
            try:
                trusted = bool(self.trusted(endpoint.host))
            except Exception:
                self._callback_failed("trusted", endpoint)
                trusted = False
            cap = limits.max_connections
            if not trusted:
                cap -= limits.reserved_connections
            if len(self._live) >= cap:
                return False
            key = source_key(endpoint.host)
            count = self._per_source.get(key, 0)
            if not trusted and count >= limits.max_connections_per_ip:
                return False
            self._per_source[key] = count + 1
        self._connections[endpoint] = connection
        self._live.add(connection)
        stats = self.stats
        stats.connections_open += 1
        stats.connections_total += 1
        return True

    def _release(self, connection: _StreamConnection, inbound: bool) -> None:
        self._live.discard(connection)
        self.stats.connections_open -= 1
        endpoint = connection.endpoint
        assert endpoint is not None
        if inbound:
            key = source_key(endpoint.host)
            left = self._per_source[key] - 1
            if left:
                self._per_source[key] = left
            else:
                del self._per_source[key]
        self._forget(connection)

    def _forget(self, connection: _StreamConnection) -> None:
        endpoint = connection.endpoint
        if endpoint is not None and self._connections.get(endpoint) is connection:
            del self._connections[endpoint]

    def _send_failed(self, destination: Endpoint) -> None:
        self.stats.send_errors += 1
        try:
            self.on_error(destination)
        except Exception:
            self._callback_failed("on_error", destination)

    def _callback_failed(self, name: str, endpoint: Endpoint) -> None:
        stats = self.stats
        stats.callback_errors += 1
        count = stats.callback_errors
        if count <= 10 or count % 1000 == 0:
            logger.exception("%s failed for %s (%d failures so far)", name, endpoint, count)


def _bound_endpoint(transport: str, sockname: Any) -> Endpoint:
    return Endpoint(transport, sockname[0], sockname[1])


class _UdpProtocol(asyncio.DatagramProtocol):
    """The UDP socket: one datagram is one message (RFC 3261 §18.2.1)."""

    __slots__ = ("_max_size", "_owner", "_sources", "_stats", "closed", "sending_to")

    def __init__(self, owner: SipTransports) -> None:
        self._owner = owner
        self._stats = owner.stats
        self._max_size = owner.limits.max_message_size
        self._sources: dict[Any, Endpoint] = {}
        self.sending_to: Endpoint | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        size = len(data)
        stats = self._stats
        if size > self._max_size:
            stats.dropped += 1
            return
        if size <= _UDP_KEEPALIVE_MAX:
            stats.keepalives += 1
            return
        stats.datagrams_in += 1
        stats.bytes_in += size
        source = self._sources.get(addr)
        if source is None:
            source = self._remember_source(addr)
        try:
            self._owner.on_message(data, source)
        except Exception:
            self._owner._callback_failed("on_message", source)

    def _remember_source(self, addr: Any) -> Endpoint:
        sources = self._sources
        if len(sources) >= _SOURCE_CACHE_SIZE:
            sources.clear()
        source = sources[addr] = Endpoint("udp", addr[0], addr[1])
        return source

    def error_received(self, exc: Exception) -> None:
        destination = self.sending_to
        if destination is not None:
            self.sending_to = None
            self._owner._send_failed(destination)
        else:
            logger.debug("UDP socket error: %r", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, framed with ``parse_stream`` (RFC 3261 §18.3)."""

    __slots__ = (
        "_buffer",
        "_delivered",
        "_first_handle",
        "_idle_handle",
        "_inbound",
        "_kind",
        "_last_activity",
        "_loop",
        "_owner",
        "_paused",
        "_pending",
        "_pending_size",
        "_registered",
        "closed",
        "endpoint",
        "internal",
        "transport",
    )

    def __init__(
        self, owner: SipTransports, kind: str, endpoint: Endpoint | None, internal: bool = False
    ) -> None:
        self._owner = owner
        self.internal = internal
        """On the internal TLS link (`SipTransports.is_internal`)."""
        self._kind = kind
        self._inbound = endpoint is None
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._registered = False
        self._paused = False
        self._last_activity = 0.0
        self._idle_handle: asyncio.TimerHandle | None = None
        self._first_handle: asyncio.TimerHandle | None = None
        self._delivered = False
        self.closed: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        owner = self._owner
        if self._inbound:
            peer = transport.get_extra_info("peername")
            if not peer:
                transport.abort()
                return
            self.endpoint = Endpoint(self._kind, peer[0], peer[1])
        if not owner._admit(self, self._inbound):
            owner.stats.connections_rejected += 1
            transport.abort()
            return
        self._registered = True
        self._touch()
        self._idle_handle = self._loop.call_at(
            self._last_activity + owner.limits.idle_timeout, self._check_idle
        )
        if self._inbound:
            self._first_handle = self._loop.call_later(
                owner.limits.first_message_timeout, self._check_first_message
            )
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            if not self._write(data):
                self._failed()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if self._first_handle is not None:
            self._first_handle.cancel()
            self._first_handle = None
        if self._registered:
            self._registered = False
            self._owner._release(self, self._inbound)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False

    def is_closing(self) -> bool:
        transport = self.transport
        return transport is not None and transport.is_closing()

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            if self._pending_size + len(data) > self._owner.limits.max_write_buffer:
                self._failed()
                return
            self._pending.append(data)
            self._pending_size += len(data)
        elif transport.is_closing() or not self._write(data):
            self._failed()
            return
        stats = self._owner.stats
        stats.stream_messages_out += 1
        stats.bytes_out += len(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.is_closing():
            return
        owner = self._owner
        stats = owner.stats
        stats.bytes_in += len(data)
        self._last_activity = self._loop.time()
        buffer = self._buffer
        if not buffer and data[0] != 13:
            framed = self._frame(data)
            if framed is None:
                return
            message, consumed = framed
            if message is not None:
                self._deliver(message)
                if consumed == len(data) or self.is_closing():
                    return
                data = data[consumed:]
        buffer += data
        while buffer:
            if buffer[0] == 13:
                if buffer.startswith(_PING):
                    del buffer[:4]
                    stats.keepalives += 1
                    self._write(_PONG)
                    continue
                if len(buffer) < 4 and _PING.startswith(buffer):
                    return
                if buffer.startswith(_PONG):
                    del buffer[:2]
                    continue
            framed = self._frame(buffer)
            if framed is None:
                return
            message, consumed = framed
            if consumed:
                del buffer[:consumed]
            if message is None:
                if len(buffer) > owner.limits.max_message_size:
                    self._reject("oversized message")
                    return
                if not consumed:
                    return
                continue
            self._deliver(message)
            if self.is_closing():
                return

    def _frame(self, data: bytes | bytearray) -> tuple[bytes | None, int] | None:
        try:
            return parse_stream(data, self._owner.limits.max_message_size)
        except ValueError:
            self._reject("unframeable or oversized message")
        except Exception:
            logger.exception("framing failed on %s", self.endpoint)
            self._reject("framing failure")
        return None

    def _deliver(self, message: bytes) -> None:
        if not self._delivered:
            self._delivered = True
            if self._first_handle is not None:
                self._first_handle.cancel()
                self._first_handle = None
        owner = self._owner
        owner.stats.stream_messages_in += 1
        source = self.endpoint
        assert source is not None
        try:
            owner.on_message(message, source)
        except Exception:
            owner._callback_failed("on_message", source)

    def _reject(self, why: str) -> None:
        self._owner.stats.dropped += 1
        self._buffer.clear()
        logger.debug("closing %s: %s", self.endpoint, why)
        if self.transport is not None:
            self.transport.close()

    def _write(self, data: bytes) -> bool:
        transport = self.transport
        assert transport is not None
        try:
            transport.write(data)
        except Exception:
            return False
        self._touch()
        if self._paused and transport.get_write_buffer_size() > self._owner.limits.max_write_buffer:
            transport.abort()
            return False
        return True

    def _failed(self) -> None:
        if self.endpoint is not None:
            self._owner._send_failed(self.endpoint)

    def _touch(self) -> None:
        self._last_activity = self._loop.time()

    def _check_first_message(self) -> None:
        self._first_handle = None
        if not self._delivered and self.transport is not None and not self.is_closing():
            self._owner.stats.connections_silent_closed += 1
            logger.debug("closing %s: no complete message in time", self.endpoint)
            self.transport.close()

    def _check_idle(self) -> None:
        self._idle_handle = None
        deadline = self._last_activity + self._owner.limits.idle_timeout
        if self._loop.time() >= deadline:
            self._owner.stats.connections_idle_closed += 1
            if self.transport is not None:
                self.transport.close()
            return
        self._idle_handle = self._loop.call_at(deadline, self._check_idle)


__all__ = [
    "ErrorCallback",
    "Internal",
    "MessageCallback",
    "SipTransports",
    "TransportConfigError",
    "TransportLimits",
    "TransportStats",
    "source_key",
]
