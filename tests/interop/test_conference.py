"""A three-party conference with real audio: three baresip callers dial the same room at once.

Each sends its own tone for about six seconds; each must hear the other two tones, and not its
own, in what it received. Needs the `conf-` route (``pattern = "^conf-(.+)$"``, target
``conference``, ``strip = 5``) and the conference service wired into the router.
"""

from __future__ import annotations

import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.interop.baresip import BaresipRun, dial
from tests.interop.harness import RunningServer
from tests.interop.pages import calls_over

pytestmark = pytest.mark.interop

SHARED_SERVER = True
"""These tests share the session's server (tests/interop/conftest.py)."""

TONES = (440.0, 690.0, 1230.0)
CODECS = ("PCMU", "PCMA", "opus")


def tone_levels(path: Path) -> dict[float, float]:
    """The energy near each test tone in a recording, relative to the strongest of them; the
    first second (joining, the join beeps) is left out."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        channels = w.getnchannels()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    samples = samples[rate:]
    assert samples.size > rate, "the recording is shorter than two seconds"
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size))) ** 2
    found = {}
    for hz in TONES:
        centre = round(hz * samples.size / rate)
        width = max(2, round(3 * samples.size / rate))  # +-3 Hz
        found[hz] = float(spectrum[centre - width : centre + width + 1].sum())
    top = max(found.values()) or 1.0
    return {hz: level / top for hz, level in found.items()}


def test_three_callers_in_a_room_each_hear_the_two_others(
    server: RunningServer, tmp_path: Path
) -> None:
    uri = f"sip:conf-1@127.0.0.1:{server.sip_port}"
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [
            pool.submit(dial, tmp_path / f"caller{n}", uri, 6, tone_hz=hz, codecs=codec)
            for n, (hz, codec) in enumerate(zip(TONES, CODECS, strict=True))
        ]
        runs: list[BaresipRun] = [f.result() for f in futures]
    for run, hz in zip(runs, TONES, strict=True):
        assert run.established, run.output[-3000:] + server.log()[-3000:]
        levels = tone_levels(run.decoded())
        for other, level in levels.items():
            if other == hz:
                assert level < 0.05, (hz, levels)
            else:
                assert level > 0.1, (hz, levels, server.log()[-3000:])
    calls_over(server)  # the last BYE handled: the room closed (baresip need not wait for it)
    log = server.log()
    assert log.count("conference-joined") >= 3, log[-3000:]
    assert "conference-closed" in log
