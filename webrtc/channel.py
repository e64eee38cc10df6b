"""The agent channel: one aiortc peer connection per logged-in agent, kept for the whole session.

Theory of operation. The page makes the offer (audio, Opus) and `AgentChannel.accept_offer`
answers with every candidate in the SDP (aiortc does not trickle). The channel exists from
login to logout; calls are bridged into it with `attach(source, sink)` and out of it with
`detach()`, so answering a call costs no ICE or DTLS set-up. aiortc cannot restart ICE on a
live connection, so a second offer (the page's ICE restart, or a reloaded page) replaces the
peer connection inside the channel; what is attached stays attached.

`PeerMedia` holds all of this; `AgentChannel` is the long-lived kind, `webrtc.webcaller.WebCaller`
the one-call kind.

Fast path (the default with the receive bypass). Once DTLS is up, `webrtc.fastpath.AudioFastPath`
moves the channel's Opus RTP itself, with the SRTP sessions and the ICE pair aiortc and aioice
set up: one shared 20 ms send clock for every channel instead of a sender task per channel, and
received audio taken from aioice's socket callback straight to the playout (no queue, no task
wake-up, no ``RtpPacket``); RTCP stays correct both ways (that module's docstring). Until then,
and for good if the path cannot start, the track below is what aiortc's sender sends.

Send path. `OpusSendTrack.recv()` returns pre-encoded `av.Packet`s: aiortc's sender then only
packetises them (no encoder thread hop, no pure-Python audio level; DESIGN.md "Known levers").
The sender does not pace pre-encoded packets, so `recv()` paces itself on the event loop's clock,
one packet every 20 ms; after a stall it skips the missed slots (the timestamp jumps with the
time, the far end sees a gap, never a burst). Each slot asks the attached `source` for one
20 ms frame of int16 samples at the call's rate (`attach(..., rate=)`, below), encoded here with
libopus (`media.codecs`, ctypes: VOIP, 32 kbit/s VBR, in-band FEC for 10 % loss), or an
Opus payload (sent untouched: Opus passthrough). `None` (hold) sends the cached `SILENCE` packet
without running the encoder; with no call attached at all the track sends that packet once
every `IDLE_SLOTS` slots (400 ms, the cadence of Opus DTX: the timestamp jumps, the sequence
number does not) and `attach` wakes it at once, so a logged-in agent waiting for a call costs
2.5 packets a second on the send side instead of 50 (ICE consent and the NAT binding are kept by
aioice's STUN checks, not by media). Digital silence is not encoded either (a frame of zeros,
tested with `np.count_nonzero`, 0.5 µs): once `SILENCE_HANGOVER` zero frames were encoded
after sound (the encoder's look-ahead drains) `SILENCE` goes out instead, and the encoder
simply goes on when sound comes back. Checked with PESQ-NB (below) on the
11 prompts in threes with 300 ms of digital silence between them, at 8 kHz: encoding every
frame 4.14, `SILENCE` after 2 frames 4.16 (12 % of the frames skipped; a cached SILK silence
packet instead of the CELT one scores the same; restarting the encoder from a fresh state at
each talkspurt scored 4.09, its first frames are worse).

Rates. `attach(source, sink, rate)` runs the call's audio at the SIP leg's own rate: 8000 for
G.711 (`PcmPort(leg, port_rate(leg))` then resamples nothing either), 16000 for G.722, 48000 (the
default, the behaviour before). libopus encodes from 8/12/16/24/48 kHz natively (RFC 7587 §4.1:
the RTP clock stays 48 kHz, the packets are ordinary Opus that the browser decodes as any other),
coding at most the band of the input (narrowband from 8 kHz, SILK only), and `OpusPlayout`
decodes the page's Opus straight to the rate (PLC and FEC included). The encoder's complexity
is `DEFAULT_COMPLEXITY` of the rate unless `PeerMedia(complexity=)` says otherwise: 5 at 48
kHz as before, 3 at 8 and 16 kHz. What a browser hears of a G.711 caller, PESQ-NB (ITU-T P.862,
the ``pesq`` package run by hand, not a dependency) over the 11 bundled prompts of at least 1 s
(G.711 round-tripped, through `_next_payload`, decoded at 48 kHz, scored at 8 kHz against the
G.711 audio), and the encoder's cost per 20 ms frame (best of 5 x 500 frames, load ~3):

| send path | PESQ-NB mean / min | encode µs per frame |
|---|---|---|
| before: 8 -> 48 kHz resampler, Opus 48 kHz complexity 5 | 3.51 / 3.23 | 211 (+15 resampler) |
| Opus at 8 kHz, complexity 1 | 4.03 / 3.74 | 36 |
| **Opus at 8 kHz, complexity 3 (default)** | 4.09 / 3.88 | 64 |
| Opus at 8 kHz, complexity 5 | 4.22 / 3.89 | 95 |

(The same figures as the SIP transcoder's table in `media.codecs`, same encoder.) At 48
kHz and 32 kbit/s libopus spends its bits on a band G.711 never had: the narrowband stream
sounds better and costs a third to a sixth. Complexity 3 keeps the tone SNR near 30 dB; 1 is
the next lever (PESQ -0.06, -28 µs). Decoding the page's fullband Opus costs ~30 µs at 8 kHz
against ~40 at 48 kHz (CELT synthesises at 48 kHz whatever the output rate; a page asked for
narrowband with ``maxplaybackrate=8000`` in the answer's fmtp would send SILK, ~10 µs, but the
channel's SDP is negotiated once per session, before any call's codec is known).

Media path per call, in process (no network, no aiortc: one PCMU packet into the leg, `PcmPort`
read, `_next_payload`; one page packet into `OpusPlayout`, `get`, `PcmPort.write`), CPU per 20
ms frame pair at load ~4 (figures inflated by the load, the ratios hold): the benchmark's
signals (a tone burst every 300 ms, digital silence between) 471 µs at 48 kHz before, 108 µs at 8
kHz; the same with -60 dBFS noise instead of digital silence (every frame encoded) 490 -> 165
µs; speech both ways 598 -> 220 µs.

What was left was per packet, not per codec: py-spy at N=20 (session 2) put aiortc's sender
around our payload at 16 % of the server, the receive side from aioice's queue through the DTLS
task to our tap at 10 %, our receive tick at 19 % and native event-loop code at 22 %. The fast
path (above) removed the first two; relaying on arrival (`attach(relay=True)`, a SIP leg's port
in relay) removed our jitter buffers and clocks from a SIP call's path both ways. Profile after
those (py-spy in blocking mode and perf, N=30, shares of the server's main thread): libopus 23 %
(decoding the page's Opus 21 %, our encoding 9 %; wideband pages since `max_playback_rate`
halve the decoding), the kernel 13 % (``sendto``/``recvfrom`` of four datagrams per call and
frame, epoll), SRTP 9 %, G.711 7 %, numpy 5 %, and the Python around them about 40 %, spread
over the datagram callbacks, no single function above 3 %. The next levers are batched I/O on a
shared ICE port and a C extension for the per-packet glue.

Receive path (bypass, the default). aiortc's receiver would put the page's Opus through its
``JitterBuffer(capacity=16, prefetch=4)`` (four frames of standing delay) and a decoder thread.
`webrtc.rtptap.install_audio_tap` replaces that jitter buffer object of the receiver (aiortc
1.16's ``_RTCRtpReceiver__jitter_buffer``) with a tap, so each packet reaches the channel as it
arrives, after aiortc has done its own bookkeeping: RTCP statistics and receiver reports,
``getStats``, the SSRC list, the payload-type check all keep working; the decoder thread is
never fed. The packets go to `webrtc.playout.OpusPlayout`: the project's adaptive jitter
buffer (``media.jitterbuffer``, 0-60 ms, hard cap 60 ms, no standing delay after loss
or a burst), libopus through ``media.codecs`` (in-band FEC from the next packet when it
is already there, PLC otherwise), played out by a 20 ms clock (``loop.call_later``) that starts
with the first packet and phase-locks onto the arrivals at the buffer's target plus 4 ms.
Every tick delivers one 20 ms frame (int16 at the attached rate, or what `resampler` makes of
them) to `sink`; with no sink attached packets are dropped on arrival and the clock stops (an
agent waiting for a call costs no buffering, no decoding, no timer); the next call starts from
a fresh playout whose clock starts with its first packet. If the tap
cannot be installed (an aiortc upgrade; `tests/webrtc/test_bypass.py` fails then), the channel
logs a warning and falls back to aiortc's path: it reads the decoded `AudioFrame`s (stereo
s16, the first channel taken, resampled to the attached rate when that is not 48 kHz) behind a
`BacklogLimiter` (token bucket: 50 frames/s plus a burst of `max_backlog` seconds).
``receive_path="aiortc"`` selects that path on purpose (the baseline of the measurement).

Measured with ``benchmarks/webrtc_receive.py 8`` (both paths in the same run, aiortc
client -> channel over loopback, one process) on the 2-core machine at load 2.3 (other
sessions running; figures drift by tens of percent between runs):

| path | delay p50 / p99 / max | CPU/frame (pair) | aiortc decoder | channel's own |
|---|---|---|---|---|
| aiortc (stock) | 81.2 / 87.4 / 88.0 ms | 1092 us | 275 us | 105 us (reader) |
| bypass | 7.4 / 22.3 / 24.7 ms | 618 us | 0 (not fed) | 206 us (tap + tick, decode included) |

An earlier run at load 1.6: stock 80.9 / 82.5 ms, 936 us; bypass 6.6 / 25.1 ms, 486 us. With
the tick margin at 4 ms a separate 6 s bypass run gave p50 5.5 ms, p99 7.8 ms. The p99 of the
bypass reflects the scheduling jitter of a loaded, single-process loopback: a packet later than
its tick costs one concealed frame and 20 ms for a moment, and the buffer comes back to its
target. The CPU per frame is process CPU with the page's audio minus without, so it includes
the client's packetising and SRTP; libopus decode costs ~40 us hot, ~100 us in the loop (cold
caches).

Video. When the page's offer has a video m-line the channel adds an `EncodedVideoTrack` (VP8
frames passed through, no encoder; `attach_video(relay)`) and taps the received video into
`video_in` (a `webrtc.video.VideoRelay`, frames assembled by aiortc, never decoded), so video is
relayed between two peer connections (web caller <-> agent) without transcoding.

Media source check. aioice hands every non-STUN datagram that reaches a local candidate's
socket to DTLS/SRTP, from any address. `install_aioice_guards()` (called by the first channel)
wraps aioice's ``StunProtocol.datagram_received`` so that non-STUN data is accepted on a socket
only from an address that proved it knows our ICE password there: the remote end of the
nominated pair, an address that sent us an authenticated connectivity check on that socket
(recorded by a wrapper of ``Connection.check_incoming``), or the remote end of a pair whose
check of ours succeeded. Anything else is dropped and counted in `guard_counters` (the DTLS
ClientHello race of Asterisk and rtpengine, 2023). Not the nominated pair alone, as before:
aioice nominates aggressively (every check of the controlling end carries USE-CANDIDATE), so on
a host with two addresses (IPv4 and IPv6) both pairs get nominated and each end keeps the one
whose nomination it completed last, an order each end sees on its own; and an end sends on its
pair as soon as its own check succeeded, when the other end may not have processed the answer
to its check on the same pair yet. Each end dropped the other's DTLS, the handshake stalled or
never finished while ICE said "completed", and the call had no audio either way
(benchmarks/webrtc_bridge.py, N=40: 2 calls of 40; tests/webrtc/test_ice_guard.py). An end
sends only on a pair whose check it completed, which needed the other end to answer (and so
record) that check: what one sends, the other takes. The same function lets aioice offer
127.0.0.1 when the page's offer has a loopback candidate (aioice skips loopback). Both depend
on aioice internals (``StunProtocol``, ``Connection._nominated``, ``_check_list``,
``check_incoming``, ``get_host_addresses``); tests/webrtc/test_channel.py and
tests/webrtc/test_ice_guard.py fail if an aioice upgrade breaks them.
"""

from __future__ import annotations

import asyncio
import contextvars
import fractions
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import av
import numpy as np
import numpy.typing as npt
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from media.codecs import OPUS_SAMPLE_RATES, OpusSettings, codec_for
from media.jitterbuffer import JitterBufferStats
from media.resample import Resampler as RateConverter
from webrtc.fastpath import FAST_PATH_ATTRIBUTE, AudioFastPath, audio_parameters, fastpath_problems
from webrtc.playout import OpusPlayout
from webrtc.rtptap import hook_keyframe_requests, install_audio_tap, install_video_tap
from webrtc.video import EncodedVideoTrack, VideoRelay

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_COMPLEXITY",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "SILENCE",
    "AgentChannel",
    "BacklogLimiter",
    "OpusSendTrack",
    "PeerMedia",
    "guard_counters",
    "install_aioice_guards",
]

SAMPLE_RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_SECONDS = FRAME_MS / 1000
SILENCE = b"\xf8\xff\xfe"
"""One 20 ms Opus packet of silence (CELT fullband, RFC 6716 §3.1 code 0, empty frame)."""
DEFAULT_COMPLEXITY = {8000: 3, 12000: 3, 16000: 3, 24000: 5, 48000: 5}
"""Opus encoder complexity by input rate (module docstring: cost against quality)."""
SILENCE_HANGOVER = 2
"""Digital-silence frames still encoded after sound (the encoder's look-ahead drains), before
the cached `SILENCE` packet takes over."""
IDLE_SLOTS = 20
"""With no call attached the send track sends one `SILENCE` packet every 20 slots (400 ms, the
cadence of Opus DTX) instead of 50 a second."""
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_FIRST_TICK = 0.001
"""The first playout tick comes this long after the first packet (then `OpusPlayout` phase)."""
_MAX_LATE = 0.1
"""A tick this late (the loop stalled) restarts the schedule from now instead of catching up."""

Samples = npt.NDArray[np.int16]
Source = Callable[[], "Samples | bytes | None"]
Sink = Callable[[Samples], None]
Resampler = Callable[[Samples], Samples]


# --- aioice guards ----------------------------------------------------------------------------

guard_counters: dict[str, int] = {"dropped_foreign_source": 0}
"""Datagrams dropped by the source check (process-wide)."""

_offer_loopback: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "omlmedia_offer_loopback", default=False
)
_guards_installed = False
_PROVEN_ATTRIBUTE = "_omlmedia_proven"
"""Set on an aioice ``Connection``: the (socket, address) pairs an authenticated check came from."""
_MAX_PROVEN = 64
"""At most this many per connection (each needs the ICE password; aioice keeps the pairs too)."""


_count_nonzero = np.count_nonzero
"""Digital-silence test of the send path: 0.5 µs a frame (``ndarray.any`` costs 2 µs)."""


def _is_stun(data: bytes) -> bool:
    return len(data) >= 20 and data[0] < 4


def install_aioice_guards() -> None:
    """Install the source check and the loopback option into aioice (once per process)."""
    global _guards_installed
    if _guards_installed:
        return
    from aioice import ice

    protocol_class = ice.StunProtocol
    original_received = protocol_class.datagram_received
    original_addresses = ice.get_host_addresses
    original_check_incoming = ice.Connection.check_incoming

    def datagram_received(self: Any, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if isinstance(data, bytes) and not _is_stun(data):
            peer = (addr[0], addr[1])
            if not _allowed(self, peer):
                guard_counters["dropped_foreign_source"] += 1
                return
            if 127 < data[0] < 192:
                # RTP or RTCP (RFC 7983): never STUN, so aioice's parse attempt is skipped; the
                # audio fast path takes its packets, the rest goes on to aiortc.
                connection = self.receiver
                fast = getattr(connection, FAST_PATH_ATTRIBUTE, None)
                if fast is not None and fast.take(data):
                    return
                connection.data_received(data, self.local_candidate.component)
                return
        original_received(self, data, addr)

    def check_incoming(self: Any, message: Any, addr: tuple[Any, ...], protocol: Any) -> None:
        # An authenticated check (aioice verified the USERNAME and MESSAGE-INTEGRITY with our
        # ICE password) from `addr` on this socket: the peer may send media from there as soon
        # as its own check on the pair succeeds, which needs our answer to this one.
        original_check_incoming(self, message, addr, protocol)
        proven = getattr(self, _PROVEN_ATTRIBUTE, None)
        if proven is None:
            proven = set()
            setattr(self, _PROVEN_ATTRIBUTE, proven)
        if len(proven) < _MAX_PROVEN:
            proven.add((protocol, (addr[0], addr[1])))

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses: list[str] = original_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        if use_ipv4 and _offer_loopback.get() and "127.0.0.1" not in addresses:
            addresses.insert(0, "127.0.0.1")
        return addresses

    protocol_class.datagram_received = datagram_received  # type: ignore[method-assign]
    ice.Connection.check_incoming = check_incoming  # type: ignore[method-assign]
    ice.get_host_addresses = get_host_addresses
    _guards_installed = True


def _allowed(protocol: Any, peer: tuple[str, int]) -> bool:
    """Whether non-STUN data from `peer` on `protocol`'s socket may be taken: it comes from the
    nominated pair (the usual case, one comparison), from an address that sent us an
    authenticated check on this socket, or from a pair on it whose check of ours succeeded.
    Not the nominated pair alone: the two ends can select different pairs, and the peer sends
    on its own as soon as its check succeeds, which may be before ours does (module docstring,
    tests/webrtc/test_ice_guard.py)."""
    connection = getattr(protocol, "receiver", None)
    candidate = getattr(protocol, "local_candidate", None)
    if connection is None or candidate is None:
        return False
    nominated = connection._nominated.get(candidate.component)
    if nominated is not None and nominated.protocol is protocol and nominated.remote_addr == peer:
        return True
    proven = getattr(connection, _PROVEN_ATTRIBUTE, None)
    if proven is not None and (protocol, peer) in proven:
        return True
    check_list = connection._check_list
    succeeded = type(check_list[0]).State.SUCCEEDED if check_list else None
    return any(
        pair.protocol is protocol and pair.remote_addr == peer and pair.state is succeeded
        for pair in check_list
    )


# --- send path --------------------------------------------------------------------------------


class _OpusEncoder:
    """Our Opus encoder of the send path (`media.codecs`, libopus through ctypes): VOIP,
    32 kbit/s VBR, in-band FEC for 10 % loss; 20 ms frames of int16 mono at `rate` (RTP clock
    48 kHz whatever the rate), coded band at most the input's (narrowband from 8 kHz).
    Complexity `DEFAULT_COMPLEXITY[rate]` unless given (the module docstring has the table)."""

    __slots__ = ("_encoder", "complexity", "frame_samples", "rate")

    def __init__(self, rate: int = SAMPLE_RATE, complexity: int | None = None) -> None:
        if rate not in OPUS_SAMPLE_RATES:
            raise ValueError("Opus cannot encode from that rate")
        if complexity is None:
            complexity = DEFAULT_COMPLEXITY.get(rate, DEFAULT_COMPLEXITY[SAMPLE_RATE])
        settings = OpusSettings(complexity=complexity, bitrate=32000, packet_loss_percent=10)
        self._encoder = codec_for("opus", opus=settings).at_sample_rate(rate).encoder(FRAME_MS)
        self.rate = rate
        self.complexity = complexity
        self.frame_samples = rate * FRAME_MS // 1000

    def encode(self, samples: Samples) -> bytes:
        if samples.shape != (self.frame_samples,):
            raise ValueError(f"frame is not {self.frame_samples} samples")
        return self._encoder.encode(samples)


class EncodedAudio:
    """One pre-encoded Opus payload as aiortc's sender packs it: what `OpusSendTrack.recv()`
    returns instead of an `av.Packet`. aiortc only asks a non-`Frame` for ``pts``, ``time_base``
    and ``bytes()`` (``OpusEncoder.pack``); building an `av.Packet` (a copy into an AVPacket,
    the time base converted to an AVRational and back) cost 12.9 µs a packet with the packing,
    this 4.6 µs. `_duck_packets_work()` checks that the installed aiortc still packs it."""

    __slots__ = ("payload", "pts", "time_base")

    def __init__(self, payload: bytes, pts: int) -> None:
        self.payload = payload
        self.pts = pts
        self.time_base = TIME_BASE

    def __bytes__(self) -> bytes:
        return self.payload


@functools.cache
def _duck_packets_work() -> bool:
    try:
        from aiortc.codecs.opus import OpusEncoder

        probe = cast("av.Packet[Any]", EncodedAudio(SILENCE, 1920))
        payloads, timestamp = OpusEncoder().pack(probe)
        return payloads == [SILENCE] and timestamp == 1920
    except Exception:  # pragma: no cover - an aiortc upgrade that packs differently
        logger.warning("aiortc no longer packs EncodedAudio; sending av.Packet instead")
        return False


def _no_cpu_clock() -> float:
    return 0.0


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class OpusSendTrack(MediaStreamTrack):
    """An audio track whose `recv()` returns one pre-encoded 20 ms Opus packet, paced (an
    `EncodedAudio`, or an `av.Packet` if the installed aiortc cannot pack that).

    While `idle()` is true (nothing attached) it sends one packet every `idle_slots` slots
    instead of every slot, the way Opus DTX does (the RTP timestamp jumps over the gap, the
    sequence number does not); `wake()` ends such a gap at once."""

    kind = "audio"

    def __init__(self, next_payload: Callable[[], bytes]) -> None:
        super().__init__()
        self._next_payload = next_payload
        self._start: float | None = None
        self._slot = 0
        self.skipped = 0
        self.idle: Callable[[], bool] | None = None
        self.idle_slots = IDLE_SLOTS
        self.idle_packets = 0
        """Packets sent after an idle gap."""
        self._waiter: asyncio.Future[None] | None = None
        self._duck = _duck_packets_work()
        self._deferred: asyncio.Future[None] | None = None

    def defer(self) -> None:
        """Send nothing until `resume()`: an `webrtc.fastpath.AudioFastPath` sends this track's
        packets (aiortc's sender stays blocked in `recv()`)."""
        if self._deferred is None:
            self._deferred = asyncio.get_running_loop().create_future()

    def resume(self) -> None:
        """Send again (the fast path could not start): `recv()` paces from now."""
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            self._start = None
            _release(deferred)

    def stop(self) -> None:
        super().stop()
        self.resume()

    def wake(self) -> None:
        """End an idle gap now (a call was attached): the next packet goes out at once."""
        if self._waiter is not None:
            _release(self._waiter)

    async def recv(self) -> av.Packet[Any]:
        if self._deferred is not None:
            await self._deferred
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._start is None:
            self._start = now
        else:
            self._slot += 1
            idle = self.idle
            if idle is not None and self.idle_slots > 1 and idle():
                until = self._start + (self._slot + self.idle_slots - 1) * FRAME_SECONDS
                if until > now:
                    waiter = self._waiter = loop.create_future()
                    handle = loop.call_at(until, _release, waiter)
                    try:
                        await waiter
                    finally:
                        handle.cancel()
                        self._waiter = None
                    now = loop.time()
                self._slot = max(self._slot, int((now - self._start) / FRAME_SECONDS))
                self.idle_packets += 1
            due = self._start + self._slot * FRAME_SECONDS
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 3 * FRAME_SECONDS:
                behind = int((now - due) / FRAME_SECONDS)
                self._slot += behind
                self.skipped += behind
        if self._duck:
            encoded = EncodedAudio(self._next_payload(), self._slot * FRAME_SAMPLES)
            return cast("av.Packet[Any]", encoded)
        packet = av.Packet(self._next_payload())
        packet.pts = self._slot * FRAME_SAMPLES
        packet.time_base = TIME_BASE
        return packet


# --- receive path -----------------------------------------------------------------------------


class BacklogLimiter:
    """Token bucket: frames pass at most at real-time rate plus a burst of `max_backlog`
    seconds; frames beyond it are dropped (sans-IO: `now` in seconds)."""

    def __init__(self, max_backlog: float = 0.06, frame: float = FRAME_SECONDS) -> None:
        self.capacity = max(1.0, max_backlog / frame)
        self.frame = frame
        self.tokens = self.capacity
        self.last: float | None = None

    def admit(self, now: float) -> bool:
        """Whether the frame arriving at `now` is delivered."""
        if self.last is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) / self.frame)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _to_mono(frame: av.AudioFrame) -> Samples:
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = data[0]
    elif channels == 1:
        mono = data.reshape(-1)
    else:
        mono = data.reshape(-1, channels)[:, 0]
    return np.ascontiguousarray(mono, dtype=np.int16)


@dataclass
class ReceiveCounters:
    """Receive-path counters: frames read from aiortc, delivered to the sink, dropped by the
    backlog limit, failed in the sink, and the CPU the channel spent on them (seconds; only with
    `PeerMedia(measure_cpu=True)`)."""

    frames: int = 0
    delivered: int = 0
    dropped_backlog: int = 0
    sink_errors: int = 0
    cpu_seconds: float = 0.0


@dataclass
class ChannelStats:
    """getStats-like figures of the channel (from aiortc's RTCStatsReport)."""

    ice_state: str
    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    jitter: float = 0.0
    round_trip_time: float | None = None
    receive: ReceiveCounters = field(default_factory=ReceiveCounters)
    skipped_send_slots: int = 0
    source_errors: int = 0
    playout: dict[str, int] = field(default_factory=dict)
    jitter_buffer: JitterBufferStats | None = None
    fast_path: dict[str, int] = field(default_factory=dict)


class PeerMedia:
    """One browser peer connection carrying our audio (and relayed video); the common part of
    `AgentChannel` and `webrtc.webcaller.WebCaller` (see the module docstring)."""

    kind = "peer"

    def __init__(
        self,
        name: str,
        *,
        ice_servers: list[RTCIceServer] | None = None,
        resampler: Resampler | None = None,
        max_backlog: float = 0.06,
        clock: Callable[[], float] = time.monotonic,
        on_ice_state: Callable[[str], None] | None = None,
        receive_path: str = "bypass",
        max_delay_ms: int = 60,
        complexity: int | None = None,
        measure_cpu: bool = False,
        max_playback_rate: int | None = None,
    ) -> None:
        if receive_path not in ("bypass", "aiortc"):
            raise ValueError("receive_path must be 'bypass' or 'aiortc'")
        install_aioice_guards()
        self.name = name
        self.ice_servers = list(ice_servers or [])
        self.resampler = resampler
        self.max_backlog = max_backlog
        self.clock = clock
        self.on_ice_state = on_ice_state
        self.receive_path = receive_path
        self.max_delay_ms = max_delay_ms
        self.counters = ReceiveCounters()
        self.max_playback_rate = max_playback_rate
        """``maxplaybackrate`` put in the answer's Opus fmtp (None or 48000: none)."""
        self.idle_packets = 0
        """Audio packets received with nothing attached (not buffered, not decoded)."""
        self._cpu_clock: Callable[[], float] = time.thread_time if measure_cpu else _no_cpu_clock
        """Thread CPU clock of `ReceiveCounters.cpu_seconds` (`measure_cpu`; a system call,
        so off by default)."""
        self.source_errors = 0
        self.video_in = VideoRelay(clock=clock)
        """The video this peer sends us (encoded VP8), for other peers to relay."""
        self.playout: OpusPlayout | None = None
        self.tapped = False
        """Whether the current peer connection's audio bypasses aiortc's jitter buffer."""
        self._source: Source | None = None
        self._sink: Sink | None = None
        self._relay = False
        self._video_source: VideoRelay | None = None
        self.complexity = complexity
        """Opus encoder complexity; None: `DEFAULT_COMPLEXITY` of the attached rate."""
        self.rate = SAMPLE_RATE
        """The audio rate of the attached call (`attach`): source and sink frames, Opus in/out."""
        self._encoder = _OpusEncoder(SAMPLE_RATE, complexity)
        self._quiet = 0
        self.silent_frames = 0
        """Frames sent as the cached `SILENCE` packet (no source, None, or digital silence)."""
        self.encoded_frames = 0
        """Frames the Opus encoder ran for."""
        self._pc: RTCPeerConnection | None = None
        self._track: OpusSendTrack | None = None
        self._video_track: EncodedVideoTrack | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._closed = False
        self.fast_path: AudioFastPath | None = None
        """The current peer connection's audio fast path, once prepared (`webrtc.fastpath`)."""
        self._lock = asyncio.Lock()

    @property
    def ice_state(self) -> str:
        """aiortc's ``iceConnectionState`` (``new`` before the first offer)."""
        return self._pc.iceConnectionState if self._pc is not None else "new"

    @property
    def peer_connection(self) -> RTCPeerConnection | None:
        """The current peer connection (tests, statistics)."""
        return self._pc

    @property
    def video_out(self) -> EncodedVideoTrack | None:
        """The track relaying video to this peer (when its offer has video)."""
        return self._video_track

    def attach(
        self,
        source: Source | None,
        sink: Sink | None,
        rate: int = SAMPLE_RATE,
        *,
        relay: bool = False,
    ) -> None:
        """Bridge a call in: `source()` is called every 20 ms for 20 ms of int16 mono samples at
        `rate` Hz (960 at 48 kHz, 160 at 8 kHz), an Opus payload or None (silence); `sink(samples)`
        gets 20 ms int16 mono frames at `rate` (or what `resampler` makes of them). Either may be
        None. `rate` is 8000, 12000, 16000, 24000 or 48000 (the default; else ValueError): give
        the SIP leg's own rate (8000 for G.711) and nothing is resampled either way, libopus
        encodes from and decodes to it directly.

        `relay=True` (a SIP leg's port as the sink): received audio is decoded the moment it
        arrives and handed to `sink` (gaps concealed, late packets dropped:
        `OpusPlayout.relay`), with no jitter buffer and no playout clock on our side, the way
        the SIP-to-SIP bridge transcodes: the far end's own jitter buffer absorbs the network's
        jitter, and the delay and the CPU of a second buffer are saved. Without it (two
        browsers joined through frame queues, a consumer that needs a steady clock) frames come
        from our jitter buffer on a 20 ms clock."""
        if rate != self.rate:
            if rate not in OPUS_SAMPLE_RATES:
                raise ValueError("rate must be one of 8000, 12000, 16000, 24000, 48000")
            self._encoder = _OpusEncoder(rate, self.complexity)
            self._quiet = 0
            self.rate = rate
            if self.playout is not None:
                self.playout.set_rate(rate)
        self._source, self._sink = source, sink
        self._relay = relay and sink is not None
        if self._relay and self.playout is not None:
            self.playout.restart_relay()
        wake = getattr(self._track, "wake", None)
        if source is not None and wake is not None:
            wake()

    def _idle(self) -> bool:
        return self._source is None

    def kick(self) -> None:
        """The source has a frame now (it came from the network): send it at once when the
        fast path is up; otherwise the send clock takes it at its next slot."""
        fast = self.fast_path
        if fast is not None and fast.active:
            fast.send_now()

    def detach(self) -> None:
        """Bridge the call out: silence is sent, received audio is discarded, no video."""
        self._source = self._sink = None
        self._relay = False
        self.attach_video(None)

    def attach_video(self, relay: VideoRelay | None) -> None:
        """Send this peer the video of `relay` (another peer's `video_in`), encoded frames
        passed through; None stops it."""
        self._video_source = relay
        if self._video_track is not None:
            self._video_track.attach(relay)

    async def accept_offer(self, sdp: str) -> str:
        """Answer the page's offer (first one or ICE restart) with a fresh peer connection;
        returns the answer SDP with every local candidate. ValueError for a bad offer."""
        async with self._lock:
            if self._closed:
                raise ValueError(f"{self.kind} is closed")
            await self._close_pc()
            pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self.ice_servers)))
            self._pc = pc
            track = OpusSendTrack(self._next_payload)
            # (An attribute, not an argument: benchmarks/webrtc_bridge.py swaps the class.)
            track.idle = self._idle
            self._track = track

            @pc.on("track")
            def on_track(remote: MediaStreamTrack) -> None:
                if remote.kind == "audio" and pc is self._pc and not self.tapped:
                    self._reader = asyncio.ensure_future(self._read(remote))

            @pc.on("iceconnectionstatechange")
            def on_ice() -> None:
                if pc is self._pc and self.on_ice_state is not None:
                    self.on_ice_state(pc.iceConnectionState)

            try:
                offer = RTCSessionDescription(sdp=sdp, type="offer")
                await pc.setRemoteDescription(offer)
                transceivers = pc.getTransceivers()
                if not any(t.kind == "audio" for t in transceivers):
                    raise ValueError("offer has no audio")
                pc.addTrack(track)
                if any(t.kind == "video" for t in transceivers):
                    self._video_track = EncodedVideoTrack()
                    pc.addTrack(self._video_track)
                    self._video_track.attach(self._video_source)
                for transceiver in pc.getTransceivers():
                    if transceiver.kind == "audio":
                        transceiver.setCodecPreferences(_codecs("audio", "audio/opus"))
                    elif transceiver.kind == "video":
                        transceiver.setCodecPreferences(_codecs("video", "video/vp8"))
                self._install_taps(pc)
                answer = await pc.createAnswer()
                token = _offer_loopback.set(_has_loopback_candidate(sdp))
                try:
                    await pc.setLocalDescription(answer)
                finally:
                    _offer_loopback.reset(token)
                self._prepare_fast_path(pc, track)
            except Exception as exc:
                await self._close_pc()
                raise ValueError(f"offer cannot be answered: {exc}") from None
            return with_max_playback_rate(pc.localDescription.sdp, self.max_playback_rate)

    def _prepare_fast_path(self, pc: RTCPeerConnection, track: OpusSendTrack) -> None:
        """With the receive bypass, let `webrtc.fastpath` move the audio once DTLS is up: the
        track sends nothing meanwhile; if the path cannot start, the track sends as before."""
        self.fast_path = None
        if not self.tapped or fastpath_problems():
            return
        params = audio_parameters(pc.localDescription.sdp)
        sender = next((s for s in pc.getSenders() if s.track is track), None)
        if params is None or sender is None or sender.transport is None:
            return
        fast = AudioFastPath(self.name, params, self._next_payload, self._on_audio, self._idle)
        self.fast_path = fast
        track.defer()
        dtls = sender.transport

        @dtls.on("statechange")
        def on_dtls_state() -> None:
            if pc is not self._pc or self.fast_path is not fast:
                fast.deactivate()
            elif dtls.state == "connected":
                if not fast.activate(dtls, sender):
                    logger.warning("%s %s: audio fast path unavailable", self.kind, self.name)
                    self.fast_path = None
                    track.resume()
            elif dtls.state in ("closed", "failed"):
                fast.deactivate()

    def _new_playout(self) -> OpusPlayout:
        return OpusPlayout(max_delay_ms=self.max_delay_ms, rate=self.rate)

    def _install_taps(self, pc: RTCPeerConnection) -> None:
        self.tapped = False
        self.playout = None
        for transceiver in pc.getTransceivers():
            receiver = transceiver.receiver
            if transceiver.kind == "audio" and self.receive_path == "bypass":
                self.playout = self._new_playout()
                self.tapped = install_audio_tap(receiver, self._on_rtp) is not None
                if not self.tapped:
                    self.playout = None
            elif transceiver.kind == "video":
                tap = install_video_tap(receiver, self.video_in.push)
                self.video_in.requester = tap.request_keyframe if tap is not None else None
                sender = transceiver.sender
                video_track = self._video_track
                if video_track is not None:
                    hook_keyframe_requests(sender, video_track.request_keyframe)

    async def close(self) -> None:
        """Close the peer connection for good."""
        async with self._lock:
            self._closed = True
            self.detach()
            for track in self.video_in.subscribers:
                track.attach(None)
            await self._close_pc()

    async def stats(self) -> ChannelStats:
        """getStats-like figures: packets, loss, jitter (seconds), RTT (seconds)."""
        result = ChannelStats(
            self.ice_state,
            receive=self.counters,
            skipped_send_slots=self._track.skipped if self._track else 0,
            source_errors=self.source_errors,
        )
        if self.playout is not None:
            result.playout = self.playout.counters.as_dict()
            result.jitter_buffer = self.playout.stats
        if self._pc is None:
            return result
        fast = self.fast_path
        if fast is not None and fast.active:
            result.packets_sent = fast.sender_stats.packet_count
            result.bytes_sent = fast.sender_stats.octet_count
            if fast.reception is not None:
                result.packets_received = fast.reception.received
                result.packets_lost = max(0, fast.reception.lost)
                result.jitter = fast.reception.jitter_seconds
            result.round_trip_time = fast.round_trip_time
            result.fast_path = fast.counters.as_dict()
            return result
        report = await self._pc.getStats()
        for item in report.values():
            if item.type == "outbound-rtp" and getattr(item, "kind", "audio") == "audio":
                result.packets_sent += item.packetsSent
                result.bytes_sent += item.bytesSent
            elif item.type == "inbound-rtp" and getattr(item, "kind", "audio") == "audio":
                result.packets_received += item.packetsReceived
                result.packets_lost += item.packetsLost
                result.jitter = max(result.jitter, item.jitter / SAMPLE_RATE)
            elif item.type == "remote-inbound-rtp" and getattr(item, "kind", "audio") == "audio":
                result.round_trip_time = item.roundTripTime
        return result

    def _next_payload(self) -> bytes:
        source = self._source
        if source is None:
            return self._silence()
        try:
            data = source()
            if data is None:
                return self._silence()
            if isinstance(data, bytes | bytearray | memoryview):
                return bytes(data) or SILENCE
            if _count_nonzero(data):
                self._quiet = 0
            else:
                self._quiet += 1
                if self._quiet > SILENCE_HANGOVER:
                    self.silent_frames += 1
                    return SILENCE
            self.encoded_frames += 1
            return self._encoder.encode(data)
        except Exception:
            self.source_errors += 1
            if self.source_errors == 1:
                logger.exception("%s %s: media source failed", self.kind, self.name)
            return self._silence()

    def _silence(self) -> bytes:
        self._quiet = SILENCE_HANGOVER + 1
        self.silent_frames += 1
        return SILENCE

    # --- receive path: bypass (our jitter buffer, a 20 ms clock) ---

    def _on_rtp(self, packet: Any) -> None:
        self._on_audio(packet.sequence_number, packet.timestamp, packet.payload)

    def _on_audio(self, sequence_number: int, timestamp: int, payload: bytes) -> None:
        started = self._cpu_clock()
        playout = self.playout
        if playout is None:
            return
        sink = self._sink
        if sink is None and self._tick_handle is None:
            self.idle_packets += 1  # nobody listens: no buffering, no clock (an idle agent)
            return
        if self._relay and sink is not None:
            self._relay_frames(sink, playout.relay(sequence_number, timestamp, payload))
            self.counters.cpu_seconds += self._cpu_clock() - started
            return
        first = not playout.started
        now = self.clock()
        playout.put(sequence_number, timestamp, payload, now)
        if first and self._tick_handle is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._due = now + _FIRST_TICK
            self._tick_handle = loop.call_later(_FIRST_TICK, self._tick)
        self.counters.cpu_seconds += self._cpu_clock() - started

    def _relay_frames(self, sink: Sink, frames: list[Samples]) -> None:
        counters = self.counters
        resampler = self.resampler
        for samples in frames:
            counters.frames += 1
            if resampler is not None:
                samples = resampler(samples)
            try:
                sink(samples)
                counters.delivered += 1
            except Exception:
                counters.sink_errors += 1
                if counters.sink_errors == 1:
                    logger.exception("%s %s: media sink failed", self.kind, self.name)

    def _tick(self) -> None:
        started = self._cpu_clock()
        playout = self.playout
        if playout is None or self._closed:
            self._tick_handle = None
            return
        sink = self._sink
        if sink is None or self._relay:
            # Detached (or relaying on arrival): the clock stops and the next call starts from a
            # fresh playout (its first packet restarts the clock), so a waiting agent costs no
            # timer and no buffer.
            self._tick_handle = None
            self.playout = self._new_playout()
            return
        now = self.clock()
        due = self._due if now - self._due < _MAX_LATE else now
        samples = playout.get(now)
        self._due = playout.next_due(due)
        loop = asyncio.get_running_loop()
        self._tick_handle = loop.call_later(max(0.0, self._due - self.clock()), self._tick)
        counters = self.counters
        counters.frames += 1
        if sink is not None and samples is not None:
            if self.resampler is not None:
                samples = self.resampler(samples)
            try:
                sink(samples)
                counters.delivered += 1
            except Exception:
                counters.sink_errors += 1
                if counters.sink_errors == 1:
                    logger.exception("%s %s: media sink failed", self.kind, self.name)
        counters.cpu_seconds += self._cpu_clock() - started

    # --- receive path: aiortc's own (fallback, and the baseline of benchmarks/webrtc_receive) ---

    async def _read(self, remote: MediaStreamTrack) -> None:
        limiter = BacklogLimiter(self.max_backlog)
        counters = self.counters
        converter: RateConverter | None = None
        try:
            while True:
                frame = await remote.recv()
                started = self._cpu_clock()
                counters.frames += 1
                if not limiter.admit(self.clock()):
                    counters.dropped_backlog += 1
                    continue
                sink = self._sink
                if sink is None or not isinstance(frame, av.AudioFrame):
                    continue
                samples = _to_mono(frame)
                if frame.sample_rate != self.rate:
                    if converter is None or converter.output_rate != self.rate:
                        converter = RateConverter(frame.sample_rate, self.rate)
                    samples = converter.resample(samples)
                if self.resampler is not None:
                    samples = self.resampler(samples)
                try:
                    sink(samples)
                    counters.delivered += 1
                except Exception:
                    counters.sink_errors += 1
                    if counters.sink_errors == 1:
                        logger.exception("%s %s: media sink failed", self.kind, self.name)
                counters.cpu_seconds += self._cpu_clock() - started
        except (MediaStreamError, asyncio.CancelledError, ConnectionError):
            pass
        except Exception:
            logger.exception("%s %s: receive loop failed", self.kind, self.name)

    async def _close_pc(self) -> None:
        fast, self.fast_path = self.fast_path, None
        if fast is not None:
            fast.deactivate()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        self.playout = None
        self.tapped = False
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass
        pc, self._pc = self._pc, None
        if self._track is not None:
            self._track.stop()
            self._track = None
        if self._video_track is not None:
            self._video_track.stop()
            self._video_track = None
        self.video_in.requester = None
        if pc is not None:
            await pc.close()


class AgentChannel(PeerMedia):
    """One agent's channel to its page, kept for the whole session (see the module docstring)."""

    kind = "agent"

    def __init__(self, agent: str, **options: Any) -> None:
        super().__init__(agent, **options)
        self.agent = agent


def _codecs(kind: str, mime_type: str) -> list[Any]:
    from aiortc import RTCRtpSender

    capabilities = RTCRtpSender.getCapabilities(kind)
    chosen = [c for c in capabilities.codecs if c.mimeType.lower() == mime_type]
    if kind == "video":
        chosen += [c for c in capabilities.codecs if c.mimeType.lower() == "video/rtx"][:1]
    return chosen


def with_max_playback_rate(sdp: str, rate: int | None) -> str:
    """`sdp` with ``maxplaybackrate`` and ``sprop-maxcapturerate`` (RFC 7587 §6.1) set to `rate`
    on every Opus fmtp line (added when the payload type has no fmtp line); unchanged for None
    or 48000. A browser then encodes at most that band (WebRTC maps it to Opus's maximum
    bandwidth)."""
    if rate is None or rate >= SAMPLE_RATE:
        return sdp
    lines = sdp.split("\r\n")
    opus = {
        line.split()[0][len("a=rtpmap:") :]
        for line in lines
        if line.startswith("a=rtpmap:") and " opus/48000" in line.lower()
    }
    extra = f"maxplaybackrate={rate};sprop-maxcapturerate={rate}"
    out: list[str] = []
    fmtp_seen: set[str] = set()
    for line in lines:
        if line.startswith("a=fmtp:"):
            payload_type, _, params = line[len("a=fmtp:") :].partition(" ")
            if payload_type in opus:
                fmtp_seen.add(payload_type)
                kept = [
                    p
                    for p in params.split(";")
                    if p.strip()
                    and p.split("=")[0].strip() not in ("maxplaybackrate", "sprop-maxcapturerate")
                ]
                line = f"a=fmtp:{payload_type} " + ";".join([*kept, extra])
        out.append(line)
    for payload_type in sorted(opus - fmtp_seen):
        index = next(
            i for i, line in enumerate(out) if line.startswith(f"a=rtpmap:{payload_type} ")
        )
        out.insert(index + 1, f"a=fmtp:{payload_type} {extra}")
    return "\r\n".join(out)


def _has_loopback_candidate(sdp: str) -> bool:
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) > 4 and (parts[4] == "127.0.0.1" or parts[4] == "::1"):
                return True
    return False


def ice_servers_from_config(servers: Any) -> list[RTCIceServer]:
    """`RTCIceServer`s from `webrtc.config.IceServerConfig` values, TURN REST credentials made
    now (call it for each new peer connection's owner, not once for the process)."""
    result = []
    for server in servers:
        entry = server.as_browser(user="server")
        result.append(
            RTCIceServer(
                urls=entry["urls"],
                username=entry.get("username"),
                credential=entry.get("credential"),
            )
        )
    return result
