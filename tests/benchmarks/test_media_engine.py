"""benchmarks/media_engine.py and webrtc_receive.py run at a tiny size and print their figures."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest


def test_every_micro_benchmark_prints_its_table(run_benchmark: Callable[..., str]) -> None:
    names = ("codecs", "complexity", "resample", "transcode", "srtp", "mixer", "recording")
    out = run_benchmark("media_engine", *names, "--scale", "0.01")
    assert re.search(r"^sum\(range\(1000\)\): \d+\.\d µs$", out, re.M)
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("== ")] == [
        f"== {name}" for name in names
    ]
    assert re.search(r"^opus c5 fec +encode +\d+\.\d µs +decode +\d+\.\d µs", out, re.M)
    assert re.search(r"^ 8000 -> 16000 numpy: +\d+\.\d µs, 1 kHz SNR +\d+\.\d dB$", out, re.M)
    assert re.search(r"^ +8000 +10 +\d+ +-?\d+\.\d +-?\d+\.\d\d +\d+\.\d$", out, re.M)
    assert re.search(r"^  native PCMU<->opus: \d+ calls per core", out, re.M)
    assert re.search(r"^AEAD_AES_128_GCM: protect_rtp \d+\.\d\d µs, unprotect_rtp", out, re.M)
    assert re.search(r"^\| 50 \| \d+ µs \(\d+\) \| \d+ µs \(\d+\) \| \d+ µs \(\d+\) \|$", out, re.M)
    assert re.search(r"^opus 16000 Hz stereo: \d+\.\d\d ms CPU per second of audio", out, re.M)


def test_segmental_snr_finds_the_lag_and_rates_a_copy_highest() -> None:
    from benchmarks.media_engine import segmental_snr, tone

    reference = tone(8000, 1, 440)
    delayed = np.concatenate([np.zeros(40, np.int16), reference])
    snr, lag = segmental_snr(reference, delayed, 8000)
    assert lag == 40 and snr == pytest.approx(35.0)


def test_the_receive_path_benchmark_reports_both_paths(run_benchmark: Callable[..., str]) -> None:
    out = run_benchmark("webrtc_receive", "0.3")
    for path in ("aiortc", "bypass"):
        assert re.search(rf"^\[{path}\] frames delivered: \d+ in 0.3 s$", out, re.M)
    assert len(re.findall(r"^  receive path CPU per frame: -?\d+ us", out, re.M)) == 2
