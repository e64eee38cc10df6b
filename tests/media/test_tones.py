"""Tests of media.tones: Q.23 pairs, ringback cadences and music on hold, by FFT."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from media.dtmf import DIGITS, DtmfError
from media.tones import (
    DTMF_FREQUENCIES,
    MOH_SECONDS,
    RINGBACK,
    RINGBACK_EUROPE,
    Cadence,
    cadence,
    dtmf_tone,
    music_on_hold,
    ringback,
)

Q23 = {
    "1": (697, 1209),
    "2": (697, 1336),
    "3": (697, 1477),
    "A": (697, 1633),
    "4": (770, 1209),
    "5": (770, 1336),
    "6": (770, 1477),
    "B": (770, 1633),
    "7": (852, 1209),
    "8": (852, 1336),
    "9": (852, 1477),
    "C": (852, 1633),
    "*": (941, 1209),
    "0": (941, 1336),
    "#": (941, 1477),
    "D": (941, 1633),
}


def spectrum(samples: npt.NDArray[np.int16], rate: int) -> tuple[np.ndarray, np.ndarray]:
    windowed = samples.astype(float) * np.hanning(len(samples))
    return np.fft.rfftfreq(len(samples), 1 / rate), np.abs(np.fft.rfft(windowed))


def peaks(samples: npt.NDArray[np.int16], rate: int, count: int) -> list[float]:
    """The `count` strongest spectral peaks (local maxima), in Hz, ascending."""
    freqs, magnitude = spectrum(samples, rate)
    local = (magnitude[1:-1] > magnitude[:-2]) & (magnitude[1:-1] >= magnitude[2:])
    candidates = np.nonzero(local)[0] + 1
    strongest = candidates[np.argsort(magnitude[candidates])[-count:]]
    return sorted(float(freqs[i]) for i in strongest)


def test_frequency_table_is_itu_t_q23() -> None:
    assert DTMF_FREQUENCIES == {d: (float(lo), float(hi)) for d, (lo, hi) in Q23.items()}
    assert set(DTMF_FREQUENCIES) == set(DIGITS)


@pytest.mark.parametrize("digit", list(DIGITS))
def test_each_digit_has_exactly_its_q23_pair(digit: str) -> None:
    samples = dtmf_tone(digit, duration=0.5, rate=8000)
    assert samples.dtype == np.int16
    assert len(samples) == 4000
    low, high = peaks(samples, 8000, 2)
    assert low == pytest.approx(Q23[digit][0], abs=2.0)
    assert high == pytest.approx(Q23[digit][1], abs=2.0)
    freqs, magnitude = spectrum(samples, 8000)
    elsewhere = np.ones_like(magnitude, dtype=bool)
    for f in Q23[digit]:
        elsewhere &= np.abs(freqs - f) > 20
    assert magnitude[elsewhere].max() < magnitude.max() / 100  # 40 dB clean


def test_tone_has_a_positive_twist_soft_edges_and_no_clipping() -> None:
    samples = dtmf_tone("5", duration=0.1)
    freqs, magnitude = spectrum(dtmf_tone("5", duration=0.5), 8000)
    low = magnitude[np.argmin(np.abs(freqs - 770))]
    high = magnitude[np.argmin(np.abs(freqs - 1336))]
    assert 20 * np.log10(high / low) == pytest.approx(2.0, abs=0.5)
    assert abs(int(samples[0])) < 200 and abs(int(samples[-1])) < 1000
    assert np.abs(samples).max() < 32767 // 2


def test_tone_at_16_khz_and_lowercase_digit() -> None:
    samples = dtmf_tone("d", duration=0.25, rate=16000)
    assert len(samples) == 4000
    assert peaks(samples, 16000, 2) == pytest.approx([941, 1633], abs=4.0)


def test_unknown_digit_raises() -> None:
    with pytest.raises(DtmfError):
        dtmf_tone("E")


def test_north_american_ringback_is_440_plus_480_two_on_four_off() -> None:
    samples = ringback(8000)
    assert len(samples) == 6 * 8000
    on, off = samples[: 2 * 8000], samples[2 * 8000 :]
    assert not off.any()
    assert peaks(on, 8000, 2) == pytest.approx([440, 480], abs=1.0)
    assert ringback(8000) is samples
    assert not samples.flags.writeable


def test_european_ringback_is_425_one_on_four_off() -> None:
    samples = cadence(RINGBACK_EUROPE, 8000)
    assert len(samples) == 5 * 8000
    assert not samples[8000:].any()
    assert peaks(samples[:8000], 8000, 1) == pytest.approx([425], abs=1.0)
    assert RINGBACK.pattern == (2.0, 4.0)


def test_cadence_with_several_on_periods() -> None:
    tone = Cadence((400.0,), (0.4, 0.2, 0.4, 2.0))
    samples = cadence(tone, 8000)
    assert len(samples) == 3 * 8000
    assert samples[:3200].any() and not samples[3200:4800].any() and samples[4800:8000].any()
    assert not samples[8000:].any()


@pytest.fixture(scope="module")
def moh() -> npt.NDArray[np.int16]:
    return music_on_hold(8000)


def test_music_on_hold_is_a_cached_read_only_loop_of_whole_frames(
    moh: npt.NDArray[np.int16],
) -> None:
    assert moh.dtype == np.int16
    assert len(moh) == MOH_SECONDS * 8000
    assert len(moh) % 160 == 0 and len(moh) % 480 == 0
    assert music_on_hold(8000) is moh
    assert not moh.flags.writeable


def test_music_on_hold_is_audible_everywhere_and_never_clips(moh: npt.NDArray[np.int16]) -> None:
    seconds = moh.reshape(-1, 8000).astype(float)
    rms = np.sqrt((seconds**2).mean(axis=1))
    peak_dbfs = 20 * np.log10(np.abs(moh).max() / 32768)
    assert rms.min() > 1000  # no silent second
    assert rms.max() < 3 * rms.min()  # an even level
    assert -14 < peak_dbfs < -6


def test_music_on_hold_loops_without_a_click(moh: npt.NDArray[np.int16]) -> None:
    steps = np.abs(np.diff(moh.astype(np.int32)))
    seam = abs(int(moh[0]) - int(moh[-1]))
    assert seam <= np.percentile(steps, 99)
    # the seam sounds like any other moment: the level just before and after it matches
    before, after = moh[-800:].astype(float), moh[:800].astype(float)
    assert np.sqrt((after**2).mean()) == pytest.approx(np.sqrt((before**2).mean()), rel=0.5)


def test_music_on_hold_stays_in_the_telephone_band_and_changes_chords(
    moh: npt.NDArray[np.int16],
) -> None:
    freqs, magnitude = spectrum(moh, 8000)
    energy = magnitude**2
    assert energy[freqs > 3500].sum() < energy.sum() * 1e-4
    assert energy[(freqs > 100) & (freqs < 3400)].sum() > energy.sum() * 0.95
    first, second = moh[: 3 * 8000], moh[3 * 8000 : 6 * 8000]
    assert peaks(first, 8000, 3) != peaks(second, 8000, 3)  # C major, then A minor


def test_music_on_hold_renders_at_other_rates() -> None:
    samples = music_on_hold(16000)
    assert len(samples) == MOH_SECONDS * 16000
    assert np.abs(samples).max() > 5000
