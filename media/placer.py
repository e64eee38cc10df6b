"""Received RTP packets put in timeline order by timestamp, for writers that need a gap-free
sample timeline (the call recorder): reordering undone within a window, duplicates and late
packets dropped and counted, clock jumps re-anchored on the wall clock (RFC 3550 §5.1)."""

from __future__ import annotations

from typing import Generic, TypeVar

from media.rtp import timestamp_delta

__all__ = ["PacketPlacer"]

T = TypeVar("T")


class PacketPlacer(Generic[T]):
    """Puts received packets on a sample timeline by RTP timestamp (RFC 3550 §5.1).

    `push(ssrc, timestamp, item, length, now)` places one packet (`item`, usually its payload,
    `length` samples long as far as the caller can tell before decoding) and returns the
    `(position, item)` pairs that are now final, in timeline order; positions are in samples at
    `rate` (the audio rate), from 0 at the first packet, and `clock_rate` is the RTP clock
    (G.722: 8000 for 16000 Hz audio). Packets are held back `window` seconds so that reordering
    within that window is undone. Duplicates and packets older than what was released are
    dropped and counted. Timestamps are unwrapped modulo 2**32 and checked against arrival
    time: a new SSRC, or a timestamp more than `max_skew` seconds away from what the wall clock
    predicts (a peer that restarts its clock, or stops advancing it while silent), re-anchors
    the timeline on the wall clock, so a bogus jump never writes hours of silence and a pause
    is never lost. The caller fills the gaps between released packets (concealment, silence).
    """

    def __init__(
        self,
        rate: int = 8000,
        window: float = 0.1,
        max_skew: float = 1.0,
        clock_rate: int | None = None,
    ) -> None:
        self.rate = rate
        self.clock_rate = clock_rate or rate
        self.window = round(window * rate)
        self.max_skew = max_skew * rate
        self.written: int | None = None
        """Timeline position (samples) up to which packets were released."""
        self.late = 0
        self.duplicates = 0
        self.resyncs = 0
        self._ssrc: int | None = None
        self._ref_timestamp = 0
        self._ref_position = 0
        self._ref_now = 0.0
        self._end = 0
        self._pending: dict[int, tuple[T, int]] = {}

    def push(
        self, ssrc: int, timestamp: int, item: T, length: int, now: float
    ) -> list[tuple[int, T]]:
        """Place one packet; returns the packets released by it."""
        if self._ssrc is None:
            self._ssrc = ssrc
            position = 0
            self._ref_timestamp, self._ref_position, self._ref_now = timestamp, 0, now
        else:
            delta = timestamp_delta(timestamp, self._ref_timestamp)
            if self.clock_rate != self.rate:
                delta = delta * self.rate // self.clock_rate
            position = self._ref_position + delta
            expected = self._ref_position + (now - self._ref_now) * self.rate
            if ssrc != self._ssrc or abs(position - expected) > self.max_skew:
                self.resyncs += 1
                self._ssrc = ssrc
                position = max(self._end, round(expected))
                self._ref_timestamp, self._ref_position, self._ref_now = timestamp, position, now
            elif position > self._ref_position:
                self._ref_timestamp, self._ref_position, self._ref_now = timestamp, position, now
        end = position + length
        written = self.written
        if written is not None and end <= written:
            self.late += 1
            return []
        if position in self._pending:
            self.duplicates += 1
            return []
        self._pending[position] = (item, length)
        if end > self._end:
            self._end = end
        return self._release(self._end - self.window)

    def flush(self) -> list[tuple[int, T]]:
        """Release everything held back (the end of the recording)."""
        return self._release(None)

    def _release(self, limit: int | None) -> list[tuple[int, T]]:
        released: list[tuple[int, T]] = []
        pending = self._pending
        while pending:
            position = min(pending)
            if limit is not None and position >= limit:
                break
            item, length = pending.pop(position)
            released.append((position, item))
            end = position + length
            if self.written is None or end > self.written:
                self.written = end
        return released
