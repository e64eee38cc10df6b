"""A call recording paused for PCI: silence in the file on both channels for the gap, the gap's
offsets kept, and the call detail report lists them."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import av
import numpy as np

from omlmedia.recording import CallRecorder
from omlmedia.reports import call_details
from omlmedia.storage import CallRecord

RATE = 8000
FRAME = RATE // 50


def tone(index: int, frequency: float) -> np.ndarray:
    t = (np.arange(FRAME) + index * FRAME) / RATE
    return (8000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        parts = []
        for frame in container.decode(stream):
            samples = frame.to_ndarray()
            if not frame.format.is_planar:
                samples = samples.reshape(-1, len(frame.layout.channels)).T
            parts.append(samples.astype(np.float64) / (32768 if samples.dtype == np.int16 else 1))
        rate = stream.codec_context.sample_rate
    audio = np.concatenate(parts, axis=1)
    assert rate % RATE == 0
    return audio[:, :: rate // RATE]  # back to 8 kHz for the offsets


def test_a_paused_recording_holds_silence_and_keeps_its_clock(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path / "call.opus", RATE)
    for index in range(150):  # 3 s: 1 s talk, 1 s paused, 1 s talk
        if index == 50:
            assert recorder.pause() and not recorder.pause()
            assert recorder.paused
        if index == 100:
            assert recorder.resume() and not recorder.resume()
        recorder.agent(tone(index, 660.0))
        recorder.caller(tone(index, 440.0))
    assert recorder.gap_list() == [{"start": 1.0, "end": 2.0}]
    assert recorder.offset == 3.0
    recorder.close()
    audio = decode(tmp_path / "call.opus")
    assert audio.shape[0] == 2 and audio.shape[1] >= 3 * RATE - FRAME
    for channel in (0, 1):
        assert np.abs(audio[channel, int(1.1 * RATE) : int(1.9 * RATE)]).max() < 0.01
        assert np.abs(audio[channel, int(0.2 * RATE) : int(0.9 * RATE)]).max() > 0.1
        assert np.abs(audio[channel, int(2.1 * RATE) : int(2.9 * RATE)]).max() > 0.1


def test_a_pause_still_running_ends_at_the_current_offset(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path / "call.opus", RATE)
    recorder.caller(tone(0, 440.0))
    recorder.pause()
    recorder.caller(tone(1, 440.0))
    assert recorder.gap_list() == [{"start": 0.02, "end": 0.04}]
    recorder.close()


def test_the_call_detail_lists_the_recording_gaps() -> None:
    def record(call_id: str, legs: tuple[dict[str, object], ...]) -> CallRecord:
        return CallRecord(call_id=call_id, start=100.0, end=200.0, answer=110.0, legs=legs)

    gaps = {"role": "recording", "gaps": [{"start": 3.04, "end": 6.1}, {"start": 20, "end": 31}]}
    rows = call_details(
        [
            record("paused", ({"role": "caller", "mos": 4.1}, gaps)),
            record("plain", ({"role": "caller"},)),
            record("odd", ({"role": "recording", "gaps": "nonsense"},)),
        ],
        0.0,
        1000.0,
        zone=ZoneInfo("UTC"),
    )
    assert "recording_gaps" in rows.columns
    found = {row["call_id"]: row["recording_gaps"] for row in rows.rows}
    assert found == {"paused": "3.0-6.1; 20.0-31.0", "plain": None, "odd": None}
    assert next(r for r in rows.rows if r["call_id"] == "paused")["caller_mos"] == 4.1
