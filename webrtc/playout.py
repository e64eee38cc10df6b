"""Opus playout from raw RTP packets: the project's adaptive jitter buffer, libopus, PLC and FEC.

Sans-IO: `put` takes each received packet (sequence number, RTP timestamp, Opus payload,
arrival time); the owner calls `get(now)` once per 20 ms tick and gets one frame of int16
samples at `rate` (960 at 48 kHz, the default; 160 at 8 kHz, 320 at 16 kHz), and asks
`next_due(due)` when the following tick is due.

Output rate. libopus decodes any Opus stream straight to 8, 12, 16, 24 or 48 kHz (RFC 7587
§4.1: the RTP clock stays 48 kHz, 960 timestamp units per 20 ms, whatever the rate), band-
limited, PLC and FEC included (`media.codecs` `CodecSpec.at_sample_rate`). A consumer
at 8 kHz (a G.711 call) therefore needs no resampler at all, and the decode costs less (~30
against ~40 µs a frame of fullband CELT, which synthesises at 48 kHz anyway; a narrowband
SILK stream decodes to 8 kHz in ~10 µs, `media.codecs`' table). `set_rate` switches
the rate between calls (a new decoder: the first frame after the switch starts afresh).

- Buffering: `media.jitterbuffer.JitterBuffer` (adaptive target from the transit
  spread, hard cap `max_delay_ms`, 60 ms by default; a loss costs one concealed frame and never
  adds standing delay).
- Decoding: `media.codecs` Opus decoder (libopus through ctypes). A slot whose packet is
  missing is rebuilt from the in-band FEC of the next packet when that one has arrived already
  (`decode_fec`), otherwise concealed with libopus PLC (`conceal`); after 10 concealed frames in
  a row (200 ms, the far end stopped sending) the output is plain silence and libopus is not
  called. Before the first packet there is nothing to play (`get` returns None).
- Tick phase: the owner's clock need not be aligned with the sender's. After each real frame,
  the slack it had (tick time minus the earliest it could have arrived: its timestamp plus the
  minimum transit of the last 50 packets) is compared with the buffer's target plus `margin`;
  the next tick moves by the difference, at most `max_step` (2 ms) per tick. So the clock
  phase-locks onto the arrivals at the jitter buffer's target, follows clock drift smoothly
  instead of in 20 ms skips, and the delay added by waiting for the tick stays near the target
  rather than anywhere in 0-20 ms.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from media.codecs import OPUS_SAMPLE_RATES, CodecError, CodecSpec, codec_for
from media.jitterbuffer import JitterBuffer, JitterBufferStats

__all__ = ["FRAME_SAMPLES", "MAX_RELAY_GAP", "OpusPlayout", "PlayoutCounters"]

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960
"""Samples of a 20 ms frame at 48 kHz, and the RTP timestamp step of one (any output rate)."""
FRAME_SECONDS = 0.02
_MASK = 0xFFFFFFFF
_PENDING = 64
_MAX_CONCEALED = 10
_TRANSITS = 50
MAX_RELAY_GAP = 5
"""`OpusPlayout.relay` fills a gap of at most 5 lost packets (100 ms); a longer one is skipped."""

Samples = npt.NDArray[np.int16]
_OPUS: CodecSpec = codec_for("opus")


class PlayoutCounters:
    """Frames given out by `OpusPlayout.get`: `decoded` from their packet, `fec` rebuilt from
    the next packet's FEC, `concealed` by PLC, `silent` (nothing to conceal), `decode_errors`
    (corrupt payloads, concealed); `late`: packets `OpusPlayout.relay` dropped (older than the
    last one)."""

    __slots__ = ("concealed", "decode_errors", "decoded", "fec", "late", "packets", "silent")

    def __init__(self) -> None:
        self.packets = 0
        self.decoded = 0
        self.fec = 0
        self.concealed = 0
        self.silent = 0
        self.decode_errors = 0
        self.late = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class OpusPlayout:
    """One received Opus stream, played out once per 20 ms tick (see the module docstring)."""

    def __init__(
        self,
        *,
        min_delay_ms: int = 0,
        max_delay_ms: int = 60,
        margin: float = 0.004,
        max_step: float = 0.002,
        rate: int = SAMPLE_RATE,
    ) -> None:
        self.buffer = JitterBuffer(SAMPLE_RATE, 20, min_delay_ms, max_delay_ms)
        self.rate = SAMPLE_RATE
        """The output rate (Hz): `get` returns `frame_samples` samples at it."""
        self.frame_samples = FRAME_SAMPLES
        self.decoder = _OPUS.decoder()
        self._silence: Samples = np.zeros(FRAME_SAMPLES, np.int16)
        if rate != SAMPLE_RATE:
            self.set_rate(rate)
        self.counters = PlayoutCounters()
        self.margin = margin
        self.max_step = max_step
        self.last_timestamp: int | None = None
        """RTP timestamp of the packet the last `get` played (None: a concealed frame)."""
        self._pending: dict[int, bytes] = {}
        self._transits: deque[float] = deque(maxlen=_TRANSITS)
        self._high: int | None = None
        self.first_timestamp: int | None = None
        """RTP timestamp of the first packet received."""
        self._carry: Samples | None = None
        self._decoded_once = False
        self._misses = 0
        self._correction = 0.0
        self._relay_sequence: int | None = None

    def set_rate(self, rate: int) -> None:
        """Decode to `rate` Hz from now on (8000, 12000, 16000, 24000 or 48000; else
        ValueError). A new decoder when the rate changes."""
        if rate not in OPUS_SAMPLE_RATES:
            raise ValueError("Opus cannot decode to that rate")
        if rate == self.rate:
            return
        self.rate = rate
        self.frame_samples = rate // 50
        self.decoder = _OPUS.at_sample_rate(rate).decoder()
        self._silence = np.zeros(self.frame_samples, np.int16)
        self._carry = None

    @property
    def started(self) -> bool:
        """Whether a packet was received."""
        return self._high is not None

    @property
    def stats(self) -> JitterBufferStats:
        return self.buffer.stats

    def put(self, sequence_number: int, timestamp: int, payload: bytes, arrival: float) -> None:
        """One received RTP packet (never raises)."""
        self.counters.packets += 1
        self.buffer.put(sequence_number, timestamp, payload, arrival)
        pending = self._pending
        pending[timestamp] = payload
        if len(pending) > _PENDING:
            del pending[next(iter(pending))]
        self._transits.append(arrival - self._unwrap(timestamp) / SAMPLE_RATE)

    def _unwrap(self, timestamp: int) -> int:
        high = self._high
        if high is None:
            self._high = self.first_timestamp = timestamp
            return timestamp
        value = high + ((timestamp - high + 0x80000000) & _MASK) - 0x80000000
        if value > high:
            self._high = value
        return value

    def get(self, now: float) -> Samples | None:
        """The frame to play at `now`: `frame_samples` samples at `rate`, or None before the
        first packet."""
        if self._high is None:
            return None
        frame = self.buffer.get(now)
        counters = self.counters
        timestamp = frame.timestamp
        payload = frame.payload
        if payload is not None:
            self._pending.pop(timestamp, None)
            self.last_timestamp = timestamp
            self._misses = 0
            self._carry = None
            try:
                samples = self.decoder.decode(payload)
                counters.decoded += 1
                self._decoded_once = True
            except CodecError:
                counters.decode_errors += 1
                samples = self._conceal()
            self._track_phase(now, timestamp)
            return self._fit(samples)
        self.last_timestamp = None
        carry = self._carry
        if carry is not None:
            self._carry = None
            return self._fit(carry)
        if not self._decoded_once or self._misses >= _MAX_CONCEALED:
            counters.silent += 1
            return self._silence.copy()
        self._misses += 1
        pending = self._pending
        following = pending.get((timestamp + FRAME_SAMPLES) & _MASK)
        if timestamp not in pending and following is not None:
            try:
                samples = self.decoder.decode_fec(following, self.frame_samples)
                counters.fec += 1
                return samples
            except CodecError:
                counters.decode_errors += 1
        return self._conceal()

    def relay(self, sequence_number: int, timestamp: int, payload: bytes) -> list[Samples]:
        """On-arrival decoding, no buffer and no clock (the consumer is a SIP leg whose far end
        has a jitter buffer of its own): the frames this packet gives, in order. A gap in the
        sequence numbers of at most `MAX_RELAY_GAP` packets is filled first (libopus PLC, the
        last missing frame from this packet's in-band FEC), so the consumer's stream has no
        hole; a packet older than the last one is late (it was concealed already) and gives
        nothing; after a longer gap the stream simply goes on. Never raises."""
        counters = self.counters
        counters.packets += 1
        frames: list[Samples] = []
        last = self._relay_sequence
        if last is not None:
            delta = (sequence_number - last) & 0xFFFF
            if delta == 0 or delta >= 0x8000:
                counters.late += 1
                return frames
            lost = delta - 1
            if 0 < lost <= MAX_RELAY_GAP:
                for _ in range(lost - 1):
                    frames.append(self._fit(self._conceal()))
                try:
                    frames.append(self.decoder.decode_fec(payload, self.frame_samples))
                    counters.fec += 1
                except CodecError:
                    counters.decode_errors += 1
                    frames.append(self._fit(self._conceal()))
        self._relay_sequence = sequence_number
        if self.first_timestamp is None:
            self.first_timestamp = timestamp
        self.last_timestamp = timestamp
        try:
            samples = self.decoder.decode(payload)
            counters.decoded += 1
        except CodecError:
            counters.decode_errors += 1
            samples = self._conceal()
        frames.append(self._fit(samples))
        return frames

    def restart_relay(self) -> None:
        """A new call is relayed: the next packet starts the sequence again, whatever the peer
        sent between calls (a page that kept sending would otherwise have its next call's
        audio taken for late packets until its sequence numbers came round)."""
        self._relay_sequence = None

    def skip(self, now: float) -> None:
        """Advance one tick without decoding (nobody listens): keeps the buffer current."""
        if self._high is None:
            return
        frame = self.buffer.get(now)
        if frame.payload is not None:
            self._pending.pop(frame.timestamp, None)
            self._track_phase(now, frame.timestamp)
        self.last_timestamp = frame.timestamp if frame.payload is not None else None

    def _conceal(self) -> Samples:
        self.counters.concealed += 1
        try:
            return self.decoder.conceal(self.frame_samples)
        except CodecError:  # pragma: no cover - libopus conceals without input
            return self._silence.copy()

    def _fit(self, samples: Samples) -> Samples:
        size = len(samples)
        frame = self.frame_samples
        if size == frame:
            return samples
        if size > frame:
            self._carry = samples[frame:]
            return samples[:frame]
        out = self._silence.copy()
        out[:size] = samples
        return out

    def _track_phase(self, now: float, timestamp: int) -> None:
        transits = self._transits
        if len(transits) < 8:
            return
        earliest = self._unwrap(timestamp) / SAMPLE_RATE + min(transits)
        slack = now - earliest
        wanted = self.buffer.stats.target_delay_ms / 1000 + self.margin
        self._correction = wanted - slack

    def next_due(self, due: float) -> float:
        """When the tick after the one due at `due` is due: 20 ms later, moved by at most
        `max_step` towards the phase where frames wait only the buffer's target."""
        step = max(-self.max_step, min(self.max_step, self._correction))
        self._correction -= step
        return due + FRAME_SECONDS + step
