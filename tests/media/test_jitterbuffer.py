"""Tests of media.jitterbuffer: latency cap, order, adaptation and stream edge cases."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.jitterbuffer import Frame, JitterBuffer, JitterBufferError

PTIME = 0.02
SPF = 160
RATE = 8000


@dataclass
class Sent:
    """One packet on the wire: frame index `k`, its fields and its arrival time."""

    k: int
    sequence_number: int
    timestamp: int
    arrival: float


@dataclass
class Played:
    """One frame `get` returned, with the time it was asked for."""

    now: float
    frame: Frame


def stream(
    count: int, seq0: int = 0, ts0: int = 0, base: float = 0.05, start: int = 0
) -> list[Sent]:
    """A clean stream of `count` 20 ms packets sent from frame `start` on."""
    return [
        Sent(
            k,
            (seq0 + k) & 0xFFFF,
            (ts0 + k * SPF) & 0xFFFFFFFF,
            k * PTIME + base,
        )
        for k in range(start, start + count)
    ]


def payload(k: int) -> bytes:
    return k.to_bytes(4, "big")


def run(
    buffer: JitterBuffer, packets: list[Sent], until: float, phase: float = 0.0013
) -> list[Played]:
    """Feed `packets` in arrival order and call `get` every 20 ms until `until`."""
    pending = sorted(packets, key=lambda sent: sent.arrival)
    played = []
    index = 0
    tick = 0
    now = phase
    while now < until:
        while index < len(pending) and pending[index].arrival <= now:
            sent = pending[index]
            buffer.put(sent.sequence_number, sent.timestamp, payload(sent.k), sent.arrival)
            index += 1
        played.append(Played(now, buffer.get(now)))
        tick += 1
        now = phase + tick * PTIME
    return played


def indexes(played: list[Played]) -> list[int]:
    return [int.from_bytes(p.frame.payload, "big") for p in played if p.frame.payload is not None]


# -- property tests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """The parameters of a random trace: drawn by hypothesis, so a failure prints small."""

    seed: int
    count: int
    base: float
    jitter: float
    loss: float
    duplicate: float
    burst: float
    wrap: bool

    def trace(self) -> tuple[list[Sent], int, int]:
        """The packets, the first frame of the clean tail and the frame count."""
        rng = random.Random(self.seed)
        seq0 = 65500 if self.wrap else rng.randrange(65536)
        ts0 = 2**32 - 20 * SPF if self.wrap else rng.randrange(2**32)
        packets: list[Sent] = []
        stall_until = 0.0
        for sent in stream(self.count, seq0, ts0, self.base):
            if rng.random() < self.loss:
                continue
            if rng.random() < self.burst:
                stall_until = sent.arrival + rng.random() * 0.3
            sent.arrival = max(sent.arrival + rng.random() * self.jitter, stall_until)
            packets.append(sent)
            if rng.random() < self.duplicate:
                copy = Sent(sent.k, sent.sequence_number, sent.timestamp, sent.arrival + 0.01)
                packets.append(copy)
        clean = 300
        packets += stream(clean, seq0, ts0, self.base, start=self.count)
        return packets, self.count, self.count + clean


networks = st.builds(
    Network,
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(50, 400),
    base=st.floats(0.0, 0.3),
    jitter=st.floats(0.0, 0.2),
    loss=st.floats(0.0, 0.3),
    duplicate=st.floats(0.0, 0.1),
    burst=st.floats(0.0, 0.05),
    wrap=st.booleans(),
)


def check_played(played: list[Played], packets: list[Sent], max_delay: float) -> None:
    first_arrival: dict[int, float] = {}
    for sent in packets:
        first_arrival[sent.k] = min(sent.arrival, first_arrival.get(sent.k, sent.arrival))
    played_ks = []
    for entry in played:
        if entry.frame.payload is None:
            continue
        k = int.from_bytes(entry.frame.payload, "big")
        assert entry.now - first_arrival[k] <= max_delay + 1e-9
        assert entry.now >= first_arrival[k]
        played_ks.append(k)
    assert len(set(played_ks)) == len(played_ks)
    assert played_ks == sorted(played_ks)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(networks, st.sampled_from([0, 20, 40]), st.sampled_from([60, 100, 200]))
def test_latency_cap_order_and_convergence_hold_under_random_delay_loss_and_reordering(
    network: Network, min_delay_ms: int, max_delay_ms: int
) -> None:
    packets, clean_start, end = network.trace()
    buffer = JitterBuffer(RATE, 20, min_delay_ms, max_delay_ms)
    played = run(buffer, packets, until=end * PTIME + 1.0)
    check_played(played, packets, max_delay_ms / 1000)
    stats = buffer.stats
    assert stats.target_delay_ms == pytest.approx(min_delay_ms, abs=0.01)
    assert stats.current_delay_ms <= stats.target_delay_ms + 20.5 + 1e-6
    arrivals = {sent.k: sent.arrival for sent in packets if sent.k >= clean_start}
    tail = [p for p in played if p.frame.payload is not None][-50:]
    for entry in tail:
        k = int.from_bytes(entry.frame.payload or b"", "big")
        assert k >= clean_start
        assert entry.now - arrivals[k] <= (min_delay_ms + 20.5) / 1000 + 1e-9
    played_ks = indexes(played)
    assert played_ks[-1] == end - 1
    assert set(range(end - 100, end)) <= set(played_ks)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    st.integers(30, 200),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 0.2),
    st.floats(0.0005, 0.0195),
)
def test_single_lost_packet_costs_one_concealed_frame_and_no_lasting_delay(
    lost: int, seq0: int, ts0: int, base: float, phase: float
) -> None:
    """The playout clock ticks `phase` after each arrival: never a tie, where a packet arriving a
    rounding error after its playout instant would be rightly late."""
    packets = [sent for sent in stream(300, seq0, ts0, base) if sent.k != lost]
    buffer = JitterBuffer(RATE)
    played = run(buffer, packets, until=300 * PTIME + base + 0.2, phase=base + phase)
    check_played(played, packets, 0.06)
    ks = indexes(played)
    assert ks == [k for k in range(300) if k != lost]
    started = next(i for i, p in enumerate(played) if p.frame.payload is not None)
    last = max(i for i, p in enumerate(played) if p.frame.payload is not None)
    missing = [p for p in played[started : last + 1] if p.frame.missing]
    assert len(missing) == 1
    assert missing[0].frame.timestamp == (ts0 + lost * SPF) & 0xFFFFFFFF
    delays = [
        p.now - (base + k * PTIME)
        for p, k in zip([p for p in played if p.frame.payload is not None], ks, strict=True)
    ]
    assert max(delays[-100:]) <= PTIME + 1e-9
    assert buffer.stats.lost == 1


# -- unit tests ------------------------------------------------------------------------------------


def test_clean_stream_plays_every_frame_in_order_with_less_than_one_frame_of_delay() -> None:
    buffer = JitterBuffer(RATE)
    packets = stream(200)
    played = run(buffer, packets, until=200 * PTIME + 0.2)
    assert indexes(played) == list(range(200))
    stats = buffer.stats
    assert (stats.received, stats.lost, stats.late, stats.discarded) == (200, 0, 0, 0)
    assert stats.current_delay_ms < 20
    assert stats.target_delay_ms == pytest.approx(0, abs=0.01)


def test_sequence_and_timestamp_wrap_around_keep_order() -> None:
    buffer = JitterBuffer(RATE, min_delay_ms=40)
    packets = stream(100, seq0=65500, ts0=2**32 - 30 * SPF)
    packets[40].arrival = packets[41].arrival + 0.001
    played = run(buffer, packets, until=100 * PTIME + 0.3)
    assert indexes(played) == list(range(100))
    frames = [p.frame for p in played if p.frame.payload is not None]
    assert frames[29].timestamp == 2**32 - SPF and frames[30].timestamp == 0
    assert frames[35].sequence_number == 65535 and frames[36].sequence_number == 0


def test_timestamps_not_arrival_order_decide_playout_order() -> None:
    buffer = JitterBuffer(RATE, min_delay_ms=40, max_delay_ms=200)
    for k in (2, 0, 1, 3):
        buffer.put(k, k * SPF, payload(k), 0.001 * k)
    frames = [buffer.get(0.04 + i * PTIME) for i in range(4)]
    assert [f.sequence_number for f in frames] == [0, 1, 2, 3]


def test_duplicates_are_counted_and_played_once() -> None:
    buffer = JitterBuffer(RATE)
    buffer.put(1, 160, b"a", 0.0)
    buffer.put(1, 160, b"a", 0.001)
    buffer.put(2, 160, b"b", 0.002)
    frame = buffer.get(0.05)
    buffer.put(1, 160, b"a", 0.06)
    assert frame == Frame(160, 1, b"a")
    assert buffer.stats.duplicates == 3
    assert buffer.stats.received == 1


def test_late_packet_after_its_slot_is_dropped_and_counted() -> None:
    buffer = JitterBuffer(RATE)
    buffer.put(0, 0, b"0", 0.0)
    assert buffer.get(0.04).payload == b"0"
    buffer.put(2, 2 * SPF, b"2", 0.05)
    assert buffer.get(0.06).missing
    buffer.put(1, SPF, b"1", 0.07)
    assert buffer.get(0.08).payload == b"2"
    stats = buffer.stats
    assert (stats.late, stats.lost, stats.concealed) == (1, 1, 1)


def test_underrun_waits_for_a_late_packet_then_skips_the_slot_if_it_was_lost() -> None:
    buffer = JitterBuffer(RATE)
    buffer.put(0, 0, b"0", 0.0)
    assert buffer.get(0.0).payload == b"0"
    assert buffer.get(0.02) == Frame(SPF, None, None)
    buffer.put(1, SPF, b"1", 0.03)
    assert buffer.get(0.04).payload == b"1"
    assert buffer.get(0.06) == Frame(2 * SPF, None, None)
    buffer.put(3, 3 * SPF, b"3", 0.07)
    assert buffer.get(0.08).payload == b"3"
    stats = buffer.stats
    assert (stats.late, stats.lost, stats.concealed) == (0, 1, 2)


def test_waits_for_initial_target_before_starting() -> None:
    buffer = JitterBuffer(RATE, min_delay_ms=40)
    assert buffer.get(0.0) == Frame(0, None, None)
    buffer.put(7, 1000, b"x", 0.0)
    assert buffer.get(0.02).missing
    assert buffer.get(0.04) == Frame(1000, 7, b"x")
    assert buffer.stats.concealed == 0


def test_burst_after_outage_is_cut_to_the_cap() -> None:
    buffer = JitterBuffer(RATE)
    packets = stream(200)
    for sent in packets[50:70]:
        sent.arrival = packets[70].arrival
    played = run(buffer, packets, until=200 * PTIME + 0.2)
    check_played(played, packets, 0.06)
    assert indexes(played)[-1] == 199
    assert buffer.stats.current_delay_ms < 20


def test_jitter_raises_the_target_and_clean_traffic_brings_it_back_down() -> None:
    rng = random.Random(1)
    buffer = JitterBuffer(RATE, max_delay_ms=100)
    packets = stream(300)
    for sent in packets:
        sent.arrival += rng.random() * 0.05
    run(buffer, packets, until=300 * PTIME)
    assert 30 <= buffer.stats.target_delay_ms <= 50
    assert buffer.stats.current_delay_ms >= 30
    clean = stream(300, start=300, base=0.1)
    run(buffer, clean, until=600 * PTIME + 0.2, phase=300 * PTIME + 0.0013)
    assert buffer.stats.target_delay_ms == pytest.approx(0, abs=0.01)
    assert buffer.stats.current_delay_ms < 20


def test_ssrc_restart_resyncs_on_the_new_stream() -> None:
    buffer = JitterBuffer(RATE)
    old = stream(50, seq0=100, ts0=5000)
    new = stream(50, seq0=40000, ts0=7, start=50)
    played = run(buffer, old + new, until=100 * PTIME + 0.2)
    ks = indexes(played)
    assert ks[:50] == list(range(50))
    assert ks[-40:] == list(range(60, 100))
    assert buffer.stats.resyncs == 1


def test_timestamp_jumping_back_resyncs() -> None:
    buffer = JitterBuffer(RATE)
    packets = stream(50, ts0=10 * RATE) + stream(150, ts0=10 * RATE - 60 * SPF, start=50)
    played = run(buffer, packets, until=200 * PTIME + 0.2)
    assert indexes(played)[-80:] == list(range(120, 200))
    assert buffer.stats.resyncs == 1


def test_stray_packet_far_away_does_not_resync() -> None:
    buffer = JitterBuffer(RATE)
    packets = stream(100)
    packets.append(Sent(999, 30000, 123456789, 1.0))
    played = run(buffer, packets, until=100 * PTIME + 0.2)
    assert indexes(played) == list(range(100))
    assert buffer.stats.resyncs == 0
    assert buffer.stats.invalid == 1


@pytest.mark.parametrize("pause", [1.0, 5.0])
def test_timestamp_jump_forward_is_skipped_not_buffered(pause: float) -> None:
    buffer = JitterBuffer(RATE)
    packets = stream(50) + [
        Sent(k, k, k * SPF + 5 * RATE, k * PTIME + 0.05 + pause) for k in range(50, 100)
    ]
    played = run(buffer, packets, until=2.5 + pause)
    assert indexes(played) == list(range(100))
    assert buffer.stats.current_delay_ms < 20


@pytest.mark.parametrize(
    "args",
    [
        (8000, 20, 0, 60, "x"),
        (-1, 0, b"x", 0.0),
        (70000, 0, b"x", 0.0),
        (0, 2**32, b"x", 0.0),
        (0, 0, "x", 0.0),
        (0, 0, b"x", float("nan")),
        (0, 0, b"x", None),
    ],
)
def test_invalid_packets_are_counted_and_never_raise(args: tuple[object, ...]) -> None:
    buffer = JitterBuffer(RATE)
    buffer.put(*args[:4])  # type: ignore[arg-type]
    assert buffer.stats.invalid == 1
    assert buffer.get(1.0).missing


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clock_rate": 0}, "jitter buffer clock rate is out of range"),
        ({"clock_rate": 8000, "ptime_ms": 0}, "jitter buffer packet time is out of range"),
        (
            {"clock_rate": 44100, "ptime_ms": 3},
            "jitter buffer packet time is not a whole number of samples",
        ),
        ({"clock_rate": 8000, "min_delay_ms": 80}, "jitter buffer delays are out of range"),
        ({"clock_rate": 8000, "window": 2}, "jitter buffer window is out of range"),
        ({"clock_rate": 8000, "adapt_interval": 0}, "jitter buffer adapt interval is out of range"),
    ],
)
def test_bad_settings_raise_jitter_buffer_error(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(JitterBufferError, match=f"^{message}$"):
        JitterBuffer(**kwargs)
