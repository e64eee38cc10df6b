"""Two call legs joined: passthrough when they share a codec, transcoding when they do not.

Theory of operation. A `MediaBridge` owns two `RtpLeg`s (A and B) and one `_Forward` per
direction; a forward is the sink of its source leg and sends through its target leg.

**Passthrough** (both legs settled on the same codec, clock rate and channels): each packet is
relayed with its header rewritten and its payload untouched. The target leg's SSRC replaces the
source's, the payload type becomes the one negotiated on the target leg (the PBX may call PCMU 0
and the carrier may not, and telephone-event types differ from leg to leg), and the sequence
number and timestamp are shifted by offsets. The offsets are computed when a source starts (the
first packet, a new SSRC after a transfer or re-INVITE, or a sequence jump beyond RFC 3550's
MAX_DROPOUT) so that the target's stream goes on where it stopped: the next sequence number, and a
timestamp advanced by the time that passed. The first packet after such a switch carries the
marker bit. So the far end sees one continuous stream for the whole call, whoever talks behind it
(RFC 3550 §8.2 leaves it free to drop packets of a new SSRC it did not expect; many phones do).
Loss and reordering go through untouched: the far end's jitter buffer sees them as they were.

**Transcoding** (the codecs differ): each audio payload is decoded, resampled and encoded by a
transcoder (`media.transcode`) the moment it arrives, and sent with the target leg's own
sequence numbers. A gap in the source's sequence numbers (lost packets) is concealed first: with
Opus from the in-band FEC of the packet that arrived, otherwise by the decoder's loss concealment,
so the target's stream has no hole. A packet older than the last one is late and dropped (it was
concealed already). Output timestamps advance by one output frame per frame sent; a gap in the
source's timestamps that loss does not explain (discontinuous transmission, hold) is carried over,
scaled to the target's clock. Transcoding on arrival adds no buffering delay: the jitter the source
had is the jitter the target sees, as with passthrough, and the far end's buffer absorbs it.

**DTMF** (RFC 4733 telephone-event) is relayed in both modes with the target leg's event payload
type; when clock rates differ (G.711 on one leg, Opus on the other) the timestamp and the event
duration are scaled. A leg without telephone-event gets no events (counted).

**Transparent** passthrough (`start(transparent=True)`, for a call the kernel may relay:
the same payload-type numbers on both legs, no SRTP): each packet leaves exactly as it came, and
the target leg takes the source's SSRC as its own (its RTCP then reports on the stream the far
end sees). `on_latched` is called for each packet so relayed once the target leg has an address
(latched, or its SDP's), so the owner can install kernel rules (`media.kernelpath`) that move the
same bytes without Python, or replace them when the packet shows a far end sending from elsewhere
than the rules expect (the owner does nothing when the addresses did not change); whether the
kernel or the relay moves a packet, the far end sees one stream. When the rules go
(`kernel_removed`, with how many packets they moved each way) the target's next sequence number
accounts for them. When the kernel relays a call from its first packet, the target learns the
source's SSRC from the source's RTCP sender reports instead (RTCP stays in userspace), so its
reports and the far end's reports about the stream still meet. A new SSRC from a source (a
transfer) ends transparency for good: from then on the relay rewrites as above, continuing the
stream the far end saw.

Everything per packet is caught and counted: a bad packet never ends the call or the bridge.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from media.leg import LegFormat, RtpLeg
from media.rtp import RtpError, RtpPacket

logger = logging.getLogger(__name__)

__all__ = ["BridgeCounters", "FrameTranscoder", "MediaBridge", "TranscoderFactory"]

_HEADER = struct.Struct("!BBHII")
_pack_header = _HEADER.pack
_DURATION = struct.Struct("!H")
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100
_MAX_CONCEALED = 5
"""Lost packets concealed at most in one gap (100 ms at 20 ms); a longer gap is skipped."""


class FrameTranscoder(Protocol):
    """Decode, resample and encode one direction (`media.transcode.Transcoder`)."""

    timestamp_step: int
    """RTP timestamp units of the target clock per encoded frame."""

    def transcode(self, payload: bytes) -> list[bytes]:
        """Encoded target frames for one source payload (none while a frame is incomplete)."""
        ...

    def lost(self, count: int = 1, next_payload: bytes | None = None) -> list[bytes]:
        """Encoded target frames standing for `count` source packets that never came;
        `next_payload` is the packet that arrived after them (its in-band FEC, if any)."""
        ...


TranscoderFactory = Callable[[LegFormat, LegFormat], FrameTranscoder]


def codec_transcoder(source: LegFormat, target: LegFormat) -> FrameTranscoder:
    """The media engine's transcoder between two legs' codecs, sending the target's packet
    time; raises ValueError (UnsupportedCodecError) for a codec the engine does not have."""
    from media.codecs import codec_for
    from media.transcode import Transcoder

    return Transcoder(
        codec_for(source.encoding_name, source.clock_rate, source.channels, source.fmtp),
        codec_for(target.encoding_name, target.clock_rate, target.channels, target.fmtp),
        ptime_ms=target.ptime if target.ptime in (10, 20, 30, 40, 60) else 20,
    )


@dataclass
class BridgeCounters:
    """What crossed a bridge, per direction or in total."""

    forwarded: int = 0
    transcoded: int = 0
    concealed: int = 0
    late: int = 0
    events: int = 0
    events_dropped: int = 0
    muted: int = 0
    """Packets not forwarded because one side holds."""
    errors: int = 0


class _Forward:
    """One direction of a bridge: packets from `source` leave through `target`."""

    __slots__ = (
        "audio_types",
        "counters",
        "event_types",
        "in_origin",
        "in_rate",
        "in_ssrc",
        "last_seq",
        "last_ts",
        "muted",
        "on_latched",
        "out_event_type",
        "out_origin",
        "out_rate",
        "out_type",
        "passthrough",
        "seq_offset",
        "source",
        "switch",
        "target",
        "transcoder",
        "transparent",
        "ts_offset",
    )

    def __init__(self, source: RtpLeg, target: RtpLeg) -> None:
        self.source = source
        self.target = target
        self.counters = BridgeCounters()
        self.passthrough = True
        self.transcoder: FrameTranscoder | None = None
        self.audio_types: frozenset[int] = frozenset()
        self.event_types: frozenset[int] = frozenset()
        self.out_type = 0
        self.out_event_type: int | None = None
        self.in_rate = 8000
        self.out_rate = 8000
        self.in_ssrc: int | None = None
        self.muted = False
        self.last_seq = 0
        self.last_ts = 0
        self.seq_offset = 0
        self.ts_offset = 0
        self.in_origin = 0
        self.out_origin = 0
        self.switch = True
        self.transparent = False
        self.on_latched: Callable[[], None] | None = None

    def configure(self, factory: TranscoderFactory | None) -> None:
        """Pick passthrough or transcoding from the two legs' formats."""
        src, dst = self.source.format, self.target.format
        if src is None or dst is None:
            raise ValueError("bridge legs have no format")
        self.audio_types = src.receive_types
        self.event_types = src.event_receive_types
        self.out_type = dst.send_type
        self.out_event_type = dst.event_send_type
        self.in_rate = src.clock_rate
        self.out_rate = dst.clock_rate
        passthrough = src.key == dst.key
        if self.transparent and not (
            passthrough
            and src.receive_types == dst.receive_types
            and src.event_receive_types == dst.event_receive_types
        ):
            self.transparent = False
        if passthrough:
            self.transcoder = None
        elif factory is None:
            raise ValueError(f"cannot transcode {src.encoding_name} to {dst.encoding_name}")
        else:
            self.transcoder = factory(src, dst)
        if passthrough != self.passthrough:
            self.in_ssrc = None  # a new mode starts a new source on the target
        self.passthrough = passthrough

    def unwrap(self) -> None:
        """Leave transparent passthrough: the source's numbers were the target's, so rewriting
        starts with no offset after the last packet the far end got (relay or kernel)."""
        self.seq_offset = self.ts_offset = 0
        self.last_seq = (self.target.sequence_number - 1) & 0xFFFF
        self.switch = False

    def sink(self) -> Callable[[bytes, int, int, int, int, float], None]:
        """The source leg's sink for the current mode (one call per packet on the hot path)."""
        if not self.passthrough:
            return self.transcode
        return self.transparent_relay if self.transparent else self.relay

    def _failed(self) -> None:
        self.counters.errors += 1
        if self.counters.errors == 1:
            logger.exception("bridge forward failed on port %d", self.source.port)
        else:
            logger.debug("bridge forward failed on port %d", self.source.port, exc_info=True)

    def _start(self, ssrc: int, seq: int, ts: int, now: float) -> None:
        """A new source: continue the target's stream where it stopped."""
        target = self.target
        self.in_ssrc = ssrc
        self.seq_offset = (target.sequence_number - seq) & 0xFFFF
        out_ts = target.timestamp
        if target.last_send_time is not None:
            out_ts += max(int((now - target.last_send_time) * self.out_rate), 1)
        out_ts &= 0xFFFFFFFF
        self.ts_offset = (out_ts - ts) & 0xFFFFFFFF
        self.in_origin = ts
        self.out_origin = out_ts
        self.last_seq = (seq - 1) & 0xFFFF
        self.last_ts = ts
        self.switch = True

    def adopt(self, ssrc: int) -> None:
        """The source's RTCP names its stream `ssrc` before any of its RTP reached us (the
        kernel relays it): transparent, the target speaks of that stream as its own."""
        if self.transparent and self.in_ssrc is None:
            self.in_ssrc = ssrc
            self.target.ssrc = self.target.sender.ssrc = ssrc

    # -- passthrough ------------------------------------------------------------------------

    def transparent_relay(
        self, data: bytes, second: int, seq: int, ts: int, ssrc: int, now: float
    ) -> None:
        """Transparent passthrough: the packet leaves unchanged (the leg's sink)."""
        try:
            if self.muted:
                self.counters.muted += 1
                return
            target = self.target
            if self.in_ssrc != ssrc:
                if self.in_ssrc is not None:
                    self.transparent = False
                    self.on_latched = None
                    self.source.sink = self.relay
                    self.relay(data, second, seq, ts, ssrc, now)
                    return
                self.in_ssrc = ssrc
                target.ssrc = target.sender.ssrc = ssrc
            target.sequence_number = (seq + 1) & 0xFFFF
            target.send_packet(data, ts, len(data) - 12, now)
            self.counters.forwarded += 1
            if self.on_latched is not None and target.peer is not None:
                self.on_latched()
        except Exception:
            self._failed()

    def relay(self, data: bytes, second: int, seq: int, ts: int, ssrc: int, now: float) -> None:
        """Passthrough: rewrite the header, keep the payload (the leg's sink)."""
        try:
            if self.muted:
                self.counters.muted += 1
                return
            delta = (seq - self.last_seq) & 0xFFFF
            if self.in_ssrc != ssrc or _MAX_DROPOUT <= delta < 0x10000 - _MAX_MISORDER:
                self._start(ssrc, seq, ts, now)
                delta = 1
            if second & 0x7F in self.audio_types:
                out_type = self.out_type
            else:
                out_event = self.out_event_type
                if out_event is None:
                    self.counters.events_dropped += 1
                    return
                out_type = out_event
                self.counters.events += 1
            marker = second & 0x80
            if self.switch:
                marker = 0x80
                self.switch = False
            if delta < 0x8000:
                self.last_seq = seq
            target = self.target
            out_seq = (seq + self.seq_offset) & 0xFFFF
            out_ts = (ts + self.ts_offset) & 0xFFFFFFFF
            target.sequence_number = (out_seq + 1) & 0xFFFF
            target.send_packet(
                _pack_header(data[0], marker | out_type, out_seq, out_ts, target.ssrc) + data[12:],
                out_ts,
                len(data) - 12,
                now,
            )
            self.counters.forwarded += 1
        except Exception:
            self._failed()

    def transcode(self, data: bytes, second: int, seq: int, ts: int, ssrc: int, now: float) -> None:
        """Transcoding: decode, resample, encode (the leg's sink)."""
        try:
            if self.muted:
                self.counters.muted += 1
                return
            if self.in_ssrc != ssrc:
                self._start(ssrc, seq, ts, now)
            if second & 0x7F in self.event_types:
                self._event(data, second, ts)
            else:
                self._transcode(data, seq, ts)
        except Exception:
            self._failed()

    # -- transcoding ------------------------------------------------------------------------

    def _scaled(self, ts: int) -> int:
        """A source timestamp on the target's clock, relative to the current source's start."""
        delta = ((ts - self.in_origin + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        return (self.out_origin + delta * self.out_rate // self.in_rate) & 0xFFFFFFFF

    def _event(self, data: bytes, second: int, ts: int) -> None:
        out_event = self.out_event_type
        if out_event is None or len(data) < 16:
            self.counters.events_dropped += 1
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.counters.events_dropped += 1
            return
        payload = packet.payload
        if len(payload) < 4:
            self.counters.events_dropped += 1
            return
        if self.in_rate != self.out_rate:
            duration = _DURATION.unpack_from(payload, 2)[0] * self.out_rate // self.in_rate
            payload = payload[:2] + _DURATION.pack(min(duration, 0xFFFF)) + payload[4:]
        self.counters.events += 1
        self.target.send(out_event, bool(second & 0x80), self._scaled(ts), payload)

    def _transcode(self, data: bytes, seq: int, ts: int) -> None:
        transcoder = self.transcoder
        if transcoder is None:
            return
        delta = (seq - self.last_seq) & 0xFFFF
        if delta == 0 or delta >= 0x8000:
            self.counters.late += 1
            return
        if data[0] == 0x80:
            payload = data[12:]
        else:
            payload = RtpPacket.parse(data).payload
        target = self.target
        step = transcoder.timestamp_step
        frames: list[bytes] = []
        lost = delta - 1
        if 0 < lost <= _MAX_CONCEALED:
            frames = transcoder.lost(lost, payload)
            self.counters.concealed += lost
        self.last_seq = seq
        frames += transcoder.transcode(payload)
        if not frames:
            return
        # Where the first of these frames belongs on the target's clock.
        expected = (target.timestamp + step) & 0xFFFFFFFF
        start = (self._scaled(ts) - step * (len(frames) - 1)) & 0xFFFFFFFF
        gap = ((start - expected + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        marker = self.switch
        self.switch = False
        if target.last_send_time is None or gap > 2 * step or gap < -4 * step:
            out_ts = start
            marker = True
        else:
            out_ts = expected
        out_type = self.out_type
        for frame in frames:
            target.send(out_type, marker, out_ts, frame)
            marker = False
            out_ts = (out_ts + step) & 0xFFFFFFFF
        self.last_ts = ts
        self.counters.transcoded += 1


class MediaBridge:
    """Two legs whose media cross: passthrough or transcoding, chosen per direction."""

    def __init__(self, a: RtpLeg, b: RtpLeg, transcoders: TranscoderFactory | None = None) -> None:
        self.a = a
        self.b = b
        self.transcoders = transcoders
        self._a_to_b = _Forward(a, b)
        self._b_to_a = _Forward(b, a)
        self.running = False
        self.held_by: RtpLeg | None = None
        self.on_latched: Callable[[], None] | None = None
        """Called for each packet relayed while transparent once its source latched and its
        target has an address (until transparency ends)."""

    def start(self, transparent: bool = False) -> None:
        """Join the legs (both must have a format); call again after a leg's format changed.
        `transparent` asks for transparent passthrough when both legs use the same payload
        types (a bridge that left transparency never goes back: its stream is rewritten).

        Raises ValueError when the formats differ and no transcoder can join them.
        """
        first = not self.running and self._a_to_b.in_ssrc is None and self._b_to_a.in_ssrc is None
        forwards = (self._a_to_b, self._b_to_a)
        was = [f.transparent for f in forwards]
        for forward in forwards:
            if first:
                forward.transparent = transparent
            elif not transparent:
                forward.transparent = False
        for forward in forwards:
            forward.configure(self.transcoders)
        if not self.transparent:
            for forward, transparent_before in zip(forwards, was, strict=True):
                forward.transparent = False
                if transparent_before and forward.passthrough:
                    forward.unwrap()
        self._arm()
        self.a.sink = self._a_to_b.sink()
        self.b.sink = self._b_to_a.sink()
        self.a.on_sender_report = self._a_to_b.adopt
        self.b.on_sender_report = self._b_to_a.adopt
        self.running = True

    def hold(self, holder: RtpLeg, on_hold: bool) -> None:
        """`holder`'s party put the call on hold (or resumed it): nothing crosses either way
        while it holds (the other party gets music from a `LegFeed` instead); on resume each
        direction continues the target's stream where it stopped."""
        for forward in (self._a_to_b, self._b_to_a):
            if forward.muted != on_hold:
                forward.muted = on_hold
                if not forward.transparent:
                    forward.in_ssrc = None
        self.held_by = holder if on_hold else None

    def leave_transparent(self) -> None:
        """Rewrite from now on, for good: something else sends on a leg (music on hold), so the
        far end's stream no longer follows the source's numbers. On resume each direction
        continues the target's stream where it stopped."""
        for forward in (self._a_to_b, self._b_to_a):
            if forward.transparent:
                forward.transparent = False
                forward.on_latched = None
                if forward.passthrough:
                    forward.unwrap()
        if self.running:
            self.a.sink = self._a_to_b.sink()
            self.b.sink = self._b_to_a.sink()

    @property
    def transparent(self) -> bool:
        """True when both directions relay packets unchanged (the kernel may take over)."""
        return self._a_to_b.transparent and self._b_to_a.transparent

    def _arm(self) -> None:
        ready = self._latched if self.transparent and self.on_latched is not None else None
        self._a_to_b.on_latched = self._b_to_a.on_latched = ready

    def _latched(self) -> None:
        if self.on_latched is not None and self.transparent:
            self.on_latched()

    def kernel_removed(self, a_to_b: int, b_to_a: int) -> None:
        """Kernel rules that moved `a_to_b` and `b_to_a` packets are gone: our streams' next
        sequence numbers follow the packets the far ends got from the kernel; `on_latched`
        fires again at the next packet while the bridge stays transparent."""
        self.b.sequence_number = (self.b.sequence_number + a_to_b) & 0xFFFF
        self.a.sequence_number = (self.a.sequence_number + b_to_a) & 0xFFFF
        self._arm()

    def stop(self) -> None:
        """Unjoin the legs (each stops forwarding; their sockets stay with their owner)."""
        self.a.sink = self.a.on_sender_report = None
        self.b.sink = self.b.on_sender_report = None
        self.running = False

    @property
    def passthrough(self) -> bool:
        """True when neither direction transcodes."""
        return self._a_to_b.passthrough and self._b_to_a.passthrough

    def counters(self) -> BridgeCounters:
        """Both directions added up."""
        total = BridgeCounters()
        for forward in (self._a_to_b, self._b_to_a):
            c = forward.counters
            total.forwarded += c.forwarded
            total.transcoded += c.transcoded
            total.concealed += c.concealed
            total.late += c.late
            total.events += c.events
            total.events_dropped += c.events_dropped
            total.muted += c.muted
            total.errors += c.errors
        return total
