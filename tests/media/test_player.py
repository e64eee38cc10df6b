"""Tests of media.player and the default sound set: files decode once at any rate,
players frame, loop and end cleanly, and bad files raise MediaFileError."""

from __future__ import annotations

import math
import os
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from media.player import SOUNDS, MediaFileError, Player, load, sound_path


def tone(rate: int, frequency: float, seconds: float) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(10362 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)


def dominant(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


def write_compressed(path: Path, codec: str, samples: np.ndarray, rate: int) -> Path:
    with av.open(str(path), "w") as container:
        stream: Any = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_a_wav_is_decoded_at_the_rate_asked(tmp_path: Path, rate: int) -> None:
    path = write_wav(tmp_path / "tone.wav", tone(16000, 440, 1.0), 16000)
    samples = load(path, rate)
    assert samples.dtype == np.int16 and samples.ndim == 1
    assert abs(len(samples) - rate) <= rate // 100
    assert abs(dominant(samples, rate) - 440) < 3
    assert not samples.flags.writeable


def test_stereo_is_downmixed_to_mono(tmp_path: Path) -> None:
    left, right = tone(8000, 440, 0.5), tone(8000, 440, 0.5)
    path = write_wav(tmp_path / "stereo.wav", np.stack((left, right), 1).reshape(-1), 8000, 2)
    samples = load(path, 8000)
    assert len(samples) == 4000
    assert abs(dominant(samples, 8000) - 440) < 3


@pytest.mark.parametrize(("name", "codec"), [("tone.mp3", "mp3"), ("tone.ogg", "libopus")])
def test_compressed_files_decode_too(tmp_path: Path, name: str, codec: str) -> None:
    path = write_compressed(tmp_path / name, codec, tone(48000, 1000, 1.0), 48000)
    samples = load(path, 8000)
    assert abs(len(samples) - 8000) < 800
    assert abs(dominant(samples[800:-800], 8000) - 1000) < 5


def test_a_file_is_decoded_once_per_rate_and_again_when_it_changes(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "prompt.wav", tone(8000, 440, 0.2), 8000)
    first = load(path, 8000)
    assert load(str(path), 8000) is first
    assert load(path, 16000) is not first
    write_wav(path, tone(8000, 1000, 0.3), 8000)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = load(path, 8000)
    assert len(changed) == 2400
    assert abs(dominant(changed, 8000) - 1000) < 30


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "media file is missing"),
        (b"", "media file cannot be decoded"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 3, "media file cannot be decoded"),
        (bytes(range(256)) * 40, "media file cannot be decoded"),
    ],
)
def test_bad_files_raise_media_file_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaFileError, match=rf"^{message}$"):
        load(path, 8000)


def test_a_directory_or_a_bad_rate_raises_media_file_error(tmp_path: Path) -> None:
    with pytest.raises(MediaFileError):
        load(tmp_path, 8000)
    with pytest.raises(MediaFileError, match=r"^sample rate is out of range$"):
        load(tmp_path / "x.wav", 0)


def test_a_wav_without_samples_has_no_audio(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "empty.wav", np.zeros(0, np.int16), 8000)
    with pytest.raises(MediaFileError, match=r"^media file (has no audio|cannot be decoded)$"):
        load(path, 8000)


def test_a_prompt_plays_once_padded_with_silence_then_ends() -> None:
    samples = np.arange(1, 401, dtype=np.int16)
    player = Player(samples, 160)
    frames = list(player)
    assert [len(f) for f in frames] == [160, 160, 160]
    assert np.array_equal(np.concatenate(frames)[:400], samples)
    assert not frames[-1][80:].any()
    assert player.finished and player.read() is None
    player.rewind()
    assert not player.finished and player.position == 0
    assert np.array_equal(player.read(), samples[:160])


def test_a_prompt_of_whole_frames_ends_with_its_last_frame() -> None:
    player = Player(np.ones(320, np.int16), 160)
    assert player.read() is not None and not player.finished
    assert player.read() is not None and player.finished
    assert player.read() is None


@pytest.mark.parametrize("length", [400, 320, 50])
def test_music_loops_without_a_gap(length: int) -> None:
    samples = np.arange(1, length + 1, dtype=np.int16)
    player = Player(samples, 160, loop=True)
    played = np.concatenate([player.read() for _ in range(12)])
    assert np.array_equal(played, np.resize(samples, 12 * 160))
    assert not player.finished


def test_frames_are_read_only() -> None:
    player = Player(np.ones(400, np.int16), 160, loop=True)
    for _ in range(4):
        frame = player.read()
        assert frame is not None and not frame.flags.writeable


def test_player_refuses_an_empty_sound_or_frame() -> None:
    with pytest.raises(MediaFileError, match=r"^media file has no audio$"):
        Player(np.zeros(0, np.int16), 160)
    with pytest.raises(MediaFileError, match=r"^frame length is out of range$"):
        Player(np.ones(10, np.int16), 0)


def test_player_opens_a_file(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "prompt.wav", tone(16000, 440, 0.1), 16000)
    player = Player.open(path, 8000, 160)
    assert player.duration == 800
    assert len(list(player)) == 5


PROMPTS = [
    "welcome",
    "all-agents-busy",
    "call-recorded",
    "you-are-caller",
    "queue-position",
    "estimated-wait",
    "minutes",
    "less-than-a-minute",
    "callback-offer",
    "enter-phone-number",
    "callback-confirmed",
    "invalid-option",
    "goodbye",
    *(f"digit-{d}" for d in range(10)),
]


@pytest.mark.parametrize("language", ["en", "es"])
def test_the_default_prompts_exist_in_each_language_and_are_speech(language: str) -> None:
    for name in PROMPTS:
        path = sound_path(name, language)
        assert path.parent.name == language
        with wave.open(str(path)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        samples = load(path, 8000)
        assert 0.2 < len(samples) / 8000 < 6
        assert np.max(np.abs(samples.astype(np.int32))) > 8000


def test_the_default_set_is_small_and_shares_beep_and_music() -> None:
    assert sum(p.stat().st_size for p in SOUNDS.rglob("*.wav")) < 3_000_000
    assert sound_path("beep", "es") == SOUNDS / "beep.wav"
    beep = load(sound_path("beep"), 8000)
    assert abs(dominant(beep, 8000) - 1000) < 5
    with pytest.raises(MediaFileError, match=r"^sound is not in the default set$"):
        sound_path("no-such-prompt")


def test_the_default_music_on_hold_is_long_and_loops_without_a_click() -> None:
    music = load(sound_path("moh"), 16000).astype(np.int32)
    assert 30 <= len(music) / 16000 <= 60
    steps = np.abs(np.diff(music))
    assert abs(music[0] - music[-1]) <= 2 * np.percentile(steps, 99.9)
