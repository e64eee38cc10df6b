"""DTMF as RFC 4733 telephone-events: the payload, a receiver and a sender (sans-IO).

Theory of operation. An event is one key press. Its sender stamps every packet of the event with
the RTP timestamp of the event's start; the first packet carries the marker bit, updates follow
every packet interval with a growing duration, and the final duration is sent three times with
the E (end) bit (RFC 4733 §2.5.1). The receiver therefore keys events by timestamp:

- a packet with the current event's timestamp updates its duration; the first end packet reports
  the digit, later copies of it are ignored;
- a packet with another timestamp starts a new event, whether or not its marker arrived (a lost
  start packet); if the current event had not ended (its end packets were all lost), the new
  event ends it and it is reported with the last duration seen;
- a packet whose sequence number is not ahead of the newest one seen, and whose timestamp is not
  the current event's, is a late or duplicated packet of an earlier event: ignored;
- an event without news for `timeout` seconds ends (`handle_timer`), so a digit whose end packets
  were all lost is reported even when no other digit follows;
- an event longer than the 16-bit duration field continues in a new segment whose timestamp is
  the old one plus the old duration, without marker (RFC 4733 §2.5.1.3, §2.5.2.3): one digit.

Each digit is thus reported exactly once, with its duration. Timestamps and sequence numbers are
compared modulo 2**32 and 2**16, so wrap-around changes nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from media.rtp import sequence_delta, timestamp_delta

__all__ = [
    "DIGITS",
    "DtmfError",
    "DtmfPacket",
    "DtmfReceiver",
    "DtmfSender",
    "ReceivedDigit",
    "TelephoneEvent",
    "digit_for_event",
    "event_for_digit",
]

DIGITS = "0123456789*#ABCD"
"""The DTMF digits in RFC 4733 §3.2 event-code order: events 0-15."""

_EVENTS = {digit: event for event, digit in enumerate(DIGITS)}
_EVENTS.update({digit.lower(): event for digit, event in list(_EVENTS.items()) if digit.isalpha()})
_PAYLOAD = struct.Struct("!BBH")
_MAX_MISORDER = 100
_NOTHING: tuple[ReceivedDigit, ...] = ()


class DtmfError(ValueError):
    """A bad telephone-event payload, digit or duration."""


def event_for_digit(digit: str) -> int:
    """The RFC 4733 §3.2 event code of a digit (`0`-`9`, `*`, `#`, `A`-`D`)."""
    event = _EVENTS.get(digit)
    if event is None:
        raise DtmfError("not a DTMF digit")
    return event


def digit_for_event(event: int) -> str:
    """The digit of an RFC 4733 §3.2 event code 0-15."""
    if not 0 <= event <= 15:
        raise DtmfError("not a DTMF event")
    return DIGITS[event]


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """A telephone-event payload (RFC 4733 §2.3).

    `volume` is the power level in -dBm0 (0-63), `duration` in RTP timestamp units since the
    event's timestamp. The reserved R bit is written as zero and ignored on receipt; bytes after
    the first four (RFC 2198 redundancy is negotiated separately) are ignored.
    """

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        """Read a payload; raises `DtmfError` when it is shorter than 4 bytes."""
        if len(data) < 4:
            raise DtmfError("telephone-event payload is truncated")
        event, flags, duration = _PAYLOAD.unpack_from(data)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        if not (0 <= self.event <= 255 and 0 <= self.volume <= 63 and 0 <= self.duration <= 0xFFFF):
            raise DtmfError("telephone-event field is out of range")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True, slots=True)
class ReceivedDigit:
    """A digit reported by `DtmfReceiver` (RFC 4733 §2.5.2).

    `timestamp` is the RTP timestamp of the event's start, `duration` its length in timestamp
    units; `ended` is False when no end packet arrived (ended by a new event or the timeout).
    """

    digit: str
    timestamp: int
    duration: int
    clock_rate: int = 8000
    ended: bool = True

    @property
    def duration_ms(self) -> int:
        """The duration in milliseconds."""
        return self.duration * 1000 // self.clock_rate


class DtmfReceiver:
    """Turns received telephone-event packets into digits, each exactly once (RFC 4733 §2.5.2).

    Feed it the RTP header fields and payload of every packet of the telephone-event payload
    type (`receive`), and call `handle_timer` at `get_timer()`. Events other than the 16 DTMF
    digits (flash, tones) are ignored.
    """

    def __init__(self, clock_rate: int = 8000, timeout: float = 0.5) -> None:
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._sequence: int | None = None
        self._timestamp: int | None = None
        self._start = 0
        self._event = 0
        self._base = 0
        self._duration = 0
        self._ended = True
        self._last = 0.0

    def receive(
        self, sequence_number: int, timestamp: int, marker: bool, payload: bytes, now: float
    ) -> tuple[ReceivedDigit, ...]:
        """Process one packet; returns the digits it completes (none, one, rarely two).

        Raises `DtmfError` for a truncated payload.
        """
        event = TelephoneEvent.parse(payload)
        if event.event > 15:
            return _NOTHING
        current = self._timestamp
        if current is not None and timestamp == current:
            if self._ended or event.event != self._event:
                return _NOTHING
            self._note(sequence_number, event.duration, now)
            return self._finish(True) if event.end else _NOTHING
        if (
            self._sequence is not None
            and -_MAX_MISORDER <= sequence_delta(sequence_number, self._sequence) <= 0
        ):
            return _NOTHING
        reported = _NOTHING
        if current is not None and not self._ended:
            if (
                not marker
                and event.event == self._event
                and 0 < timestamp_delta(timestamp, current) <= self._duration
            ):
                self._base += timestamp_delta(timestamp, current)
                self._timestamp = timestamp
                self._duration = 0
                self._note(sequence_number, event.duration, now)
                return self._finish(True) if event.end else _NOTHING
            reported = self._finish(False)
        self._timestamp = self._start = timestamp
        self._sequence = sequence_number
        self._event = event.event
        self._base = 0
        self._duration = 0
        self._ended = False
        self._note(sequence_number, event.duration, now)
        if event.end:
            reported += self._finish(True)
        return reported

    def get_timer(self) -> float | None:
        """When `handle_timer` must run next, or None while no event is in progress."""
        return None if self._ended else self._last + self.timeout

    def handle_timer(self, now: float) -> tuple[ReceivedDigit, ...]:
        """End an event whose end packets never came (RFC 4733 §2.5.2.2)."""
        if self._ended or now < self._last + self.timeout:
            return _NOTHING
        return self._finish(False)

    def _note(self, sequence_number: int, duration: int, now: float) -> None:
        if self._sequence is None or sequence_delta(sequence_number, self._sequence) > 0:
            self._sequence = sequence_number
        if duration > self._duration:
            self._duration = duration
        self._last = now

    def _finish(self, ended: bool) -> tuple[ReceivedDigit, ...]:
        self._ended = True
        return (
            ReceivedDigit(
                DIGITS[self._event],
                self._start,
                self._base + self._duration,
                self.clock_rate,
                ended,
            ),
        )


class DtmfPacket(NamedTuple):
    """One packet of an outgoing event: send it `slot` packet intervals after the first, with
    the event's RTP timestamp (RFC 4733 §2.5.1)."""

    slot: int
    marker: bool
    event: TelephoneEvent

    @property
    def payload(self) -> bytes:
        """The telephone-event payload."""
        return bytes(self.event)


class DtmfSender:
    """The packets of a digit (RFC 4733 §2.5.1): a start packet with the marker bit, an update
    every `interval` seconds, the final duration three times with the end bit. All carry the
    same RTP timestamp, the event's start; the caller numbers and sends them."""

    def __init__(self, clock_rate: int = 8000, interval: float = 0.02, volume: int = 10) -> None:
        self.clock_rate = clock_rate
        self.interval = interval
        self.volume = volume
        self.step = round(clock_rate * interval)

    def packets(self, digit: str, duration: float = 0.1) -> tuple[DtmfPacket, ...]:
        """The packet sequence for `digit` lasting `duration` seconds (one interval at least)."""
        code = event_for_digit(digit)
        total = max(round(duration * self.clock_rate), self.step)
        if total > 0xFFFF:
            raise DtmfError("DTMF duration is out of range")
        updates = -(-total // self.step)
        packets = [
            DtmfPacket(
                index,
                index == 0,
                TelephoneEvent(
                    code, index == updates - 1, self.volume, min((index + 1) * self.step, total)
                ),
            )
            for index in range(updates)
        ]
        final = packets[-1].event
        packets.extend(DtmfPacket(updates + extra, False, final) for extra in range(2))
        return tuple(packets)
