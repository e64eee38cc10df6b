"""Tests of media.dtmf: RFC 4733 payloads, each digit received exactly once, sending."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from media.dtmf import (
    DIGITS,
    DtmfError,
    DtmfReceiver,
    DtmfSender,
    ReceivedDigit,
    TelephoneEvent,
    digit_for_event,
    event_for_digit,
)

Packet = tuple[int, int, bool, bytes]
"""(sequence_number, timestamp, marker, payload) as the receiver takes them."""


def event_packets(
    digit: str, timestamp: int, first_sequence: int, duration: float = 0.1
) -> list[Packet]:
    """The packets a well-behaved sender sends for `digit` (one every 20 ms)."""
    return [
        (
            (first_sequence + i) & 0xFFFF,
            timestamp,
            packet.marker,
            packet.payload,
        )
        for i, packet in enumerate(DtmfSender().packets(digit, duration))
    ]


def feed(
    receiver: DtmfReceiver, packets: Iterable[Packet], start: float = 0.0
) -> list[ReceivedDigit]:
    digits: list[ReceivedDigit] = []
    for i, (sequence_number, timestamp, marker, payload) in enumerate(packets):
        digits.extend(
            receiver.receive(sequence_number, timestamp, marker, payload, start + i * 0.02)
        )
    return digits


def test_telephone_event_parses_and_round_trips() -> None:
    data = bytes([0x05, 0x8A, 0x03, 0x20])  # event 5, E=1, volume 10, duration 800
    event = TelephoneEvent.parse(data)
    assert event == TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert bytes(event) == data
    assert bytes(TelephoneEvent(11, False, 63, 0xFFFF)) == bytes([11, 0x3F, 0xFF, 0xFF])


def test_telephone_event_ignores_the_reserved_bit_and_trailing_bytes() -> None:
    assert TelephoneEvent.parse(bytes([1, 0x40 | 7, 0, 160, 9, 9])) == TelephoneEvent(
        1, False, 7, 160
    )


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x80\x00"])
def test_truncated_telephone_event_raises_a_fixed_message(data: bytes) -> None:
    with pytest.raises(DtmfError) as info:
        TelephoneEvent.parse(data)
    assert str(info.value) == "telephone-event payload is truncated"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "event",
    [
        TelephoneEvent(256),
        TelephoneEvent(1, volume=64),
        TelephoneEvent(1, duration=0x10000),
        TelephoneEvent(-1),
    ],
)
def test_telephone_event_fields_out_of_range_raise(event: TelephoneEvent) -> None:
    with pytest.raises(DtmfError) as info:
        bytes(event)
    assert str(info.value) == "telephone-event field is out of range"


def test_digits_map_to_rfc_4733_events_0_to_15() -> None:
    assert [event_for_digit(d) for d in DIGITS] == list(range(16))
    assert [digit_for_event(e) for e in range(16)] == list("0123456789*#ABCD")
    assert event_for_digit("a") == 12
    for bad in ("E", "", "11", "x"):
        with pytest.raises(DtmfError) as info:
            event_for_digit(bad)
        assert str(info.value) == "not a DTMF digit"
    with pytest.raises(DtmfError) as info2:
        digit_for_event(16)
    assert str(info2.value) == "not a DTMF event"


def test_sender_produces_marker_updates_and_three_end_packets() -> None:
    packets = DtmfSender(clock_rate=8000, interval=0.02).packets("#", 0.1)
    events = [p.event for p in packets]
    assert [p.slot for p in packets] == list(range(7))
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert [e.event for e in events] == [11] * 7
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert packets[-1].payload == bytes([11, 0x8A, 0x03, 0x20])


def test_sender_rounds_short_digits_up_to_one_interval_and_refuses_overlong_ones() -> None:
    packets = DtmfSender().packets("1", 0.005)
    assert [(p.marker, p.event.end, p.event.duration) for p in packets] == [
        (True, True, 160),
        (False, True, 160),
        (False, True, 160),
    ]
    with pytest.raises(DtmfError) as info:
        DtmfSender().packets("1", 9.0)
    assert str(info.value) == "DTMF duration is out of range"


def test_a_clean_event_is_reported_once_at_its_first_end_packet() -> None:
    receiver = DtmfReceiver()
    packets = event_packets("7", 1000, 50)
    reported = [list(receiver.receive(*p, i * 0.02)) for i, p in enumerate(packets)]
    assert [len(r) for r in reported] == [0, 0, 0, 0, 1, 0, 0]
    assert reported[4] == [ReceivedDigit("7", 1000, 800, 8000, True)]
    assert reported[4][0].duration_ms == 100
    assert receiver.get_timer() is None


def test_duplicated_and_retransmitted_packets_report_nothing_more() -> None:
    receiver = DtmfReceiver()
    packets = event_packets("5", 4242, 7)
    doubled = [p for p in packets for _ in range(2)] + packets[-3:] * 3
    assert [d.digit for d in feed(receiver, doubled)] == ["5"]


def test_lost_start_packet_still_reports_the_digit() -> None:
    receiver = DtmfReceiver()
    digits = feed(receiver, event_packets("9", 160, 10)[2:])
    assert [(d.digit, d.duration, d.ended) for d in digits] == [("9", 800, True)]


def test_only_end_packets_received_reports_once() -> None:
    receiver = DtmfReceiver()
    digits = feed(receiver, event_packets("0", 160, 10)[-2:])
    assert [(d.digit, d.duration) for d in digits] == [("0", 800)]


def test_lost_end_packets_are_ended_by_the_next_event() -> None:
    receiver = DtmfReceiver()
    first = event_packets("1", 8000, 100)[:3]  # durations 160, 320, 480; no end packet
    second = event_packets("2", 8000 + 3200, 200)
    digits = feed(receiver, first + second)
    assert [(d.digit, d.timestamp, d.duration, d.ended) for d in digits] == [
        ("1", 8000, 480, False),
        ("2", 11200, 800, True),
    ]


def test_a_new_event_whose_first_packet_is_an_end_packet_reports_both_digits() -> None:
    receiver = DtmfReceiver()
    first = event_packets("3", 0, 1)[:2]
    second = event_packets("4", 2000, 20)[-1:]
    digits = feed(receiver, first + second)
    assert [d.digit for d in digits] == ["3", "4"]


def test_lost_end_packets_without_a_next_event_end_at_the_timeout() -> None:
    receiver = DtmfReceiver(timeout=0.5)
    feed(receiver, event_packets("*", 500, 1)[:4], start=10.0)
    last = 10.0 + 3 * 0.02
    assert receiver.get_timer() == pytest.approx(last + 0.5)
    assert receiver.handle_timer(last + 0.4) == ()
    digits = receiver.handle_timer(last + 0.5)
    assert [(d.digit, d.duration, d.ended) for d in digits] == [("*", 640, False)]
    assert receiver.get_timer() is None
    assert receiver.handle_timer(last + 5) == ()
    # the end packets arriving after all changes nothing
    assert feed(receiver, event_packets("*", 500, 1)[4:], start=11.0) == []


def test_same_digit_pressed_twice_is_reported_twice() -> None:
    receiver = DtmfReceiver()
    digits = feed(receiver, event_packets("8", 0, 1) + event_packets("8", 2400, 30))
    assert [(d.digit, d.timestamp) for d in digits] == [("8", 0), ("8", 2400)]


def test_timestamp_and_sequence_wrap_around() -> None:
    receiver = DtmfReceiver()
    first = event_packets("A", 0xFFFFFF60, 0xFFFC)  # sequence numbers wrap inside the event
    second = event_packets("B", 0x00000100, 3)  # timestamp wrapped
    digits = feed(receiver, first + second)
    assert [(d.digit, d.timestamp) for d in digits] == [("A", 0xFFFFFF60), ("B", 0x100)]


def test_late_packets_of_a_previous_event_are_ignored() -> None:
    receiver = DtmfReceiver()
    first = event_packets("C", 1000, 40)
    second = event_packets("D", 5000, 60)
    late_start = first[0]
    packets = first[:5] + second[:2] + [late_start, first[5]] + second[2:]
    digits = feed(receiver, packets)
    assert [d.digit for d in digits] == ["C", "D"]


def test_reordered_end_before_update_keeps_the_longest_duration() -> None:
    receiver = DtmfReceiver()
    packets = event_packets("6", 0, 1)
    reordered = [packets[0], packets[1], packets[4], packets[2], packets[3], packets[5]]
    digits = feed(receiver, reordered)
    assert [(d.digit, d.duration) for d in digits] == [("6", 800)]


def test_long_event_in_segments_is_one_digit_with_the_total_duration() -> None:
    receiver = DtmfReceiver()
    event = 4
    segment = [
        (1, 0, True, bytes(TelephoneEvent(event, False, 10, 30000))),
        (2, 0, False, bytes(TelephoneEvent(event, False, 10, 0xFFFF))),
        (3, 0xFFFF, False, bytes(TelephoneEvent(event, False, 10, 4000))),
        (4, 0xFFFF, False, bytes(TelephoneEvent(event, True, 10, 8000))),
        (5, 0xFFFF, False, bytes(TelephoneEvent(event, True, 10, 8000))),
    ]
    digits = feed(receiver, segment)
    assert [(d.digit, d.timestamp, d.duration) for d in digits] == [("4", 0, 0xFFFF + 8000)]


def test_non_dtmf_events_are_ignored() -> None:
    receiver = DtmfReceiver()
    flash = [(1, 0, True, bytes(TelephoneEvent(16, True, 10, 800)))]
    assert feed(receiver, flash) == []
    assert receiver.get_timer() is None


def test_receiver_reports_durations_at_other_clock_rates() -> None:
    receiver = DtmfReceiver(clock_rate=48000)
    packets = [
        (s, 0, s == 1, p.payload)
        for s, p in enumerate(DtmfSender(clock_rate=48000).packets("1", 0.25), start=1)
    ]
    (digit,) = feed(receiver, packets)
    assert digit.duration == 12000
    assert digit.duration_ms == 250


def test_truncated_payload_raises_and_leaves_the_receiver_usable() -> None:
    receiver = DtmfReceiver()
    with pytest.raises(DtmfError):
        receiver.receive(1, 0, True, b"\x01", 0.0)
    assert [d.digit for d in feed(receiver, event_packets("2", 0, 2))] == ["2"]
