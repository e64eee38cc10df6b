"""RTP port-pair allocation from the configured range (RFC 3550 §11: RTP on even, RTCP on odd
ports)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import TypeVar, cast

logger = logging.getLogger(__name__)


class PortsExhausted(RuntimeError):
    """No port pair of the range could be had: all are in use by us, or held by another
    process."""


class PortAllocator:
    """Hands out even RTP ports of ``[low, high]``, least recently released first.

    Reusing the port released longest ago keeps late packets of an ended call from landing in the
    next one. A port another process holds (its bind failed with EADDRINUSE) is `skipped`: it
    goes to the back of the free ports, to be tried again once the others have been, and is
    counted in `held_elsewhere`.
    """

    def __init__(self, low: int, high: int) -> None:
        if low % 2:
            low += 1
        if low >= high:
            raise ValueError("RTP port range is empty")
        self.low = low
        self.high = high
        self._free: deque[int] = deque(range(low, high, 2))
        self._used: set[int] = set()
        self.held_elsewhere = 0
        self._warned = False

    def allocate(self) -> int:
        """Take the next free even port."""
        if not self._free:
            raise PortsExhausted(f"all RTP ports of {self.low}-{self.high} are in use")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a port back; releasing twice or a foreign port does nothing."""
        if port in self._used:
            self._used.remove(port)
            self._free.append(port)

    def skip(self, port: int, held: int) -> None:
        """`port` (an allocated one) could not be bound because another process holds `held`
        (the port or the next one): it goes back last among the free ports, counted; the first
        one is logged (the count says how many followed)."""
        self.release(port)
        self.held_elsewhere += 1
        if not self._warned:
            self._warned = True
            logger.warning(
                "RTP port %d (range %d-%d) is held by another process: such ports are skipped "
                "and counted (status media.rtp_ports_held_elsewhere)",
                held,
                self.low,
                self.high,
            )

    @property
    def free(self) -> int:
        """How many ports are free (held elsewhere or not)."""
        return len(self._free)

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
        self.failures = 0

    def take_idle(self) -> PortPair | None:
        """An open pair from the pool, without waiting; None when the pool is empty."""
        if not self._idle:
            return None
        self.in_use += 1
        return self._idle.popleft()

    async def acquire(self) -> PortPair:
        """An open pair: from the pool, or newly bound (PortsExhausted, OSError; counted in
        `failures`)."""
        pair = self.take_idle()
        if pair is not None:
            return pair
        try:
            port, rtp, rtcp = await bind_pair(self.ports, self.host, RtpSocket, RtpSocket)
        except (PortsExhausted, OSError):
            self.failures += 1
            raise
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


MAX_TRIES = 512
"""Pairs one call tries at most: trying a held pair costs about 12 µs, so a call waits some
6 ms at worst however large a range another process holds."""

P = TypeVar("P", bound=asyncio.DatagramProtocol)
Q = TypeVar("Q", bound=asyncio.DatagramProtocol)


async def bind_pair(
    ports: PortAllocator,
    host: str,
    rtp_factory: Callable[[], P],
    rtcp_factory: Callable[[], Q],
    tries: int = MAX_TRIES,
) -> tuple[int, P, Q]:
    """Bind an RTP socket on an even port and RTCP on the next one; returns (port, rtp, rtcp).

    A pair another process holds (EADDRINUSE on either port) is skipped (`PortAllocator.skip`)
    and the next free pair tried, each free pair at most once and `tries` at most: PortsExhausted
    when every one tried was held (the message says so; the held pairs are now last, so the
    next call tries others first). Any other bind error (the address is not ours, say) is the
    same for every port: OSError at once.
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    held = 0
    for _ in range(max(1, min(tries, ports.free))):
        port = ports.allocate()
        pair: list[socket.socket] = []
        try:
            for offset in (0, 1):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                pair.append(sock)
                sock.setblocking(False)
                sock.bind((host, port + offset))
        except OSError as exc:
            for sock in pair:
                sock.close()
            if exc.errno != errno.EADDRINUSE:
                ports.release(port)
                raise
            ports.skip(port, port + len(pair) - 1)
            held += 1
            continue
        # Bound sockets are handed over as they are: no name resolution on the way.
        rtp_transport, rtp = await loop.create_datagram_endpoint(rtp_factory, sock=pair[0])
        try:
            _, rtcp = await loop.create_datagram_endpoint(rtcp_factory, sock=pair[1])
        except BaseException:
            rtp_transport.close()
            pair[1].close()
            ports.release(port)
            raise
        return port, rtp, rtcp
    raise PortsExhausted(
        f"the {held} RTP port pairs tried of the {ports.free} free of {ports.low}-{ports.high}"
        " are held by another process"
    )
