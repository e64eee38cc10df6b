"""A passthrough RTP/RTCP relay between two call legs that share a codec.

Each leg has its own port pair on our side. What arrives on leg A's RTP port from A's peer leaves
from leg B's RTP port to B's peer, and the other way round; the same for RTCP on the odd ports.
Symmetric RTP with latching (RFC 4961): until a leg's peer has sent anything, packets go to the
address its SDP gave; the first packet from the expected host latches the peer's real address (a
caller behind NAT); afterwards packets from any other address are dropped and counted (no media
hijack).

This is the trunk-to-trunk media path until the media engine's bridge takes over (header rewriting,
transcoding, jitter buffers, recording).
"""

from __future__ import annotations

from omlmedia.media.ports import PortPair, RtpSocket, RtpSocketPool


class _Socket:
    """The receive handler of one of our four sockets: it forwards through its twin."""

    __slots__ = ("dropped", "expected_host", "latched", "peer", "received", "sock", "twin")

    def __init__(self, sock: RtpSocket) -> None:
        self.sock = sock
        self.expected_host: str | None = None
        self.peer: tuple[str, int] | None = None  # from SDP until latched
        self.latched = False
        self.twin: _Socket | None = None
        self.received = 0
        self.dropped = 0

    def __call__(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.latched:
            if self.expected_host is not None and addr[0] != self.expected_host:
                self.dropped += 1
                return
            self.peer = (addr[0], addr[1])
            self.latched = True
        elif self.peer is None or addr[0] != self.peer[0] or addr[1] != self.peer[1]:
            self.dropped += 1
            return
        if len(data) < 8 or data[0] >> 6 != 2:
            self.dropped += 1
            return
        self.received += 1
        twin = self.twin
        if twin is not None and twin.peer is not None:
            twin.sock.sendto(data, twin.peer)


class Leg:
    """Our RTP/RTCP port pair facing one peer."""

    def __init__(self, pair: PortPair) -> None:
        self.pair = pair
        self.port = pair.port
        self.rtp = _Socket(pair.rtp)
        self.rtcp = _Socket(pair.rtcp)
        pair.rtp.handler = self.rtp
        pair.rtcp.handler = self.rtcp

    def set_remote(
        self, host: str, rtp_port: int, rtcp_port: int | None = None, relatch: bool = False
    ) -> None:
        """Where the peer's SDP says it receives; latching may refine it. `relatch` when a new
        peer takes this leg (a transfer): the old peer's packets are dropped from then on."""
        if relatch:
            self.rtp.latched = self.rtcp.latched = False
        self.rtp.expected_host = host
        self.rtcp.expected_host = host
        if not self.rtp.latched:
            self.rtp.peer = (host, rtp_port)
        if not self.rtcp.latched:
            self.rtcp.peer = (host, rtcp_port if rtcp_port else rtp_port + 1)


class RtpRelay:
    """Two legs whose packets cross over."""

    def __init__(self, pool: RtpSocketPool) -> None:
        self._pool = pool
        self.a: Leg | None = None
        self.b: Leg | None = None

    async def start(self) -> tuple[int, int]:
        """Take both legs' port pairs; returns (port of leg A, port of leg B)."""
        self.a = Leg(await self._pool.acquire())
        try:
            self.b = Leg(await self._pool.acquire())
        except OSError:
            self.stop()
            raise
        self.a.rtp.twin, self.b.rtp.twin = self.b.rtp, self.a.rtp
        self.a.rtcp.twin, self.b.rtcp.twin = self.b.rtcp, self.a.rtcp
        return self.a.port, self.b.port

    @property
    def packets(self) -> int:
        """RTP packets relayed in both directions."""
        return sum(leg.rtp.received for leg in (self.a, self.b) if leg is not None)

    def stop(self) -> None:
        """Give both port pairs back to the pool; safe to call twice."""
        for leg in (self.a, self.b):
            if leg is not None:
                self._pool.release(leg.pair)
        self.a = self.b = None
