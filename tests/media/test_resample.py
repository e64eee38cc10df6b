"""Tests of media.resample: clean tones, frame-exact output, continuity across frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from media.resample import Resampler, ResamplerError, tone_snr

PAIRS = [(8000, 48000), (48000, 8000), (8000, 16000), (16000, 8000), (16000, 48000), (48000, 16000)]


def tone(rate: int, frequency: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(10362 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)


@pytest.mark.parametrize(("input_rate", "output_rate"), PAIRS)
def test_a_tone_comes_out_clean_in_every_direction(input_rate: int, output_rate: int) -> None:
    resampler = Resampler(input_rate, output_rate)
    frame = input_rate // 50
    for frequency in (440, 1000, 3000):
        source = tone(input_rate, frequency)
        out = np.concatenate(
            [resampler.resample(source[i : i + frame]) for i in range(0, len(source), frame)]
        )
        assert tone_snr(out[output_rate // 10 :], output_rate, frequency) > 70


@pytest.mark.parametrize(("input_rate", "output_rate"), PAIRS)
def test_twenty_ms_in_is_twenty_ms_out_from_the_first_frame(
    input_rate: int, output_rate: int
) -> None:
    resampler = Resampler(input_rate, output_rate)
    for _ in range(3):
        out = resampler.resample(np.zeros(input_rate // 50, np.int16))
        assert out.dtype == np.int16 and len(out) == output_rate // 50


@pytest.mark.parametrize(("input_rate", "output_rate"), PAIRS)
def test_frames_of_any_length_give_the_samples_of_the_whole_stream(
    input_rate: int, output_rate: int
) -> None:
    source = tone(input_rate, 1000, 0.3)
    whole = Resampler(input_rate, output_rate).resample(source)
    pieces = Resampler(input_rate, output_rate)
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.integers(0, len(source), 25))
    parts = [pieces.resample(chunk) for chunk in np.split(source, cuts)]
    assert np.array_equal(np.concatenate(parts), whole)


def test_no_click_at_frame_borders() -> None:
    resampler = Resampler(8000, 48000)
    out = np.concatenate([resampler.resample(f) for f in np.split(tone(8000, 1000, 0.5), 25)])
    t = (np.arange(len(out)) - resampler.delay) / 48000
    ideal = 10362 * np.sin(2 * math.pi * 1000 * t)
    assert np.max(np.abs(out[480:] - ideal[480:])) < 20


def test_full_scale_input_is_clipped_not_wrapped() -> None:
    square = np.tile(np.repeat(np.array([32767, -32768], np.int16), 20), 40)
    out = Resampler(8000, 48000).resample(square).astype(np.int32)
    assert out.max() == 32767 and out.min() == -32768
    assert np.max(np.abs(np.diff(out))) < 30000


def test_equal_rates_pass_samples_through() -> None:
    samples = tone(8000, 440, 0.02)
    assert Resampler(8000, 8000).resample(samples) is samples


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((8000, 44100), "sample rates are not in an integer ratio"),
        ((0, 8000), "sample rate is out of range"),
        ((8000, 10**7), "sample rate is out of range"),
        ((8000, 16000, 1), "taps per phase is out of range"),
    ],
)
def test_bad_settings_are_refused(arguments: tuple[int, ...], message: str) -> None:
    with pytest.raises(ResamplerError, match=rf"^{message}$"):
        Resampler(*arguments)


def test_reset_forgets_the_stream() -> None:
    resampler = Resampler(48000, 8000)
    first = resampler.resample(tone(48000, 1000, 0.02))
    resampler.resample(tone(48000, 300, 0.05))
    resampler.reset()
    assert np.array_equal(resampler.resample(tone(48000, 1000, 0.02)), first)
