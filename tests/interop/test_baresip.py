"""baresip calls with real audio through a running `omlmedia serve`."""

from __future__ import annotations

from pathlib import Path

from tests.interop.baresip import dial, dominant_frequency
from tests.interop.harness import RunningServer

SHARED_SERVER = True
"""These tests share the session's server (tests/interop/conftest.py)."""


def test_tls_call_to_echo_hears_its_own_tone(server: RunningServer, tmp_path: Path) -> None:
    run = dial(
        tmp_path,
        f"sip:echo@127.0.0.1:{server.tls_port};transport=tls",
        4,
        tone_hz=440.0,
        transport="tls",
    )
    assert run.established, run.output[-3000:]
    frequency, share = dominant_frequency(run.decoded())
    assert abs(frequency - 440.0) < 5.0, (frequency, share)
    assert share > 0.5, share


def test_udp_call_to_echo_hears_its_own_tone(server: RunningServer, tmp_path: Path) -> None:
    run = dial(tmp_path, f"sip:echo@127.0.0.1:{server.sip_port}", 3, tone_hz=1000.0)
    assert run.established, run.output[-3000:]
    frequency, _ = dominant_frequency(run.decoded())
    assert abs(frequency - 1000.0) < 5.0, frequency
