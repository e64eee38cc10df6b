"""Streaming sample-rate conversion between 8, 16 and 48 kHz mono int16, with numpy.

Theory of operation. The rates a call carries (8 kHz G.711, 16 kHz G.722, 48 kHz Opus) are in
integer ratios, so conversion is a polyphase FIR filter: one Kaiser-windowed sinc prototype `h`
of `R * taps_per_phase` taps (`R` the ratio) at the higher rate, cut off at the lower rate's
Nyquist frequency. Upsampling by `L` computes, for every input sample, its `L` output phases at
once: the input, behind a history of `taps_per_phase - 1` samples, is viewed (no copy) as a
matrix of overlapping windows and multiplied by the `taps_per_phase x L` matrix of the filter's
phases. Downsampling by `M` views windows of `R * taps_per_phase` samples every `M` samples and
multiplies them by `h`. Each call is one small BLAS product plus a few numpy calls, no Python
loop per sample. The history is carried from call to call, so a stream cut into frames of any
length gives the very samples the whole signal would (no click at frame borders); downsampling
keeps the input it could not use yet. A 20 ms frame in is a 20 ms frame out, always: the delay
is constant, `delay` output samples (the prototype's group delay, 1.5 ms with the default 24
taps per phase).

With 24 taps per phase (Kaiser beta 8.6) the images and aliases of anything below 0.79 times
the lower Nyquist frequency (3.17 kHz for 8 kHz, 6.3 kHz for 16 kHz) are more than 80 dB down,
and the passband is flat there. A 1 kHz tone at -10 dBFS comes out with an SNR (tone power
over everything else, after a least-squares sine fit) of 84-97 dB in every direction, and a
3 kHz tone at 8 kHz too; 16 taps per phase left the 3 kHz image of an 8 -> 48 kHz conversion
only 41 dB down.

Measured on the 2-core development machine while other jobs ran (load 3-4; `sum(range(1000))`
took 17-18 µs in the quietest runs), best of 5 x 2000 calls on one 20 ms frame, int16 in and
out, the lowest of four runs of `PYTHONPATH=. .venv/bin/python benchmarks/media_engine.py resample`:

| conversion      | this module | PyAV `AudioResampler` (set up once, ndarray in and out) |
|-----------------|-------------|----------------------------------------------------------|
| 8 -> 48 kHz     | 15 µs       | 45 µs                                                    |
| 48 -> 8 kHz     | 15 µs       | 45 µs                                                    |
| 8 -> 16 kHz     | 13 µs       | 43 µs                                                    |
| 16 -> 8 kHz     | 13 µs       | 43 µs                                                    |
| 16 <-> 48 kHz   | 18-20 µs    | 45 µs                                                    |

PyAV's own conversion (libswresample) is not the cost: wrapping the array in an `AudioFrame`
and back takes most of it, and its first output frame is short (864 samples for 960) because
swresample emits only what its filter delay allows, so a frame-based caller must re-frame. The
numpy filter is both faster and frame-exact, hence the choice; PyAV stays the tool for media
files (`player.py`), decoded and resampled once. (DESIGN.md's 12-14 µs for PyAV counts its
`resample()` alone, without building the frame or reading the result.)
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_TAPS_PER_PHASE", "Resampler", "ResamplerError"]

Samples = npt.NDArray[np.int16]

DEFAULT_TAPS_PER_PHASE = 24
"""Filter taps per polyphase branch: the quality/cost trade-off (see the module docstring)."""

_KAISER_BETA = 8.6
_MAX_RATE = 384_000
_FLOAT = np.float32
_ITEM = np.dtype(_FLOAT).itemsize


class ResamplerError(ValueError):
    """A resampler asked for rates it cannot convert between."""


def _prototype(ratio: int, gain: float, taps_per_phase: int) -> npt.NDArray[np.float64]:
    """A Kaiser-windowed sinc low-pass at the higher rate, cut off at the lower Nyquist."""
    count = ratio * taps_per_phase
    n = np.arange(count) - (count - 1) / 2
    cutoff = 0.5 / ratio
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(count, _KAISER_BETA)
    result: npt.NDArray[np.float64] = h * (gain / h.sum())
    return result


class Resampler:
    """Converts one mono int16 stream from `input_rate` to `output_rate` (Hz), frame by frame.

    The rates must be in an integer ratio (8000, 16000, 24000 and 48000 all are). Equal rates
    pass samples through unchanged. One resampler per stream and direction: it keeps state.
    """

    __slots__ = (
        "_down",
        "_history",
        "_phases",
        "_taps",
        "_window",
        "delay",
        "input_rate",
        "output_rate",
        "ratio",
    )

    def __init__(
        self,
        input_rate: int,
        output_rate: int,
        taps_per_phase: int = DEFAULT_TAPS_PER_PHASE,
    ) -> None:
        if not (0 < input_rate <= _MAX_RATE and 0 < output_rate <= _MAX_RATE):
            raise ResamplerError("sample rate is out of range")
        if not 2 <= taps_per_phase <= 256:
            raise ResamplerError("taps per phase is out of range")
        high, low = max(input_rate, output_rate), min(input_rate, output_rate)
        if high % low:
            raise ResamplerError("sample rates are not in an integer ratio")
        self.input_rate = input_rate
        self.output_rate = output_rate
        self.ratio = high // low
        """The integer ratio between the rates (1 when they are equal)."""
        self.delay: float
        """The delay the filter adds, in output samples (fractional: 71.5 from 8 to 48 kHz)."""
        self._down = input_rate > output_rate
        self._taps = taps_per_phase
        self._phases: npt.NDArray[np.float32] = np.zeros((0, 0), _FLOAT)
        self._window = 0
        if self.ratio == 1:
            self.delay = 0.0
        elif self._down:
            h = _prototype(self.ratio, 1.0, taps_per_phase)
            self._phases = np.ascontiguousarray(h[::-1], dtype=_FLOAT)
            self._window = len(h)
            self.delay = (len(h) - 1) / (2 * self.ratio)
        else:
            h = _prototype(self.ratio, float(self.ratio), taps_per_phase)
            # Row j, column p: the tap that weighs input x[n - (K - 1 - j)] into output n*L + p.
            self._phases = np.ascontiguousarray(
                h.reshape(taps_per_phase, self.ratio)[::-1], dtype=_FLOAT
            )
            self._window = taps_per_phase
            self.delay = (len(h) - 1) / 2
        self._history: npt.NDArray[np.float32] = np.zeros(max(self._window - 1, 0), _FLOAT)

    def resample(self, samples: Samples) -> Samples:
        """Convert the next samples of the stream (1-D int16) and return those now ready.

        Upsampling returns exactly `len(samples) * ratio` samples; downsampling returns
        `len(samples) // ratio` when every call's length is a multiple of the ratio (a 20 ms
        frame always is), and otherwise keeps the remainder for the next call.
        """
        if self.ratio == 1:
            return samples
        history = self._history
        kept = len(history)
        buffer = np.empty(kept + len(samples), _FLOAT)
        buffer[:kept] = history
        buffer[kept:] = samples
        window = self._window
        if self._down:
            count = max((len(buffer) - window) // self.ratio + 1, 0)
            windows = np.ndarray((count, window), _FLOAT, buffer, 0, (self.ratio * _ITEM, _ITEM))
            result = np.dot(windows, self._phases)
            self._history = buffer[count * self.ratio :]
        else:
            count = len(samples)
            windows = np.ndarray((count, window), _FLOAT, buffer, 0, (_ITEM, _ITEM))
            result = np.dot(windows, self._phases).reshape(-1)
            self._history = buffer[count:]
        result.clip(-32768, 32767, out=result)
        np.rint(result, out=result)
        output: Samples = result.astype(np.int16)
        return output

    def reset(self) -> None:
        """Forget the stream so far, as after a new source (the history becomes silence)."""
        self._history = np.zeros(max(self._window - 1, 0), _FLOAT)

    def __repr__(self) -> str:
        return f"Resampler({self.input_rate}, {self.output_rate}, {self._taps})"


def tone_snr(samples: npt.ArrayLike, rate: int, frequency: float) -> float:
    """SNR in dB of a pure tone: the power of its least-squares sine fit over the residue."""
    signal = np.asarray(samples, dtype=np.float64)
    t = np.arange(len(signal)) / rate
    basis = np.stack(
        (
            np.sin(2 * math.pi * frequency * t),
            np.cos(2 * math.pi * frequency * t),
            np.ones_like(t),
        ),
        axis=1,
    )
    coefficients = np.linalg.lstsq(basis, signal, rcond=None)[0]
    fit = basis @ coefficients
    noise = float(np.sum((signal - fit) ** 2))
    power = float(np.sum(fit**2))
    return math.inf if noise == 0 else 10 * math.log10(power / noise)
