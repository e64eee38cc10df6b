"""Tests of media.codecs: tones survive each codec, losses are concealed, FEC beats PLC,
and bad payloads raise CodecError and nothing else."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from media import g711
from media.codecs import (
    MAX_PAYLOAD_SIZE,
    CodecError,
    CodecSpec,
    OpusSettings,
    UnsupportedCodecError,
    codec_for,
    parse_fmtp,
)
from media.resample import tone_snr

NAMES = ("PCMU", "PCMA", "G722", "opus")
NARROW_OPUS = ("opus@8000", "opus@16000")
"""Opus run at G.711's and G.722's audio rates (`CodecSpec.at_sample_rate`)."""
Samples = npt.NDArray[np.int16]


def spec_of(label: str) -> CodecSpec:
    """`codec_for(name)`, or for `name@rate` that codec at that audio rate."""
    name, _, rate = label.partition("@")
    spec = codec_for(name)
    return spec.at_sample_rate(int(rate)) if rate else spec


def tone(rate: int, frequency: float, seconds: float = 1.0, amplitude: float = 10362) -> Samples:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * math.pi * frequency * t)).astype(np.int16)


def dominant(samples: npt.ArrayLike, rate: int) -> float:
    signal = np.asarray(samples, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum) * rate / len(signal))


def level_db(samples: npt.ArrayLike, reference: npt.ArrayLike) -> float:
    a = np.asarray(samples, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    return 10 * math.log10(np.mean(a * a) / np.mean(b * b))


def round_trip(spec: CodecSpec, samples: Samples) -> Samples:
    encoder, decoder = spec.encoder(), spec.decoder()
    frame = spec.frame_samples
    return np.concatenate(
        [
            decoder.decode(encoder.encode(samples[i : i + frame]))
            for i in range(0, len(samples), frame)
        ]
    )


def test_codec_for_picks_by_encoding_name_case_insensitively() -> None:
    assert codec_for("pcmu").name == "PCMU"
    assert codec_for("Pcma", 8000, 1).name == "PCMA"
    assert codec_for("g722", 8000).name == "G722"
    assert codec_for("OPUS", 48000, 2).name == "opus"
    assert codec_for("opus", 48000, 1).name == "opus"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("GSM", 8000, 1), "codec is not supported"),
        (("iLBC", 8000, 1), "codec is not supported"),
        (("PCMU", 16000, 1), "clock rate does not match the codec"),
        (("G722", 16000, 1), "clock rate does not match the codec"),
        (("opus", 8000, 2), "clock rate does not match the codec"),
        (("PCMA", 8000, 2), "channel count does not match the codec"),
        (("opus", 48000, 6), "channel count does not match the codec"),
    ],
)
def test_codec_for_rejects_what_it_cannot_carry(
    arguments: tuple[str, int, int], message: str
) -> None:
    with pytest.raises(UnsupportedCodecError, match=rf"^{message}$"):
        codec_for(*arguments)


def test_unsupported_codec_error_is_the_g711_one_and_a_value_error() -> None:
    assert issubclass(UnsupportedCodecError, g711.UnsupportedCodecError)
    assert issubclass(UnsupportedCodecError, ValueError)
    assert issubclass(CodecError, ValueError)


@pytest.mark.parametrize(
    ("name", "sample_rate", "clock_rate", "frame", "step", "payload_type"),
    [
        ("PCMU", 8000, 8000, 160, 160, 0),
        ("PCMA", 8000, 8000, 160, 160, 8),
        ("G722", 16000, 8000, 320, 160, 9),
        ("opus", 48000, 48000, 960, 960, None),
    ],
)
def test_each_codec_exposes_its_audio_rate_clock_rate_and_frame(
    name: str, sample_rate: int, clock_rate: int, frame: int, step: int, payload_type: int | None
) -> None:
    spec = codec_for(name)
    assert (spec.sample_rate, spec.clock_rate, spec.frame_samples) == (
        sample_rate,
        clock_rate,
        frame,
    )
    assert spec.timestamps_for(spec.frame_samples) == step
    assert spec.payload_type == payload_type
    assert spec.samples_for(40) == frame * 2
    assert spec.encoder().frame_samples == frame
    assert spec.encoder(40).frame_samples == frame * 2


def test_fmtp_is_parsed_from_a_string_or_a_mapping() -> None:
    assert parse_fmtp("minptime=10; useinbandfec=1;;Stereo = 0") == {
        "minptime": "10",
        "useinbandfec": "1",
        "stereo": "0",
    }
    assert parse_fmtp({"UseInbandFec": 1}) == {"useinbandfec": "1"}  # type: ignore[dict-item]
    assert parse_fmtp(None) == {}


def test_opus_fmtp_lowers_our_encoder_settings() -> None:
    spec = codec_for(
        "opus",
        48000,
        2,
        "useinbandfec=0; maxaveragebitrate=20000; maxplaybackrate=16000; stereo=1; cbr=1",
    )
    assert spec.opus == OpusSettings(bitrate=20000, fec=False, vbr=False, max_bandwidth=16000)
    assert spec.encoder().frame_samples == 960
    assert codec_for("opus", fmtp={"useinbandfec": "1"}).opus == OpusSettings()
    assert codec_for("opus", fmtp="maxaveragebitrate=junk").opus == OpusSettings()
    tuned = codec_for("opus", opus=OpusSettings(complexity=2, packet_loss_percent=30))
    assert tuned.opus is not None and tuned.opus.complexity == 2


def test_opus_settings_out_of_range_are_refused() -> None:
    with pytest.raises(CodecError, match=r"^Opus complexity is out of range$"):
        OpusSettings(complexity=11)
    with pytest.raises(CodecError, match=r"^Opus bitrate is out of range$"):
        OpusSettings(bitrate=1000)


@pytest.mark.parametrize("frequency", [440, 1000])
@pytest.mark.parametrize("name", NAMES + NARROW_OPUS)
def test_a_tone_survives_each_codec(name: str, frequency: float) -> None:
    spec = spec_of(name)
    original = tone(spec.sample_rate, frequency)
    decoded = round_trip(spec, original)
    assert len(decoded) == len(original)
    steady = decoded[spec.sample_rate // 10 :]
    assert abs(dominant(steady, spec.sample_rate) - frequency) < 3
    assert tone_snr(steady, spec.sample_rate, frequency) > 30
    assert abs(level_db(steady, original)) < 1


@pytest.mark.parametrize(
    ("name", "ptime"),
    [("PCMU", 30), ("PCMA", 30), ("G722", 30), ("opus", 60), ("opus@8000", 60), ("opus@16000", 10)],
)
def test_other_packet_times_round_trip(name: str, ptime: int) -> None:
    spec = spec_of(name)
    encoder, decoder = spec.encoder(ptime), spec.decoder()
    frame = encoder.frame_samples
    original = tone(spec.sample_rate, 1000, 0.6)
    decoded = np.concatenate(
        [
            decoder.decode(encoder.encode(original[i : i + frame]))
            for i in range(0, len(original), frame)
        ]
    )
    assert len(decoded) == len(original)
    assert tone_snr(decoded[spec.sample_rate // 10 :], spec.sample_rate, 1000) > 30


@pytest.mark.parametrize("name", NAMES)
def test_encoder_refuses_a_frame_of_the_wrong_length(name: str) -> None:
    encoder = codec_for(name).encoder()
    with pytest.raises(CodecError, match=r"^frame has the wrong number of samples$"):
        encoder.encode(np.zeros(encoder.frame_samples + 1, np.int16))
    with pytest.raises(CodecError, match=r"^frame has the wrong number of samples$"):
        encoder.encode(np.zeros((1, encoder.frame_samples), np.int16))


def test_opus_encoder_refuses_a_packet_time_opus_cannot_code() -> None:
    with pytest.raises(CodecError, match=r"^packet time is out of range$"):
        codec_for("opus").encoder(30)
    with pytest.raises(CodecError, match=r"^packet time is out of range$"):
        codec_for("PCMU").encoder(500)


@pytest.mark.parametrize("name", NAMES)
def test_empty_and_oversized_payloads_raise_codec_error(name: str) -> None:
    decoder = codec_for(name).decoder()
    with pytest.raises(CodecError, match=r"^payload is empty$"):
        decoder.decode(b"")
    with pytest.raises(CodecError, match=r"^payload is too long$"):
        decoder.decode(bytes(MAX_PAYLOAD_SIZE + 1))
    if name != "opus":
        with pytest.raises(CodecError, match=r"^payload is too long$"):
            decoder.decode(bytes(961))


@pytest.mark.parametrize("name", NAMES)
def test_garbage_payloads_decode_or_raise_codec_error_and_the_decoder_goes_on(name: str) -> None:
    spec = codec_for(name)
    decoder = spec.decoder()
    rng = np.random.default_rng(7)
    for _ in range(300):
        garbage = rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        try:
            samples = decoder.decode(garbage)
        except CodecError:
            continue
        assert samples.dtype == np.int16
    original = tone(spec.sample_rate, 1000, 0.4)
    good = spec.encoder()
    frame = spec.frame_samples
    decoded = np.concatenate(
        [
            decoder.decode(good.encode(original[i : i + frame]))
            for i in range(0, len(original), frame)
        ]
    )
    assert abs(dominant(decoded[len(decoded) // 2 :], spec.sample_rate) - 1000) < 10


def test_a_corrupt_opus_packet_raises_codec_error() -> None:
    with pytest.raises(CodecError, match=r"^Opus payload is corrupt$"):
        codec_for("opus").decoder().decode(b"\xff\xff\xff")


@pytest.mark.parametrize("name", NAMES + NARROW_OPUS)
def test_concealment_plays_on_the_lost_tone(name: str) -> None:
    spec = spec_of(name)
    decoder = spec.decoder()
    encoder = spec.encoder()
    frame = spec.frame_samples
    original = tone(spec.sample_rate, 1000, 0.2)
    for i in range(0, len(original), frame):
        last = decoder.decode(encoder.encode(original[i : i + frame]))
    concealed = decoder.conceal(frame)
    assert concealed.dtype == np.int16 and len(concealed) == frame
    assert abs(level_db(concealed, last)) < 3
    assert abs(dominant(concealed, spec.sample_rate) - 1000) < spec.sample_rate / frame
    # The joint between the last frame and the concealment is no click.
    joint = abs(int(concealed[0]) - int(last[-1]))
    assert joint <= 1.2 * np.max(np.abs(np.diff(last.astype(np.int32))))


@pytest.mark.parametrize("name", ["PCMU", "PCMA", "G722"])
def test_repetition_concealment_fades_to_silence_within_60_ms(name: str) -> None:
    spec = codec_for(name)
    decoder = spec.decoder()
    encoder = spec.encoder()
    frame = spec.frame_samples
    decoder.decode(encoder.encode(tone(spec.sample_rate, 440, 0.02)))
    frames = [decoder.conceal(frame) for _ in range(4)]
    levels = [float(np.sqrt(np.mean(f.astype(np.float64) ** 2))) for f in frames]
    assert levels[0] > levels[1] > levels[2] > 0
    assert levels[3] == 0


@pytest.mark.parametrize("name", NAMES + NARROW_OPUS)
def test_concealment_before_any_packet_is_silence_or_quiet(name: str) -> None:
    spec = spec_of(name)
    concealed = spec.decoder().conceal(spec.frame_samples)
    assert len(concealed) == spec.frame_samples
    assert np.max(np.abs(concealed.astype(np.int32))) < 100


@pytest.mark.parametrize("name", NAMES + NARROW_OPUS)
def test_concealment_length_out_of_range_raises_codec_error(name: str) -> None:
    decoder = spec_of(name).decoder()
    with pytest.raises(CodecError, match=r"^concealment length is out of range$"):
        decoder.conceal(10**6)
    with pytest.raises(CodecError, match=r"^concealment length is out of range$"):
        decoder.conceal(-1)


@pytest.mark.parametrize(("rate", "count"), [(48000, 1000), (8000, 161), (16000, 333)])
def test_opus_concealment_of_an_odd_length_returns_that_length(rate: int, count: int) -> None:
    assert len(codec_for("opus").at_sample_rate(rate).decoder().conceal(count)) == count


def speech_like(rate: int, frames: int, frame: int) -> Samples:
    """Harmonics of a pitch that jumps every 60 ms: voiced speech as far as PLC can tell."""
    rng = np.random.default_rng(1)
    pitch = np.repeat(rng.uniform(100, 250, frames // 3 + 1), 3)[:frames]
    phase = 2 * math.pi * np.cumsum(np.repeat(pitch, frame)) / rate
    signal = sum(0.6**k * np.sin(k * phase) for k in range(1, 8))
    result: Samples = np.round(8000 * signal / np.max(np.abs(signal))).astype(np.int16)
    return result


@pytest.mark.parametrize(
    ("encoder_rate", "decoder_rate", "factor"),
    [
        (48000, 48000, 2.0),
        # A browser's 48 kHz stream rebuilt by a decoder running at G.711's or G.722's rate.
        (48000, 8000, 2.0),
        (48000, 16000, 2.0),
        # Our encoder at those rates: its FEC is coarser at 16 kHz (measured 1.5x, not 2x).
        (8000, 8000, 2.0),
        (16000, 16000, 1.3),
    ],
)
def test_opus_fec_rebuilds_a_lost_frame_closer_to_the_original_than_plc(
    encoder_rate: int, decoder_rate: int, factor: float
) -> None:
    base = codec_for("opus", opus=OpusSettings(packet_loss_percent=20))
    spec, decoding = base.at_sample_rate(encoder_rate), base.at_sample_rate(decoder_rate)
    frame, decoded_frame = spec.frame_samples, decoding.frame_samples
    frames = 46
    signal = speech_like(spec.sample_rate, frames, frame)
    encoder = spec.encoder()
    payloads = [encoder.encode(signal[i * frame : (i + 1) * frame]) for i in range(frames)]
    reference = decoding.decoder()
    clean = [reference.decode(p).astype(np.float64) for p in payloads]
    plc_error = fec_error = 0.0
    for lost in range(10, 44, 3):
        plc, fec = decoding.decoder(), decoding.decoder()
        for payload in payloads[:lost]:
            plc.decode(payload)
            fec.decode(payload)
        plc_error += float(np.sum((plc.conceal(decoded_frame) - clean[lost]) ** 2))
        rebuilt = fec.decode_fec(payloads[lost + 1], decoded_frame)
        assert len(rebuilt) == decoded_frame and rebuilt.dtype == np.int16
        fec_error += float(np.sum((rebuilt - clean[lost]) ** 2))
    assert fec_error * factor < plc_error


@pytest.mark.parametrize("name", ["PCMU", "PCMA", "G722"])
def test_decode_fec_without_fec_conceals(name: str) -> None:
    spec = codec_for(name)
    decoder = spec.decoder()
    encoder = spec.encoder()
    payload = encoder.encode(tone(spec.sample_rate, 1000, 0.02))
    decoder.decode(payload)
    rebuilt = decoder.decode_fec(payload, spec.frame_samples)
    assert len(rebuilt) == spec.frame_samples
    assert np.max(np.abs(rebuilt.astype(np.int32))) > 1000


def test_opus_decode_fec_refuses_an_empty_next_payload() -> None:
    with pytest.raises(CodecError, match=r"^payload is empty$"):
        codec_for("opus").decoder().decode_fec(b"", 960)


# -- Opus at the audio rate of G.711 and G.722 -----------------------------------------------


def test_opus_runs_at_another_audio_rate_with_its_48_khz_clock() -> None:
    opus = codec_for("opus")
    narrow = opus.at_sample_rate(8000)
    assert (narrow.name, narrow.sample_rate, narrow.clock_rate) == ("opus", 8000, 48000)
    assert narrow.frame_samples == 160 and narrow.timestamps_for(160) == 960
    assert narrow.encoder().frame_samples == 160 and narrow.encoder(40).frame_samples == 320
    wide = opus.at_sample_rate(16000)
    assert wide.frame_samples == 320 and wide.timestamps_for(320) == 960
    assert narrow.opus == opus.opus and narrow.at_sample_rate(48000) == opus
    assert opus.at_sample_rate(48000) is opus


@pytest.mark.parametrize(("name", "rate"), [("opus", 44100), ("opus", 32000), ("PCMU", 16000)])
def test_a_rate_the_codec_cannot_run_at_is_refused(name: str, rate: int) -> None:
    with pytest.raises(CodecError, match=r"^the codec cannot run at that sample rate$"):
        codec_for(name).at_sample_rate(rate)
    assert codec_for("G722").at_sample_rate(16000) == codec_for("G722")


def toc_bandwidth(payload: bytes) -> str:
    """The audio bandwidth an Opus packet's TOC byte announces (RFC 6716 §3.1)."""
    config = payload[0] >> 3
    if config < 12:
        return ("NB", "MB", "WB")[config // 4]
    if config < 16:
        return ("SWB", "FB")[(config - 12) // 2]
    return ("NB", "WB", "SWB", "FB")[(config - 16) // 4]


@pytest.mark.parametrize(
    ("rate", "fmtp", "bandwidths"),
    [(8000, None, {"NB"}), (16000, None, {"WB"}), (16000, "maxplaybackrate=8000", {"NB"})],
)
def test_opus_at_a_lower_rate_codes_no_wider_band_than_it_has(
    rate: int, fmtp: str | None, bandwidths: set[str]
) -> None:
    spec = codec_for("opus", fmtp=fmtp).at_sample_rate(rate)
    encoder = spec.encoder()
    frame = spec.frame_samples
    signal = speech_like(rate, 25, frame)
    payloads = [encoder.encode(signal[i : i + frame]) for i in range(0, len(signal), frame)]
    assert {toc_bandwidth(p) for p in payloads[2:]} == bandwidths


@pytest.mark.parametrize("rate", [8000, 16000])
def test_opus_coded_at_a_lower_rate_plays_right_on_a_48_khz_decoder(rate: int) -> None:
    """Interop: the peer decodes at 48 kHz (a browser): our libopus decoder and FFmpeg's own
    Opus decoder both hear the tone at its frequency and level."""
    import av

    spec = codec_for("opus").at_sample_rate(rate)
    original = tone(rate, 1000, 0.5)
    encoder = spec.encoder()
    frame = spec.frame_samples
    payloads = [encoder.encode(original[i : i + frame]) for i in range(0, len(original), frame)]
    ours = codec_for("opus").decoder()
    decoded = np.concatenate([ours.decode(p) for p in payloads])
    assert len(decoded) == len(original) * 48000 // rate
    context: Any = av.CodecContext.create("opus", "r")
    context.sample_rate = 48000
    context.layout = "mono"
    context.thread_count = 1
    theirs = np.concatenate(
        [
            audio.to_ndarray().reshape(-1)
            for payload in payloads
            for audio in context.decode(av.Packet(payload))
        ]
    )
    for wide in (decoded, theirs.astype(np.float64) * (32767 if theirs.dtype.kind == "f" else 1)):
        steady = wide[4800:]
        assert abs(dominant(steady, 48000) - 1000) < 3
        assert tone_snr(steady, 48000, 1000) > 25
        assert abs(level_db(steady, original)) < 1
