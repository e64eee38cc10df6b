"""A socket-level RTP echo: every packet received goes back to where it came from.

This is the `echo` target's media until the media engine carries it (jitter buffer, codec-aware
echo). Symmetric RTP with latching (RFC 4961): the source of the first RTP or RTCP version 2 packet
(from the host the SDP named, when known) is the peer; garbage latches nothing, and packets from
any other address are dropped and counted, so a third party cannot hijack the stream. RTCP on the
next port is echoed the same way.
"""

from __future__ import annotations

from media.ports import PortPair, RtpSocket, RtpSocketPool


class _Echo:
    """The receive handler of one socket: latch, check, send back."""

    __slots__ = ("dropped", "expected_host", "packets", "peer", "sock")

    def __init__(self, sock: RtpSocket, expected_host: str | None) -> None:
        self.sock = sock
        self.expected_host = expected_host
        self.peer: tuple[str, int] | None = None
        self.packets = 0
        self.dropped = 0

    def __call__(self, data: bytes, addr: tuple[str, int]) -> None:
        peer = self.peer
        if peer is None:
            if self.expected_host is not None and addr[0] != self.expected_host:
                self.dropped += 1
                return
        elif addr[0] != peer[0] or addr[1] != peer[1]:
            self.dropped += 1
            return
        if len(data) < 8 or data[0] >> 6 != 2:
            self.dropped += 1
            return
        if peer is None:  # only a packet that passed the check latches (RFC 4961)
            self.peer = peer = (addr[0], addr[1])
        self.packets += 1
        self.sock.sendto(data, peer)


class RtpEcho:
    """An RTP/RTCP port pair from the pool that echoes what it receives."""

    def __init__(self, pool: RtpSocketPool, expected_host: str | None = None) -> None:
        self._pool = pool
        self.expected_host = expected_host
        self.port = 0
        self._pair: PortPair | None = None
        self._rtp: _Echo | None = None

    def start_now(self) -> int | None:
        """Take an open pair from the pool without waiting; None when it has none."""
        pair = self._pool.take_idle()
        if pair is None:
            return None
        return self._attach(pair)

    async def start(self) -> int:
        """Take an open pair (binding one when the pool is empty); returns the RTP port."""
        return self._attach(await self._pool.acquire())

    def _attach(self, pair: PortPair) -> int:
        self._pair = pair
        self._rtp = _Echo(pair.rtp, self.expected_host)
        pair.rtp.handler = self._rtp
        pair.rtcp.handler = _Echo(pair.rtcp, self.expected_host)
        self.port = pair.port
        return pair.port

    @property
    def packets(self) -> int:
        """RTP packets echoed."""
        return self._rtp.packets if self._rtp is not None else 0

    def stop(self) -> None:
        """Give the pair back to the pool; safe to call twice."""
        if self._pair is not None:
            self._pool.release(self._pair)
            self._pair = None
            self.port = 0
