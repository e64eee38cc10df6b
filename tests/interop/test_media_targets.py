"""The media targets with real peers: music on hold, recording, DTMF (RFC 4733 and SIP INFO)."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np

from tests.interop.baresip import dial, dominant_frequency
from tests.interop.harness import SCENARIOS, RunningServer, free_port, run_sipp

SHARED_SERVER = True
"""These tests share the session's server (tests/interop/conftest.py)."""


def test_moh_plays_music_to_a_baresip_caller(server: RunningServer, tmp_path: Path) -> None:
    run = dial(tmp_path, f"sip:moh@127.0.0.1:{server.sip_port}", 4)
    assert run.established, run.output[-3000:]
    with wave.open(str(run.decoded()), "rb") as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    one_second = samples[8000:16000]
    assert one_second.size == 8000
    rms = float(np.sqrt(np.mean(one_second**2)))
    assert rms > 300, rms  # music, not silence
    frequency, share = dominant_frequency(run.decoded())
    assert frequency != 440.0 or share < 0.9  # not our own tone echoed back


def test_record_writes_the_callers_audio_on_the_left_channel(
    server: RunningServer, tmp_path: Path
) -> None:
    # baresip's 4 s count from its start: 2 s are left for its start and the call's set-up on
    # a loaded machine before the recording below could be short of its 2 s.
    run = dial(tmp_path, f"sip:record@127.0.0.1:{server.sip_port}", 4, tone_hz=600.0)
    assert run.established, run.output[-3000:]
    deadline = time.monotonic() + 10
    while "event=call-ended" not in server.log().split("target=record")[-1]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    recordings = sorted((server.workdir / "data" / "recordings").rglob("*.wav"))
    assert recordings, "no recording written"
    with wave.open(str(recordings[-1]), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert frames.shape[0] >= 8000 * 2  # at least 2 s of the call
    left = frames[:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(left * np.hanning(left.size)))
    assert abs(np.argmax(spectrum[5:]) + 5 - 600.0 * left.size / 8000) < 5 * left.size / 8000
    assert np.abs(frames[:, 1]).max() == 0  # nobody spoke on the other side


def test_rfc4733_digits_from_sipp_pcap_are_detected(server: RunningServer, tmp_path: Path) -> None:
    result = run_sipp(
        [
            "-sn",
            "uac_pcap",
            f"127.0.0.1:{server.sip_port}",
            "-s",
            "dtmf",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-mp",
            str(free_port(pair=True)),
            "-m",
            "1",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.output + result.errors
    assert "event=dtmf" in server.log() and "digit=1 via=rfc4733" in server.log()


def test_sip_info_digits_are_detected(server: RunningServer, tmp_path: Path) -> None:
    result = run_sipp(
        [
            "-sf",
            str(SCENARIOS / "uac_info_dtmf.xml"),
            f"127.0.0.1:{server.sip_port}",
            "-s",
            "dtmf",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-m",
            "1",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.output + result.errors
    assert "digit=7 via=info" in server.log()
