"""Call recordings in Ogg/Opus (RFC 7845, RFC 6716), and the choice between it and WAV.

`OggOpusWriter` has the interface of `services.WavWriter`: `write(frames)` with int16 frames of
shape (n, channels) (or 1-D, already interleaved), `close()` (idempotent), and `frames`,
`duration`, `closed`. Recordings are stereo by default, the caller on the left and the other
side on the right, as WAV recordings are. `open_writer(path, "wav" | "opus")` picks the writer
by format name, for the configuration and the API.

Theory of operation. PyAV's `ogg` muxer with the `libopus` encoder at the rate of the call (8,
12, 16, 24 or 48 kHz: libopus takes them without resampling; Ogg Opus keeps the input rate in
its header and counts granule positions at 48 kHz, RFC 7845 §4). The encoder is set to
`application=voip`, 20 ms frames, one thread (FFmpeg would otherwise start one per core, aiortc
issue #1310). PyAV cuts whatever `write()` receives into 20 ms encoder frames itself. The muxer
closes a page every second of audio and flushes each page to the file (`flush_packets`), so a
process that dies mid-call leaves a readable file missing at most about a second. A recording
closed before any audio holds 20 ms of silence, since a stream without audio pages is refused
by readers. The default target, 32 kbit/s for both channels with constrained VBR, makes files
8 to 10 times smaller than 8 kHz stereo WAV.

Measured with `time.process_time` (best of 5 runs of 10 s) on the 2-core development machine
while other jobs ran (`sum(range(1000))` took 17-18 µs there), writing 20 ms chunks of two tones,
from opening to closing the file: 8 kHz stereo costs 15 ms of CPU per second of audio (300 µs
per 20 ms frame, 1.5 % of a core) and came out at 24 kbit/s; 16 kHz stereo 11 ms per second at
34 kbit/s; WAV 0.09 ms per second at 256 kbit/s.

Command: `PYTHONPATH=. .venv/bin/python benchmarks/media_engine.py recording`
(prints these figures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import av
import numpy as np
import numpy.typing as npt

from media.wav import WavWriter

__all__ = [
    "OPUS_RATES",
    "RECORDING_FORMATS",
    "OggOpusWriter",
    "RecordingWriter",
    "UnsupportedFormatError",
    "open_writer",
]

OPUS_RATES = frozenset({8000, 12000, 16000, 24000, 48000})
"""The input rates libopus encodes without resampling (RFC 6716 §2)."""

RECORDING_FORMATS: dict[str, str] = {"wav": ".wav", "opus": ".opus"}
"""Recording format names and the file suffix of each (RFC 7845 §9 recommends `.opus`)."""


class UnsupportedFormatError(ValueError):
    """A recording format, rate or channel count we cannot write."""


class RecordingWriter(Protocol):
    """What a recorder writes to: `WavWriter` or `OggOpusWriter`."""

    @property
    def frames(self) -> int: ...

    @property
    def duration(self) -> float: ...

    @property
    def closed(self) -> bool: ...

    def write(self, frames: npt.NDArray[np.int16]) -> None: ...

    def close(self) -> None: ...


_LAYOUTS = {1: "mono", 2: "stereo"}


class OggOpusWriter:
    """An Ogg/Opus file written as audio arrives (see the module docstring).

    `bitrate` is the target for all channels together, in bit/s. Encoding and file errors are
    raised as `OSError`, as a full disk is, so a recorder can stop the recording, not the call.
    """

    def __init__(
        self, path: str | Path, rate: int = 8000, channels: int = 2, bitrate: int = 32000
    ) -> None:
        if rate not in OPUS_RATES:
            raise UnsupportedFormatError("unsupported Opus sample rate")
        if channels not in _LAYOUTS:
            raise UnsupportedFormatError("unsupported channel count")
        self.path = Path(path)
        self.rate = rate
        self.channels = channels
        self._layout = _LAYOUTS[channels]
        self._frames = 0
        self._closed = False
        try:
            self._container = av.open(
                str(self.path), "w", format="ogg", options={"flush_packets": "1"}
            )
            stream = self._container.add_stream("libopus", rate=rate, layout=self._layout)
            stream.bit_rate = bitrate
            context = stream.codec_context
            context.thread_count = 1
            context.options = {"application": "voip", "frame_duration": "20", "vbr": "constrained"}
            self._stream = stream
            self._container.start_encoding()
        except av.FFmpegError as error:
            raise OSError("Ogg/Opus file cannot be opened") from error

    @property
    def frames(self) -> int:
        """Sample frames written."""
        return self._frames

    @property
    def duration(self) -> float:
        """Seconds of audio written."""
        return self._frames / self.rate

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._closed

    def write(self, frames: npt.NDArray[np.int16]) -> None:
        """Append int16 frames: shape (n, channels), or 1-D already interleaved."""
        if self._closed:
            raise ValueError("Ogg/Opus file is closed")
        data = np.ascontiguousarray(frames, dtype=np.int16).reshape(1, -1)
        if data.size % self.channels:
            raise ValueError("Ogg/Opus frames do not match the channel count")
        if not data.size:
            return
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout=self._layout)
        frame.sample_rate = self.rate
        frame.pts = self._frames
        self._frames += data.size // self.channels
        self._encode(frame)

    def close(self) -> None:
        """Flush the encoder, write the last page and close the file; idempotent."""
        if self._closed:
            return
        if not self._frames:
            self.write(np.zeros((self.rate // 50, self.channels), np.int16))
            self._frames = 0
        self._closed = True
        try:
            self._encode(None)
        finally:
            try:
                self._container.close()
            except av.FFmpegError as error:
                raise OSError("Ogg/Opus file cannot be closed") from error

    def _encode(self, frame: av.AudioFrame | None) -> None:
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except av.FFmpegError as error:
            if isinstance(error, OSError):
                raise
            raise OSError("Ogg/Opus encoding failed") from error


def open_writer(
    path: str | Path, format: str = "wav", rate: int = 8000, channels: int = 2
) -> RecordingWriter:
    """A writer for a recording `format`, "wav" or "opus" (see `RECORDING_FORMATS`)."""
    if format == "wav":
        return WavWriter(path, rate, channels)
    if format == "opus":
        return OggOpusWriter(path, rate, channels)
    raise UnsupportedFormatError("unsupported recording format")
