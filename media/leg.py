"""One call leg's RTP session: our port pair facing one peer (RFC 3550, RFC 3551, RFC 4961).

A leg owns the RTP and RTCP sockets of one side of a call and everything that is per peer:

- **Latching** (symmetric RTP, RFC 4961). Until the peer has sent anything, packets go to the
  address its SDP gave; the first valid packet from the host the SDP named latches the peer's real
  source address and port (a caller behind NAT). Afterwards packets from any other address are
  dropped and counted: nobody can hijack the media by spraying packets at our ports. A transfer or
  re-INVITE that brings a new peer relatches (`set_remote(..., relatch=True)`).
- **Validation**. A datagram that is not RTP version 2 with at least a 12-byte header, or whose
  payload type was not negotiated on this leg, is dropped and counted by reason; nothing a peer
  sends raises out of the receive handler.
- **Reception statistics** per source (RFC 3550 A.1, A.3, A.8): sequence, loss and interarrival
  jitter of the peer's stream; a new SSRC starts fresh statistics (the old one's figures are
  folded into the leg's totals).
- **Our stream**: the SSRC, sequence number and timestamp the peer sees from us are the leg's own
  (`send`), whatever source the audio comes from; the bridge keeps them continuous across
  transfers and codec changes.
- **RTCP** (RFC 3550 §6): SR when we have sent since the last report, RR otherwise, with a report
  block about the peer's stream and an SDES CNAME, on the RTCP port or multiplexed on the RTP port
  (RFC 5761) when negotiated. Incoming SR and RR are parsed: LSR/DLSR give the round-trip time, the
  peer's report block about us gives the loss and jitter it sees. Reports are driven from outside
  (`rtcp_timer`/`send_report`), so a thousand legs cost one timer, not a thousand.
- **SRTP** (RFC 3711) when an `srtp` context is set: every packet is unprotected on receipt and
  protected before sending; an authentication or replay failure drops the packet and counts it.
  Latching happens only after that check, for RTP and RTCP alike, multiplexed or not: a packet
  that merely looks like RTCP from the SDP's host never takes the peer's place.

The leg is driven by its sockets' handlers; `now` comes from the injected clock (the event loop's
monotonic time by default) and the wall clock stamps SRs.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import secrets
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from media.ports import PortPair
from media.quality import (
    ReceptionStats,
    RtcpScheduler,
    SenderStats,
    estimate_mos,
    round_trip_time,
)
from media.rtcp import (
    SDES_CNAME,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SdesChunk,
    SdesItem,
    SenderReport,
    SourceDescription,
    parse_compound,
    serialize_compound,
)
from sip.sdp import Codec, NegotiatedStream

logger = logging.getLogger(__name__)

__all__ = ["LegCounters", "LegFormat", "LegQuality", "RtpLeg", "SrtpContext", "leg_format"]

_HEADER = struct.Struct("!BBHII")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


class SrtpContext(Protocol):
    """What a leg needs of an SRTP session (RFC 3711): each method raises ValueError on bad
    input (authentication, replay, truncation)."""

    def protect_rtp(self, data: bytes) -> bytes: ...
    def unprotect_rtp(self, data: bytes) -> bytes: ...
    def protect_rtcp(self, data: bytes) -> bytes: ...
    def unprotect_rtcp(self, data: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class LegFormat:
    """What offer/answer settled for a leg: the codec and telephone-event payload types.

    `receive_types` are the payload types the peer may send us for the codec (its own and the
    one we wrote, since some peers send with ours); `send_type` the one we send with.
    """

    encoding_name: str
    clock_rate: int
    channels: int = 1
    send_type: int = 0
    receive_types: frozenset[int] = frozenset()
    event_send_type: int | None = None
    event_receive_types: frozenset[int] = frozenset()
    event_clock_rate: int = 8000
    ptime: int = 20
    fmtp: str | None = None

    @property
    def key(self) -> tuple[str, int, int]:
        """What two legs must share for packets to pass through untouched."""
        return (self.encoding_name.lower(), self.clock_rate, self.channels)


def leg_format(
    stream: NegotiatedStream, local: Iterable[Codec], ptime: int | None = None
) -> LegFormat:
    """A leg's payload formats from the outcome of offer/answer: we send with the peer's payload
    types and accept ours as well (some peers send with the type we wrote). `ptime` overrides
    the stream's packet time (a codec that cannot do it)."""
    local = tuple(local)
    codec = stream.codec
    receive = {codec.payload_type}
    receive.update(c.payload_type for c in local if c.matches(codec))
    event = stream.telephone_event
    events: set[int] = set()
    if event is not None:
        events.add(event.payload_type)
        events.update(c.payload_type for c in local if c.matches(event))
    return LegFormat(
        encoding_name=codec.encoding_name,
        clock_rate=codec.clock_rate,
        channels=codec.channels,
        send_type=codec.payload_type,
        receive_types=frozenset(receive),
        event_send_type=event.payload_type if event is not None else None,
        event_receive_types=frozenset(events - receive),
        event_clock_rate=event.clock_rate if event is not None else codec.clock_rate,
        ptime=stream.ptime if ptime is None else ptime,
        fmtp=codec.fmtp,
    )


@dataclass
class LegCounters:
    """Per-leg packet counts, for the API and the call record."""

    received: int = 0
    """Valid RTP packets from the peer, of a negotiated payload type."""
    sent: int = 0
    dropped_source: int = 0
    """Packets from an address other than the latched peer (or the host of its SDP)."""
    dropped_malformed: int = 0
    dropped_payload_type: int = 0
    dropped_srtp: int = 0
    dropped_other: int = 0
    rtcp_received: int = 0
    rtcp_sent: int = 0
    rtcp_malformed: int = 0
    ssrc_changes: int = 0

    @property
    def dropped(self) -> int:
        """Every RTP packet dropped, whatever the reason."""
        return (
            self.dropped_source
            + self.dropped_malformed
            + self.dropped_payload_type
            + self.dropped_srtp
            + self.dropped_other
        )


@dataclass(frozen=True, slots=True)
class LegQuality:
    """Media quality of one leg for the call record: what we measured on the peer's stream, and
    what the peer reported about ours (RTCP)."""

    packets_received: int
    packets_lost: int
    loss: float
    jitter_ms: float
    round_trip_ms: float | None
    remote_loss: float | None
    remote_jitter_ms: float | None
    mos: float | None


class _Socket:
    """Latching state of one of the leg's two sockets."""

    __slots__ = ("expected_host", "latched", "peer")

    def __init__(self) -> None:
        self.expected_host: str | None = None
        self.peer: tuple[str, int] | None = None
        self.latched = False

    def admits(self, addr: tuple[str, int]) -> bool:
        """True when a datagram from `addr` may be examined: from the latched peer, or before
        latching from the host the SDP named. Changes nothing."""
        if self.latched:
            peer = self.peer
            return peer is not None and addr[1] == peer[1] and addr[0] == peer[0]
        return self.expected_host is None or addr[0] == self.expected_host

    def latch(self, addr: tuple[str, int]) -> None:
        """Take `addr` as the peer: only once a packet from it proved valid (authenticated, with
        SRTP) on this socket (RFC 4961; RFC 3711 §3.3, §3.4)."""
        self.peer = (addr[0], addr[1])
        self.latched = True


@functools.lru_cache(maxsize=4096)
def _is_address(host: str) -> bool:
    """True for an IPv4 or IPv6 address literal (not a host name)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


RtpSink = Callable[[bytes, int, int, int, int, float], None]
"""Receives a valid packet: (data, second header byte, sequence number, timestamp, SSRC, now)."""


class RtpLeg:
    """The RTP session of one call leg on a bound port pair."""

    def __init__(
        self,
        pair: PortPair,
        *,
        cname: str = "omlmedia",
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.pair = pair
        self.port = pair.port
        self.cname = cname
        self.clock = clock
        self.wallclock = wallclock
        self.format: LegFormat | None = None
        self.rtcp_mux = False
        self.srtp: SrtpContext | None = None
        self.sink: RtpSink | None = None
        """Where valid packets go (the bridge); None drops them after counting."""
        self.on_sender_report: Callable[[int], None] | None = None
        """Told the SSRC of each sender report the peer sends (the bridge learns the stream the
        kernel relays from its RTCP)."""
        self.counters = LegCounters()
        self.ssrc = secrets.randbits(32)
        """Our SSRC towards this peer."""
        self.sequence_number = secrets.randbits(16)
        """The sequence number of the next packet we send."""
        self.timestamp = secrets.randbits(32)
        """The RTP timestamp of the last packet we sent (or a random origin)."""
        self.last_send_time: float | None = None
        self.sender = SenderStats(self.ssrc)
        self.reception: ReceptionStats | None = None
        self._history_received = 0
        self._history_lost = 0
        self.round_trip: float | None = None
        self.remote_loss: float | None = None
        self.remote_jitter: float | None = None
        self.scheduler = RtcpScheduler(self.clock())
        self._rtp = _Socket()
        self._rtcp = _Socket()
        self._receive_types: frozenset[int] = frozenset()
        self._sent_since_report = False
        pair.rtp.handler = self._rtp_datagram
        pair.rtcp.handler = self._rtcp_datagram

    # -- configuration ----------------------------------------------------------------------

    def set_remote(
        self, host: str, rtp_port: int, rtcp_port: int | None = None, relatch: bool = False
    ) -> None:
        """Where the peer's SDP says it receives; latching may refine it. `relatch` when a new
        peer takes this leg (a transfer): the old peer's packets are dropped from then on.

        A host name instead of an address (RFC 8866 §5.7 allows one in ``c=``) is not resolved:
        `socket.sendto` would look it up synchronously for every packet, stalling the event
        loop for every call. Nothing is sent and nothing latches until an offer names an
        address."""
        if relatch:
            self._rtp.latched = self._rtcp.latched = False
        self._rtp.expected_host = host
        self._rtcp.expected_host = host
        literal = _is_address(host)
        if not self._rtp.latched:
            self._rtp.peer = (host, rtp_port) if literal else None
        if not self._rtcp.latched:
            self._rtcp.peer = (host, rtcp_port if rtcp_port else rtp_port + 1) if literal else None

    def set_format(self, fmt: LegFormat, rtcp_mux: bool = False) -> None:
        """The payload formats offer/answer settled (again after a re-INVITE)."""
        self.format = fmt
        self.rtcp_mux = rtcp_mux
        self._receive_types = fmt.receive_types | fmt.event_receive_types
        if self.reception is not None and self.reception.clock_rate != fmt.clock_rate:
            self._retire_reception()

    @property
    def peer(self) -> tuple[str, int] | None:
        """Where our RTP goes: the latched source, or the SDP's address until then."""
        return self._rtp.peer

    @property
    def latched(self) -> bool:
        """True once the peer's RTP source address is known."""
        return self._rtp.latched

    def close(self) -> None:
        """Stop taking packets (the pair goes back to its pool with the caller)."""
        self.sink = None
        self.on_sender_report = None
        self.pair.rtp.handler = None
        self.pair.rtcp.handler = None

    # -- receiving --------------------------------------------------------------------------

    def _rtp_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        counters = self.counters
        try:
            if len(data) > 1 and 192 <= data[1] <= 223:
                if self.rtcp_mux:
                    self._rtcp_datagram(data, addr)
                else:
                    counters.dropped_malformed += 1
                return
            sock = self._rtp
            latched = sock.latched
            if not sock.admits(addr):
                counters.dropped_source += 1
                return
            if self.srtp is not None:
                try:
                    data = self.srtp.unprotect_rtp(data)
                except ValueError:
                    counters.dropped_srtp += 1
                    return
            if len(data) < 12:
                counters.dropped_malformed += 1
                return
            first, second, sequence_number, timestamp, ssrc = _unpack_header(data)
            if first >> 6 != 2:
                counters.dropped_malformed += 1
                return
            if second & 0x7F not in self._receive_types:
                counters.dropped_payload_type += 1
                return
            if not latched:
                sock.latch(addr)
            now = self.clock()
            reception = self.reception
            if reception is None or reception.ssrc != ssrc:
                reception = self._new_source(ssrc)
            reception.receive(sequence_number, timestamp, now)
            counters.received += 1
            sink = self.sink
            if sink is not None:
                sink(data, second, sequence_number, timestamp, ssrc, now)
        except Exception:
            counters.dropped_other += 1
            if counters.dropped_other == 1:
                logger.exception("RTP receive handler failed on port %d", self.port)
            else:
                logger.debug("RTP receive handler failed on port %d", self.port, exc_info=True)

    def _new_source(self, ssrc: int) -> ReceptionStats:
        if self.reception is not None:
            self.counters.ssrc_changes += 1
            self._retire_reception()
        fmt = self.format
        reception = ReceptionStats(ssrc, fmt.clock_rate if fmt is not None else 8000)
        self.reception = reception
        return reception

    def _retire_reception(self) -> None:
        old = self.reception
        if old is not None:
            self._history_received += old.received
            self._history_lost += max(old.lost, 0)
        self.reception = None

    def _rtcp_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        counters = self.counters
        try:
            sock = self._rtp if self.rtcp_mux else self._rtcp
            if not sock.admits(addr):
                counters.dropped_source += 1
                return
            if self.srtp is not None:
                try:
                    data = self.srtp.unprotect_rtcp(data)
                except ValueError:
                    counters.dropped_srtp += 1
                    return
            packets = parse_compound(data)
        except (RtcpError, ValueError):
            counters.rtcp_malformed += 1
            return
        except Exception:
            counters.rtcp_malformed += 1
            logger.exception("RTCP receive handler failed on port %d", self.port)
            return
        if not sock.latched:
            sock.latch(addr)
        counters.rtcp_received += 1
        self.scheduler.packet_size(len(data) + 28)
        now = self.wallclock()
        for packet in packets:
            if isinstance(packet, SenderReport):
                if self.reception is not None and packet.ssrc == self.reception.ssrc:
                    self.reception.receive_sender_report(packet, now)
                elif self.on_sender_report is not None:
                    self.on_sender_report(packet.ssrc)
                blocks = packet.reports
            elif isinstance(packet, ReceiverReport):
                blocks = packet.reports
            else:
                continue
            for block in blocks:
                if block.ssrc != self.ssrc:
                    continue
                rtt = round_trip_time(block, now)
                if rtt is not None:
                    self.round_trip = rtt
                self.remote_loss = block.fraction_lost / 256
                fmt = self.format
                rate = fmt.clock_rate if fmt is not None else 8000
                self.remote_jitter = block.jitter / rate

    # -- sending ----------------------------------------------------------------------------

    def send(self, payload_type: int, marker: bool, timestamp: int, payload: bytes) -> None:
        """Send one packet of our stream with the next sequence number."""
        sequence_number = self.sequence_number
        self.sequence_number = (sequence_number + 1) & 0xFFFF
        self.send_packet(
            _pack_header(
                0x80,
                payload_type | 0x80 if marker else payload_type,
                sequence_number,
                timestamp,
                self.ssrc,
            )
            + payload,
            timestamp,
            len(payload),
        )

    def send_packet(
        self, data: bytes, timestamp: int, payload_size: int, now: float | None = None
    ) -> None:
        """Send a packet whose header already carries our SSRC and sequence number; `now` is
        the leg clock's time when the caller has it."""
        peer = self._rtp.peer
        if peer is None:
            return
        if self.srtp is not None:
            data = self.srtp.protect_rtp(data)
        transport = self.pair.rtp.transport
        if transport is not None:
            transport.sendto(data, peer)
        self.timestamp = timestamp
        self.last_send_time = self.clock() if now is None else now
        sender = self.sender
        sender.packet_count += 1
        sender.octet_count += payload_size
        self.counters.sent += 1
        self._sent_since_report = True

    # -- RTCP reports -----------------------------------------------------------------------

    def rtcp_timer(self) -> float:
        """When the next report is due (the leg's clock)."""
        return self.scheduler.get_timer()

    def send_report(self, now: float) -> bool:
        """Send an SR or RR with SDES when one is due at `now`; True when one was sent."""
        if not self.scheduler.handle_timer(now):
            return False
        wall = self.wallclock()
        blocks: tuple[ReportBlock, ...] = ()
        if self.reception is not None and self.reception.received:
            blocks = (self.reception.report_block(wall),)
        if self._sent_since_report and self.last_send_time is not None:
            fmt = self.format
            rate = fmt.clock_rate if fmt is not None else 8000
            rtp_time = self.timestamp + int((now - self.last_send_time) * rate)
            report: SenderReport | ReceiverReport = self.sender.sender_report(
                wall, rtp_time, blocks
            )
        else:
            report = ReceiverReport(self.ssrc, blocks)
        self._sent_since_report = False
        sdes = SourceDescription(
            (SdesChunk(self.ssrc, (SdesItem(SDES_CNAME, self.cname.encode()),)),)
        )
        data = serialize_compound([report, sdes])
        sock = self._rtp if self.rtcp_mux else self._rtcp
        peer = sock.peer
        if peer is None:
            return False
        try:
            if self.srtp is not None:
                data = self.srtp.protect_rtcp(data)
        except ValueError:
            return False
        (self.pair.rtp if self.rtcp_mux else self.pair.rtcp).sendto(data, peer)
        self.counters.rtcp_sent += 1
        self.scheduler.packet_size(len(data) + 28)
        return True

    # -- quality ----------------------------------------------------------------------------

    def quality(self) -> LegQuality:
        """The leg's media quality so far (RFC 3550 figures, E-model MOS)."""
        received = self._history_received
        lost = self._history_lost
        jitter = 0.0
        if self.reception is not None:
            received += self.reception.received
            lost += max(self.reception.lost, 0)
            jitter = self.reception.jitter_seconds
        expected = received + lost
        loss = lost / expected if expected else 0.0
        mos = None
        fmt = self.format
        if received:
            try:
                mos = estimate_mos(
                    fmt.encoding_name if fmt is not None else "PCMU",
                    (self.round_trip or 0.0) * 500,
                    min(loss, 1.0),
                    jitter * 1000,
                )
            except ValueError:
                mos = None
        return LegQuality(
            packets_received=received,
            packets_lost=lost,
            loss=loss,
            jitter_ms=jitter * 1000,
            round_trip_ms=None if self.round_trip is None else self.round_trip * 1000,
            remote_loss=self.remote_loss,
            remote_jitter_ms=None if self.remote_jitter is None else self.remote_jitter * 1000,
            mos=mos,
        )
