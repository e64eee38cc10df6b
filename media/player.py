"""Prompts and music from media files, decoded once and played frame by frame (sans-IO).

Theory of operation. `load(path, rate)` decodes any file PyAV (FFmpeg) reads — WAV, OGG/Opus,
OGG/Vorbis, MP3, FLAC... — downmixes it to mono and resamples it to `rate` with one
`av.AudioResampler`, and returns the whole sound as a read-only int16 array. Results are kept
in an LRU cache keyed by (path, modification time, size, rate), so a prompt played to a hundred
callers is decoded once per rate, and a file replaced on disk is read again. Files are decoded
on a single FFmpeg thread. A sound longer than `MAX_SECONDS` is refused rather than filling
memory.

A `Player` walks one sound: `read()` returns the next frame of `frame_samples` samples, the last
frame padded with silence; played once (a prompt) it then returns None and `finished` is True;
looped (music on hold) it wraps around without a gap. Frames are views of the cached sound
when they do not wrap, so playing costs no copy; they are read-only.

Every failure to load — a missing or unreadable file, one FFmpeg cannot decode, one with no
audio or too much — raises `MediaFileError` (a `ValueError`) with a fixed message, never
FFmpeg's or the OS's own exceptions, so a caller can fall back to silence or a tone.

Measured on the 2-core development machine while other jobs ran (`sum(range(1000))` took
18-21 µs): loading the 2.4 s `en/all-agents-busy.wav` at 8 kHz takes about 23 ms, once (opening
the file through FFmpeg is most of it; call `load` at start-up or off the event loop for long
files); `load` of a cached sound costs 2.7 µs (an `os.stat` and a cache look-up) and
`Player.read()` 0.4 µs per frame.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import av
import av.error
import numpy as np
import numpy.typing as npt

__all__ = [
    "CACHE_SIZE",
    "MAX_SECONDS",
    "SOUNDS",
    "MediaFileError",
    "Player",
    "load",
    "sound_path",
]

Samples = npt.NDArray[np.int16]

MAX_SECONDS = 900
"""The longest sound loaded: 15 minutes (28 MB at 16 kHz)."""

CACHE_SIZE = 64
"""How many decoded (file, rate) sounds the cache keeps."""

SOUNDS = Path(__file__).resolve().parent / "sounds"
"""The default sound set shipped with omlmedia (`media/sounds`, see its README)."""


class MediaFileError(ValueError):
    """A media file that cannot be played: missing, unreadable, undecodable, silent or too long."""


def sound_path(name: str, language: str = "en") -> Path:
    """The path of a default sound: `name` ("welcome", "digit-5", "moh"...) in `language`
    ("en", "es"), or shared by all languages ("beep", "moh") when the language has none."""
    for candidate in (SOUNDS / language / f"{name}.wav", SOUNDS / f"{name}.wav"):
        if candidate.is_file():
            return candidate
    raise MediaFileError("sound is not in the default set")


def load(path: str | os.PathLike[str], rate: int) -> Samples:
    """The whole sound of the file at `path`, mono int16 at `rate` Hz, read-only and cached."""
    if not 0 < rate <= 384_000:
        raise MediaFileError("sample rate is out of range")
    try:
        name = os.fspath(path)
        status = os.stat(name)
    except FileNotFoundError:
        raise MediaFileError("media file is missing") from None
    except (OSError, TypeError, ValueError):
        raise MediaFileError("media file cannot be read") from None
    return _load(name, status.st_mtime_ns, status.st_size, rate)


@lru_cache(maxsize=CACHE_SIZE)
def _load(name: str, mtime_ns: int, size: int, rate: int) -> Samples:
    limit = MAX_SECONDS * rate
    parts: list[Samples] = []
    total = 0
    try:
        with av.open(name, "r") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise MediaFileError("media file has no audio")
            stream.codec_context.thread_count = 1
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            for frame in container.decode(stream):
                if not isinstance(frame, av.AudioFrame):  # pragma: no cover - audio streams
                    continue
                for converted in resampler.resample(frame):
                    parts.append(np.asarray(converted.to_ndarray(), np.int16).reshape(-1))
                    total += converted.samples
                if total > limit:
                    raise MediaFileError("media file is too long")
            for converted in resampler.resample(None):
                parts.append(np.asarray(converted.to_ndarray(), np.int16).reshape(-1))
                total += converted.samples
    except MediaFileError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, EOFError):
        raise MediaFileError("media file cannot be decoded") from None
    if total == 0:
        raise MediaFileError("media file has no audio")
    if total > limit:
        raise MediaFileError("media file is too long")
    samples: Samples = np.concatenate(parts).astype(np.int16, copy=False)
    samples.flags.writeable = False
    return samples


class Player:
    """Plays `samples` (mono int16) in frames of `frame_samples`, once or in a `loop`."""

    __slots__ = ("_position", "finished", "frame_samples", "loop", "samples")

    def __init__(self, samples: Samples, frame_samples: int, loop: bool = False) -> None:
        if frame_samples <= 0:
            raise MediaFileError("frame length is out of range")
        if not len(samples):
            raise MediaFileError("media file has no audio")
        self.samples = samples.view()
        self.samples.flags.writeable = False
        self.frame_samples = frame_samples
        self.loop = loop
        self.finished = False
        """True once a sound played once has given its last frame."""
        self._position = 0

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], rate: int, frame_samples: int, loop: bool = False
    ) -> Player:
        """A player of the file at `path` decoded at `rate` (see `load`)."""
        return cls(load(path, rate), frame_samples, loop)

    @property
    def position(self) -> int:
        """The sample the next frame starts at."""
        return self._position

    @property
    def duration(self) -> int:
        """Samples in the sound."""
        return len(self.samples)

    def rewind(self) -> None:
        """Start again from the beginning."""
        self._position = 0
        self.finished = False

    def read(self) -> Samples | None:
        """The next frame (read-only), or None once a sound played once has ended."""
        if self.finished:
            return None
        start = self._position
        end = start + self.frame_samples
        length = len(self.samples)
        if end <= length:
            self._position = end
            if end == length:
                if self.loop:
                    self._position = 0
                else:
                    self.finished = True
            return self.samples[start:end]
        if self.loop:
            index = np.arange(start, end) % length
            self._position = end % length
            frame: Samples = self.samples.take(index)
        else:
            frame = np.zeros(self.frame_samples, np.int16)
            frame[: length - start] = self.samples[start:]
            self.finished = True
        frame.flags.writeable = False
        return frame

    def __iter__(self) -> Iterator[Samples]:
        """The frames to the end (forever when looping)."""
        while (frame := self.read()) is not None:
            yield frame
