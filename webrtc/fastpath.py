"""The audio fast path of a WebRTC peer: its Opus RTP in and out without aiortc's per-packet work.

Why. Once ICE and DTLS are up, what a call costs in aiortc is per packet, not per codec
(`webrtc.channel`'s profile): on the way out an asyncio task per sender wakes for every 20 ms
packet, builds an ``RtpPacket``, reads the NTP clock twice through ``datetime`` and awaits two
coroutines down to ``sendto``; on the way in aioice first tries to parse every datagram as STUN
(an exception per packet), queues it, and the DTLS transport's task wakes to unprotect, parse
into an ``RtpPacket``, route and keep the receiver's statistics. For an audio stream whose
payloads we encode and decode ourselves none of that is needed: `AudioFastPath` keeps the SRTP
sessions and the ICE pair that aiortc and aioice set up, and moves the audio packets itself.

- **Out**: one `SendClock` per event loop (a `media.pacer.Pacer`, 20 ms, drift-free)
  calls every active path's `send_slot` in the same callback: one timer for all channels instead
  of a task wake-up each. A slot asks the channel for its payload, writes the sequence number and
  timestamp into a prebuilt header (the negotiated payload type, aiortc's sender SSRC, the MID
  header extension when negotiated, as aiortc's sender would), protects it with the DTLS
  transport's SRTP session and hands it to the nominated pair's socket. With nothing attached
  (``idle()``) only every `IDLE_SLOTS`-th slot sends (Opus DTX cadence; the timestamp jumps over
  the gap, the sequence number does not). A source whose frames arrive from the network (a SIP
  leg's port in relay) pushes instead: `send_now` sends each frame the moment it arrives, and
  the slots stand aside while it does (`PUSH_HOLDOFF`), so what the caller says reaches the
  browser with no buffer and no clock of ours in between; the browser's own jitter buffer
  (NetEq) absorbs the network's jitter. RTP time continues frame by frame while packets
  follow each other and moves on by the time that passed after a pause (`CONTINUOUS`).
- **In**: `webrtc.channel`'s aioice guard (the source check) hands every RTP/RTCP datagram from
  the selected pair to `take` before aioice parses it. An Opus packet (the negotiated payload
  type; video and anything else go on to aiortc untouched) is unprotected, its header read in
  place (CSRCs, extensions and padding skipped), counted in RFC 3550 reception statistics and
  given to the channel (`on_audio(sequence, timestamp, payload)`: the playout's jitter buffer).
  SRTCP is unprotected here too: the peer's SR and its report blocks about our stream (RTT) are
  read, and the plain compound packet is handed to aiortc's own RTCP handling, so its senders and
  receivers (video PLI and NACK, ``getStats``) see everything they saw before.
- **RTCP out**: aiortc's sender keeps sending the SR and SDES of the SSRC we send on (its RTCP
  task is untouched); the path keeps the figures that SR carries (packet and octet counts, the
  NTP/RTP timestamp pair) current in the sender every `SENDER_UPDATE` packets. The receiver
  report about the peer's audio, which aiortc's receiver no longer sees, comes from here: an RR
  with its report block and an SDES CNAME every `REPORT_SLOTS` slots (~1 s, like aiortc).

What it relies on (aiortc 1.16, aioice 0.10): ``RTCDtlsTransport._rx_srtp``/``_tx_srtp``
(pylibsrtp sessions) and ``_handle_rtcp_data``, ``RTCIceTransport._connection`` (aioice
``Connection``) with its ``_nominated`` pairs, ``StunProtocol.transport``, and the sender's
name-mangled SR figures. `fastpath_problems()` checks all of it; a channel whose check fails (an
upgrade) logs a warning and keeps aiortc's own path (tests/webrtc/test_fastpath.py fails then).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import re
import struct
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from aiortc import RTCDtlsTransport, RTCRtpSender

from media.pacer import Pacer
from media.quality import ReceptionStats, SenderStats, round_trip_time
from media.rtcp import (
    SDES_CNAME,
    ReceiverReport,
    RtcpError,
    RtcpPacket,
    SdesChunk,
    SdesItem,
    SenderReport,
    SourceDescription,
    ntp_timestamp,
    parse_compound,
    serialize_compound,
)

logger = logging.getLogger(__name__)

__all__ = [
    "FAST_PATH_ATTRIBUTE",
    "IDLE_SLOTS",
    "AudioFastPath",
    "AudioParameters",
    "FastPathCounters",
    "SendClock",
    "audio_parameters",
    "fastpath_problems",
    "fastpath_status",
]

FRAME_SECONDS = 0.02
FRAME_TIMESTAMP = 960
"""RTP timestamp units of a 20 ms Opus frame (48 kHz clock, RFC 7587)."""
IDLE_SLOTS = 20
"""With nothing attached one packet every 20 slots (400 ms, the cadence of Opus DTX)."""
REPORT_SLOTS = 50
"""A receiver report about the peer's audio every 50 slots (~1 s)."""
SENDER_UPDATE = 10
"""aiortc's sender gets our SR figures every 10 packets (its SR goes out every 0.5-1.5 s)."""
CONTINUOUS = 0.07
"""Packets less than 70 ms apart continue the RTP time frame by frame; a longer pause moves it
on by the time that passed."""
PUSH_HOLDOFF = 0.065
"""The clock's slots stand aside while frames were pushed (`send_now`) in the last 65 ms: a
source that pushes is late at times (its network, our loop), and a slot taken then would send
silence ahead of the frame that is on its way (the browser would play it 20 ms late); a source
that stopped (hold, the caller's silence suppression) gives way to the slots after three."""
FAST_PATH_ATTRIBUTE = "_omlmedia_fast_path"
"""Set on an aioice ``Connection`` whose audio a path takes."""
MID_EXTENSION = "urn:ietf:params:rtp-hdrext:sdes:mid"

_SENDER_FIELDS = (
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__packet_count",
    "_RTCRtpSender__octet_count",
)
_SEQ_TS = struct.Struct("!HI")
_HEADER = struct.Struct("!BBHII")
_WORD = struct.Struct("!H")


@functools.cache
def fastpath_problems() -> tuple[str, ...]:
    """What in the installed aiortc/aioice no longer fits the fast path (empty when all is well)."""
    problems: list[str] = []
    try:
        from aioice import ice

        source = inspect.getsource(ice.Connection)
        if "self._nominated" not in source:
            problems.append("aioice Connection no longer keeps _nominated pairs")
        if "self.transport = " not in inspect.getsource(ice.StunProtocol):
            problems.append("aioice StunProtocol no longer keeps its transport")
        dtls_source = inspect.getsource(RTCDtlsTransport)
        for name in ("self._rx_srtp = Session(", "self._tx_srtp = Session("):
            if name not in dtls_source:
                problems.append(f"RTCDtlsTransport no longer has {name.split()[0]}")
        if not inspect.iscoroutinefunction(getattr(RTCDtlsTransport, "_handle_rtcp_data", None)):
            problems.append("RTCDtlsTransport._handle_rtcp_data is gone")
        from aiortc import rtcicetransport

        if "self._connection = Connection(" not in inspect.getsource(rtcicetransport):
            problems.append("RTCIceTransport no longer keeps an aioice Connection")
        sender_init = inspect.getsource(RTCRtpSender.__init__)
        for mangled in _SENDER_FIELDS:
            if f"self.__{mangled.split('__', 1)[1]} = 0" not in sender_init:
                problems.append(f"RTCRtpSender lost {mangled}")
    except (OSError, TypeError) as exc:  # pragma: no cover - no source installed
        problems.append(f"cannot inspect aiortc/aioice: {exc}")
    return tuple(problems)


@dataclass(frozen=True)
class AudioParameters:
    """What our answer negotiated for the audio stream (from the local SDP)."""

    payload_type: int
    ssrc: int
    cname: str
    mid: str | None = None
    mid_extension: int | None = None


_RTPMAP = re.compile(r"^a=rtpmap:(\d+) opus/48000", re.IGNORECASE)
_SSRC = re.compile(r"^a=ssrc:(\d+) cname:(\S+)")
_EXTMAP = re.compile(r"^a=extmap:(\d+)(?:/\w+)? (\S+)")


def audio_parameters(sdp: str) -> AudioParameters | None:
    """The Opus payload type, our SSRC and CNAME, and the MID (and its header extension id) of
    the first audio section of our answer `sdp`; None when it has no Opus or no SSRC."""
    section: list[str] | None = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            if section is not None:
                break
            if line.startswith("m=audio"):
                section = []
            continue
        if section is not None:
            section.append(line.strip())
    if section is None:
        return None
    payload_type = ssrc = None
    cname = ""
    mid = None
    mid_extension = None
    for line in section:
        if (m := _RTPMAP.match(line)) and payload_type is None:
            payload_type = int(m.group(1))
        elif (m := _SSRC.match(line)) and ssrc is None:
            ssrc, cname = int(m.group(1)), m.group(2)
        elif line.startswith("a=mid:"):
            mid = line[6:]
        elif (m := _EXTMAP.match(line)) and m.group(2) == MID_EXTENSION:
            mid_extension = int(m.group(1))
    if payload_type is None or ssrc is None or not 0 <= payload_type <= 127:
        return None
    if mid_extension is not None and not (1 <= mid_extension <= 14 and mid and len(mid) <= 16):
        mid_extension = None
    return AudioParameters(payload_type, ssrc, cname, mid, mid_extension)


def header_template(params: AudioParameters) -> bytes:
    """The RTP header of our packets with sequence number and timestamp zero: V=2, the payload
    type, the SSRC and, when negotiated, the MID in a one-byte header extension (RFC 8285)."""
    if params.mid_extension is None or params.mid is None:
        return _HEADER.pack(0x80, params.payload_type, 0, 0, params.ssrc)
    mid = params.mid.encode()
    element = bytes(((params.mid_extension << 4) | (len(mid) - 1),)) + mid
    element += bytes(-len(element) % 4)
    return (
        _HEADER.pack(0x90, params.payload_type, 0, 0, params.ssrc)
        + b"\xbe\xde"
        + _WORD.pack(len(element) // 4)
        + element
    )


def rtp_payload(data: bytes) -> tuple[int, int, int, bytes] | None:
    """Sequence number, timestamp, SSRC and payload of an (unprotected) RTP packet; None when
    it is malformed (CSRCs, extension or padding beyond its end)."""
    size = len(data)
    if size < 12:
        return None
    first = data[0]
    position = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if position + 4 > size:
            return None
        position += 4 + 4 * _WORD.unpack_from(data, position + 2)[0]
    end = size - data[-1] if first & 0x20 else size
    if position > end or (first & 0x20 and data[-1] == 0):
        return None
    sequence, timestamp, ssrc = struct.unpack_from("!HII", data, 2)
    return sequence, timestamp, ssrc, data[position:end]


class FastPathCounters:
    """Packets of a fast path: sent, not sent (no pair), received, dropped by cause, RTCP."""

    __slots__ = (
        "malformed",
        "received",
        "rtcp_received",
        "rtcp_sent",
        "sent",
        "srtp_errors",
        "unsent",
    )

    def __init__(self) -> None:
        self.sent = 0
        self.unsent = 0
        self.received = 0
        self.srtp_errors = 0
        self.malformed = 0
        self.rtcp_received = 0
        self.rtcp_sent = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def add(self, other: FastPathCounters) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


_active: weakref.WeakSet[AudioFastPath] = weakref.WeakSet()
_retired = FastPathCounters()


def fastpath_status() -> dict[str, int]:
    """Process-wide figures for the status API: paths active now, and the packet counters of
    every path since start."""
    totals = FastPathCounters()
    totals.add(_retired)
    active = list(_active)
    for path in active:
        totals.add(path.counters)
    return {"active": len(active), **totals.as_dict()}


class _ClockStats:
    skipped = 0
    errors = 0


class SendClock:
    """The 20 ms send clock shared by every active fast path of an event loop."""

    _clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SendClock] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.paths: dict[AudioFastPath, None] = {}
        self.stats = _ClockStats()
        self.pacer = Pacer(loop, FRAME_SECONDS, self._tick, self.stats)

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> SendClock:
        clock = cls._clocks.get(loop)
        if clock is None:
            clock = cls._clocks[loop] = cls(loop)
        return clock

    def add(self, path: AudioFastPath) -> None:
        self.paths[path] = None
        self.pacer.start()

    def discard(self, path: AudioFastPath) -> None:
        self.paths.pop(path, None)

    def _tick(self, index: int) -> bool:
        if not self.paths:
            return False
        for path in list(self.paths):
            try:
                path.send_slot(index)
            except Exception:
                path.errors += 1
                if path.errors == 1:
                    logger.exception("fast path %s: send slot failed", path.name)
        return True


class AudioFastPath:
    """One peer connection's audio, moved by us once DTLS is up (see the module docstring).

    `next_payload()` gives the Opus payload of each send slot, `idle()` says nothing is attached
    (DTX cadence), `on_audio(sequence, timestamp, payload)` takes each received Opus payload.
    `wall` is the wall clock of the RTCP timestamps, `clock` the monotonic one of arrivals."""

    def __init__(
        self,
        name: str,
        params: AudioParameters,
        next_payload: Callable[[], bytes],
        on_audio: Callable[[int, int, bytes], None],
        idle: Callable[[], bool],
        *,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.params = params
        self.next_payload = next_payload
        self.on_audio = on_audio
        self.idle = idle
        self.wall = wall
        self.clock = clock
        self.counters = FastPathCounters()
        self.errors = 0
        self.sender_stats = SenderStats(params.ssrc)
        self.reception: ReceptionStats | None = None
        self.round_trip_time: float | None = None
        """From the peer's report blocks about our stream (seconds)."""
        self.active = False
        self._template = header_template(params)
        self._header = bytearray(self._template)
        self._payload_type = params.payload_type
        self._sequence = random.getrandbits(16)
        self._last_timestamp = random.getrandbits(32)
        self._last_send_at: float | None = None
        self._pushed_at = -1.0
        self._since_update = 0
        self._dtls: RTCDtlsTransport | None = None
        self._sender: RTCRtpSender | None = None
        self._connection: Any = None
        self._rx: pylibsrtp.Session | None = None
        self._tx: pylibsrtp.Session | None = None
        self._clock: SendClock | None = None
        self._rtcp_tasks: set[asyncio.Task[None]] = set()
        self._report_phase = id(self) % REPORT_SLOTS

    # --- life cycle ---

    def activate(self, dtls: RTCDtlsTransport, sender: RTCRtpSender) -> bool:
        """Take over the audio of `dtls` (connected) sent by `sender`; False when it cannot."""
        if self.active:
            return True
        rx = getattr(dtls, "_rx_srtp", None)
        tx = getattr(dtls, "_tx_srtp", None)
        connection = getattr(getattr(dtls, "transport", None), "_connection", None)
        if (
            fastpath_problems()
            or not isinstance(rx, pylibsrtp.Session)
            or not isinstance(tx, pylibsrtp.Session)
            or not isinstance(getattr(connection, "_nominated", None), dict)
            or getattr(sender, "_ssrc", None) != self.params.ssrc
        ):
            return False
        self._dtls, self._sender, self._connection = dtls, sender, connection
        self._rx, self._tx = rx, tx
        setattr(connection, FAST_PATH_ATTRIBUTE, self)
        self._clock = SendClock.of(asyncio.get_running_loop())
        self._clock.add(self)
        self.active = True
        _active.add(self)
        return True

    def deactivate(self) -> None:
        """Stop moving packets (the peer connection is closing)."""
        if self in _active:
            _active.discard(self)
            _retired.add(self.counters)
        self.active = False
        if self._clock is not None:
            self._clock.discard(self)
            self._clock = None
        connection = self._connection
        if connection is not None and getattr(connection, FAST_PATH_ATTRIBUTE, None) is self:
            delattr(connection, FAST_PATH_ATTRIBUTE)
        self._connection = None
        for task in list(self._rtcp_tasks):
            task.cancel()

    # --- out ---

    def send_slot(self, index: int) -> None:
        """Send this slot's packet (the shared clock's slot `index`), unless frames are being
        pushed (`send_now`) or nothing is attached (then one slot in `IDLE_SLOTS`)."""
        if not self.active:
            return
        self._report(index)
        if self.clock() - self._pushed_at < PUSH_HOLDOFF:
            return
        if index % IDLE_SLOTS and self.idle():
            return
        self._send_payload(self.next_payload())

    def send_now(self) -> None:
        """Send the next payload at once (the source has a frame that just arrived): the SIP
        leg's packets drive the sending while they come, the clock's slots stand aside."""
        if not self.active:
            return
        self._pushed_at = self.clock()
        self._send_payload(self.next_payload())

    def _send_payload(self, payload: bytes) -> None:
        # RTP time: one frame after the last packet while packets follow each other; after a
        # pause (idle, a stall, the end of pushing) it follows the time that passed, marked.
        now = self.clock()
        last_at = self._last_send_at
        self._last_send_at = now
        header = self._header
        if last_at is not None and now - last_at < CONTINUOUS:
            timestamp = (self._last_timestamp + FRAME_TIMESTAMP) & 0xFFFFFFFF
            header[1] = self._payload_type
        else:
            frames = 1 if last_at is None else max(1, round((now - last_at) / FRAME_SECONDS))
            timestamp = (self._last_timestamp + frames * FRAME_TIMESTAMP) & 0xFFFFFFFF
            header[1] = 0x80 | self._payload_type
        _SEQ_TS.pack_into(header, 2, self._sequence, timestamp)
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._last_timestamp = timestamp
        if self._send(self._tx.protect(bytes(header) + payload)):  # type: ignore[union-attr]
            self.counters.sent += 1
        stats = self.sender_stats
        stats.packet_count = (stats.packet_count + 1) & 0xFFFFFFFF
        stats.octet_count = (stats.octet_count + len(payload)) & 0xFFFFFFFF
        self._since_update += 1
        if self._since_update >= SENDER_UPDATE:
            self._since_update = 0
            self._update_sender()

    def _send(self, data: bytes) -> bool:
        pair = self._connection._nominated.get(1)
        if pair is None:
            self.counters.unsent += 1
            return False
        pair.protocol.transport.sendto(data, pair.remote_addr)
        return True

    def _update_sender(self) -> None:
        """Give aiortc's sender the figures of its next SR (the NTP/RTP pair: now)."""
        sender = self._sender
        if sender is None:
            return
        stats = self.sender_stats
        values = (
            ntp_timestamp(self.wall()),
            self._last_timestamp,
            stats.packet_count,
            stats.octet_count,
        )
        for name, value in zip(_SENDER_FIELDS, values, strict=True):
            setattr(sender, name, value)

    def _report(self, index: int) -> None:
        if (index + self._report_phase) % REPORT_SLOTS:
            return
        reception = self.reception
        if reception is None or not reception.received:
            return
        now = self.wall()
        packets: list[RtcpPacket] = [
            ReceiverReport(self.params.ssrc, (reception.report_block(now),)),
            SourceDescription(
                (SdesChunk(self.params.ssrc, (SdesItem(SDES_CNAME, self.params.cname.encode()),)),)
            ),
        ]
        try:
            data = self._tx.protect_rtcp(serialize_compound(packets))  # type: ignore[union-attr]
        except (RtcpError, pylibsrtp.Error):
            self.errors += 1
            return
        if self._send(data):
            self.counters.rtcp_sent += 1

    # --- in ---

    def take(self, data: bytes) -> bool:
        """Handle an RTP/RTCP datagram from the selected pair; False: not ours (aiortc's)."""
        if not self.active:
            return False
        second = data[1] if len(data) > 1 else 0
        if 192 <= second <= 223:
            self._take_rtcp(data)
            return True
        if second & 0x7F != self._payload_type:
            return False
        try:
            plain = self._rx.unprotect(data)  # type: ignore[union-attr]
        except pylibsrtp.Error:
            self.counters.srtp_errors += 1
            return True
        parsed = rtp_payload(plain)
        if parsed is None:
            self.counters.malformed += 1
            return True
        sequence, timestamp, ssrc, payload = parsed
        self.counters.received += 1
        reception = self.reception
        if reception is None or reception.ssrc != ssrc:
            reception = self.reception = ReceptionStats(ssrc, 48000)
        reception.receive(sequence, timestamp, self.clock())
        self.on_audio(sequence, timestamp, payload)
        return True

    def _take_rtcp(self, data: bytes) -> None:
        try:
            plain = self._rx.unprotect_rtcp(data)  # type: ignore[union-attr]
        except pylibsrtp.Error:
            self.counters.srtp_errors += 1
            return
        self.counters.rtcp_received += 1
        try:
            packets = parse_compound(plain)
        except RtcpError:
            self.counters.malformed += 1
            packets = []
        now = self.wall()
        reception = self.reception
        for packet in packets:
            if isinstance(packet, SenderReport | ReceiverReport):
                if (
                    isinstance(packet, SenderReport)
                    and reception is not None
                    and packet.ssrc == reception.ssrc
                ):
                    reception.receive_sender_report(packet, now)
                for block in packet.reports:
                    if block.ssrc == self.params.ssrc:
                        rtt = round_trip_time(block, now)
                        if rtt is not None:
                            self.round_trip_time = rtt
        dtls = self._dtls
        if dtls is not None:
            task = asyncio.ensure_future(dtls._handle_rtcp_data(plain))
            self._rtcp_tasks.add(task)
            task.add_done_callback(self._rtcp_done)

    def _rtcp_done(self, task: asyncio.Task[None]) -> None:
        self._rtcp_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors += 1
