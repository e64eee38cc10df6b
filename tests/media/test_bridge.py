"""MediaBridge: passthrough with header rewriting and continuity, transcoding, DTMF, errors."""

from __future__ import annotations

import itertools
import struct

import pytest

from media.bridge import MediaBridge
from media.leg import LegFormat, RtpLeg
from tests.media.fakes import fake_pair, header, rtp

A_PEER = ("127.0.0.1", 30000)
B_PEER = ("127.0.0.1", 32000)


def pcmu(send_type: int = 0, event_type: int | None = 101) -> LegFormat:
    return LegFormat(
        "PCMU",
        8000,
        send_type=send_type,
        receive_types=frozenset({send_type}),
        event_send_type=event_type,
        event_receive_types=frozenset({event_type}) if event_type is not None else frozenset(),
    )


def opus() -> LegFormat:
    return LegFormat(
        "opus",
        48000,
        2,
        send_type=111,
        receive_types=frozenset({111}),
        event_send_type=110,
        event_receive_types=frozenset({110}),
        event_clock_rate=48000,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class FakeTranscoder:
    """Tags each payload so the test can see it went through; counts concealment."""

    def __init__(self, src: LegFormat, dst: LegFormat) -> None:
        self.src, self.dst = src, dst
        self.concealed: list[tuple[int, bytes | None]] = []
        self.timestamp_step = dst.clock_rate // 50

    def transcode(self, payload: bytes) -> list[bytes]:
        return [b"T" + payload[:4]]

    def lost(self, count: int = 1, next_payload: bytes | None = None) -> list[bytes]:
        self.concealed.append((count, next_payload))
        return [b"C"] * count


def make(
    a_format: LegFormat, b_format: LegFormat, clock: Clock | None = None
) -> tuple[MediaBridge, RtpLeg, RtpLeg, list[FakeTranscoder]]:
    clock = clock or Clock()
    pair_a, _, _ = fake_pair(40000)
    pair_b, _, _ = fake_pair(40002)
    a = RtpLeg(pair_a, clock=clock)
    b = RtpLeg(pair_b, clock=clock)
    a.set_format(a_format)
    b.set_format(b_format)
    a.set_remote(*A_PEER)
    b.set_remote(*B_PEER)
    made: list[FakeTranscoder] = []

    def factory(src: LegFormat, dst: LegFormat) -> FakeTranscoder:
        made.append(FakeTranscoder(src, dst))
        return made[-1]

    bridge = MediaBridge(a, b, factory)
    bridge.start()
    return bridge, a, b, made


def sent(leg: RtpLeg) -> list[bytes]:
    return [data for data, _ in leg.pair.rtp.transport.sent]  # type: ignore[union-attr]


def test_passthrough_rewrites_ssrc_and_payload_type_and_keeps_the_payload() -> None:
    bridge, a, b, made = make(pcmu(0), pcmu(0))
    assert bridge.passthrough and not made
    a.pair.rtp.datagram_received(rtp(1000, 8000, payload=b"\x11" * 160), A_PEER)
    a.pair.rtp.datagram_received(rtp(1001, 8160, payload=b"\x22" * 160), A_PEER)
    out = sent(b)
    assert len(out) == 2
    pt, marker, seq0, ts0, ssrc = header(out[0])
    assert (pt, marker, ssrc) == (0, True, b.ssrc)
    assert out[0][12:] == b"\x11" * 160 and out[1][12:] == b"\x22" * 160
    _, marker, seq1, ts1, _ = header(out[1])
    assert not marker and seq1 == (seq0 + 1) & 0xFFFF and ts1 == (ts0 + 160) & 0xFFFFFFFF


def test_passthrough_maps_dynamic_payload_types_per_leg() -> None:
    _, a, b, _ = make(pcmu(0, 101), pcmu(0, 96))
    a.pair.rtp.datagram_received(rtp(1, 160, payload_type=101, payload=b"\x05\x0a\x00\xa0"), A_PEER)
    assert header(sent(b)[0])[0] == 96
    b.pair.rtp.datagram_received(
        rtp(7, 0, ssrc=9, payload_type=96, payload=b"\x05\x0a\x00\xa0"), B_PEER
    )
    assert header(sent(a)[0])[0] == 101


def test_events_are_dropped_towards_a_leg_without_telephone_event() -> None:
    bridge, a, b, _ = make(pcmu(0, 101), pcmu(0, None))
    a.pair.rtp.datagram_received(rtp(1, 160, payload_type=101, payload=b"\x05\x0a\x00\xa0"), A_PEER)
    assert not sent(b)
    assert bridge.counters().events_dropped == 1


def test_the_far_end_sees_one_continuous_stream_when_the_source_changes() -> None:
    clock = Clock()
    _, a, b, _ = make(pcmu(), pcmu(), clock)
    for i in range(5):
        clock.now += 0.02
        a.pair.rtp.datagram_received(rtp(100 + i, 1000 + 160 * i, ssrc=1), A_PEER)
    # A transfer: a new peer, its own SSRC, sequence and timestamp origin, 60 ms later.
    a.set_remote("127.0.0.2", 30500, relatch=True)
    clock.now += 0.06
    for i in range(3):
        a.pair.rtp.datagram_received(rtp(40000 + i, 777777 + 160 * i, ssrc=2), ("127.0.0.2", 30500))
        clock.now += 0.02
    headers = [header(p) for p in sent(b)]
    assert {h[4] for h in headers} == {b.ssrc}
    seqs = [h[2] for h in headers]
    assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))
    assert headers[5][1] is True  # marker on the first packet of the new source
    gap = (headers[5][3] - headers[4][3]) & 0xFFFFFFFF
    assert 480 <= gap <= 560  # the 60 ms that passed, on the 8 kHz clock
    assert (headers[6][3] - headers[5][3]) & 0xFFFFFFFF == 160


def test_a_sequence_jump_in_the_same_ssrc_is_smoothed_over() -> None:
    _, a, b, _ = make(pcmu(), pcmu())
    a.pair.rtp.datagram_received(rtp(10, 0), A_PEER)
    a.pair.rtp.datagram_received(rtp(30000, 160), A_PEER)
    seqs = [header(p)[2] for p in sent(b)]
    assert (seqs[1] - seqs[0]) & 0xFFFF == 1


def test_loss_and_reordering_pass_through_untouched() -> None:
    _, a, b, _ = make(pcmu(), pcmu())
    for seq in (1, 2, 4, 3, 5):
        a.pair.rtp.datagram_received(rtp(seq, 160 * seq), A_PEER)
    seqs = [header(p)[2] for p in sent(b)]
    base = seqs[0] - 1
    assert [(s - base) & 0xFFFF for s in seqs] == [1, 2, 4, 3, 5]


def test_different_codecs_are_transcoded_with_the_targets_own_numbering() -> None:
    bridge, a, b, made = make(pcmu(0), opus())
    assert not bridge.passthrough and len(made) == 2
    for i in range(3):
        a.pair.rtp.datagram_received(rtp(500 + i, 160 * i, payload=bytes([i]) * 160), A_PEER)
    out = [header(p) for p in sent(b)]
    assert [h[0] for h in out] == [111, 111, 111]
    assert [p[12:] for p in sent(b)] == [b"T" + bytes([i]) * 4 for i in range(3)]
    assert [(h[3] - out[0][3]) & 0xFFFFFFFF for h in out] == [0, 960, 1920]
    assert out[0][1] and not out[1][1]


def test_lost_packets_are_concealed_before_the_next_one_is_transcoded() -> None:
    _, a, b, made = make(pcmu(0), opus())
    a.pair.rtp.datagram_received(rtp(1, 0), A_PEER)
    a.pair.rtp.datagram_received(rtp(4, 480, payload=b"\x09" * 160), A_PEER)
    forward = made[0] if made[0].src.encoding_name == "PCMU" else made[1]
    assert forward.concealed == [(2, b"\x09" * 160)]
    payloads = [p[12:] for p in sent(b)]
    assert payloads[1:3] == [b"C", b"C"]
    stamps = [header(p)[3] for p in sent(b)]
    assert [(s - stamps[0]) & 0xFFFFFFFF for s in stamps] == [0, 960, 1920, 2880]


def test_late_packets_are_dropped_when_transcoding() -> None:
    bridge, a, b, _ = make(pcmu(0), opus())
    for seq in (1, 2, 3, 2):
        a.pair.rtp.datagram_received(rtp(seq, 160 * seq), A_PEER)
    assert len(sent(b)) == 3
    assert bridge.counters().late == 1


def test_telephone_events_are_rescaled_between_clock_rates() -> None:
    _, a, b, _ = make(pcmu(0, 101), opus())
    a.pair.rtp.datagram_received(rtp(1, 8000), A_PEER)
    a.pair.rtp.datagram_received(
        rtp(2, 8160, payload_type=101, payload=b"\x05\x0a\x00\xa0", marker=True), A_PEER
    )
    event = sent(b)[-1]
    pt, marker, _, ts, _ = header(event)
    assert pt == 110 and marker
    assert struct.unpack_from("!H", event, 14)[0] == 160 * 6
    first_ts = header(sent(b)[0])[3]
    assert (ts - first_ts) & 0xFFFFFFFF == 960


def test_a_transcoder_that_fails_costs_the_packet_not_the_call() -> None:
    bridge, a, b, made = make(pcmu(0), opus())

    def broken(payload: bytes) -> list[bytes]:
        raise ValueError("corrupt frame")

    for t in made:
        t.transcode = broken  # type: ignore[method-assign]
    a.pair.rtp.datagram_received(rtp(1, 0), A_PEER)
    assert bridge.counters().errors == 1
    b.pair.rtp.datagram_received(rtp(1, 0, payload_type=111), B_PEER)
    assert bridge.counters().errors == 2


def test_codecs_that_cannot_be_joined_are_refused_at_start() -> None:
    pair_a, _, _ = fake_pair(40000)
    pair_b, _, _ = fake_pair(40002)
    a, b = RtpLeg(pair_a), RtpLeg(pair_b)
    a.set_format(pcmu())
    b.set_format(opus())
    with pytest.raises(ValueError, match="cannot transcode"):
        MediaBridge(a, b, None).start()


def test_a_format_change_switches_between_passthrough_and_transcoding() -> None:
    bridge, _a, b, _ = make(pcmu(0), pcmu(0))
    assert bridge.passthrough
    b.set_format(opus())
    bridge.start()
    assert not bridge.passthrough
    b.set_format(pcmu(0))
    bridge.start()
    assert bridge.passthrough


def test_stop_unjoins_the_legs() -> None:
    bridge, a, b, _ = make(pcmu(), pcmu())
    bridge.stop()
    a.pair.rtp.datagram_received(rtp(1, 160), A_PEER)
    assert not sent(b)


def test_hold_stops_both_directions_and_resume_continues_the_stream() -> None:
    bridge, a, b, _ = make(pcmu(), pcmu())
    a.pair.rtp.datagram_received(rtp(1, 160), A_PEER)
    bridge.hold(a, True)
    a.pair.rtp.datagram_received(rtp(2, 320), A_PEER)
    b.pair.rtp.datagram_received(rtp(1, 160, ssrc=5), B_PEER)
    assert len(sent(b)) == 1 and not sent(a)
    assert bridge.counters().muted == 2
    b.send(0, False, (header(sent(b)[0])[3] + 800) & 0xFFFFFFFF, b"\x00" * 160)  # music
    bridge.hold(a, False)
    a.pair.rtp.datagram_received(rtp(3, 480), A_PEER)
    headers = [header(p) for p in sent(b)]
    assert headers[-1][1]  # marker: a new talkspurt after the music
    assert (headers[-1][2] - headers[-2][2]) & 0xFFFF == 1
