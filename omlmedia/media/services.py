"""Media services for a SIP leg: music on hold, call recording, DTMF echo.

Each service takes an RTP/RTCP port pair (RFC 3550 §11) from the pool and has this shape:
`__init__(pool, host)`, `await start(stream)` returning our RTP port, `stop()`. The router
needs our port before it can answer, and the stream only after: it may `await bind()` first
(the port for `negotiate()`), then `await start(answer.audio)`, which returns the same port.
`start()` refuses codecs other than PCMU and PCMA with `UnsupportedStreamError`, an
`OfferAnswerError` whose status is 488, before binding anything; negotiating with
`CAPABILITIES` avoids it altogether.

Receiving follows symmetric RTP (RFC 4961), the rule echo applies: until the peer has sent
anything we send to the address of its SDP; the first valid RTP packet (version 2, a negotiated
payload type) latches its source address, a caller behind NAT included, and from then on we send
there and drop, and count, packets from any other address. Every per-packet handler catches,
counts and drops what it cannot use and never raises into the event loop.

Sending is paced by one re-armed `loop.call_at` timer per service that schedules against
absolute time (`epoch + index * ptime`). Packet `index` carries RTP timestamp
`timestamp_base + index * samples_per_packet`, so timestamps follow the wall clock across pauses;
a late timer catches up with at most `MAX_BURST` packets and a longer stall skips the missed
packets (counted in `stats.skipped`) instead of bursting them. SSRC, first sequence number and
timestamp base are random (RFC 3550 §5.1); the first packet of each talkspurt has the marker.

Not done yet: RTCP is received and counted but no sender or receiver reports are sent, and
SRTP streams are not supported (negotiate plain RTP/AVP).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import secrets
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from omlmedia.media.dtmf import (
    DtmfPacket,
    DtmfReceiver,
    DtmfSender,
    ReceivedDigit,
    event_for_digit,
)
from omlmedia.media.g711 import G711Codec, UnsupportedCodecError, codec_for_name
from omlmedia.media.ports import PortPair, RtpSocketPool
from omlmedia.media.rtp import RtpPacket, is_rtcp, rtp_header, timestamp_delta
from omlmedia.media.tones import dtmf_tone, music_on_hold
from sip.sdp import PCMA, PCMU, TELEPHONE_EVENT, MediaCapabilities, NegotiatedStream
from sip.sdp import OfferAnswerError as _OfferAnswerError

__all__ = [
    "CAPABILITIES",
    "MAX_BURST",
    "DtmfEcho",
    "MediaService",
    "MediaStats",
    "MusicOnHold",
    "PacketPlacer",
    "Recorder",
    "UnsupportedStreamError",
    "WavWriter",
]

logger = logging.getLogger(__name__)

CAPABILITIES = MediaCapabilities((PCMU, PCMA, TELEPHONE_EVENT), rtcp_mux=False)
"""What these services can answer (RFC 3264 §6): G.711 µ-law and A-law, telephone-event
(RFC 4733), RTCP on its own port."""

MAX_BURST = 3
"""The most packets a late pacing timer sends at once; older missed packets are skipped."""

RATE = 8000
"""The G.711 sample rate and RTP clock rate (RFC 3551 §4.5.14)."""

_PTIMES = (10, 20, 30, 40, 60)
Samples = npt.NDArray[np.int16]


class UnsupportedStreamError(_OfferAnswerError):
    """A negotiated stream these services cannot carry (not G.711 at 8 kHz): answer 488."""


@dataclass(slots=True)
class MediaStats:
    """Per-service packet counters."""

    received: int = 0
    """RTP packets accepted from the peer."""
    sent: int = 0
    """RTP packets sent (audio and telephone-event)."""
    dropped: int = 0
    """Datagrams dropped: malformed, unknown payload type, foreign source, handler error."""
    rtcp: int = 0
    """RTCP packets received (read and ignored)."""
    skipped: int = 0
    """Packets not sent because the pacing timer ran too late."""
    errors: int = 0
    """Unexpected exceptions in a handler or a tick (a bug): logged once, then counted."""


def _log_error(stats: MediaStats, message: str) -> None:
    if stats.errors == 1:
        logger.exception(message)
    else:
        logger.debug(message, exc_info=True)


class _Pacer:
    """Calls `tick(index)` at loop time `epoch + index * interval` until it returns False."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        tick: Callable[[int], bool],
        stats: MediaStats,
    ) -> None:
        self.loop = loop
        self.epoch = loop.time()
        self.interval = interval
        self.tick = tick
        self.stats = stats
        self.next_index = 0
        self.handle: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self.handle is not None

    def start(self) -> None:
        if self.handle is None:
            elapsed = (self.loop.time() - self.epoch) / self.interval
            self.next_index = max(self.next_index, math.floor(elapsed + 1e-3))
            self.handle = self.loop.call_at(self.epoch + self.next_index * self.interval, self._run)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _run(self) -> None:
        due = math.floor((self.loop.time() - self.epoch) / self.interval + 1e-3)
        if due - self.next_index >= MAX_BURST:
            skip = due - MAX_BURST + 1 - self.next_index
            self.stats.skipped += skip
            self.next_index += skip
        while self.next_index <= due:
            index = self.next_index
            self.next_index += 1
            try:
                more = self.tick(index)
            except Exception:
                self.stats.errors += 1
                _log_error(self.stats, "media service tick failed")
                more = True
            if not more:
                self.handle = None
                return
        self.handle = self.loop.call_at(self.epoch + self.next_index * self.interval, self._run)


def _literal_destination(address: str, port: int) -> tuple[str, int] | None:
    """Where the SDP says to send: None for port 0, the hold address 0.0.0.0 (RFC 3264 §8.4)
    and host names (resolving one per packet would block the loop; wait for latching)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if not port or ip.is_unspecified:
        return None
    return (address, port)


class MediaService:
    """The RTP side of a service: port pair, latching, pacing, sending (RFC 3550, RFC 4961).

    Subclasses receive accepted packets in `_on_packet` and send from `_tick`.
    """

    def __init__(self, pool: RtpSocketPool, host: str) -> None:
        self._pool = pool
        self.host = host
        self.port = 0
        self.stats = MediaStats()
        self.stream: NegotiatedStream | None = None
        self.codec: G711Codec | None = None
        self.payload_type = 0
        """The payload type the peer gave the codec (what we send and expect)."""
        self.event_payload_type: int | None = None
        """The telephone-event payload type, when the peer offered it (RFC 4733)."""
        self.peer: tuple[str, int] | None = None
        """The latched source address of the peer (RFC 4961), None until it sends."""
        self.ptime = 20
        self.samples_per_packet = RATE * 20 // 1000
        self.ssrc = secrets.randbits(32)
        self.sequence_number = secrets.randbits(16)
        self.timestamp_base = secrets.randbits(32)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pair: PortPair | None = None
        self._pacer: _Pacer | None = None
        self._payload_types: frozenset[int] = frozenset()
        self._sdp_destination: tuple[str, int] | None = None
        self._talkspurt = False
        self._stopped = False

    # -- life cycle -------------------------------------------------------------------------

    async def bind(self) -> int:
        """Bind the port pair (trying the next pair when one is busy); returns the RTP port."""
        if self.port:
            return self.port
        if self._stopped:
            raise RuntimeError("media service is stopped")
        self._loop = asyncio.get_running_loop()
        pair = await self._pool.acquire()
        self._pair, self.port = pair, pair.port
        pair.rtp.handler = self._datagram
        pair.rtcp.handler = self._rtcp_datagram
        if self._stopped:
            self._close()
            raise RuntimeError("media service is stopped")
        return pair.port

    async def start(self, stream: NegotiatedStream) -> int:
        """Carry `stream`, the outcome of offer/answer (RFC 3264); returns our RTP port.

        Raises `UnsupportedStreamError` (answer 488) before binding anything when the codec is
        not G.711, `OSError` or `PortsExhausted` when no port pair can be bound.
        """
        if self.stream is not None:
            raise RuntimeError("media service is already started")
        codec = self._check(stream)
        port = await self.bind()
        ptime = stream.ptime if stream.ptime in _PTIMES else 20
        self.ptime = ptime
        self.samples_per_packet = RATE * ptime // 1000
        try:
            await self._prepare(codec)
        except BaseException:
            self.stop()
            raise
        if self._stopped:
            raise RuntimeError("media service is stopped")
        assert self._loop is not None
        self._pacer = _Pacer(self._loop, ptime / 1000, self._pace, self.stats)
        self._apply(stream, codec)
        return port

    def update(self, stream: NegotiatedStream) -> None:
        """Follow a re-INVITE or UPDATE (RFC 3264 §8): address, codec, payload types, direction
        (hold and resume). A new address unlatches the peer; the packet time stays.

        Raises `UnsupportedStreamError` when the new codec is not G.711.
        """
        codec = self._check(stream)
        old = self.stream
        if old is None:
            raise RuntimeError("media service is not started")
        if (stream.remote_address, stream.remote_port) != (old.remote_address, old.remote_port):
            self.peer = None
        self._apply(stream, codec)

    def stop(self) -> None:
        """Stop sending, close both sockets and give the port pair back; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._pacer is not None:
            self._pacer.stop()
        try:
            self._stopping()
        finally:
            self._close()

    @property
    def packets(self) -> int:
        """RTP packets received and sent."""
        return self.stats.received + self.stats.sent

    @property
    def running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        return self.stream is not None and not self._stopped

    # -- receiving --------------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        stats = self.stats
        try:
            stream = self.stream
            if stream is None or self._stopped:
                stats.dropped += 1
                return
            if stream.rtcp_mux and is_rtcp(data):
                self._rtcp_datagram(data, addr)
                return
            peer = self.peer
            if peer is not None and (addr[0] != peer[0] or addr[1] != peer[1]):
                stats.dropped += 1
                return
            packet = RtpPacket.parse(data)
            if packet.payload_type not in self._payload_types:
                stats.dropped += 1
                return
            if peer is None:
                self.peer = (addr[0], addr[1])
            stats.received += 1
            assert self._loop is not None
            self._on_packet(packet, self._loop.time())
        except Exception as exc:
            stats.dropped += 1
            if not isinstance(exc, ValueError):
                stats.errors += 1
                _log_error(stats, "media service packet handler failed")

    def _rtcp_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 8 and data[0] >> 6 == 2 and is_rtcp(data):
            self.stats.rtcp += 1
        else:
            self.stats.dropped += 1

    def _on_packet(self, packet: RtpPacket, now: float) -> None:
        """A valid packet of a negotiated payload type from the peer."""

    # -- sending ----------------------------------------------------------------------------

    def _destination(self) -> tuple[str, int] | None:
        return self.peer if self.peer is not None else self._sdp_destination

    def _send(self, payload_type: int, marker: bool, timestamp: int, payload: bytes) -> bool:
        destination = self._destination()
        transport = self._pair.rtp.transport if self._pair is not None else None
        if destination is None or transport is None:
            return False
        sequence_number = self.sequence_number
        self.sequence_number = (sequence_number + 1) & 0xFFFF
        transport.sendto(
            rtp_header(payload_type, marker, sequence_number, timestamp, self.ssrc) + payload,
            destination,
        )
        self.stats.sent += 1
        return True

    def _timestamp(self, index: int) -> int:
        return (self.timestamp_base + index * self.samples_per_packet) & 0xFFFFFFFF

    def _send_audio(self, index: int, payload: bytes) -> None:
        if self._send(self.payload_type, not self._talkspurt, self._timestamp(index), payload):
            self._talkspurt = True

    def _pace(self, index: int) -> bool:
        more = self._tick(index)
        if not more:
            self._talkspurt = False
        return more

    def _resume(self) -> None:
        """Start pacing if the stream sends and the service has something to send."""
        stream = self.stream
        if (
            self._pacer is not None
            and not self._stopped
            and stream is not None
            and stream.direction.sends
            and self._has_media()
        ):
            self._pacer.start()

    # -- hooks ------------------------------------------------------------------------------

    def _has_media(self) -> bool:
        """True when `_tick` has something to send."""
        return False

    def _tick(self, index: int) -> bool:
        """Send what packet `index` carries; False when there is nothing more to send."""
        return False

    async def _prepare(self, codec: G711Codec) -> None:
        """Get ready before the stream starts (off the event loop if it is costly)."""

    def _codec_changed(self, codec: G711Codec) -> None:
        """The codec is set or changed (start or re-INVITE)."""

    def _stopping(self) -> None:
        """Called once by `stop()`, before the sockets close."""

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _check(stream: NegotiatedStream) -> G711Codec:
        if stream.codec.clock_rate != RATE or stream.codec.channels != 1:
            raise UnsupportedStreamError("codec not supported by this service")
        try:
            return codec_for_name(stream.codec.encoding_name)
        except UnsupportedCodecError:
            raise UnsupportedStreamError("codec not supported by this service") from None

    def _apply(self, stream: NegotiatedStream, codec: G711Codec) -> None:
        self.stream = stream
        self.payload_type = stream.codec.payload_type
        event = stream.telephone_event
        self.event_payload_type = event.payload_type if event is not None else None
        self._payload_types = frozenset(
            {self.payload_type} | ({event.payload_type} if event is not None else set())
        )
        self._sdp_destination = _literal_destination(stream.remote_address, stream.remote_port)
        if codec is not self.codec:
            self.codec = codec
            self._codec_changed(codec)
        if stream.direction.sends:
            self._resume()
        elif self._pacer is not None:
            self._pacer.stop()
            self._talkspurt = False

    def _close(self) -> None:
        if self._pair is not None:
            self._pool.release(self._pair)
            self._pair = None
        self.port = 0


# -- music on hold ----------------------------------------------------------------------------

_MOH_PAYLOADS: dict[tuple[str, int], tuple[bytes, ...]] = {}


def _moh_payloads(codec: G711Codec, samples_per_packet: int) -> tuple[bytes, ...]:
    key = (codec.name, samples_per_packet)
    payloads = _MOH_PAYLOADS.get(key)
    if payloads is None:
        encoded = codec.encode(music_on_hold(RATE))
        payloads = tuple(
            encoded[i : i + samples_per_packet] for i in range(0, len(encoded), samples_per_packet)
        )
        _MOH_PAYLOADS[key] = payloads
    return payloads


class MusicOnHold(MediaService):
    """Plays the music-on-hold loop (`tones.music_on_hold`) to the peer as G.711 RTP.

    The music position follows the wall clock (packet `index` plays frame `index` of the loop),
    so hold and resume (RFC 3264 §8.4: we stop sending while the peer's answer says we must not)
    continue where the music would be. The loop is rendered and encoded once per process, off
    the event loop.
    """

    def __init__(self, pool: RtpSocketPool, host: str) -> None:
        super().__init__(pool, host)
        self._payloads: tuple[bytes, ...] = ()

    async def _prepare(self, codec: G711Codec) -> None:
        if (codec.name, self.samples_per_packet) not in _MOH_PAYLOADS:
            assert self._loop is not None
            await self._loop.run_in_executor(None, _moh_payloads, codec, self.samples_per_packet)

    def _codec_changed(self, codec: G711Codec) -> None:
        self._payloads = _moh_payloads(codec, self.samples_per_packet)

    def _has_media(self) -> bool:
        return True

    def _tick(self, index: int) -> bool:
        payloads = self._payloads
        self._send_audio(index, payloads[index % len(payloads)])
        return True


# -- recording --------------------------------------------------------------------------------


class PacketPlacer:
    """Puts decoded audio packets on a sample timeline by RTP timestamp (RFC 3550 §5.1).

    `push()` returns the chunks of samples that are now final, in timeline order, with gaps
    (lost packets, silence suppression) filled with zeros; packets are held back `window`
    seconds so that reordering within that window is undone. Duplicates and packets older than
    what was released are dropped and counted. Timestamps are unwrapped modulo 2**32 and checked
    against arrival time: a new SSRC, or a timestamp more than `max_skew` seconds away from what
    the wall clock predicts (a peer that restarts its clock, or stops advancing it while
    silent), re-anchors the timeline on the wall clock, so a bogus jump never writes hours of
    silence and a pause is never lost.
    """

    def __init__(self, rate: int = RATE, window: float = 0.1, max_skew: float = 1.0) -> None:
        self.rate = rate
        self.window = round(window * rate)
        self.max_skew = max_skew * rate
        self.written: int | None = None
        """Timeline position (samples) up to which audio was released."""
        self.late = 0
        self.duplicates = 0
        self.resyncs = 0
        self._ssrc: int | None = None
        self._ref_timestamp = 0
        self._ref_position = 0
        self._ref_now = 0.0
        self._end = 0
        self._pending: dict[int, Samples] = {}
        self._zeros = np.zeros(rate, dtype=np.int16)

    def push(self, ssrc: int, timestamp: int, samples: Samples, now: float) -> list[Samples]:
        """Place one packet's samples; returns the chunks released by it."""
        if self._ssrc is None:
            self._ssrc = ssrc
            position = 0
            self._ref_timestamp, self._ref_position, self._ref_now = timestamp, 0, now
        else:
            position = self._ref_position + timestamp_delta(timestamp, self._ref_timestamp)
            expected = self._ref_position + (now - self._ref_now) * self.rate
            if ssrc != self._ssrc or abs(position - expected) > self.max_skew:
                self.resyncs += 1
                self._ssrc = ssrc
                position = max(self._end, round(expected))
                self._ref_timestamp, self._ref_position, self._ref_now = timestamp, position, now
            elif position > self._ref_position:
                self._ref_timestamp, self._ref_position, self._ref_now = timestamp, position, now
        end = position + len(samples)
        written = self.written
        if written is not None and end <= written:
            self.late += 1
            return []
        if position in self._pending:
            self.duplicates += 1
            return []
        self._pending[position] = samples
        if end > self._end:
            self._end = end
        return self._release(self._end - self.window)

    def flush(self) -> list[Samples]:
        """Release everything held back (the end of the recording)."""
        return self._release(None)

    def _release(self, limit: int | None) -> list[Samples]:
        released: list[Samples] = []
        pending = self._pending
        while pending:
            position = min(pending)
            if limit is not None and position >= limit:
                break
            samples = pending.pop(position)
            written = position if self.written is None else self.written
            if position > written:
                gap = position - written
                while gap > 0:
                    chunk = min(gap, len(self._zeros))
                    released.append(self._zeros[:chunk])
                    gap -= chunk
            elif position < written:
                samples = samples[written - position :]
                position = written
                if not len(samples):
                    continue
            released.append(samples)
            self.written = position + len(samples)
        return released


_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")


class WavWriter:
    """A 16-bit PCM WAV file (RIFF WAVE, WAVE_FORMAT_PCM) written as audio arrives.

    The header is written when the file opens and its sizes are brought up to date every
    `update_interval` seconds of audio and on `close()`, so the file stays a valid WAV even if
    the process dies mid-call (losing at most that interval). `close()` is idempotent. RIFF
    limits a file to 4 GiB, about 37 hours of 8 kHz stereo.
    """

    def __init__(
        self, path: str | Path, rate: int = RATE, channels: int = 2, update_interval: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.rate = rate
        self.channels = channels
        self._block = 2 * channels
        self._update_bytes = max(1, round(update_interval * rate)) * self._block
        self._data = 0
        self._updated = 0
        self._file = open(self.path, "wb")
        self._closed = False
        self._file.write(self._header())

    @property
    def frames(self) -> int:
        """Sample frames written."""
        return self._data // self._block

    @property
    def duration(self) -> float:
        """Seconds of audio written."""
        return self.frames / self.rate

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._closed

    def write(self, frames: npt.NDArray[np.int16]) -> None:
        """Append int16 frames: shape (n, channels), or 1-D already interleaved."""
        if self._closed:
            raise ValueError("WAV file is closed")
        data = np.ascontiguousarray(frames, dtype="<i2").tobytes()
        if len(data) % self._block:
            raise ValueError("WAV frames do not match the channel count")
        self._file.write(data)
        self._data += len(data)
        if self._data - self._updated >= self._update_bytes:
            self._update()

    def close(self) -> None:
        """Write the final sizes and close the file; does nothing the second time."""
        if self._closed:
            return
        self._closed = True
        try:
            self._update()
        finally:
            self._file.close()

    def _header(self) -> bytes:
        return _WAV_HEADER.pack(
            b"RIFF",
            36 + self._data,
            b"WAVE",
            b"fmt ",
            16,
            1,
            self.channels,
            self.rate,
            self.rate * self._block,
            self._block,
            16,
            b"data",
            self._data,
        )

    def _update(self) -> None:
        self._file.seek(0)
        self._file.write(self._header())
        self._file.seek(0, 2)
        self._updated = self._data


class Recorder(MediaService):
    """Records what the caller sends to a WAV file at `path`: 16-bit stereo at 8 kHz, the caller
    on the left channel and the other side on the right (silence for this target), the layout
    of the product's call recordings.

    Packets are placed by RTP timestamp (`PacketPlacer`): gaps become silence, duplicates are
    ignored, reordering within `window` seconds is undone. The recording starts with the first
    packet. `stop()` (idempotent) writes what is held back and finalises the file. A write
    error (disk full) stops the recording, not the call.
    """

    def __init__(
        self, pool: RtpSocketPool, host: str, path: str | Path, *, window: float = 0.1
    ) -> None:
        super().__init__(pool, host)
        self.path = Path(path)
        self.placer = PacketPlacer(RATE, window)
        self.writer: WavWriter | None = None

    @property
    def duration(self) -> float:
        """Seconds recorded so far."""
        return self.writer.duration if self.writer is not None else 0.0

    async def _prepare(self, codec: G711Codec) -> None:
        self.writer = WavWriter(self.path, RATE, 2)

    def _on_packet(self, packet: RtpPacket, now: float) -> None:
        codec = self.codec
        if packet.payload_type != self.payload_type or codec is None or self.writer is None:
            return
        samples = codec.decode(packet.payload)
        self._write(self.placer.push(packet.ssrc, packet.timestamp, samples, now))

    def _write(self, chunks: list[Samples]) -> None:
        writer = self.writer
        if not chunks or writer is None or writer.closed:
            return
        left = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        frames = np.zeros((len(left), 2), dtype=np.int16)
        frames[:, 0] = left
        try:
            writer.write(frames)
        except OSError:
            logger.exception("recording to %s failed", self.path)
            try:
                writer.close()
            except OSError:
                pass

    def _stopping(self) -> None:
        writer = self.writer
        if writer is None:
            return
        try:
            self._write(self.placer.flush())
        finally:
            try:
                writer.close()
            except OSError:
                logger.exception("closing recording %s failed", self.path)


# -- DTMF echo --------------------------------------------------------------------------------


@lru_cache(maxsize=128)
def _tone_payloads(
    codec: G711Codec, digit: str, samples_per_packet: int, tone: float, gap: float
) -> tuple[bytes, ...]:
    samples = dtmf_tone(digit, tone, RATE)
    tone_frames = -(-len(samples) // samples_per_packet)
    frames = max(-(-(len(samples) + round(gap * RATE)) // samples_per_packet), tone_frames + 2)
    padded = np.zeros(frames * samples_per_packet, dtype=np.int16)
    padded[: len(samples)] = samples
    encoded = codec.encode(padded)
    return tuple(
        encoded[i : i + samples_per_packet] for i in range(0, len(encoded), samples_per_packet)
    )


class DtmfEcho(MediaService):
    """Collects the caller's digits and plays each one back.

    Digits come from RFC 4733 telephone-events (`DtmfReceiver`, each reported once) or from
    `add_digit()` (SIP INFO, RFC 6086). Each is appended to `digits`; received ones are also
    passed to `on_digit(digit, duration_ms)` so that the router can log them (digits given to
    `add_digit()` are already known to the router). Playback is an in-band ITU-T Q.23 tone
    burst of `tone` seconds followed by `gap` seconds of silence, and, when the peer offered
    telephone-event, the same digit as RFC 4733 events (start with marker, updates, three end
    packets) stamped with the burst's start.
    """

    def __init__(
        self,
        pool: RtpSocketPool,
        host: str,
        on_digit: Callable[[str, int], None] | None = None,
        *,
        tone: float = 0.1,
        gap: float = 0.1,
    ) -> None:
        super().__init__(pool, host)
        self.on_digit = on_digit
        self.tone = tone
        self.gap = gap
        self.digits: list[str] = []
        self.receiver = DtmfReceiver(RATE)
        self._queue: deque[str] = deque()
        self._burst: tuple[bytes, ...] = ()
        self._events: dict[int, list[DtmfPacket]] = {}
        self._burst_index = 0
        self._event_timestamp = 0
        self._timer: asyncio.TimerHandle | None = None

    def add_digit(self, digit: str) -> None:
        """A digit received another way (SIP INFO): record it and play it back.

        Raises `DtmfError` when `digit` is not one of 0-9 * # A-D.
        """
        event_for_digit(digit)
        self._play(digit.upper())

    def _on_packet(self, packet: RtpPacket, now: float) -> None:
        if packet.payload_type != self.event_payload_type:
            return
        digits = self.receiver.receive(
            packet.sequence_number, packet.timestamp, packet.marker, packet.payload, now
        )
        self._report(digits)
        self._arm_timer()

    def _report(self, digits: tuple[ReceivedDigit, ...]) -> None:
        for received in digits:
            self._play(received.digit)
            if self.on_digit is not None:
                try:
                    self.on_digit(received.digit, received.duration_ms)
                except Exception:
                    logger.exception("on_digit callback failed")

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.receiver.get_timer()
        if when is not None and self._loop is not None and not self._stopped:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        assert self._loop is not None
        try:
            self._report(self.receiver.handle_timer(self._loop.time()))
        except Exception:
            logger.exception("DTMF timer failed")
        self._arm_timer()

    def _play(self, digit: str) -> None:
        self.digits.append(digit)
        self._queue.append(digit)
        self._resume()

    def _has_media(self) -> bool:
        return bool(self._queue) or bool(self._burst)

    def _tick(self, index: int) -> bool:
        offset = index - self._burst_index
        if offset >= len(self._burst):
            self._burst = ()
            if not self._queue or self.codec is None:
                return False
            digit = self._queue.popleft()
            self._burst = _tone_payloads(
                self.codec, digit, self.samples_per_packet, self.tone, self.gap
            )
            self._burst_index, offset = index, 0
            self._event_timestamp = self._timestamp(index)
            self._events = {}
            if self.event_payload_type is not None:
                sender = DtmfSender(RATE, self.ptime / 1000)
                for packet in sender.packets(digit, self.tone):
                    self._events.setdefault(packet.slot, []).append(packet)
        event_payload_type = self.event_payload_type
        if event_payload_type is not None:
            for packet in self._events.get(offset, ()):
                self._send(event_payload_type, packet.marker, self._event_timestamp, packet.payload)
        self._send_audio(index, self._burst[offset])
        return True

    def _stopping(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
