"""PcmPort: a leg as 20 ms PCM frames through a capped jitter buffer, and RFC 4733 both ways."""

from __future__ import annotations

import numpy as np

from media.codecs import codec_for
from media.leg import LegFormat, RtpLeg
from media.pcmport import PcmPort, port_rate
from tests.media.fakes import PCMU, fake_pair, header, rtp

PEER = ("127.0.0.1", 30000)
OPUS = LegFormat(
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
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def tone(rate: int, hz: float, samples: int, start: int = 0) -> np.ndarray:
    t = (np.arange(samples) + start) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def dominant(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def make(
    fmt: LegFormat, clock: Clock, rate: int = 48000
) -> tuple[RtpLeg, PcmPort, list[tuple[str, int]]]:
    pair, _, _ = fake_pair(40000)
    leg = RtpLeg(pair, clock=clock)
    leg.set_format(fmt)
    leg.set_remote(*PEER)
    digits: list[tuple[str, int]] = []
    port = PcmPort(leg, rate, on_digit=lambda d, ms: digits.append((d, ms)))
    return leg, port, digits


def sent(leg: RtpLeg) -> list[bytes]:
    return [d for d, _ in leg.pair.rtp.transport.sent]  # type: ignore[union-attr]


def test_a_pcmu_tone_comes_out_at_48khz_and_gaps_are_concealed() -> None:
    clock = Clock()
    leg, port, _ = make(PCMU, clock)
    assert not port.read(clock.now).any()  # silence before anything arrived
    encoder = codec_for("PCMU").encoder()
    out = []
    for i in range(50):
        clock.now += 0.02
        if i != 20:  # one lost packet
            payload = encoder.encode(tone(8000, 440, 160, 160 * i))
            leg.pair.rtp.datagram_received(rtp(i, 160 * i, payload=payload), PEER)
        frame = port.read(clock.now)
        assert frame.shape == (960,)
        out.append(frame)
    audio = np.concatenate(out[5:])
    assert abs(dominant(audio, 48000) - 440) < 5
    assert port.jitter.stats.lost >= 1


def test_opus_frames_decode_to_48khz() -> None:
    clock = Clock()
    leg, port, _ = make(OPUS, clock)
    encoder = codec_for("opus", 48000, 2).encoder()
    out = []
    for i in range(40):
        clock.now += 0.02
        payload = encoder.encode(tone(48000, 1000, 960, 960 * i))
        leg.pair.rtp.datagram_received(rtp(i, 960 * i, payload_type=111, payload=payload), PEER)
        out.append(port.read(clock.now))
    assert abs(dominant(np.concatenate(out[10:]), 48000) - 1000) < 5


def test_written_frames_are_encoded_with_the_legs_numbering() -> None:
    clock = Clock()
    leg, port, _ = make(PCMU, clock)
    for i in range(3):
        clock.now += 0.02
        port.write(tone(48000, 440, 960, 960 * i))
    headers = [header(p) for p in sent(leg)]
    assert [h[0] for h in headers] == [0, 0, 0]
    assert [h[1] for h in headers] == [True, False, False]
    assert [(h[3] - headers[0][3]) & 0xFFFFFFFF for h in headers] == [0, 160, 320]
    assert all(len(p) == 12 + 160 for p in sent(leg))
    port.write(None)  # a pause
    clock.now += 0.2
    port.write(tone(48000, 440, 960))
    last = header(sent(leg)[-1])
    assert last[1] and (last[3] - headers[2][3]) & 0xFFFFFFFF >= 1600


def test_a_digit_replaces_audio_with_rfc4733_packets_then_audio_resumes_after_it() -> None:
    clock = Clock()
    leg, port, _ = make(PCMU, clock)
    port.write(tone(48000, 440, 960))
    assert port.send_digit("5", 0.1)
    for _ in range(12):
        clock.now += 0.02
        port.write(tone(48000, 440, 960))
    headers = [header(p) for p in sent(leg)]
    events = [h for h in headers if h[0] == 101]
    assert len(events) == 7  # five updates (100 ms) and two more end packets
    assert events[0][1] and not any(h[1] for h in events[1:])
    assert len({h[3] for h in events}) == 1
    after = headers[len(events) + 1]
    assert after[0] == 0 and after[1]
    assert (after[3] - events[0][3]) & 0xFFFFFFFF >= 800
    assert sent(leg)[len(events)][13] & 0x80  # the end bit on the last event packets


def test_received_events_are_reported_once() -> None:
    clock = Clock()
    leg, _, digits = make(PCMU, clock)
    for i, (marker, end) in enumerate(
        [(True, False), (False, False), (False, True), (False, True)]
    ):
        payload = bytes([9, 0x80 if end else 0]) + (160 * min(i + 1, 3)).to_bytes(2, "big")
        leg.pair.rtp.datagram_received(
            rtp(i, 8000, payload_type=101, payload=payload, marker=marker), PEER
        )
    assert digits == [("9", 60)]


def test_no_telephone_event_means_no_digit_sent() -> None:
    clock = Clock()
    fmt = LegFormat("PCMU", 8000, send_type=0, receive_types=frozenset({0}))
    pair, _, _ = fake_pair(40000)
    leg = RtpLeg(pair, clock=clock)
    leg.set_format(fmt)
    port = PcmPort(leg)
    assert not port.send_digit("1")


def test_garbage_payloads_are_concealed_not_raised() -> None:
    clock = Clock()
    leg, port, _ = make(OPUS, clock)
    for i in range(10):
        clock.now += 0.02
        leg.pair.rtp.datagram_received(rtp(i, 960 * i, payload_type=111, payload=b"\xff" * 3), PEER)
        assert port.read(clock.now).shape == (960,)


def test_at_the_legs_own_rate_pcmu_is_not_resampled_either_way() -> None:
    clock = Clock()
    leg, port, _ = make(PCMU, clock, port_rate_of(PCMU))
    assert port.rate == 8000 and port.inbound.ratio == 1 and port.outbound.ratio == 1
    codec = codec_for("PCMU")
    encoder, decoder = codec.encoder(), codec.decoder()
    decoded = set()
    frames = []
    for i in range(10):
        clock.now += 0.02
        payload = encoder.encode(tone(8000, 440, 160, 160 * i))
        decoded.add(decoder.decode(payload).tobytes())
        leg.pair.rtp.datagram_received(rtp(i, 160 * i, payload=payload), PEER)
        frames.append(port.read(clock.now))
    played = [f for f in frames if f.any()]
    assert len(played) >= 8 and all(f.shape == (160,) for f in frames)
    assert all(f.tobytes() in decoded for f in played)  # the decoder's samples, untouched
    samples = tone(8000, 440, 160)
    port.write(samples)
    assert sent(leg)[-1][12:] == encoder.encode(samples)  # bit-exact: no filter on the way


def port_rate_of(fmt: LegFormat) -> int:
    clock = Clock()
    pair, _, _ = fake_pair(40010)
    leg = RtpLeg(pair, clock=clock)
    leg.set_format(fmt)
    return port_rate(leg)


def test_port_rate_is_the_codecs_audio_rate() -> None:
    assert port_rate_of(PCMU) == 8000
    assert port_rate_of(OPUS) == 48000


def test_an_opus_leg_decodes_straight_to_8khz() -> None:
    clock = Clock()
    leg, port, _ = make(OPUS, clock, 8000)
    assert port.spec.sample_rate == 8000 and port.inbound.ratio == 1
    encoder = codec_for("opus", 48000, 2).encoder()
    out = []
    for i in range(40):
        clock.now += 0.02
        payload = encoder.encode(tone(48000, 1000, 960, 960 * i))
        leg.pair.rtp.datagram_received(rtp(i, 960 * i, payload_type=111, payload=payload), PEER)
        frame = port.read(clock.now)
        assert frame.shape == (160,)
        out.append(frame)
    assert abs(dominant(np.concatenate(out[10:]), 8000) - 1000) < 30
    port.write(tone(8000, 1000, 160))
    port.write(tone(8000, 1000, 160, 160))
    packets = sent(leg)
    assert len(packets) == 2
    timestamps = [int.from_bytes(p[4:8], "big") for p in packets]
    assert (timestamps[1] - timestamps[0]) & 0xFFFFFFFF == 960  # RTP clock stays 48 kHz


def test_relay_hands_each_frame_over_on_arrival_with_gaps_concealed() -> None:
    clock = Clock()
    leg, port, digits = make(PCMU, clock, rate=8000)
    frames: list[np.ndarray] = []
    port.on_frame = frames.append
    encoder = codec_for("PCMU").encoder()
    for i in range(50):
        clock.now += 0.02
        if i in (20, 30, 31):  # one lost packet, then two
            continue
        payload = encoder.encode(tone(8000, 440, 160, 160 * i))
        leg.pair.rtp.datagram_received(rtp(i, 160 * i, payload=payload), PEER)
        assert len(frames) == i + 1  # at once, the gap filled: no hole for the consumer
    assert all(f.shape == (160,) for f in frames)
    assert abs(dominant(np.concatenate(frames[5:]), 8000) - 440) < 5
    assert port.jitter.stats.received == 0  # nothing buffered
    # Late and duplicate packets give nothing; digits still come out on arrival.
    leg.pair.rtp.datagram_received(rtp(40, 160 * 40, payload=bytes(160)), PEER)
    leg.pair.rtp.datagram_received(rtp(49, 160 * 49, payload=bytes(160)), PEER)
    assert len(frames) == 50 and port.late == 2
    for i, end in enumerate((False, True, True)):
        payload = bytes([5, 0x80 if end else 0]) + (160 * (i + 1)).to_bytes(2, "big")
        leg.pair.rtp.datagram_received(
            rtp(50 + i, 8000, payload_type=101, payload=payload, marker=i == 0), PEER
        )
    assert digits == [("5", 40)]
    # Back to the buffered way: read() has frames again.
    port.on_frame = None
    for i in range(53, 60):
        clock.now += 0.02
        payload = encoder.encode(tone(8000, 440, 160, 160 * i))
        leg.pair.rtp.datagram_received(rtp(i, 160 * i, payload=payload), PEER)
    assert port.read(clock.now).any()


def test_relay_cuts_30_ms_packets_into_20_ms_frames_and_loses_nothing() -> None:
    clock = Clock()
    leg, port, _ = make(PCMU, clock, rate=8000)
    frames: list[np.ndarray] = []
    port.on_frame = frames.append
    encoder = codec_for("PCMU").encoder(30)
    for i in range(20):
        if i == 10:  # one lost 30 ms packet: 30 ms concealed
            continue
        payload = encoder.encode(tone(8000, 440, 240, 240 * i))
        leg.pair.rtp.datagram_received(rtp(i, 240 * i, payload=payload), PEER)
    assert all(f.shape == (160,) for f in frames)
    assert len(frames) == 20 * 240 // 160  # 600 ms in, 600 ms out
    assert abs(dominant(np.concatenate(frames), 8000) - 440) < 5
