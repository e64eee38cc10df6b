"""RTP port-pair allocation from the configured range (RFC 3550 §11: RTP on even, RTCP on odd
ports)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import TypeVar, cast

logger = logging.getLogger(__name__)


class PortsExhausted(RuntimeError):
    """Every port pair of the range is in use."""


class PortAllocator:
    """Hands out even RTP ports of ``[low, high]``, least recently released first.

    Reusing the port released longest ago keeps late packets of an ended call from landing in the
    next one.
    """

    def __init__(self, low: int, high: int) -> None:
        if low % 2:
            low += 1
        if low >= high:
            raise ValueError("RTP port range is empty")
        self._free: deque[int] = deque(range(low, high, 2))
        self._used: set[int] = set()

    def allocate(self) -> int:
        """Take the next free even port."""
        if not self._free:
            raise PortsExhausted("no free RTP port")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a port back; releasing twice or a foreign port does nothing."""
        if port in self._used:
            self._used.remove(port)
            self._free.append(port)

    @property
    def in_use(self) -> int:
        """How many ports are allocated."""
        return len(self._used)


class RtpSocket(asyncio.DatagramProtocol):
    """One bound UDP socket of a pair; its owner sets `handler` (None: datagrams are dropped)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._handler: Callable[[bytes, tuple[str, int]], None] | None = None
        self.dropped = 0

    @property
    def handler(self) -> Callable[[bytes, tuple[str, int]], None] | None:
        """Where datagrams go; None drops (and counts) them."""
        return self._handler

    @handler.setter
    def handler(self, handler: Callable[[bytes, tuple[str, int]], None] | None) -> None:
        # The event loop looks `datagram_received` up on every datagram: an instance attribute
        # sends each one straight to the handler, one Python call fewer per packet.
        self._handler = handler
        if handler is None:
            self.__dict__.pop("datagram_received", None)
        else:
            self.__dict__["datagram_received"] = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram with no handler: dropped and counted."""
        self.dropped += 1

    def error_received(self, exc: Exception) -> None:
        logger.debug("RTP socket error: %s", exc)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send a datagram; a closed socket drops it."""
        if self.transport is not None:
            self.transport.sendto(data, addr)


class PortPair:
    """A bound RTP socket on an even port and its RTCP socket on the next one."""

    __slots__ = ("port", "rtcp", "rtp")

    def __init__(self, port: int, rtp: RtpSocket, rtcp: RtpSocket) -> None:
        self.port = port
        self.rtp = rtp
        self.rtcp = rtcp

    def close(self) -> None:
        """Close both sockets."""
        for sock in (self.rtp, self.rtcp):
            sock.handler = None
            if sock.transport is not None:
                sock.transport.close()
                sock.transport = None


class RtpSocketPool:
    """Bound port pairs, kept open between calls.

    Binding and closing two sockets costs about 100 µs per call on our machines, a good part of a
    call's budget at high call rates. A released pair goes back to the pool with its sockets open
    and its handlers cleared (stray packets for an ended call are dropped and counted); `acquire`
    hands out the pair released longest ago, so a late packet of one call is very unlikely to find
    the next. At most `max_idle` pairs stay open; beyond that a released pair is closed and its
    ports go back to the allocator.
    """

    def __init__(self, ports: PortAllocator, host: str, max_idle: int = 1024) -> None:
        self.ports = ports
        self.host = host
        self.max_idle = max_idle
        self._idle: deque[PortPair] = deque()
        self.in_use = 0

    def take_idle(self) -> PortPair | None:
        """An open pair from the pool, without waiting; None when the pool is empty."""
        if not self._idle:
            return None
        self.in_use += 1
        return self._idle.popleft()

    async def acquire(self) -> PortPair:
        """An open pair: from the pool, or newly bound (PortsExhausted, OSError)."""
        pair = self.take_idle()
        if pair is not None:
            return pair
        port, rtp, rtcp = await bind_pair(self.ports, self.host, RtpSocket, RtpSocket)
        self.in_use += 1
        return PortPair(port, rtp, rtcp)

    def release(self, pair: PortPair) -> None:
        """Give a pair back (once); it stays open in the pool or is closed when the pool is full."""
        self.in_use -= 1
        pair.rtp.handler = None
        pair.rtcp.handler = None
        if len(self._idle) < self.max_idle and pair.rtp.transport is not None:
            self._idle.append(pair)
        else:
            pair.close()
            self.ports.release(pair.port)

    @property
    def idle(self) -> int:
        """Open pairs waiting in the pool."""
        return len(self._idle)

    def close(self) -> None:
        """Close every idle pair (at shutdown)."""
        while self._idle:
            pair = self._idle.popleft()
            pair.close()
            self.ports.release(pair.port)


P = TypeVar("P", bound=asyncio.DatagramProtocol)
Q = TypeVar("Q", bound=asyncio.DatagramProtocol)


async def bind_pair(
    ports: PortAllocator,
    host: str,
    rtp_factory: Callable[[], P],
    rtcp_factory: Callable[[], Q],
    attempts: int = 16,
) -> tuple[int, P, Q]:
    """Bind an RTP socket on an even port and RTCP on the next one; returns (port, rtp, rtcp).

    A pair that another process holds stays allocated, out of the rotation, and the next pair
    is tried. Raises PortsExhausted, or OSError when no pair could be bound.
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):
        port = ports.allocate()
        pair: list[socket.socket] = []
        try:
            for offset in (0, 1):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                pair.append(sock)
                sock.setblocking(False)
                sock.bind((host, port + offset))
        except OSError:
            for sock in pair:
                sock.close()
            continue
        # Bound sockets are handed over as they are: no name resolution on the way.
        rtp_transport, rtp = await loop.create_datagram_endpoint(rtp_factory, sock=pair[0])
        try:
            _, rtcp = await loop.create_datagram_endpoint(rtcp_factory, sock=pair[1])
        except BaseException:
            rtp_transport.close()
            pair[1].close()
            raise
        return port, rtp, rtcp
    raise OSError("no bindable RTP port pair")
