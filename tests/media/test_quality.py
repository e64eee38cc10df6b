"""Tests of media.quality: RFC 3550 A.1/A.3/A.8 statistics, RTT, report timing, MOS."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.quality import (
    QualityError,
    ReceptionStats,
    RtcpScheduler,
    SenderStats,
    estimate_mos,
    mos_from_r,
    r_factor,
    round_trip_time,
)
from media.rtcp import (
    ReportBlock,
    SenderReport,
    ntp_middle,
    ntp_short,
    ntp_timestamp,
    parse_compound,
)

START = 1_700_000_000.0


def feed(stats: ReceptionStats, sequences: list[int], offsets: list[float] | None = None) -> None:
    """Packets of 20 ms of PCMU: timestamp 160 per sequence step, arriving on time + offset."""
    for index, seq in enumerate(sequences):
        offset = offsets[index] if offsets else 0.0
        stats.receive(seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, START + seq * 0.02 + offset)


def test_constant_transit_gives_zero_jitter() -> None:
    stats = ReceptionStats(1, 8000)
    feed(stats, list(range(100)), [0.050] * 100)
    assert stats.jitter == pytest.approx(0.0, abs=1e-3)
    assert stats.report_block(START + 3).jitter == 0


def test_alternating_20ms_transit_gives_the_a8_jitter() -> None:
    stats = ReceptionStats(1, 8000)
    count = 50
    feed(stats, list(range(count)), [0.020 if i % 2 else -0.020 for i in range(count)])
    # The first packet is on probation and the second starts the source: count - 2 differences
    # of 40 ms = 320 units, each folded in with gain 1/16.
    expected = 320 * (1 - (15 / 16) ** (count - 2))
    assert stats.jitter == pytest.approx(expected, abs=0.01)
    assert stats.jitter_seconds == pytest.approx(expected / 8000, abs=1e-6)
    assert stats.report_block(START + 2).jitter == int(expected)


def test_known_loss_pattern_gives_exact_fraction_and_cumulative_counts() -> None:
    stats = ReceptionStats(7, 8000)
    feed(stats, [s for s in range(100) if s not in (10, 11, 50)])
    # Packet 0 is on probation; the source starts at 1: expected 99, received 96.
    assert (stats.expected, stats.received, stats.lost) == (99, 96, 3)
    block = stats.report_block(START + 2)
    assert block == ReportBlock(7, (3 << 8) // 99, 3, 99, 0, 0, 0)
    feed(stats, [s for s in range(100, 200) if not 120 <= s < 125])
    block = stats.report_block(START + 4)
    assert (block.fraction_lost, block.packets_lost, block.highest_sequence) == (12, 8, 199)
    assert stats.loss_fraction == pytest.approx(8 / 199)
    assert stats.report_block(START + 5).fraction_lost == 0


def test_sequence_wrap_is_counted_in_the_extended_highest_sequence() -> None:
    stats = ReceptionStats(1, 8000)
    feed(stats, list(range(65530, 65550)))
    assert stats.cycles == 65536
    assert stats.extended_max == 65536 + 13
    assert (stats.expected, stats.lost) == (19, 0)
    assert stats.report_block(START + 1).highest_sequence == 0x1000D


def test_duplicates_make_the_cumulative_loss_negative() -> None:
    stats = ReceptionStats(1, 8000)
    feed(stats, [0, 1, 2, 3, 3, 4])
    block = stats.report_block(START + 1)
    assert (block.packets_lost, block.fraction_lost) == (-1, 0)


def test_late_packet_is_counted_without_moving_the_highest_sequence() -> None:
    stats = ReceptionStats(1, 8000)
    feed(stats, [0, 1, 2, 4, 5, 3])
    assert stats.max_seq == 5
    assert stats.lost == 0


def test_large_jump_resynchronises_after_two_sequential_packets() -> None:
    stats = ReceptionStats(1, 8000)
    feed(stats, list(range(10)))
    assert stats.receive(20000, 0, START + 1) is False
    assert stats.received == 9
    assert stats.receive(20001, 160, START + 1.02) is True
    assert (stats.base_seq, stats.received, stats.expected) == (20001, 1, 1)


def test_source_on_probation_counts_nothing() -> None:
    stats = ReceptionStats(1, 8000)
    assert [stats.receive(seq, 0, START) for seq in (5, 900, 40000, 7)] == [False] * 4
    assert stats.received == 0
    assert stats.report_block(START) == ReportBlock(1)


def test_report_block_carries_lsr_and_dlsr_of_the_last_sender_report() -> None:
    stats = ReceptionStats(1, 8000)
    report = SenderReport(1, ntp_timestamp(START))
    stats.receive_sender_report(report, START + 0.1)
    block = stats.report_block(START + 1.6)
    assert block.lsr == ntp_middle(ntp_timestamp(START))
    assert block.dlsr == 0x18000


def test_round_trip_time_from_a_report_block() -> None:
    sent_at = START
    block = ReportBlock(1, lsr=ntp_middle(ntp_timestamp(sent_at)), dlsr=ntp_short(0.25))
    rtt = round_trip_time(block, sent_at + 0.35)
    assert rtt is not None
    assert rtt == pytest.approx(0.1, abs=2 / 65536)
    assert round_trip_time(ReportBlock(1), sent_at + 1) is None
    assert round_trip_time(block, sent_at + 0.1) is None


def test_round_trip_time_end_to_end_through_the_wire_format() -> None:
    ours = SenderStats(0xA)
    for _ in range(50):
        ours.sent(160)
    sr = ours.sender_report(START, 8000)
    assert (sr.packet_count, sr.octet_count) == (50, 8000)
    [received_sr] = parse_compound(bytes(sr))
    assert isinstance(received_sr, SenderReport)
    theirs = ReceptionStats(0xA, 8000)
    theirs.receive_sender_report(received_sr, 500.04)
    block = theirs.report_block(500.54)
    rtt = round_trip_time(block, START + 0.58)
    assert rtt == pytest.approx(0.08, abs=2 / 65536)


def test_scheduler_first_report_within_half_minimum_then_randomised_minimum() -> None:
    scheduler = RtcpScheduler(100.0, rng=random.Random(1))
    first = scheduler.get_timer()
    assert 100 + 1.25 <= first <= 100 + 3.75
    assert scheduler.handle_timer(first - 0.001) is False
    now = first
    for _ in range(200):
        assert scheduler.handle_timer(now) is True
        interval = scheduler.get_timer() - now
        assert 2.5 <= interval <= 7.5
        now += interval


def test_scheduler_uses_five_percent_of_a_small_session_bandwidth() -> None:
    scheduler = RtcpScheduler(0.0, rng=random.Random(2), session_bandwidth=2000)
    # 5% of 2000 bit/s is 12.5 bytes/s; two parties of 128-byte reports need 20.48 s.
    assert scheduler.deterministic_interval() == pytest.approx(20.48)
    scheduler.packet_size(128 + 16 * 16)
    assert scheduler.average_size == pytest.approx(128 + 16)


def test_g711_without_impairment_is_about_4_4() -> None:
    assert r_factor("PCMU", 0, 0, 0) == pytest.approx(93.2)
    assert estimate_mos("PCMU", 0, 0.0, 0) == pytest.approx(4.41, abs=0.01)
    assert estimate_mos("pcma", 20, 0.0, 0) == pytest.approx(4.4, abs=0.02)


def test_g711_loss_is_worse_without_concealment() -> None:
    assert estimate_mos("PCMU", 40, 0.02, 5, plc=False) < estimate_mos("PCMU", 40, 0.02, 5)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722", "opus"])
def test_mos_is_monotonic_in_loss_delay_and_jitter_and_bounded(codec: str) -> None:
    for plc in (False, True):
        by_loss = [estimate_mos(codec, 50, loss / 100, 5, plc=plc) for loss in range(101)]
        by_delay = [estimate_mos(codec, delay, 0.01, 5, plc=plc) for delay in range(0, 2000, 10)]
        by_jitter = [estimate_mos(codec, 50, 0.01, jitter, plc=plc) for jitter in range(0, 500, 5)]
        for series in (by_loss, by_delay, by_jitter):
            assert all(a >= b for a, b in itertools.pairwise(series))
            assert all(1.0 <= mos <= 4.5 for mos in series)
        assert by_loss[0] > by_loss[5] > by_loss[30]
        assert by_delay[0] > by_delay[30] > by_delay[100]
    assert estimate_mos(codec, 5000, 1.0, 1000) == 1.0


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.floats(-50, 150))
def test_mos_from_r_is_monotonic_and_bounded(r: float) -> None:
    assert 1.0 <= mos_from_r(r) <= 4.5
    assert mos_from_r(r) <= mos_from_r(r + 0.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("G729", 0, 0.0, 0), "unknown codec"),
        (("PCMU", 0, 1.5, 0), "loss fraction is out of range"),
        (("PCMU", 0, math.nan, 0), "loss fraction is out of range"),
        (("PCMU", -1, 0.0, 0), "delay is out of range"),
        (("PCMU", 0, 0.0, math.nan), "delay is out of range"),
        (("PCMU", math.inf, 0.0, 0), "delay is out of range"),
    ],
)
def test_bad_mos_inputs_raise_fixed_errors(
    args: tuple[str, float, float, float], message: str
) -> None:
    with pytest.raises(QualityError, match=f"^{message}$"):
        estimate_mos(*args)
