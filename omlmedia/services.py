"""The application's media services for a SIP leg: music on hold, call recording, DTMF echo.

Theory of operation. Every service is one `RtpLeg` (`media.leg`) on a port pair of the
pool, so latching (RFC 4961), validation, reception statistics, RTCP reports (RFC 3550 §6) and
SRTP with SDES keys (RFC 3711, RFC 4568) are the engine's, exactly as on a bridged leg. A service
has this shape: `__init__(pool, host, ...)`; `await bind()` returns our RTP port (the router needs
it to answer); `await start(stream)` takes the outcome of offer/answer (RFC 3264) and returns the
same port; `update(stream)` follows a re-INVITE (address, codec, keys, hold); `stop()` closes
everything, twice if need be. `legs` are what the router's RTCP timer reports on
(`leg.send_report(leg.clock())` once a second, as for bridges). `start()` and `update()` refuse
a codec the codecs module does not carry, or unusable SRTP keys, with `UnsupportedStreamError`, an
`OfferAnswerError` whose status is 488, before binding anything; negotiating with `CAPABILITIES`
avoids it.

- `MusicOnHold` plays the default music on hold (`sound_path("moh")`) in a loop through a
  `LegFeed`, at the leg's codec and packet time; hold (the answer says we must not send) pauses
  it, and a codec change starts a new feed on the same stream.
- `Recorder` orders the caller's packets by RTP timestamp (`PacketPlacer`), decodes them in
  timeline order with the leg's codec (decoder state stays right for G.722 and Opus), conceals
  short gaps (Opus from in-band FEC when the next packet carries it, otherwise the decoder's
  packet-loss concealment), fills longer ones with silence, and writes 16-bit stereo at the
  codec's audio rate (8, 16 or 48 kHz): the caller left, the other side right (silence here).
  WAV by default, Ogg/Opus with `format="opus"` (`media.oggopus`).
- `DtmfEcho` collects RFC 4733 digits (`DtmfReceiver`) and SIP INFO digits (`add_digit`) and
  plays each back as an ITU-T Q.23 tone burst encoded by the leg's codec at its audio rate, with
  the same digit as telephone-events when the peer offered them, on a drift-free `Pacer`.

Our packets continue the leg's own stream (SSRC, sequence number, and a timestamp advanced by
the time since the last packet, with the marker on the first packet of each talkspurt).

Bad input. The leg drops and counts what is not valid RTP of a negotiated payload type from the
latched peer; every per-packet path of a service then catches, counts (`stats.unusable`, plus
`stats.errors` for what is a bug, logged once) and drops, and never raises into the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from media.codecs import (
    CodecError,
    CodecSpec,
    Decoder,
    Encoder,
    UnsupportedCodecError,
    codec_for,
)
from media.dtmf import (
    DtmfPacket,
    DtmfReceiver,
    DtmfSender,
    ReceivedDigit,
    event_for_digit,
)
from media.feed import LegFeed
from media.leg import LegCounters, LegFormat, RtpLeg, leg_format
from media.oggopus import RecordingWriter, open_writer
from media.pacer import Pacer
from media.placer import PacketPlacer
from media.player import MediaFileError, load, sound_path
from media.ports import RtpSocketPool
from media.resample import Resampler
from media.rtp import RtpPacket
from media.srtp import SrtpSession, session_crypto
from media.tones import dtmf_tone
from media.wav import WavWriter
from sip.sdp import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    TELEPHONE_EVENT_48000,
    CryptoAttribute,
    MediaCapabilities,
    NegotiatedStream,
)
from sip.sdp import OfferAnswerError as _OfferAnswerError

__all__ = [
    "CAPABILITIES",
    "DtmfEcho",
    "MediaService",
    "MediaStats",
    "MusicOnHold",
    "Recorder",
    "UnsupportedStreamError",
]

logger = logging.getLogger(__name__)

CAPABILITIES = MediaCapabilities(
    (PCMU, PCMA, G722, OPUS, TELEPHONE_EVENT, TELEPHONE_EVENT_48000), rtcp_mux=False
)
"""What these services can answer (RFC 3264 §6): G.711 µ-law and A-law first (what PBXs
expect), G.722, Opus, and telephone-event (RFC 4733) at 8 and 48 kHz; RTCP on its own port. The
offerer's preference chooses among them."""

RATE = 8000
"""The G.711 sample rate and RTP clock rate (RFC 3551 §4.5.14)."""

_PTIMES = (10, 20, 30, 40, 60)
_MAX_CONCEALED_FRAMES = 5
"""A gap of at most this many frames is concealed; a longer one is silence (DTX, hold)."""
Samples = npt.NDArray[np.int16]


class UnsupportedStreamError(_OfferAnswerError):
    """A negotiated stream these services cannot carry (codec or SRTP keys): answer 488."""


@dataclass
class MediaStats:
    """Per-service counters: the leg's (`counters`) and the service's own."""

    counters: LegCounters = field(default_factory=LegCounters)
    """The leg's counters (RFC 3550 packets received, sent, dropped by reason, RTCP)."""
    unusable: int = 0
    """Packets the leg accepted that the service could not use: a bad padding or extension, an
    undecodable payload or telephone-event, a handler error."""
    skipped: int = 0
    """Packets not sent because the pacing timer ran too late (DTMF echo; music on hold counts
    them in its `feed.stats`)."""
    errors: int = 0
    """Unexpected exceptions in a handler or a tick (a bug): logged once, then counted."""

    @property
    def received(self) -> int:
        """RTP packets accepted from the peer."""
        return self.counters.received

    @property
    def sent(self) -> int:
        """RTP packets sent (audio and telephone-event)."""
        return self.counters.sent

    @property
    def dropped(self) -> int:
        """Packets dropped: by the leg (malformed, unknown payload type, foreign source, SRTP)
        and by the service (`unusable`)."""
        return self.counters.dropped + self.unusable

    @property
    def rtcp(self) -> int:
        """RTCP packets received."""
        return self.counters.rtcp_received


def _log_error(stats: MediaStats, message: str) -> None:
    if stats.errors == 1:
        logger.exception(message)
    else:
        logger.debug(message, exc_info=True)


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


def _packet_time(spec: CodecSpec, ptime: int) -> int:
    """The packet time we send: the peer's when the codec can frame it, else 20 ms."""
    if ptime not in _PTIMES or (spec.name == "opus" and ptime == 30):
        return 20
    return ptime


def _leg_format(stream: NegotiatedStream) -> tuple[LegFormat, CodecSpec]:
    """The leg's formats and codec for `stream`: we send with the peer's payload types and accept
    ours as well (some peers send with the type we wrote)."""
    codec = stream.codec
    try:
        spec = codec_for(codec.encoding_name, codec.clock_rate, codec.channels, codec.fmtp)
    except UnsupportedCodecError:
        raise UnsupportedStreamError("codec not supported by this service") from None
    return leg_format(stream, CAPABILITIES.codecs, _packet_time(spec, stream.ptime)), spec


def _srtp_for(stream: NegotiatedStream, current: object) -> SrtpSession | None:
    """The SRTP session the stream keys (`SrtpSession.for_stream`); None for plain RTP."""
    try:
        return SrtpSession.for_stream(stream, current)
    except ValueError:
        raise UnsupportedStreamError("SRTP keys not usable by this service") from None


class MediaService:
    """The RTP side of a service: one `RtpLeg` facing the caller.

    Subclasses receive valid packets of the negotiated payload types in `_on_packet` and send
    through `self.leg`; the hooks below tell them when the format changes and when to send.
    """

    def __init__(self, pool: RtpSocketPool, host: str) -> None:
        self._pool = pool
        self.host = host
        self.port = 0
        self.stats = MediaStats()
        self.stream: NegotiatedStream | None = None
        self.leg: RtpLeg | None = None
        self.format: LegFormat | None = None
        self.spec: CodecSpec | None = None
        """The codec of the stream (`codecs.codec_for`)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self._released = False

    # -- life cycle -------------------------------------------------------------------------

    async def bind(self) -> int:
        """Bind the port pair (trying the next pair when one is busy); returns the RTP port."""
        if self.port:
            return self.port
        if self._stopped:
            raise RuntimeError("media service is stopped")
        loop = self._loop = asyncio.get_running_loop()
        pair = await self._pool.acquire()
        leg = self.leg = RtpLeg(pair, clock=loop.time)
        self.stats.counters = leg.counters
        self.port = pair.port
        if self._stopped:
            self._close()
            raise RuntimeError("media service is stopped")
        leg.sink = self._sink
        return pair.port

    async def start(self, stream: NegotiatedStream) -> int:
        """Carry `stream`, the outcome of offer/answer (RFC 3264); returns our RTP port.

        Raises `UnsupportedStreamError` (answer 488) before binding anything when the codec or
        the SRTP keys are not usable, `OSError` or `PortsExhausted` when no port pair can be
        bound.
        """
        if self.stream is not None:
            raise RuntimeError("media service is already started")
        fmt, spec = _leg_format(stream)
        srtp = _srtp_for(stream, None)
        port = await self.bind()
        try:
            await self._prepare(fmt, spec)
        except BaseException:
            self.stop()
            raise
        if self._stopped:
            raise RuntimeError("media service is stopped")
        self._apply(stream, fmt, spec, srtp)
        return port

    def update(self, stream: NegotiatedStream) -> None:
        """Follow a re-INVITE or UPDATE (RFC 3264 §8): address, codec, payload types, keys,
        direction (hold and resume). A new address unlatches the peer.

        Raises `UnsupportedStreamError` when the new codec or keys are not usable.
        """
        if self.stream is None or self.leg is None or self._stopped:
            raise RuntimeError("media service is not started")
        fmt, spec = _leg_format(stream)
        srtp = _srtp_for(stream, self.leg.srtp)
        self._apply(stream, fmt, spec, srtp)

    def stop(self) -> None:
        """Stop sending, close both sockets and give the port pair back; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._stopping()
        finally:
            self._close()

    @property
    def legs(self) -> tuple[RtpLeg, ...]:
        """The leg while the service runs (for the router's RTCP reports), else nothing."""
        if self.leg is None or self._stopped:
            return ()
        return (self.leg,)

    @property
    def packets(self) -> int:
        """RTP packets received and sent."""
        return self.stats.received + self.stats.sent

    @property
    def running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        return self.stream is not None and not self._stopped

    @property
    def peer(self) -> tuple[str, int] | None:
        """The latched source address of the peer (RFC 4961), None until it sends."""
        leg = self.leg
        return leg.peer if leg is not None and leg.latched else None

    @property
    def ssrc(self) -> int | None:
        """Our SSRC towards the peer, once bound."""
        return self.leg.ssrc if self.leg is not None else None

    @property
    def srtp(self) -> SrtpSession | None:
        """The leg's SRTP session (RFC 3711), None for plain RTP: a re-offer is best answered
        with its `local` key when its suite is offered again (RFC 4568 §7.1.4)."""
        srtp = self.leg.srtp if self.leg is not None else None
        return srtp if isinstance(srtp, SrtpSession) else None

    def crypto(self) -> tuple[CryptoAttribute, ...]:
        """The SDES keys to answer an RTP/SAVP offer or re-offer with (RFC 4568 §7.1.2): our
        current key first, kept when its suite is offered again (§7.1.4), then fresh keys."""
        return session_crypto(self.srtp)

    # -- receiving --------------------------------------------------------------------------

    def _sink(
        self, data: bytes, second: int, sequence: int, timestamp: int, ssrc: int, now: float
    ) -> None:
        stats = self.stats
        try:
            if self._stopped:
                return
            self._on_packet(RtpPacket.parse(data), now)
        except ValueError:
            stats.unusable += 1
        except Exception:
            stats.unusable += 1
            stats.errors += 1
            _log_error(stats, "media service packet handler failed")

    def _on_packet(self, packet: RtpPacket, now: float) -> None:
        """A valid packet of a negotiated payload type from the peer; ValueError drops it."""

    # -- hooks ------------------------------------------------------------------------------

    async def _prepare(self, fmt: LegFormat, spec: CodecSpec) -> None:
        """Get ready before the stream starts (off the event loop if it is costly)."""

    def _format_changed(self, fmt: LegFormat, spec: CodecSpec) -> None:
        """The formats are set or changed (start or re-INVITE); the leg already has them."""

    def _resume(self) -> None:
        """The stream lets us send (start, resume after hold)."""

    def _pause(self) -> None:
        """The stream no longer lets us send (hold)."""

    def _stopping(self) -> None:
        """Called once by `stop()`, before the sockets close."""

    # -- helpers ----------------------------------------------------------------------------

    def _apply(
        self,
        stream: NegotiatedStream,
        fmt: LegFormat,
        spec: CodecSpec,
        srtp: SrtpSession | None,
    ) -> None:
        leg = self.leg
        assert leg is not None
        old = self.stream
        moved = old is not None and (stream.remote_address, stream.remote_port) != (
            old.remote_address,
            old.remote_port,
        )
        destination = _literal_destination(stream.remote_address, stream.remote_port)
        if destination is not None:
            leg.set_remote(
                destination[0], destination[1], stream.remote_rtcp_port or None, relatch=moved
            )
        leg.set_format(fmt, stream.rtcp_mux)
        leg.srtp = srtp
        self.stream = stream
        if fmt != self.format:
            self.format, self.spec = fmt, spec
            self._format_changed(fmt, spec)
        if stream.direction.sends:
            self._resume()
        else:
            self._pause()

    def _close(self) -> None:
        leg = self.leg
        if leg is not None and not self._released:
            self._released = True
            leg.close()
            self._pool.release(leg.pair)
        self.port = 0


# -- music on hold ----------------------------------------------------------------------------


class MusicOnHold(MediaService):
    """Plays music on hold to the peer in a loop, at the leg's codec (`LegFeed`).

    `sound` is any file the player reads; the default sound set's `moh` when None. The sound
    is decoded and resampled to the codec's rate once per process, off the event loop. Hold
    (RFC 3264 §8.4: the answer says we must not send) pauses the music and resume continues
    it, the stream's timestamps advanced by the pause. A sound that cannot be played leaves
    the caller in silence (logged), not the call unanswered.
    """

    def __init__(self, pool: RtpSocketPool, host: str, sound: Path | None = None) -> None:
        super().__init__(pool, host)
        self.sound = sound
        self.feed: LegFeed | None = None

    async def _prepare(self, fmt: LegFormat, spec: CodecSpec) -> None:
        try:
            if self.sound is None:
                self.sound = sound_path("moh")
            assert self._loop is not None
            await self._loop.run_in_executor(None, load, self.sound, spec.sample_rate)
        except MediaFileError as exc:
            logger.warning("no music on hold on port %d: %s", self.port, exc)
            self.sound = None

    def _format_changed(self, fmt: LegFormat, spec: CodecSpec) -> None:
        if self.feed is not None:
            self.feed.stop()
            self.feed = None
        if self.sound is None or self.leg is None:
            return
        try:
            self.feed = LegFeed(self.leg, self.sound, loop=True)
        except (ValueError, OSError) as exc:
            logger.warning("no music on hold on port %d: %s", self.port, exc)

    def _resume(self) -> None:
        if self.feed is not None and not self.feed.running and not self._stopped:
            self.feed.start()

    def _pause(self) -> None:
        if self.feed is not None:
            self.feed.stop()

    def _stopping(self) -> None:
        self._pause()


# -- recording --------------------------------------------------------------------------------


RECORDING_FORMATS = ("wav", "opus")
"""The recording formats `Recorder` writes: WAV, and Ogg/Opus (RFC 7845) when available."""


def _open_writer(path: Path, format: str, rate: int) -> RecordingWriter | WavWriter:
    if format == "wav":
        return WavWriter(path, rate, 2)
    return open_writer(path, format, rate, 2)


def _payload_samples(spec: CodecSpec, payload: bytes, frame: int) -> int:
    """How many samples a payload decodes to, as far as can be told without decoding."""
    if spec.name in ("PCMU", "PCMA"):
        return len(payload)
    if spec.name == "G722":
        return 2 * len(payload)
    return frame


class Recorder(MediaService):
    """Records what the caller sends to `path`: 16-bit stereo at the codec's audio rate (8 kHz
    for G.711, 16 kHz for G.722, 48 kHz for Opus), the caller on the left channel and the other
    side on the right (silence for this target), the layout of the product's call recordings.

    `format` is "wav" (default) or "opus" (Ogg/Opus, `media.oggopus`). Packets are
    placed by RTP timestamp (`PacketPlacer`) and decoded in timeline order: gaps of at most
    `_MAX_CONCEALED_FRAMES` frames are concealed, longer ones are silence, duplicates are
    ignored, reordering within `window` seconds is undone. The recording starts with the first
    packet; its rate is the first codec's, and a later codec change is resampled to it. `stop()`
    (idempotent) writes what is held back and finalises the file. A write error (disk full)
    stops the recording, not the call.
    """

    def __init__(
        self,
        pool: RtpSocketPool,
        host: str,
        path: str | Path,
        *,
        window: float = 0.1,
        format: str = "wav",
    ) -> None:
        if format not in RECORDING_FORMATS:
            raise ValueError("unsupported recording format")
        super().__init__(pool, host)
        self.path = Path(path)
        self.format_name = format
        self.window = window
        self.placer: PacketPlacer[bytes] = PacketPlacer(RATE, window)
        self.writer: RecordingWriter | WavWriter | None = None
        self.decoder: Decoder | None = None
        self._resampler: Resampler | None = None
        self.rate = RATE
        """The recording's sample rate: the audio rate of the first codec."""
        self._frame = RATE // 50
        self._position: int | None = None

    @property
    def duration(self) -> float:
        """Seconds recorded so far."""
        return self.writer.duration if self.writer is not None else 0.0

    async def _prepare(self, fmt: LegFormat, spec: CodecSpec) -> None:
        self.rate = spec.sample_rate
        try:
            self.writer = _open_writer(self.path, self.format_name, self.rate)
        except (ImportError, OSError, ValueError):
            logger.exception("recording to %s cannot start", self.path)

    def _format_changed(self, fmt: LegFormat, spec: CodecSpec) -> None:
        decoder = self.decoder
        if decoder is not None and decoder.spec.name == spec.name:
            self._frame = spec.samples_for(fmt.ptime)
            return
        if decoder is not None:
            self._render(self.placer.flush())
        self.decoder = spec.decoder()
        self._frame = spec.samples_for(fmt.ptime)
        self.placer = PacketPlacer(spec.sample_rate, self.window, clock_rate=spec.clock_rate)
        self._position = None
        rate = self.rate
        self._resampler = Resampler(spec.sample_rate, rate) if rate != spec.sample_rate else None

    def _on_packet(self, packet: RtpPacket, now: float) -> None:
        fmt, spec = self.format, self.spec
        if fmt is None or spec is None or packet.payload_type not in fmt.receive_types:
            return
        if self.writer is None or self.writer.closed or not packet.payload:
            return
        length = _payload_samples(spec, packet.payload, self._frame)
        self._render(self.placer.push(packet.ssrc, packet.timestamp, packet.payload, length, now))

    def _render(self, placed: list[tuple[int, bytes]]) -> None:
        decoder = self.decoder
        if not placed or decoder is None:
            return
        for position, payload in placed:
            written = position if self._position is None else self._position
            if position > written:
                self._fill(decoder, position - written, payload)
                written = position
            try:
                samples = decoder.decode(payload)
            except CodecError:
                self._position = written
                self.stats.unusable += 1
                continue
            end = position + len(samples)
            if end > written:
                self._write(samples[written - position :] if position < written else samples)
                written = end
            self._position = written

    def _fill(self, decoder: Decoder, gap: int, next_payload: bytes) -> None:
        """Fill `gap` samples before `next_payload`: concealment for a short gap (its last frame
        from FEC when the codec has it), silence for a long one."""
        frame = self._frame
        if gap > frame * _MAX_CONCEALED_FRAMES:
            self._write_silence(gap)
            return
        last = min(gap, frame)
        done = 0
        try:
            while done < gap - last:
                count = min(gap - last - done, frame)
                self._write(decoder.conceal(count))
                done += count
            try:
                samples = decoder.decode_fec(next_payload, last)
            except CodecError:
                samples = decoder.conceal(last)
            self._write(samples)
        except CodecError:
            self._write_silence(gap - done)

    def _write_silence(self, count: int) -> None:
        silence = np.zeros(min(count, self.rate), np.int16)
        while count > 0:
            self._write(silence[:count])
            count -= len(silence)

    def _write(self, left: Samples) -> None:
        writer = self.writer
        if writer is None or writer.closed or not len(left):
            return
        if self._resampler is not None:
            left = self._resampler.resample(left)
        frames = np.zeros((len(left), 2), dtype=np.int16)
        frames[:, 0] = left
        try:
            writer.write(frames)
        except (OSError, ValueError):
            logger.exception("recording to %s failed", self.path)
            try:
                writer.close()
            except (OSError, ValueError):
                pass

    def _stopping(self) -> None:
        writer = self.writer
        if writer is None:
            return
        try:
            self._render(self.placer.flush())
        except Exception:
            logger.exception("finishing recording %s failed", self.path)
        finally:
            try:
                writer.close()
            except (OSError, ValueError):
                logger.exception("closing recording %s failed", self.path)


# -- DTMF echo --------------------------------------------------------------------------------


@lru_cache(maxsize=128)
def _tone_burst(digit: str, rate: int, frame: int, tone: float, gap: float) -> Samples:
    """The samples of one played-back digit: the tone, then silence, whole frames, read-only."""
    samples = dtmf_tone(digit, tone, rate)
    tone_frames = -(-len(samples) // frame)
    frames = max(-(-(len(samples) + round(gap * rate)) // frame), tone_frames + 2)
    padded = np.zeros(frames * frame, dtype=np.int16)
    padded[: len(samples)] = samples
    padded.flags.writeable = False
    return padded


class DtmfEcho(MediaService):
    """Collects the caller's digits and plays each one back.

    Digits come from RFC 4733 telephone-events (`DtmfReceiver`, each reported once, at 8 or
    48 kHz) or from `add_digit()` (SIP INFO, RFC 6086). Each is appended to `digits`; received
    ones are also passed to `on_digit(digit, duration_ms)` so that the router can log them
    (digits given to `add_digit()` are already known to the router). Playback is an in-band
    ITU-T Q.23 tone burst of `tone` seconds followed by `gap` seconds of silence, encoded by the
    leg's codec at its audio rate, and, when the peer offered telephone-event, the same digit
    as RFC 4733 events (start with marker, updates, three end packets) stamped with the burst's
    start. Nothing is sent between digits.
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
        self._encoder: Encoder | None = None
        self._pacer: Pacer | None = None
        self._burst: Samples | None = None
        self._slot = 0
        self._slots = 0
        self._burst_timestamp = 0
        self._step = 160
        self._events: dict[int, list[DtmfPacket]] = {}
        self._talkspurt = False
        self._timer: asyncio.TimerHandle | None = None

    def add_digit(self, digit: str) -> None:
        """A digit received another way (SIP INFO): record it and play it back.

        Raises `DtmfError` when `digit` is not one of 0-9 * # A-D.
        """
        event_for_digit(digit)
        self._play(digit.upper())

    # -- receiving --------------------------------------------------------------------------

    def _on_packet(self, packet: RtpPacket, now: float) -> None:
        fmt = self.format
        if fmt is None or packet.payload_type not in fmt.event_receive_types:
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

    # -- playing back -----------------------------------------------------------------------

    def _format_changed(self, fmt: LegFormat, spec: CodecSpec) -> None:
        if self.receiver.clock_rate != fmt.event_clock_rate:
            self.receiver = DtmfReceiver(fmt.event_clock_rate, self.receiver.timeout)
        self._encoder = spec.encoder(fmt.ptime)
        self._step = spec.timestamps_for(self._encoder.frame_samples)
        if self._pacer is not None:
            self._pacer.stop()
        assert self._loop is not None
        self._pacer = Pacer(self._loop, fmt.ptime / 1000, self._tick, self.stats)
        self._burst = None
        self._talkspurt = False

    def _play(self, digit: str) -> None:
        self.digits.append(digit)
        self._queue.append(digit)
        stream = self.stream
        if stream is not None and stream.direction.sends:
            self._resume()

    def _resume(self) -> None:
        pacer = self._pacer
        if (
            pacer is not None
            and not pacer.running
            and not self._stopped
            and (self._queue or self._burst is not None)
        ):
            pacer.start()

    def _pause(self) -> None:
        if self._pacer is not None:
            self._pacer.stop()
        self._talkspurt = False

    def _next_burst(self) -> bool:
        leg, fmt, encoder = self.leg, self.format, self._encoder
        if not self._queue or leg is None or fmt is None or encoder is None:
            return False
        digit = self._queue.popleft()
        spec = encoder.spec
        frame = encoder.frame_samples
        self._burst = _tone_burst(digit, spec.sample_rate, frame, self.tone, self.gap)
        self._slot, self._slots = 0, len(self._burst) // frame
        timestamp = leg.timestamp
        if self._talkspurt:
            timestamp += self._step
        elif leg.last_send_time is not None:
            elapsed = leg.clock() - leg.last_send_time
            timestamp += max(int(elapsed * self._step * 1000 / fmt.ptime), self._step)
        self._burst_timestamp = timestamp & 0xFFFFFFFF
        self._events = {}
        if fmt.event_send_type is not None:
            sender = DtmfSender(fmt.clock_rate, fmt.ptime / 1000)
            for packet in sender.packets(digit, self.tone):
                self._events.setdefault(packet.slot, []).append(packet)
        return True

    def _tick(self, index: int) -> bool:
        if (self._burst is None or self._slot >= self._slots) and not self._next_burst():
            self._burst = None
            self._talkspurt = False
            return False
        leg, fmt, encoder, burst = self.leg, self.format, self._encoder, self._burst
        assert leg is not None and fmt is not None and encoder is not None and burst is not None
        slot, frame = self._slot, encoder.frame_samples
        self._slot += 1
        if fmt.event_send_type is not None:
            for packet in self._events.get(slot, ()):
                leg.send(fmt.event_send_type, packet.marker, self._burst_timestamp, packet.payload)
        payload = encoder.encode(burst[slot * frame : (slot + 1) * frame])
        timestamp = (self._burst_timestamp + slot * self._step) & 0xFFFFFFFF
        leg.send(fmt.send_type, not self._talkspurt, timestamp, payload)
        self._talkspurt = True
        return True

    def _stopping(self) -> None:
        if self._pacer is not None:
            self._pacer.stop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
