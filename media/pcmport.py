"""A call leg seen as 20 ms PCM frames both ways: what a browser channel or a mixer consumes.

Theory of operation. Packets the leg receives go into an adaptive `JitterBuffer` (hard cap on the
delay it adds, `max_delay_ms`, 60 ms by default); the consumer's own 20 ms clock pulls frames out
with `read(now)`, which decodes the frame or conceals a missing one (Opus PLC, or FEC from the next
packet when it is already buffered; pitch repetition for G.711 and G.722) and resamples it to the
consumer's rate. The consumer's clock is the playout clock: nothing else ticks. RFC 4733 events
are taken out before the buffer and reported through `on_digit`.

`write(samples)` goes the other way: the consumer's 20 ms frame is resampled to the codec's rate,
encoded and sent with the leg's own sequence numbers and timestamps (a marker on the first packet
and after a pause). `send_digit` sends an RFC 4733 event (three end packets, RFC 4733 §2.5.1.4) on
the leg when telephone-event was negotiated, the way aiortc's browser side cannot.

Rates. A consumer at the codec's own rate (`PcmPort(leg, port_rate(leg))`: 8000 for G.711,
16000 for G.722) costs no resampling at all: `Resampler` passes equal rates through untouched
(the decoder's own array, no copy, no filter). An Opus leg runs libopus at the consumer's rate
when it is one libopus takes natively (8, 12, 16, 24 or 48 kHz; `CodecSpec.at_sample_rate`): it
decodes to it and encodes from it, so that path has no resampler either.

Relay (`on_frame`). A consumer that forwards each frame to a peer with a jitter buffer of its own
(a browser's channel: WebRTC's NetEq) sets `on_frame`: each packet is then decoded the moment it
arrives and handed over in 20 ms frames whatever the leg's packet time (a gap of at most
`MAX_RELAY_GAP` packets concealed first, a late or duplicate packet dropped and counted in
`late`), with no buffer and no clock here, the way the
SIP-to-SIP bridge transcodes; `read` has nothing to give meanwhile. `on_frame = None` goes back
to the buffered way (the buffer starts afresh).

When the leg's codec is Opus and the consumer sends and receives Opus too (a browser), the port
can pass payloads through: `read_payload` returns the buffered Opus payload untouched (no decode,
no re-encode), and `write_payload` sends one.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from media.codecs import OPUS_SAMPLE_RATES, CodecError, codec_for
from media.dtmf import DtmfReceiver, DtmfSender
from media.jitterbuffer import JitterBuffer
from media.leg import RtpLeg
from media.resample import Resampler

logger = logging.getLogger(__name__)

__all__ = ["PcmPort", "port_rate"]

Samples = npt.NDArray[np.int16]

_FRAME_MS = 20
MAX_RELAY_GAP = 5
"""In relay, a gap of at most 5 packets (100 ms at 20 ms) is concealed; a longer one is not."""


class PcmPort:
    """Frames of `rate` Hz mono int16 from and to `leg`, through a capped jitter buffer."""

    def __init__(
        self,
        leg: RtpLeg,
        rate: int = 48000,
        *,
        max_delay_ms: int = 60,
        on_digit: Callable[[str, int], None] | None = None,
    ) -> None:
        fmt = leg.format
        if fmt is None:
            raise ValueError("leg has no format")
        self.leg = leg
        self.rate = rate
        self.frame_samples = rate * _FRAME_MS // 1000
        spec = codec_for(fmt.encoding_name, fmt.clock_rate, fmt.channels, fmt.fmtp)
        if spec.name == "opus" and rate in OPUS_SAMPLE_RATES:
            spec = spec.at_sample_rate(rate)
        self.spec = spec
        self.decoder = self.spec.decoder()
        self.encoder = self.spec.encoder(_FRAME_MS)
        self.step = self.spec.timestamps_for(self.encoder.frame_samples)
        self.payload_type = fmt.send_type
        self.event_type = fmt.event_send_type
        self.event_types = fmt.event_receive_types
        self.jitter = JitterBuffer(fmt.clock_rate, _FRAME_MS, max_delay_ms=max_delay_ms)
        self.inbound = Resampler(self.spec.sample_rate, rate)
        self.outbound = Resampler(rate, self.spec.sample_rate)
        self.digits = DtmfReceiver(fmt.event_clock_rate)
        self.dtmf_sender = DtmfSender(fmt.event_clock_rate)
        self.on_digit = on_digit
        self.decode_errors = 0
        self._silence: Samples = np.zeros(self.frame_samples, np.int16)
        self._talking = False
        self._events: deque[tuple[bool, bytes, int]] = deque()
        self._event_start = 0
        self.on_frame: Callable[[Samples], None] | None = None
        """Relay: called with each frame as its packet arrives (module docstring)."""
        self.late = 0
        """Packets the relay dropped: older than the last one, or a copy of it."""
        self._relay_sequence: int | None = None
        self._relay_size = self.spec.frame_samples
        self._relay_carry: Samples | None = None
        leg.sink = self._receive

    # -- from the leg -----------------------------------------------------------------------

    def _receive(self, data: bytes, second: int, seq: int, ts: int, ssrc: int, now: float) -> None:
        if second & 0x7F in self.event_types:
            try:
                digits = self.digits.receive(seq, ts, bool(second & 0x80), data[12:], now)
            except ValueError:
                return
            for digit in digits:
                if self.on_digit is not None:
                    self.on_digit(digit.digit, digit.duration_ms)
            return
        payload = data[12:] if data[0] == 0x80 else _payload(data)
        on_frame = self.on_frame
        if on_frame is not None:
            self._relay(on_frame, payload, seq, now)
            return
        self._relay_sequence = None
        self.jitter.put(seq, ts, payload, now)

    def _relay(
        self, on_frame: Callable[[Samples], None], payload: bytes, seq: int, now: float
    ) -> None:
        last = self._relay_sequence
        lost = 0
        if last is not None:
            delta = (seq - last) & 0xFFFF
            if delta == 0 or delta >= 0x8000:
                self.late += 1
                return
            lost = delta - 1 if delta - 1 <= MAX_RELAY_GAP else 0
        first = last is None
        self._relay_sequence = seq
        self._timers(now)
        frames: list[Samples] = []
        size = self._relay_size
        for _ in range(lost):
            frames.append(self.decoder.conceal(size))
        try:
            decoded = self.decoder.decode(payload)
            frames.append(decoded)
            self._relay_size = len(decoded) or size
        except CodecError:
            self.decode_errors += 1
            if first:
                return
            frames.append(self.decoder.conceal(size))
        step = self.frame_samples
        for samples in frames:
            out = self.inbound.resample(samples)
            carry = self._relay_carry
            if carry is None and len(out) == step:
                on_frame(out)  # the usual 20 ms packet: no copy
                continue
            # Other packet times (10, 30, 60 ms...): cut into 20 ms frames, the rest carried.
            if carry is not None:
                out = np.concatenate((carry, out))
            start = 0
            while len(out) - start >= step:
                on_frame(out[start : start + step])
                start += step
            self._relay_carry = out[start:] if start < len(out) else None

    def read_payload(self, now: float) -> bytes | None:
        """The next buffered payload as received (None when the slot is missing)."""
        self._timers(now)
        return self.jitter.get(now).payload

    def read(self, now: float) -> Samples:
        """The next frame at `rate`: decoded, or concealed when its packet is missing."""
        self._timers(now)
        frame = self.jitter.get(now)
        samples: Samples | None = None
        if frame.payload is not None:
            try:
                samples = self.decoder.decode(frame.payload)
            except CodecError:
                self.decode_errors += 1
        if samples is None:
            if not self.jitter.stats.received:
                return self._silence
            samples = self.decoder.conceal(self.spec.frame_samples)
        return self._fit(self.inbound.resample(samples))

    def _fit(self, out: Samples) -> Samples:
        if len(out) != self.frame_samples:
            fixed = np.zeros(self.frame_samples, np.int16)
            fixed[: min(len(out), self.frame_samples)] = out[: self.frame_samples]
            return fixed
        return out

    def _timers(self, now: float) -> None:
        timer = self.digits.get_timer()
        if timer is not None and now >= timer:
            for digit in self.digits.handle_timer(now):
                if self.on_digit is not None:
                    self.on_digit(digit.digit, digit.duration_ms)

    # -- to the leg -------------------------------------------------------------------------

    def write(self, samples: Samples | None) -> None:
        """Send one 20 ms frame at `rate`; None is a pause (nothing sent). While a digit is
        being sent its event packets take the audio's place (RFC 4733 §2.5.1)."""
        if self._events:
            self._send_event()
            return
        if samples is None:
            self._talking = False
            return
        resampled = self.outbound.resample(samples)
        frame = self.encoder.frame_samples
        if len(resampled) != frame:
            fixed = np.zeros(frame, np.int16)
            fixed[: min(len(resampled), frame)] = resampled[:frame]
            resampled = fixed
        self.write_payload(self.encoder.encode(resampled))

    def write_payload(self, payload: bytes) -> None:
        """Send one encoded 20 ms payload of the leg's codec."""
        leg = self.leg
        marker = not self._talking
        if marker and leg.last_send_time is not None:
            elapsed = leg.clock() - leg.last_send_time
            timestamp = leg.timestamp + max(round(elapsed * self.step / 0.02), self.step)
        elif leg.last_send_time is None:
            timestamp = leg.timestamp
        else:
            timestamp = leg.timestamp + self.step
        self._talking = True
        leg.send(self.payload_type, marker, timestamp & 0xFFFFFFFF, payload)

    def send_digit(self, digit: str, duration: float = 0.1) -> bool:
        """Queue an RFC 4733 event for the next `write`s (one packet per 20 ms frame);
        False when telephone-event was not negotiated. Raises ValueError for a bad digit."""
        if self.event_type is None:
            return False
        packets = self.dtmf_sender.packets(digit, duration)
        total = packets[-1].event.duration
        self._events.extend((p.marker, p.payload, total) for p in packets)
        return True

    def _send_event(self) -> None:
        assert self.event_type is not None
        marker, payload, total = self._events.popleft()
        leg = self.leg
        if marker:
            self._event_start = (leg.timestamp + self.step) & 0xFFFFFFFF
        leg.send(self.event_type, marker, self._event_start, payload)
        if not self._events or self._events[0][0]:
            # The event covered its duration: what follows starts after it (with a marker).
            leg.timestamp = (self._event_start + total) & 0xFFFFFFFF
            self._talking = False

    def close(self) -> None:
        """Stop taking the leg's packets."""
        if self.leg.sink == self._receive:
            self.leg.sink = None


def port_rate(leg: RtpLeg) -> int:
    """The audio rate of `leg`'s codec (8000 for G.711, 16000 for G.722, 48000 for Opus): the
    rate at which a `PcmPort` on it resamples nothing. ValueError when the leg has no format."""
    fmt = leg.format
    if fmt is None:
        raise ValueError("leg has no format")
    return codec_for(fmt.encoding_name, fmt.clock_rate, fmt.channels, fmt.fmtp).sample_rate


def _payload(data: bytes) -> bytes:
    from media.rtp import RtpPacket

    return RtpPacket.parse(data).payload
