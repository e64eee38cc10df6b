"""Tones and music synthesised from scratch: DTMF (ITU-T Q.23), ringback (ITU-T E.180) and a
royalty-free music-on-hold loop.

Everything is 16-bit linear PCM in a 1-D int16 numpy array at the requested sample rate. Levels
are in dBm0 (ITU-T G.711: a 0 dBm0 sine peaks 3.17 dB below the µ-law overload point). Nothing
is downloaded or read from disk: the music on hold is a chord progression played by a soft pad
and an arpeggio, rendered circularly so that the loop's end flows into its start without a
click. Ringback and music are cached per sample rate and returned read-only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from media.dtmf import event_for_digit

__all__ = [
    "DTMF_FREQUENCIES",
    "MOH_SECONDS",
    "RINGBACK",
    "RINGBACK_EUROPE",
    "Cadence",
    "cadence",
    "dtmf_tone",
    "music_on_hold",
    "ringback",
]

Samples = npt.NDArray[np.int16]

_DBM0_PEAK = 32636 * 10 ** (-3.17 / 20)
_LOW_GROUP = (697.0, 770.0, 852.0, 941.0)
_HIGH_GROUP = (1209.0, 1336.0, 1477.0, 1633.0)

DTMF_FREQUENCIES: dict[str, tuple[float, float]] = {
    digit: (_LOW_GROUP[row], _HIGH_GROUP[column])
    for row, keys in enumerate(("123A", "456B", "789C", "*0#D"))
    for column, digit in enumerate(keys)
}
"""The ITU-T Q.23 frequency pair (low group, high group) in Hz of each digit."""

MOH_SECONDS = 24.0
"""Length of the music-on-hold loop: 8 chords of 3 s (a whole number of 10 ms frames)."""


def _amplitude(dbm0: float) -> float:
    return float(_DBM0_PEAK * 10 ** (dbm0 / 20))


def _ramp(samples: npt.NDArray[np.float64], rate: int, seconds: float) -> None:
    count = min(round(rate * seconds), len(samples) // 2)
    if count:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, count, endpoint=False))
        samples[:count] *= ramp
        samples[len(samples) - count :] *= ramp[::-1]


def dtmf_tone(
    digit: str,
    duration: float = 0.1,
    rate: int = 8000,
    low_dbm0: float = -10.0,
    high_dbm0: float = -8.0,
) -> Samples:
    """A tone burst for `digit` (ITU-T Q.23 pair), `duration` seconds long.

    The high group is 2 dB above the low group (a positive twist, within ITU-T Q.24 limits); the
    burst starts and ends with 5 ms raised-cosine ramps.
    """
    event_for_digit(digit)
    low, high = DTMF_FREQUENCIES[digit.upper()]
    t = np.arange(round(duration * rate)) / rate
    signal = _amplitude(low_dbm0) * np.sin(2 * math.pi * low * t) + _amplitude(high_dbm0) * np.sin(
        2 * math.pi * high * t
    )
    _ramp(signal, rate, 0.005)
    return np.round(signal).astype(np.int16)


@dataclass(frozen=True, slots=True)
class Cadence:
    """A call-progress tone (ITU-T E.180): summed `frequencies` (Hz) at `level` dBm0 each,
    switched on and off by `pattern` (seconds on, off, on, off...)."""

    frequencies: tuple[float, ...]
    pattern: tuple[float, ...]
    level: float = -19.0


RINGBACK = Cadence((440.0, 480.0), (2.0, 4.0))
"""North American ringback: 440 + 480 Hz, 2 s on, 4 s off."""

RINGBACK_EUROPE = Cadence((425.0,), (1.0, 4.0), -13.0)
"""European ringback (ETSI TR 101 041, ITU-T E.180 Suppl. 2): 425 Hz, 1 s on, 4 s off."""


def cadence(tone: Cadence, rate: int = 8000) -> Samples:
    """One period of a cadenced tone; play it in a loop."""
    parts: list[npt.NDArray[np.float64]] = []
    for index, seconds in enumerate(tone.pattern):
        count = round(seconds * rate)
        if index % 2:
            parts.append(np.zeros(count))
            continue
        t = np.arange(count) / rate
        burst = sum(
            (_amplitude(tone.level) * np.sin(2 * math.pi * f * t) for f in tone.frequencies),
            start=np.zeros(count),
        )
        _ramp(burst, rate, 0.005)
        parts.append(burst)
    return np.round(np.concatenate(parts)).astype(np.int16)


@lru_cache(maxsize=8)
def ringback(rate: int = 8000, tone: Cadence = RINGBACK) -> Samples:
    """One period of ringback at `rate`, cached and read-only."""
    samples = cadence(tone, rate)
    samples.flags.writeable = False
    return samples


def _midi(note: int) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


_CHORDS: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = (
    ((48, 55, 64, 67), (72, 76, 79, 84)),  # C
    ((57, 60, 64, 69), (69, 72, 76, 81)),  # Am
    ((53, 57, 60, 65), (65, 69, 72, 77)),  # F
    ((55, 59, 62, 67), (67, 71, 74, 79)),  # G
    ((48, 55, 64, 67), (72, 76, 79, 84)),  # C
    ((52, 55, 59, 64), (64, 67, 71, 76)),  # Em
    ((53, 57, 60, 65), (65, 69, 72, 77)),  # F
    ((55, 59, 62, 67), (67, 71, 74, 79)),  # G
)
_ARPEGGIO = ((0, 1, 2, 3, 2, 1, 2, 1), (3, 2, 1, 0, 1, 2, 1, 2))


def _add_circular(
    buffer: npt.NDArray[np.float64], start: int, note: npt.NDArray[np.float64]
) -> None:
    size = len(buffer)
    start %= size
    head = min(len(note), size - start)
    buffer[start : start + head] += note[:head]
    rest = note[head:]
    while len(rest):
        chunk = rest[:size]
        buffer[: len(chunk)] += chunk
        rest = rest[size:]


def _voice(
    frequency: float,
    count: int,
    rate: int,
    harmonics: tuple[float, ...],
    envelope: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    t = np.arange(count) / rate
    nyquist = rate / 2
    signal = np.zeros(count)
    for order, weight in enumerate(harmonics, start=1):
        if frequency * order < nyquist * 0.9:
            signal += weight * np.sin(2 * math.pi * frequency * order * t)
    return signal * envelope


@lru_cache(maxsize=4)
def music_on_hold(rate: int = 8000) -> Samples:
    """The music-on-hold loop at `rate`: `MOH_SECONDS` long, cached and read-only.

    A I-vi-IV-V-I-iii-IV-V progression in C major, one chord every 3 s: a pad of four voices
    with a slow raised-cosine attack and a long exponential release that overlaps the next
    chord, and an eighth-note arpeggio an octave up with a soft attack and bell-like decay.
    The render wraps around, so the last chord's release sounds under the first one.
    """
    size = round(MOH_SECONDS * rate)
    buffer = np.zeros(size)
    chord_length = size // len(_CHORDS)
    pad_count = chord_length + rate * 2
    pad_t = np.arange(pad_count) / rate
    attack = round(0.8 * rate)
    pad_envelope = np.exp(-np.maximum(pad_t - 2.6, 0.0) / 0.45)
    pad_envelope[:attack] *= 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, attack, endpoint=False))
    step = chord_length // 8
    bell_count = round(1.5 * rate)
    bell_t = np.arange(bell_count) / rate
    bell_envelope = np.exp(-bell_t / 0.45)
    bell_attack = round(0.012 * rate)
    bell_envelope[:bell_attack] *= np.linspace(0.0, 1.0, bell_attack, endpoint=False)
    bell_envelope[-bell_attack:] *= np.linspace(1.0, 0.0, bell_attack)
    pads: dict[int, npt.NDArray[np.float64]] = {}
    bells: dict[int, npt.NDArray[np.float64]] = {}
    for index, (pad, upper) in enumerate(_CHORDS):
        start = index * chord_length
        for note in pad:
            voice = pads.get(note)
            if voice is None:
                voice = pads[note] = _voice(
                    _midi(note), pad_count, rate, (1.0, 0.4, 0.15, 0.05), pad_envelope
                )
            _add_circular(buffer, start, (0.45 if note == pad[0] else 0.3) * voice)
        for beat, position in enumerate(_ARPEGGIO[index % 2]):
            note = upper[position]
            voice = bells.get(note)
            if voice is None:
                voice = bells[note] = _voice(
                    _midi(note), bell_count, rate, (1.0, 0.3, 0.1), bell_envelope
                )
            _add_circular(buffer, start + beat * step, (0.42 if beat % 4 == 0 else 0.3) * voice)
    buffer *= 0.35 * 32767 / np.max(np.abs(buffer))
    samples = np.round(buffer).astype(np.int16)
    samples.flags.writeable = False
    return samples
