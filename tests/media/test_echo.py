"""RtpEcho: latching and echo of the `echo` target's socket-level media."""

from __future__ import annotations

from typing import cast

from media.echo import RtpEcho
from media.ports import PortPair, RtpSocketPool
from tests.media.fakes import CapturingTransport, fake_pair, rtp

PEER = ("127.0.0.1", 30000)


class OnePairPool:
    def __init__(self) -> None:
        self.pair, self.rtp_sent, _ = fake_pair(40000)

    def take_idle(self) -> PortPair:
        return self.pair

    def release(self, pair: PortPair) -> None:
        pass


def started(expected_host: str) -> tuple[RtpEcho, PortPair, CapturingTransport]:
    pool = OnePairPool()
    echo = RtpEcho(cast(RtpSocketPool, pool), expected_host)
    assert echo.start_now() == 40000
    return echo, pool.pair, pool.rtp_sent


def test_garbage_from_the_sdp_host_latches_nothing_and_the_first_rtp_packet_does() -> None:
    echo, pair, sent = started("127.0.0.1")
    pair.rtp.datagram_received(b"\x00" * 40, ("127.0.0.1", 9999))
    assert sent.sent == []
    pair.rtp.datagram_received(rtp(1, 160), PEER)
    pair.rtp.datagram_received(rtp(2, 320), ("127.0.0.1", 9999))
    assert echo.packets == 1 and sent.sent == [(rtp(1, 160), PEER)]


def test_another_host_than_the_sdp_one_cannot_latch() -> None:
    echo, pair, sent = started("127.0.0.1")
    pair.rtp.datagram_received(rtp(1, 160), ("10.9.9.9", 30000))
    pair.rtp.datagram_received(rtp(2, 320), PEER)
    assert echo.packets == 1 and sent.sent == [(rtp(2, 320), PEER)]
