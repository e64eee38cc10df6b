"""Tests of media.transcode: tones survive every pair, packets are re-framed, losses
are concealed with PLC or FEC, and a bad payload is a CodecError that harms nothing."""

from __future__ import annotations

import math
import wave
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest

from media.codecs import CodecError, CodecSpec, OpusSettings, codec_for
from media.resample import Resampler, tone_snr
from media.transcode import MAX_CONCEALED_FRAMES, Transcoder

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
    # Opus encoding at 8 or 16 kHz still counts its RTP clock at 48 kHz (RFC 7587 §4.1).
    for ptime, step in ((10, 480), (20, 960), (40, 1920), (60, 2880)):
        for narrow in ("PCMU", "PCMA", "G722"):
            transcoder = Transcoder(codec_for(narrow), codec_for("opus"), ptime)
            assert transcoder.timestamp_step == step
            assert transcoder.timestamp_step == transcoder.destination.timestamps_for(
                transcoder.destination.samples_for(ptime)
            )


@pytest.mark.parametrize(("narrow", "rate"), [("PCMU", 8000), ("PCMA", 8000), ("G722", 16000)])
def test_opus_runs_at_the_other_codecs_rate_so_nothing_is_resampled(narrow: str, rate: int) -> None:
    to_opus = Transcoder(codec_for(narrow), codec_for("opus"))
    from_opus = Transcoder(codec_for("opus"), codec_for(narrow))
    assert to_opus.encoder.spec.sample_rate == from_opus.decoder.spec.sample_rate == rate
    assert to_opus.resampler.ratio == from_opus.resampler.ratio == 1
    assert to_opus.destination == codec_for("opus") and from_opus.source == codec_for("opus")
    assert to_opus.encoder.frame_samples == rate // 50
    old = Transcoder(codec_for(narrow), codec_for("opus"), native_rate=False)
    assert old.encoder.spec.sample_rate == 48000 and old.resampler.ratio == 48000 // rate
    assert old.timestamp_step == to_opus.timestamp_step == 960
    # G.711 <-> G.722 still resamples.
    assert Transcoder(codec_for("PCMU"), codec_for("G722")).resampler.ratio == 2


SOUNDS = Path(__file__).resolve().parents[2] / "media" / "sounds" / "en"


def prompt(name: str, rate: int) -> np.ndarray:
    """A recorded prompt of the sound set (16 kHz), at `rate`."""
    with wave.open(str(SOUNDS / f"{name}.wav")) as file:
        assert file.getframerate() == 16000
        samples = np.frombuffer(file.readframes(file.getnframes()), np.int16)
    samples = samples[: len(samples) // 320 * 320]
    return samples if rate == 16000 else Resampler(16000, rate).resample(samples)


def segmental_snr(reference: np.ndarray, decoded: np.ndarray, rate: int) -> float:
    """Mean SNR of the 20 ms segments that are not silent, each clamped to -10..35 dB, after the
    lag that best aligns `decoded` with `reference` (a waveform measure of speech quality)."""
    a, b = reference.astype(np.float64), decoded.astype(np.float64)
    n = min(len(a), len(b))
    correlation = np.fft.irfft(np.fft.rfft(b[:n], 2 * n) * np.conj(np.fft.rfft(a[:n], 2 * n)))
    lag = int(np.argmax(correlation[: rate // 20]))
    a, b = a[: n - lag], b[lag:n]
    segment = rate // 50
    values = []
    for start in range(0, len(a) - segment + 1, segment):
        signal = a[start : start + segment]
        error = signal - b[start : start + segment]
        power, noise = float(signal @ signal), float(error @ error)
        if power < segment * 100.0**2:
            continue
        values.append(min(max(10 * math.log10(power / max(noise, 1e-9)), -10.0), 35.0))
    return float(np.mean(values))


def through_opus(narrow: str, samples: np.ndarray, native_rate: bool = True) -> np.ndarray:
    """`samples` sent as `narrow`, transcoded to Opus and back, decoded: what the caller hears
    of itself across an Opus leg."""
    spec, opus = codec_for(narrow), codec_for("opus")
    there = Transcoder(spec, opus, native_rate=native_rate)
    back = Transcoder(opus, spec, native_rate=native_rate)
    out = [q for p in packets(spec, samples) for o in there.transcode(p) for q in back.transcode(o)]
    return decode_all(spec, out)


@pytest.mark.parametrize(("narrow", "rate"), [("PCMU", 8000), ("PCMA", 8000), ("G722", 16000)])
def test_a_tone_survives_g711_and_g722_to_opus_and_back_at_the_narrow_rate(
    narrow: str, rate: int
) -> None:
    for frequency in (440, 1000, 3000 if rate == 8000 else 6000):
        original = tone(rate, frequency, 0.6)
        decoded = through_opus(narrow, original)[rate // 5 :]
        assert abs(dominant(decoded, rate) - frequency) < 4
        # G.722 alone codes 6 kHz at ~27 dB; Opus at 48 kHz behind resamplers gave ~21.
        assert tone_snr(decoded, rate, frequency) > (20 if frequency > 4000 else 25)
        level = np.sqrt(np.mean(decoded.astype(np.float64) ** 2)) / (10362 / math.sqrt(2))
        assert abs(20 * math.log10(level)) < 1


@pytest.mark.parametrize(("narrow", "rate"), [("PCMU", 8000), ("G722", 16000)])
def test_a_real_prompt_survives_g711_and_g722_to_opus_and_back(narrow: str, rate: int) -> None:
    """Speech across Opus at the narrow rate is at least as close to what the caller sent as it
    was with Opus at 48 kHz behind two resamplers (measured 9.2 against 7.1 dB at 8 kHz)."""
    spec = codec_for(narrow)
    sent = decode_all(spec, packets(spec, prompt("welcome", rate)))
    native = segmental_snr(sent, through_opus(narrow, sent), rate)
    resampled = segmental_snr(sent, through_opus(narrow, sent, native_rate=False), rate)
    assert native > 7
    assert native > resampled - 0.5


def test_opus_from_g711_plays_right_on_a_48_khz_decoder() -> None:
    """Interop: the Opus we send a browser (decoding at 48 kHz) carries the tone as sent."""
    source, opus = codec_for("PCMU"), codec_for("opus")
    transcoder = Transcoder(source, opus)
    out = [q for p in packets(source, tone(8000, 1000, 0.5)) for q in transcoder.transcode(p)]
    decoded = decode_all(opus, out)
    assert len(decoded) == 24000
    assert abs(dominant(decoded[4800:], 48000) - 1000) < 3
    assert tone_snr(decoded[4800:], 48000, 1000) > 25


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


@pytest.mark.parametrize("destination_name", ["PCMU", "G722"])
def test_fec_from_the_next_packet_rebuilds_a_lost_opus_frame(destination_name: str) -> None:
    source = codec_for("opus", opus=OpusSettings(packet_loss_percent=20))
    destination = codec_for(destination_name)
    payloads = packets(source, tone(48000, 440, 0.4))
    complete = Transcoder(source, destination)
    reference = decode_all(destination, [q for p in payloads for q in complete.transcode(p)])
    transcoder = Transcoder(source, destination)
    out: list[bytes] = []
    for payload in payloads[:11]:
        out += transcoder.transcode(payload)
    rebuilt = transcoder.lost(1, next_payload=payloads[12])
    assert len(rebuilt) == 1
    assert transcoder.recovered == 1 and transcoder.concealed == 0
    out += rebuilt + transcoder.transcode(payloads[12])
    assert len(out) == 13
    # The rebuilt frame at the decoder's narrow rate: the tone, close to the lossless stream.
    frame = destination.frame_samples
    decoded = decode_all(destination, out)
    lost, clean = decoded[11 * frame : 12 * frame], reference[11 * frame : 12 * frame]
    assert abs(dominant(lost, destination.sample_rate) - 440) < destination.sample_rate / frame
    assert abs(20 * math.log10(np.std(lost) / np.std(clean))) < 3


def test_plc_at_the_narrow_rate_conceals_a_lost_opus_packet() -> None:
    source, destination = codec_for("opus"), codec_for("PCMA")
    transcoder = Transcoder(source, destination)
    payloads = packets(source, tone(48000, 1000, 0.3))
    out: list[bytes] = []
    for index, payload in enumerate(payloads):
        out += transcoder.lost() if index == 10 else transcoder.transcode(payload)
    assert len(out) == len(payloads) and transcoder.concealed == 1
    gap = decode_all(destination, out)[10 * 160 : 11 * 160]
    assert abs(dominant(gap, 8000) - 1000) < 50
    assert np.sqrt(np.mean(gap.astype(np.float64) ** 2)) > 3000


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
