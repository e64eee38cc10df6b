"""Trunk-to-trunk calls with real audio: baresip -> omlmedia -> baresip (the PBX extension).

Each baresip sends its own tone; each must hear the other's in what it received, whether the
bridge passes packets through (same codec on both legs) or transcodes (different codecs).
"""

from __future__ import annotations

import socket
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.interop.baresip import answerer, dial, dominant_frequency
from tests.interop.harness import SCENARIOS, RunningServer, run_sipp
from tests.interop.pages import calls_over

SHARED_SERVER = True
"""These tests share the session's server (tests/interop/conftest.py)."""


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Wait until something holds UDP `port` on 127.0.0.1 (baresip has started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on UDP {port}")


@pytest.mark.parametrize(
    ("caller_codecs", "pbx_codecs", "mode"),
    [
        ("PCMU", "PCMU", "passthrough"),
        ("PCMU", "PCMA", "transcode"),
        ("PCMA", "opus", "transcode"),
    ],
    ids=["pcmu-pcmu", "pcmu-pcma", "g711-opus"],
)
def test_each_side_hears_the_others_tone_through_the_bridge(
    server: RunningServer, tmp_path: Path, caller_codecs: str, pbx_codecs: str, mode: str
) -> None:
    with answerer(
        tmp_path / "pbx",
        server.pbx_port,
        user="5550100",
        tone_hz=660.0,
        codecs=pbx_codecs,
        seconds=20,
    ) as pbx:
        wait_listening(server.pbx_port)
        caller = dial(
            tmp_path / "caller",
            f"sip:95550100@127.0.0.1:{server.sip_port}",
            5,
            tone_hz=440.0,
            codecs=caller_codecs,
        )
    assert caller.established, caller.output[-3000:] + server.log()[-3000:]
    heard_by_caller, share = dominant_frequency(caller.decoded())
    assert abs(heard_by_caller - 660.0) < 5.0, (heard_by_caller, share)
    assert share > 0.3, share
    heard_by_pbx, share = dominant_frequency(pbx.decoded())
    assert abs(heard_by_pbx - 440.0) < 5.0, (heard_by_pbx, share, pbx.output[-2000:])
    assert share > 0.3, share
    assert f"mode={mode}" in server.log()
    calls_over(server)


def test_an_srtp_caller_is_bridged_to_a_plain_rtp_extension(
    server: RunningServer, tmp_path: Path
) -> None:
    with answerer(
        tmp_path / "pbx", server.pbx_port, user="5550101", tone_hz=660.0, codecs="PCMU", seconds=20
    ) as pbx:
        wait_listening(server.pbx_port)
        caller = dial(
            tmp_path / "caller",
            f"sip:95550101@127.0.0.1:{server.sip_port}",
            5,
            tone_hz=440.0,
            codecs="PCMU",
            extra_modules=("srtp.so",),
            account_params=";mediaenc=srtp-mand",
        )
    assert caller.established, caller.output[-3000:] + server.log()[-3000:]
    heard_by_caller, _ = dominant_frequency(caller.decoded())
    assert abs(heard_by_caller - 660.0) < 5.0, heard_by_caller
    heard_by_pbx, _ = dominant_frequency(pbx.decoded())
    assert abs(heard_by_pbx - 440.0) < 5.0, heard_by_pbx
    assert "caller_srtp=true callee_srtp=false" in server.log()
    calls_over(server)


def test_the_other_party_hears_music_while_the_caller_holds(
    server: RunningServer, tmp_path: Path
) -> None:
    # sipp sends no RTP at all: whatever the extension hears comes from the server.
    with answerer(
        tmp_path / "pbx", server.pbx_port, user="5550102", tone_hz=660.0, codecs="PCMU", seconds=20
    ) as pbx:
        wait_listening(server.pbx_port)
        result = run_sipp(
            [
                "-sf",
                str(SCENARIOS / "uac_hold_bridged.xml"),
                f"127.0.0.1:{server.sip_port}",
                "-s",
                "95550102",
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
    with wave.open(str(pbx.decoded()), "rb") as w:
        rate = w.getframerate()
        heard = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    # baresip records only what it receives: the music, from the hold to the resume (3 s).
    assert 2.0 <= heard.size / rate <= 4.5, heard.size / rate
    window = rate // 2
    loud = [
        float(np.sqrt(np.mean(heard[i : i + window] ** 2)))
        for i in range(0, heard.size - window + 1, window)
    ]
    assert all(rms > 300 for rms in loud), loud
    log = server.log()
    assert "hold=true" in log and "hold=false" in log
    calls_over(server)
