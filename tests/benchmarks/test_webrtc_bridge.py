"""benchmarks/webrtc_bridge.py and webrtc_load.py: the statistics and detection helpers."""

from __future__ import annotations

import math

import pytest

from benchmarks.webrtc_load import (
    PERIOD_FRAMES,
    OnsetDetector,
    StreamCounter,
    _parse_sdp_address,
    agent_pattern,
    caller_pattern,
    linear_to_ulaw,
    match_onsets,
    pcm_loud_at,
    percentile,
    summary,
    ulaw_loud_at,
    ulaw_to_linear,
)


def test_percentile_interpolates_and_handles_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 99) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert summary([3.0, 1.0, 2.0]) == {"count": 3, "p50": 2.0, "p99": pytest.approx(2.98),
                                        "max": 3.0}  # fmt: skip


def test_ulaw_round_trip_and_loudness() -> None:
    for sample in (0, 100, -100, 2500, -2500, 8000, -8000, 32000):
        decoded = ulaw_to_linear(linear_to_ulaw(sample))
        assert abs(decoded - sample) <= max(8, abs(sample) // 16)
    assert ulaw_loud_at(bytes([0xFF]) * 160) == -1
    payload = bytes([0xFF]) * 10 + bytes([linear_to_ulaw(5000)]) + bytes([0xFF]) * 149
    assert ulaw_loud_at(payload) == 10
    pattern = caller_pattern()
    assert len(pattern) == PERIOD_FRAMES
    assert ulaw_loud_at(pattern[0]) == 0
    assert all(ulaw_loud_at(frame) == -1 for frame in pattern[1:])


def test_pcm_loud_at() -> None:
    import numpy as np

    pcm = np.zeros(960, np.int16)
    assert pcm_loud_at(pcm.tobytes()) == -1
    pcm[123] = -3000
    assert pcm_loud_at(pcm.tobytes()) == 123


def test_onset_detector_needs_quiet_frames_between_onsets() -> None:
    detector = OnsetDetector(quiet=3)
    frames = [5, 0, -1, -1, 2, -1, -1, -1, 40, -1]
    assert [detector.feed(f) for f in frames] == [
        True, False, False, False, False, False, False, False, True, False
    ]  # fmt: skip


def test_agent_pattern_has_one_onset_per_period() -> None:
    packets, index, offset = agent_pattern()
    assert len(packets) == PERIOD_FRAMES
    assert 0 <= index < PERIOD_FRAMES and 0 <= offset < 960


def test_match_onsets_takes_the_latest_burst_and_counts_misses() -> None:
    sent = [0.0, 0.3, 0.6, 0.9, 1.2]
    onsets = [0.02, 0.33, 0.95, 0.96, 1.25]  # 0.6 missed; 0.96 is a second onset for 0.9
    latencies, in_window, missed = match_onsets(sent, onsets, (0.25, 1.0), 0.3)
    assert latencies == pytest.approx([0.03, 0.05])
    assert (in_window, missed) == (3, 1)


def test_stream_counter_counts_gaps_skips_and_wraps() -> None:
    counter = StreamCounter(960)
    base = 0xFFFFFFFF - 960 * 2 + 1  # wraps after two packets
    stamps = [(base + 960 * k) & 0xFFFFFFFF for k in range(10) if k not in (4, 7)]
    counter.add(stamps[0], counted=False)  # before the window
    for ts in stamps[1:]:
        counter.add(ts)
    counter.add(stamps[3])  # a duplicate
    assert counter.received == 7 and counter.duplicates == 1
    assert counter.expected == 9 and counter.lost == 2


def test_parse_sdp_address() -> None:
    text = "v=0\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n"
    assert _parse_sdp_address(text) == ("192.0.2.7", 40002)
    with pytest.raises(ValueError):
        _parse_sdp_address("v=0\r\n")
