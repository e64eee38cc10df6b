"""Tests of omlmedia.media.transcode: tones survive every pair, packets are re-framed, losses
are concealed with PLC or FEC, and a bad payload is a CodecError that harms nothing."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest

from omlmedia.media.codecs import CodecError, CodecSpec, OpusSettings, codec_for
from omlmedia.media.resample import tone_snr
from omlmedia.media.transcode import MAX_CONCEALED_FRAMES, Transcoder

NAMES = ("PCMU", "PCMA", "G722", "opus")


def tone(rate: int, frequency: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(10362 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)


def dominant(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def packets(spec: CodecSpec, samples: np.ndarray, ptime: int = 20) -> list[bytes]:
    encoder = spec.encoder(ptime)
    frame = encoder.frame_samples
    return [encoder.encode(samples[i : i + frame]) for i in range(0, len(samples), frame)]


def decode_all(spec: CodecSpec, payloads: list[bytes]) -> np.ndarray:
    decoder = spec.decoder()
    return np.concatenate([decoder.decode(p) for p in payloads])


@pytest.mark.parametrize(("source_name", "destination_name"), list(permutations(NAMES, 2)))
def test_a_tone_survives_every_transcoding_pair(source_name: str, destination_name: str) -> None:
    source, destination = codec_for(source_name), codec_for(destination_name)
    transcoder = Transcoder(source, destination)
    for frequency in (440, 1000):
        out: list[bytes] = []
        for payload in packets(source, tone(source.sample_rate, frequency)):
            result = transcoder.transcode(payload)
            assert len(result) == 1
            out += result
        decoded = decode_all(destination, out)[destination.sample_rate // 5 :]
        assert abs(dominant(decoded, destination.sample_rate) - frequency) < 4
        # Opus at 32 kbit/s codes a pure tone at 24-35 dB SNR; G.711 and G.722 at 36-57 dB.
        floor = 20 if destination.name == "opus" else 25
        assert tone_snr(decoded, destination.sample_rate, frequency) > floor
        level = np.sqrt(np.mean(decoded.astype(np.float64) ** 2)) / (10362 / math.sqrt(2))
        assert abs(20 * math.log10(level)) < 1.5


def test_output_timestamps_follow_the_destination_clock() -> None:
    assert Transcoder(codec_for("PCMU"), codec_for("G722")).timestamp_step == 160
    assert Transcoder(codec_for("G722"), codec_for("opus")).timestamp_step == 960
    assert Transcoder(codec_for("opus"), codec_for("PCMA"), 30).timestamp_step == 240


def test_thirty_ms_in_is_repacketised_into_twenty_ms_out() -> None:
    source, destination = codec_for("PCMU"), codec_for("opus")
    transcoder = Transcoder(source, destination)
    counts = [len(transcoder.transcode(p)) for p in packets(source, tone(8000, 1000, 1.2), 30)]
    assert counts[:6] == [1, 2, 1, 2, 1, 2]
    assert sum(counts) == 60
    assert transcoder.pending_samples == 0


def test_twenty_ms_in_is_repacketised_into_thirty_ms_out() -> None:
    source, destination = codec_for("opus"), codec_for("PCMA")
    transcoder = Transcoder(source, destination, ptime_ms=30)
    out: list[bytes] = []
    counts = []
    for payload in packets(source, tone(48000, 1000, 1.2)):
        result = transcoder.transcode(payload)
        counts.append(len(result))
        out += result
    assert counts[:6] == [0, 1, 1, 0, 1, 1]
    assert all(len(p) == 240 for p in out)
    decoded = decode_all(destination, out)[800:]
    assert tone_snr(decoded, 8000, 1000) > 25


def test_a_lost_packet_still_gives_one_concealed_packet_out() -> None:
    source, destination = codec_for("PCMU"), codec_for("G722")
    transcoder = Transcoder(source, destination)
    payloads = packets(source, tone(8000, 1000, 0.4))
    out: list[bytes] = []
    for index, payload in enumerate(payloads):
        out += transcoder.lost() if index == 10 else transcoder.transcode(payload)
    assert len(out) == len(payloads)
    assert transcoder.concealed == 1 and transcoder.decoded == len(payloads) - 1
    decoded = decode_all(destination, out)
    gap = decoded[10 * 320 : 11 * 320]
    assert abs(dominant(gap, 16000) - 1000) < 60
    assert np.sqrt(np.mean(gap.astype(np.float64) ** 2)) > 3000


def test_fec_from_the_next_packet_rebuilds_a_lost_opus_frame() -> None:
    source = codec_for("opus", opus=OpusSettings(packet_loss_percent=20))
    transcoder = Transcoder(source, codec_for("PCMU"))
    payloads = packets(source, tone(48000, 440, 0.4))
    for payload in payloads[:10]:
        transcoder.transcode(payload)
    assert len(transcoder.lost(1, next_payload=payloads[11])) == 1
    assert transcoder.recovered == 1 and transcoder.concealed == 0
    assert len(transcoder.transcode(payloads[11])) == 1


def test_fec_falls_back_to_plc_when_the_next_packet_is_bad() -> None:
    transcoder = Transcoder(codec_for("opus"), codec_for("PCMA"))
    transcoder.transcode(packets(codec_for("opus"), tone(48000, 440, 0.02))[0])
    assert len(transcoder.lost(2, next_payload=b"")) == 2
    assert transcoder.concealed == 2 and transcoder.recovered == 0


def test_a_long_gap_conceals_at_most_the_cap() -> None:
    transcoder = Transcoder(codec_for("PCMA"), codec_for("PCMU"))
    assert len(transcoder.lost(1000)) == MAX_CONCEALED_FRAMES
    assert transcoder.lost(-3) == []


@pytest.mark.parametrize("payload", [b"", bytes(2000), b"\xff\xff\xff"])
def test_a_bad_payload_raises_codec_error_and_the_stream_goes_on(payload: bytes) -> None:
    source, destination = codec_for("opus"), codec_for("PCMU")
    transcoder = Transcoder(source, destination)
    good = packets(source, tone(48000, 1000, 0.2))
    out = transcoder.transcode(good[0])
    with pytest.raises(CodecError):
        transcoder.transcode(payload)
    out += transcoder.lost()
    for p in good[1:]:
        out += transcoder.transcode(p)
    assert len(out) == len(good) + 1


def test_repr_names_the_pair() -> None:
    assert repr(Transcoder(codec_for("PCMA"), codec_for("opus"))) == "Transcoder(PCMA -> opus)"
