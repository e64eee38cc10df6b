"""Per-leg media quality: RTCP reception statistics, round-trip time, report timing and MOS.

`ReceptionStats` follows RFC 3550 Appendix A.1 (sequence validation, probation, wrap counting),
A.3 (expected, lost, fraction lost since the last report) and A.8 (interarrival jitter) for one
source; the caller passes the arrival time `now` in seconds, so the same clock must be used for
every call (the Unix wall clock when LSR/DLSR and round-trip times are wanted, since RFC 3550 §4
puts wall-clock time in SRs). `round_trip_time` reads a report block the peer sent back
(RFC 3550 §6.4.1), `RtcpScheduler` says when to send the next report (RFC 3550 §6.2, §6.3.1,
simplified for two-party calls) and `estimate_mos` turns the figures into a MOS through the
simplified E-model (ITU-T G.107).

Measured as in `rtcp`: `ReceptionStats.receive` 0.7 µs per RTP packet, `report_block` 1.6 µs,
`estimate_mos` 1.8 µs.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

from media.rtcp import (
    ReportBlock,
    SenderReport,
    ntp_middle,
    ntp_short,
    ntp_timestamp,
)

__all__ = [
    "CODEC_IMPAIRMENTS",
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "MIN_SEQUENTIAL",
    "CodecImpairment",
    "QualityError",
    "ReceptionStats",
    "RtcpScheduler",
    "SenderStats",
    "estimate_mos",
    "mos_from_r",
    "r_factor",
    "round_trip_time",
]

MAX_DROPOUT = 3000
"""Largest forward jump in sequence numbers taken as loss, not a restart (RFC 3550 A.1)."""
MAX_MISORDER = 100
"""Largest backward jump taken as a late or duplicate packet (RFC 3550 A.1)."""
MIN_SEQUENTIAL = 2
"""Packets in sequence needed before a source is valid (RFC 3550 A.1)."""
RTP_SEQ_MOD = 1 << 16


class QualityError(ValueError):
    """A quality figure out of range or an unknown codec given to the E-model."""


class ReceptionStats:
    """Reception statistics of one RTP source (RFC 3550 Appendix A.1, A.3, A.8).

    Call `receive` for every RTP packet of the source, `receive_sender_report` for every SR it
    sends, and `report_block` when an RR or SR is built: it returns the block and starts the next
    report interval (fraction lost is counted since the previous call).
    """

    __slots__ = (
        "_epoch",
        "_transit",
        "bad_seq",
        "base_seq",
        "clock_rate",
        "cycles",
        "expected_prior",
        "jitter",
        "last_sr",
        "last_sr_time",
        "max_seq",
        "probation",
        "received",
        "received_prior",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        self.ssrc = ssrc
        """The source these statistics are about."""
        self.clock_rate = clock_rate
        """RTP timestamp units per second of the source's payload format."""
        self.base_seq = 0
        self.max_seq = 0
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        """Sequence number wraps, times 65536 (RFC 3550 A.1)."""
        self.received = 0
        """Valid packets received, duplicates included (RFC 3550 A.1)."""
        self.received_prior = 0
        self.expected_prior = 0
        self.probation = -1
        self.jitter = 0.0
        """Interarrival jitter in timestamp units (RFC 3550 A.8)."""
        self.last_sr = 0
        """Middle 32 bits of the NTP timestamp of the last SR received (RFC 3550 §6.4.1)."""
        self.last_sr_time: float | None = None
        self._transit: float | None = None
        self._epoch = 0.0

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        self._transit = None

    def _update_seq(self, seq: int) -> bool:
        max_seq = self.max_seq
        udelta = (seq - max_seq) & 0xFFFF
        if self.probation:
            if seq == (max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        self.received += 1
        return True

    def receive(self, sequence_number: int, timestamp: int, now: float) -> bool:
        """Count one RTP packet that arrived at `now` (seconds) (RFC 3550 A.1, A.8).

        Returns False while the source is on probation and for a packet that jumps far from the
        sequence (the first of a possible restart); such packets count for nothing.
        """
        if not self.probation and sequence_number == (self.max_seq + 1) & 0xFFFF:
            # The common case, in order (RFC 3550 A.1 with udelta == 1), without a call.
            if not sequence_number:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = sequence_number
            self.received += 1
        else:
            if self.probation < 0:
                self._epoch = now
                self._init_seq(sequence_number)
                self.max_seq = (sequence_number - 1) & 0xFFFF
                self.probation = MIN_SEQUENTIAL
            if not self._update_seq(sequence_number):
                return False
        transit = (now - self._epoch) * self.clock_rate - timestamp
        previous = self._transit
        self._transit = transit
        if previous is not None:
            d = transit - previous
            if not -0x80000000 <= d < 0x80000000:
                d = (d + 0x80000000) % 0x100000000 - 0x80000000
            self.jitter += (abs(d) - self.jitter) / 16
        return True

    def receive_sender_report(self, report: SenderReport, now: float) -> None:
        """Remember the SR the source sent, for LSR and DLSR (RFC 3550 §6.4.1)."""
        self.last_sr = ntp_middle(report.ntp_timestamp)
        self.last_sr_time = now

    @property
    def extended_max(self) -> int:
        """The highest sequence number received, with its wraps (RFC 3550 A.3)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the first valid one (RFC 3550 A.3)."""
        if not self.received:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost, negative with duplicates (RFC 3550 A.3), not clamped."""
        return self.expected - self.received

    @property
    def loss_fraction(self) -> float:
        """Cumulative fraction of expected packets lost, in [0, 1], for call records."""
        expected = self.expected
        if expected <= 0:
            return 0.0
        return min(max(self.lost / expected, 0.0), 1.0)

    @property
    def jitter_seconds(self) -> float:
        """The interarrival jitter (RFC 3550 A.8) in seconds."""
        return self.jitter / self.clock_rate

    def report_block(self, now: float) -> ReportBlock:
        """The report block about this source (RFC 3550 §6.4.1, A.3); starts a new interval."""
        expected = self.expected
        lost = min(max(expected - self.received, -0x800000), 0x7FFFFF)
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        dlsr = 0
        if self.last_sr_time is not None:
            dlsr = ntp_short(now - self.last_sr_time)
        return ReportBlock(
            self.ssrc,
            fraction,
            lost,
            (self.cycles + self.max_seq) & 0xFFFFFFFF if self.received else 0,
            min(int(self.jitter), 0xFFFFFFFF),
            self.last_sr,
            dlsr,
        )


class SenderStats:
    """What a sender counts for its sender reports (RFC 3550 §6.4.1)."""

    __slots__ = ("octet_count", "packet_count", "ssrc")

    def __init__(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.packet_count = 0
        """RTP packets sent, modulo 2**32."""
        self.octet_count = 0
        """RTP payload octets sent (no header, no padding), modulo 2**32."""

    def sent(self, payload_size: int) -> None:
        """Count one RTP packet sent with `payload_size` payload octets."""
        self.packet_count = (self.packet_count + 1) & 0xFFFFFFFF
        self.octet_count = (self.octet_count + payload_size) & 0xFFFFFFFF

    def sender_report(
        self, now: float, rtp_timestamp: int, reports: tuple[ReportBlock, ...] = ()
    ) -> SenderReport:
        """An SR stamped with the wall clock `now` and its RTP time (RFC 3550 §6.4.1)."""
        return SenderReport(
            self.ssrc,
            ntp_timestamp(now),
            rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
            reports,
        )


def round_trip_time(block: ReportBlock, now: float) -> float | None:
    """The round-trip time in seconds from a report block about our stream (RFC 3550 §6.4.1).

    `now` is the wall clock (Unix seconds) when the block arrived, the same clock that stamped our
    SRs: RTT = A - LSR - DLSR with A the middle 32 bits of `now` as NTP. None when the peer has
    not received an SR yet (LSR 0) or the result is negative (a clock step, a bogus block).
    """
    if block.lsr == 0:
        return None
    arrival = ntp_middle(ntp_timestamp(now))
    rtt = (arrival - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt >= 0x80000000:
        return None
    return rtt / 65536


_INTERVAL_RNG = random.Random()
"""The RTCP interval's random factor (RFC 3550 §6.3.1) for every scheduler not given its own."""


class RtcpScheduler:
    """When to send the next RTCP report (RFC 3550 §6.2, §6.3.1, A.7), for two-party calls.

    With two members, both senders, the deterministic interval is the larger of the minimum
    (5 s, halved before the first report) and the time 5% of the session bandwidth takes to carry
    both parties' reports; it is then multiplied by a uniform random factor in [0.5, 1.5]. Timer
    reconsideration is not needed with a fixed membership of two, so neither is its e - 3/2
    compensation. `rng` makes the randomisation reproducible in tests; by default every scheduler
    shares one module generator (`_INTERVAL_RNG`): a `random.Random()` per leg seeds itself from
    `os.urandom` (some 12 µs a leg), and the interval's factor needs no unpredictability, only
    uniformity. SSRCs and initial sequence numbers keep `secrets` (`media.leg`).
    """

    __slots__ = (
        "_initial",
        "_next",
        "_rng",
        "average_size",
        "minimum_interval",
        "session_bandwidth",
    )

    def __init__(
        self,
        now: float,
        *,
        rng: random.Random | None = None,
        minimum_interval: float = 5.0,
        session_bandwidth: float | None = None,
    ) -> None:
        self._rng = rng if rng is not None else _INTERVAL_RNG
        self.minimum_interval = minimum_interval
        """Tmin of RFC 3550 §6.2, in seconds."""
        self.session_bandwidth = session_bandwidth
        """The session bandwidth in bits/s (SDP b=AS), or None to use the minimum only."""
        self.average_size = 128.0
        """Average compound RTCP packet size in octets with UDP/IP headers (RFC 3550 §6.3.3)."""
        self._initial = True
        self._next = now + self._randomised()

    def deterministic_interval(self) -> float:
        """Td of RFC 3550 §6.3.1 for two members that both send."""
        minimum = self.minimum_interval / 2 if self._initial else self.minimum_interval
        if self.session_bandwidth:
            rtcp_bytes_per_second = 0.05 * self.session_bandwidth / 8
            return max(minimum, 2 * self.average_size / rtcp_bytes_per_second)
        return minimum

    def _randomised(self) -> float:
        return self.deterministic_interval() * self._rng.uniform(0.5, 1.5)

    def get_timer(self) -> float:
        """When the next report is due."""
        return self._next

    def handle_timer(self, now: float) -> bool:
        """True when a report is due at `now`; the caller sends one and the next is scheduled."""
        if now < self._next:
            return False
        self._initial = False
        self._next = now + self._randomised()
        return True

    def packet_size(self, size: int) -> None:
        """Fold one RTCP packet sent or received (octets, UDP/IP included) into the average
        size (RFC 3550 §6.3.3)."""
        self.average_size += (size - self.average_size) / 16


class CodecImpairment(NamedTuple):
    """E-model codec figures (ITU-T G.107 §7.2): equipment impairment `ie` and packet-loss
    robustness `bpl` without and `bpl_plc` with packet-loss concealment."""

    ie: float
    bpl: float
    bpl_plc: float


_G711 = CodecImpairment(0.0, 4.3, 25.1)
CODEC_IMPAIRMENTS: dict[str, CodecImpairment] = {
    "pcmu": _G711,
    "pcma": _G711,
    "g722": CodecImpairment(0.0, 4.3, 25.1),
    "opus": CodecImpairment(0.0, 25.1, 25.1),
}
"""Per codec (lower-case MIME subtype) figures on the narrowband R scale.

G.711: Ie 0, Bpl 4.3 without PLC and 25.1 with the G.711 Appendix I PLC (ITU-T G.113
Appendix I, Table I.3). G.722 and Opus are wideband codecs, rated by ITU-T G.107.1 on the
wideband scale, which the narrowband formula here cannot express: they are given the G.711
figures (Ie 0; Opus always conceals, so its Bpl is that of G.711 with PLC). These two rows are
provisional planning values, not published narrowband ones.
"""


def _check(value: float, low: float, high: float, message: str) -> None:
    if not low <= value <= high:
        raise QualityError(message)


def r_factor(
    codec: str,
    one_way_delay_ms: float,
    loss_fraction: float,
    jitter_ms: float,
    *,
    plc: bool = True,
) -> float:
    """The transmission rating R of the simplified E-model (ITU-T G.107, as in Cole and
    Rosenbluth, "Voice over IP performance monitoring", 2001): R = 93.2 - Id - Ie_eff.

    The delay is the one-way delay plus a jitter buffer of twice the jitter;
    Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3), and
    Ie_eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl) with Ppl the random loss in percent (G.107 §7.2).
    """
    impairment = CODEC_IMPAIRMENTS.get(codec.lower())
    if impairment is None:
        raise QualityError("unknown codec")
    _check(loss_fraction, 0.0, 1.0, "loss fraction is out of range")
    _check(one_way_delay_ms, 0.0, math.inf, "delay is out of range")
    _check(jitter_ms, 0.0, math.inf, "delay is out of range")
    delay = one_way_delay_ms + 2 * jitter_ms
    if math.isinf(delay):
        raise QualityError("delay is out of range")
    delay_impairment = 0.024 * delay
    if delay > 177.3:
        delay_impairment += 0.11 * (delay - 177.3)
    ppl = 100 * loss_fraction
    ie = impairment.ie
    bpl = impairment.bpl_plc if plc else impairment.bpl
    ie_eff = ie + (95 - ie) * ppl / (ppl + bpl)
    return 93.2 - delay_impairment - ie_eff


def mos_from_r(r: float) -> float:
    """The estimated MOS (conversational quality) of a rating R (ITU-T G.107 Annex B, B-4),
    clamped to [1, 4.5]: the G.107 polynomial dips just below 1 for R under 6.5."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return min(max(1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6, 1.0), 4.5)


def estimate_mos(
    codec: str,
    one_way_delay_ms: float,
    loss_fraction: float,
    jitter_ms: float,
    *,
    plc: bool = True,
) -> float:
    """The MOS of a leg from its RTCP figures through the simplified E-model (ITU-T G.107).

    `loss_fraction` in [0, 1], delays in milliseconds (RTT / 2 for the one-way delay); raises
    `QualityError` for an unknown codec or a figure out of range. See `r_factor`.
    """
    return mos_from_r(r_factor(codec, one_way_delay_ms, loss_fraction, jitter_ms, plc=plc))
