"""A crash-safe 16-bit PCM WAV writer for recordings (RIFF WAVE, WAVE_FORMAT_PCM)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["WavWriter"]

_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")


class WavWriter:
    """A 16-bit PCM WAV file (RIFF WAVE, WAVE_FORMAT_PCM) written as audio arrives.

    The header is written when the file opens and its sizes are brought up to date every
    `update_interval` seconds of audio and on `close()`, so the file stays a valid WAV even if
    the process dies mid-call (losing at most that interval). `close()` is idempotent. RIFF
    limits a file to 4 GiB, about 37 hours of 8 kHz stereo.
    """

    def __init__(
        self, path: str | Path, rate: int = 8000, channels: int = 2, update_interval: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.rate = rate
        self.channels = channels
        self._block = 2 * channels
        self._update_bytes = max(1, round(update_interval * rate)) * self._block
        self._data = 0
        self._updated = 0
        self._file = open(self.path, "wb")
        self._closed = False
        self._file.write(self._header())

    @property
    def frames(self) -> int:
        """Sample frames written."""
        return self._data // self._block

    @property
    def duration(self) -> float:
        """Seconds of audio written."""
        return self.frames / self.rate

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._closed

    def write(self, frames: npt.NDArray[np.int16]) -> None:
        """Append int16 frames: shape (n, channels), or 1-D already interleaved."""
        if self._closed:
            raise ValueError("WAV file is closed")
        data = np.ascontiguousarray(frames, dtype="<i2").tobytes()
        if len(data) % self._block:
            raise ValueError("WAV frames do not match the channel count")
        self._file.write(data)
        self._data += len(data)
        if self._data - self._updated >= self._update_bytes:
            self._update()

    def close(self) -> None:
        """Write the final sizes and close the file; does nothing the second time."""
        if self._closed:
            return
        self._closed = True
        try:
            self._update()
        finally:
            self._file.close()

    def _header(self) -> bytes:
        return _WAV_HEADER.pack(
            b"RIFF",
            36 + self._data,
            b"WAVE",
            b"fmt ",
            16,
            1,
            self.channels,
            self.rate,
            self.rate * self._block,
            self._block,
            16,
            b"data",
            self._data,
        )

    def _update(self) -> None:
        self._file.seek(0)
        self._file.write(self._header())
        self._file.seek(0, 2)
        self._updated = self._data
