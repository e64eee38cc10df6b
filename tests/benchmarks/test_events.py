"""benchmarks/events.py: the percentile, the fixed-rate publisher's arithmetic and the cheap SSE
reading its clients do."""

from __future__ import annotations

import math

from benchmarks.events import dechunk, due, percentile, sse_times


def test_percentile_is_nearest_rank() -> None:
    assert math.isnan(percentile([], 0.5))
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 1.0) == 3.0


def test_the_publisher_owes_what_the_rate_says_and_never_less_than_nothing() -> None:
    assert due(2000, 0.005, 0) == 10
    assert due(2000, 0.0101, 10) == 10
    assert due(2000, 1.0, 2500) == 0


def test_sse_times_reads_complete_messages_and_keeps_the_rest() -> None:
    buffer = bytearray(
        b": keepalive\n\n"
        b'id: 7\nevent: queue.entered\ndata: {"id":7,"time":1700000000.25,"type":"x"}\n\n'
        b'id: 8\nevent: queue.entered\ndata: {"id":8,"time":1700000000.5,'
    )
    assert sse_times(buffer) == [(7, 1700000000.25)]
    assert buffer.startswith(b"id: 8")
    buffer += b'"type":"x"}\n\n'
    assert sse_times(buffer) == [(8, 1700000000.5)]
    assert buffer == bytearray()


def test_dechunk_takes_whole_chunks_and_sees_the_last() -> None:
    raw = bytearray(b"5\r\nhello\r\n6\r\n world\r\n3\r\nab")
    assert dechunk(raw) == (b"hello world", False)
    raw += b"c\r\n0\r\n\r\n"
    assert dechunk(raw) == (b"abc", True)
