"""RtpLeg: latching, validation, statistics and RTCP of one call leg."""

from __future__ import annotations

import struct
from typing import cast

from media.leg import RtpLeg
from media.quality import SenderStats
from media.rtcp import (
    ReceiverReport,
    ReportBlock,
    SenderReport,
    SourceDescription,
    ntp_middle,
    ntp_timestamp,
    parse_compound,
    serialize_compound,
)
from tests.media.fakes import PCMU, CapturingTransport, fake_pair, rtp

PEER = ("127.0.0.1", 30000)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_leg(clock: Clock | None = None) -> tuple[RtpLeg, list[tuple[bytes, int, int, int, int]]]:
    pair, _, _ = fake_pair(40000)
    leg = RtpLeg(pair, clock=clock or Clock(), wallclock=lambda: 1_800_000_000.0)
    leg.set_format(PCMU)
    leg.set_remote(*PEER, None)
    got: list[tuple[bytes, int, int, int, int]] = []
    leg.sink = lambda data, second, seq, ts, ssrc, now: got.append((data, second, seq, ts, ssrc))
    return leg, got


def test_first_packet_from_the_sdp_host_latches_its_source_port() -> None:
    leg, got = make_leg()
    leg.pair.rtp.datagram_received(rtp(1, 160), ("127.0.0.1", 31000))
    assert leg.latched and leg.peer == ("127.0.0.1", 31000)
    assert len(got) == 1


def test_packets_from_another_address_are_dropped_once_latched() -> None:
    leg, got = make_leg()
    leg.pair.rtp.datagram_received(rtp(1, 160), PEER)
    leg.pair.rtp.datagram_received(rtp(2, 320), ("127.0.0.1", 9999))
    leg.pair.rtp.datagram_received(rtp(3, 480), ("10.0.0.66", 30000))
    assert len(got) == 1
    assert leg.counters.dropped_source == 2
    assert leg.peer == PEER


def test_a_host_other_than_the_sdp_one_cannot_latch() -> None:
    leg, got = make_leg()
    leg.pair.rtp.datagram_received(rtp(1, 160), ("10.9.9.9", 30000))
    assert not leg.latched and not got
    assert leg.counters.dropped_source == 1


def test_a_host_name_in_the_sdp_is_never_resolved_nor_sent_to() -> None:
    leg, got = make_leg()
    leg.set_remote("media.example.invalid", 32000, None, relatch=True)
    assert leg.peer is None
    leg.send_packet(rtp(1, 160), 160, 160)
    assert not cast(CapturingTransport, leg.pair.rtp.transport).sent
    leg.pair.rtp.datagram_received(rtp(1, 160), ("127.0.0.1", 31000))
    assert not leg.latched and not got
    leg.set_remote("127.0.0.1", 31000, None)
    assert leg.peer == ("127.0.0.1", 31000)


def test_relatch_lets_the_new_peer_in_and_shuts_the_old_one_out() -> None:
    leg, got = make_leg()
    leg.pair.rtp.datagram_received(rtp(1, 160), PEER)
    leg.set_remote("127.0.0.2", 32000, None, relatch=True)
    leg.pair.rtp.datagram_received(rtp(2, 320), PEER)
    leg.pair.rtp.datagram_received(rtp(1, 160, ssrc=99), ("127.0.0.2", 32000))
    assert [g[4] for g in got] == [0x1234, 99]
    assert leg.counters.dropped_source == 1


def test_garbage_truncated_and_unknown_payload_types_are_counted_not_raised() -> None:
    leg, got = make_leg()
    for data in (b"", b"\x80", b"\x00" * 40, rtp(1, 160)[:11], b"\xff" * 20):
        leg.pair.rtp.datagram_received(data, PEER)
    leg.pair.rtp.datagram_received(rtp(1, 160, payload_type=18), PEER)
    assert not got
    assert leg.counters.dropped_payload_type == 1
    assert leg.counters.dropped_malformed >= 4
    assert leg.counters.received == 0


def test_telephone_events_reach_the_sink() -> None:
    leg, got = make_leg()
    leg.pair.rtp.datagram_received(rtp(1, 160, payload_type=101, payload=b"\x01\x0a\x00\xa0"), PEER)
    assert got and got[0][1] & 0x7F == 101


def test_a_new_ssrc_starts_fresh_statistics_and_keeps_the_totals() -> None:
    clock = Clock()
    leg, _ = make_leg(clock)
    for i in range(10):
        clock.now += 0.02
        leg.pair.rtp.datagram_received(rtp(100 + i, 160 * i), PEER)
    for i in range(10):
        clock.now += 0.02
        leg.pair.rtp.datagram_received(rtp(5000 + i, 99 + 160 * i, ssrc=77), PEER)
    assert leg.counters.ssrc_changes == 1
    assert leg.reception is not None and leg.reception.ssrc == 77
    quality = leg.quality()
    assert quality.packets_received == leg.counters.received - 2  # two on probation per source
    assert quality.packets_lost == 0


def test_loss_is_measured_on_the_peers_stream() -> None:
    clock = Clock()
    leg, _ = make_leg(clock)
    for i in range(100):
        clock.now += 0.02
        if i % 10 != 5:
            leg.pair.rtp.datagram_received(rtp(i, 160 * i), PEER)
    quality = leg.quality()
    assert quality.packets_lost == 10
    assert 0.09 < quality.loss < 0.11
    assert quality.mos is not None and quality.mos < 4.3


def test_send_numbers_our_packets_with_our_ssrc() -> None:
    leg, _ = make_leg()
    first = leg.sequence_number
    leg.send(0, True, 1000, b"\xff" * 160)
    leg.send(0, False, 1160, b"\xff" * 160)
    sent = leg.pair.rtp.transport.sent  # type: ignore[union-attr]
    assert [s[1] for s in sent] == [PEER, PEER]
    seqs = [struct.unpack_from("!H", s[0], 2)[0] for s in sent]
    assert seqs == [first, (first + 1) & 0xFFFF]
    assert struct.unpack_from("!I", sent[0][0], 8)[0] == leg.ssrc
    assert sent[0][0][1] == 0x80 and sent[1][0][1] == 0
    assert leg.counters.sent == 2


def test_reports_are_sr_after_sending_and_rr_otherwise_with_cname() -> None:
    clock = Clock()
    leg, _ = make_leg(clock)
    for i in range(20):
        clock.now += 0.02
        leg.pair.rtp.datagram_received(rtp(i, 160 * i), PEER)
    clock.now += 10
    assert leg.send_report(clock.now)
    rtcp = leg.pair.rtcp.transport.sent  # type: ignore[union-attr]
    packets = parse_compound(rtcp[-1][0])
    assert isinstance(packets[0], ReceiverReport)
    assert packets[0].reports[0].ssrc == 0x1234
    assert isinstance(packets[1], SourceDescription)
    assert rtcp[-1][1] == (PEER[0], PEER[1] + 1)
    leg.send(0, False, 5000, b"\xff" * 160)
    clock.now += 10
    assert leg.send_report(clock.now)
    packets = parse_compound(rtcp[-1][0])
    assert isinstance(packets[0], SenderReport)
    assert packets[0].packet_count == 1 and packets[0].octet_count == 160


def test_a_report_block_about_us_gives_round_trip_and_remote_loss() -> None:
    leg, _ = make_leg()
    wall = 1_800_000_000.0
    sent_sr = ntp_middle(ntp_timestamp(wall - 0.5))
    block = ReportBlock(leg.ssrc, 64, 3, 100, 80, sent_sr, int(0.4 * 65536))
    data = serialize_compound([ReceiverReport(0x1234, (block,))])
    leg.pair.rtcp.datagram_received(data, (PEER[0], PEER[1] + 1))
    assert leg.counters.rtcp_received == 1
    assert leg.round_trip is not None and abs(leg.round_trip - 0.1) < 0.001
    assert leg.remote_loss == 0.25
    assert leg.remote_jitter == 80 / 8000


def test_an_sr_from_the_peer_is_remembered_for_lsr() -> None:
    clock = Clock()
    leg, _ = make_leg(clock)
    for i in range(5):
        leg.pair.rtp.datagram_received(rtp(i, 160 * i), PEER)
    sr = SenderStats(0x1234).sender_report(1_799_999_999.0, 800)
    leg.pair.rtcp.datagram_received(serialize_compound([sr]), (PEER[0], PEER[1] + 1))
    assert leg.reception is not None and leg.reception.last_sr == ntp_middle(sr.ntp_timestamp)


def test_bad_rtcp_is_counted() -> None:
    leg, _ = make_leg()
    for data in (b"", b"\x81\xc9\x00\x07", b"\x80\xc8" + b"\x00" * 3, b"\x00" * 8):
        leg.pair.rtcp.datagram_received(data, (PEER[0], PEER[1] + 1))
    assert leg.counters.rtcp_malformed == 4


def test_rtcp_is_taken_from_the_rtp_port_with_rtcp_mux() -> None:
    leg, got = make_leg()
    leg.set_format(PCMU, rtcp_mux=True)
    data = serialize_compound([ReceiverReport(0x1234, ())])
    leg.pair.rtp.datagram_received(data, PEER)
    assert leg.counters.rtcp_received == 1 and not got


class RejectingSrtp:
    def protect_rtp(self, data: bytes) -> bytes:
        return data + b"TAG"

    def unprotect_rtp(self, data: bytes) -> bytes:
        if not data.endswith(b"TAG"):
            raise ValueError("SRTP authentication failed")
        return data[:-3]

    def protect_rtcp(self, data: bytes) -> bytes:
        return data

    def unprotect_rtcp(self, data: bytes) -> bytes:
        return data


class RejectingSrtcp(RejectingSrtp):
    def unprotect_rtcp(self, data: bytes) -> bytes:
        if not data.endswith(b"TAG"):
            raise ValueError("SRTCP authentication failed")
        return data[:-3]


def test_unauthenticated_rtcp_with_rtcp_mux_does_not_latch_the_rtp_socket() -> None:
    leg, got = make_leg()
    leg.set_format(PCMU, rtcp_mux=True)
    leg.srtp = RejectingSrtcp()
    forged = serialize_compound([ReceiverReport(0x666, ())])
    leg.pair.rtp.datagram_received(forged, ("127.0.0.1", 9999))
    assert not leg.latched and leg.counters.dropped_srtp == 1
    leg.pair.rtp.datagram_received(rtp(1, 160) + b"TAG", PEER)
    assert leg.latched and leg.peer == PEER and len(got) == 1


def test_unauthenticated_rtcp_does_not_latch_the_rtcp_socket() -> None:
    leg, _ = make_leg()
    leg.srtp = RejectingSrtcp()
    report = serialize_compound([ReceiverReport(0x1234, ())])
    leg.pair.rtcp.datagram_received(report, ("127.0.0.1", 9999))
    leg.pair.rtcp.datagram_received(report + b"TAG", (PEER[0], PEER[1] + 1))
    assert leg.counters.dropped_srtp == 1 and leg.counters.rtcp_received == 1
    leg.pair.rtcp.datagram_received(report + b"TAG", ("127.0.0.1", 9999))
    assert leg.counters.dropped_source == 1 and leg.counters.rtcp_received == 1


def test_srtp_failures_are_dropped_and_counted() -> None:
    leg, got = make_leg()
    leg.srtp = RejectingSrtp()
    leg.pair.rtp.datagram_received(rtp(1, 160), PEER)
    leg.pair.rtp.datagram_received(rtp(2, 320) + b"TAG", PEER)
    assert leg.counters.dropped_srtp == 1
    assert len(got) == 1 and not got[0][0].endswith(b"TAG")
    leg.send(0, False, 0, b"x")
    assert leg.pair.rtp.transport.sent[-1][0].endswith(b"TAG")  # type: ignore[union-attr]


def test_a_failing_sink_is_counted_and_the_leg_goes_on() -> None:
    leg, _ = make_leg()

    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    leg.sink = broken
    leg.pair.rtp.datagram_received(rtp(1, 160), PEER)
    leg.pair.rtp.datagram_received(rtp(2, 320), PEER)
    assert leg.counters.dropped_other == 2


def test_garbage_from_the_sdp_host_does_not_latch_another_port() -> None:
    leg, got = make_leg()
    leg.pair.rtp.datagram_received(b"\x00" * 40, ("127.0.0.1", 9999))
    leg.pair.rtp.datagram_received(rtp(1, 160, payload_type=99), ("127.0.0.1", 9999))
    assert not leg.latched
    leg.pair.rtp.datagram_received(rtp(1, 160), PEER)
    assert leg.latched and leg.peer == PEER and len(got) == 1
