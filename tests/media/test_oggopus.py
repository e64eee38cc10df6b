"""Tests of media.oggopus: recordings PyAV reads back with each tone on its own channel,
the WavWriter interface, files readable before close, and the choice of writer by format."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from media.oggopus import (
    RECORDING_FORMATS,
    OggOpusWriter,
    UnsupportedFormatError,
    open_writer,
)
from media.wav import WavWriter

Samples = npt.NDArray[np.int16]


def tones(seconds: float, rate: int, left: float = 440.0, right: float = 1000.0) -> Samples:
    t = np.arange(round(seconds * rate)) / rate
    return np.stack(
        [6000 * np.sin(2 * np.pi * left * t), 6000 * np.sin(2 * np.pi * right * t)], axis=1
    ).astype(np.int16)


def decode(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    """The whole file as float samples, shape (channels, n), and its decoded rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = []
        for frame in container.decode(stream):
            samples = frame.to_ndarray()
            if not frame.format.is_planar:
                samples = samples.reshape(-1, len(frame.layout.channels)).T
            if samples.dtype == np.int16:
                samples = samples / 32768
            frames.append(samples.astype(np.float32))
        return np.concatenate(frames, axis=1), stream.codec_context.sample_rate


def level(samples: npt.NDArray[np.float32], frequency: float, rate: int) -> float:
    """The magnitude of `frequency` relative to full scale, over a Hann-windowed block."""
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window)) / (window.sum() / 2)
    bin_ = round(frequency * len(samples) / rate)
    return float(spectrum[bin_ - 2 : bin_ + 3].max())


def write_in_chunks(writer: OggOpusWriter | WavWriter, audio: Samples, size: int) -> None:
    for start in range(0, len(audio), size):
        writer.write(audio[start : start + size])


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_each_tone_comes_back_on_its_own_channel(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "call.opus"
    writer = OggOpusWriter(path, rate)
    write_in_chunks(writer, tones(2.0, rate), rate // 50)
    writer.close()
    decoded, decoded_rate = decode(path)
    assert decoded.shape[0] == 2
    block = decoded[:, decoded_rate // 2 : decoded_rate // 2 + decoded_rate]
    left, right = block
    assert level(left, 440, decoded_rate) > 0.1
    assert level(right, 1000, decoded_rate) > 0.1
    assert level(left, 1000, decoded_rate) < 0.01
    assert level(right, 440, decoded_rate) < 0.01


def test_decoded_length_matches_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "call.opus"
    writer = OggOpusWriter(path)
    write_in_chunks(writer, tones(3.0, 8000), 37)
    assert writer.frames == 24000
    assert writer.duration == 3.0
    writer.close()
    decoded, decoded_rate = decode(path)
    assert abs(decoded.shape[1] / decoded_rate - 3.0) <= 0.02
    with av.open(str(path)) as container:
        assert container.format.name == "ogg"
        assert container.streams.audio[0].codec_context.name == "opus"


def test_interleaved_and_two_column_input_are_the_same(tmp_path: Path) -> None:
    audio = tones(1.0, 8000)
    first, second = OggOpusWriter(tmp_path / "a.opus"), OggOpusWriter(tmp_path / "b.opus")
    first.write(audio)
    second.write(audio.reshape(-1))
    first.close()
    second.close()
    assert first.frames == second.frames == 8000
    assert np.array_equal(decode(tmp_path / "a.opus")[0], decode(tmp_path / "b.opus")[0])


def test_mono_recording_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "mono.opus"
    writer = OggOpusWriter(path, 8000, channels=1)
    writer.write(tones(1.0, 8000)[:, 0])
    writer.close()
    decoded, decoded_rate = decode(path)
    assert decoded.shape[0] == 1
    assert level(decoded[0, decoded_rate // 4 :], 440, decoded_rate) > 0.1


def test_close_is_idempotent_and_writing_after_it_is_refused(tmp_path: Path) -> None:
    writer = OggOpusWriter(tmp_path / "call.opus")
    writer.write(tones(0.1, 8000))
    assert not writer.closed
    writer.close()
    writer.close()
    assert writer.closed
    with pytest.raises(ValueError, match=r"^Ogg/Opus file is closed$"):
        writer.write(tones(0.1, 8000))


def test_frames_of_the_wrong_channel_count_are_refused(tmp_path: Path) -> None:
    writer = OggOpusWriter(tmp_path / "call.opus")
    with pytest.raises(ValueError, match=r"^Ogg/Opus frames do not match the channel count$"):
        writer.write(np.zeros(3, np.int16))
    writer.write(np.zeros((0, 2), np.int16))
    assert writer.frames == 0
    writer.close()


def test_an_empty_recording_is_still_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.opus"
    writer = OggOpusWriter(path)
    writer.close()
    assert writer.frames == 0
    decoded, decoded_rate = decode(path)
    assert decoded.shape[1] / decoded_rate <= 0.02
    assert not np.abs(decoded).max() > 0.01


def test_a_recording_is_readable_before_it_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "call.opus"
    writer = OggOpusWriter(path)
    write_in_chunks(writer, tones(4.0, 8000), 160)
    copy = tmp_path / "copy.opus"
    shutil.copy(path, copy)
    writer.close()
    decoded, decoded_rate = decode(copy)
    assert decoded.shape[1] / decoded_rate >= 2.5
    assert level(decoded[1, decoded_rate : 2 * decoded_rate], 1000, decoded_rate) > 0.1


def test_bad_rates_channels_and_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormatError, match=r"^unsupported Opus sample rate$"):
        OggOpusWriter(tmp_path / "a.opus", 44100)
    with pytest.raises(UnsupportedFormatError, match=r"^unsupported channel count$"):
        OggOpusWriter(tmp_path / "a.opus", 8000, 3)
    with pytest.raises(OSError):
        OggOpusWriter(tmp_path / "missing" / "a.opus")


def test_open_writer_picks_the_writer_by_format_name(tmp_path: Path) -> None:
    audio = tones(0.5, 8000)
    for format, kind in (("wav", WavWriter), ("opus", OggOpusWriter)):
        path = tmp_path / f"call{RECORDING_FORMATS[format]}"
        writer = open_writer(path, format)
        assert isinstance(writer, kind)
        writer.write(audio)
        assert writer.frames == 4000 and writer.duration == 0.5
        writer.close()
        assert writer.closed
        decoded, decoded_rate = decode(path)
        assert decoded.shape[0] == 2
        assert level(decoded[0], 440, decoded_rate) > 0.1
    with pytest.raises(UnsupportedFormatError, match=r"^unsupported recording format$"):
        open_writer(tmp_path / "call.mp3", "mp3")
