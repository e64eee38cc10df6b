"""Taps into aiortc 1.16's RTP receivers and senders: packets before its jitter buffer and decoder.

Why. aiortc's `RTCRtpReceiver` puts every audio packet through a fixed
``JitterBuffer(capacity=16, prefetch=4)`` (80 ms of standing delay) and decodes it in a thread;
video goes through a frame-assembling jitter buffer and a VP8 decoder thread. aiortc has no
public API to take the packets earlier.

The hook. `RTCRtpReceiver._handle_rtp_packet` (the method `RTCDtlsTransport` calls for every
unprotected RTP packet, part of aiortc's ``RtpReceiver`` protocol) first does what must keep
working, all of it on the receiver's own state: the SSRC list, the payload-type check, the RTCP
statistics (`StreamStatistics`, which feed the receiver reports and ``getStats``), RTX unwrap,
NACKs and depayloading. Only then does it call ``self.__jitter_buffer.add(packet)`` and hand a
complete frame, if one comes back, to the decoder thread. The tap replaces that one object, the
receiver's name-mangled ``_RTCRtpReceiver__jitter_buffer``, with an object of the same shape
(``add(packet) -> (pli_flag, frame | None)``):

- `AudioTap` hands each packet to a callback and returns ``(False, None)``: aiortc's decoder
  thread is never fed (it stays blocked on its empty queue, no CPU) and the receiver's track
  never yields a frame; receiver reports and ``inbound-rtp`` statistics carry on unchanged.
- `VideoTap` keeps aiortc's video jitter buffer (frame assembly from packets, its own PLIs) but
  takes the assembled encoded frames instead of letting them reach the decoder; returning
  ``pli_flag=True`` makes aiortc send a PLI, which is how `VideoTap.request_keyframe` asks the
  sender for a keyframe without any other private call.

On the send side, aiortc's `RTCRtpSender._send_keyframe` (called when the far end sends PLI or
FIR) only raises a flag its own encoder reads; a track of pre-encoded frames never sees it.
`hook_keyframe_requests` wraps that method on one sender instance so the request reaches us.

All of this is aiortc-private. `tap_problems()` checks that the hooks still fit the installed
aiortc (attribute present, shape of ``add``); the installers return False (and the channel falls
back to aiortc's stock path) instead of failing, and tests/webrtc/test_rtptap.py fails on an
aiortc upgrade that breaks them.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtp import RtpPacket

logger = logging.getLogger(__name__)

__all__ = [
    "JITTER_BUFFER_ATTRIBUTE",
    "AudioTap",
    "VideoTap",
    "hook_keyframe_requests",
    "install_audio_tap",
    "install_video_tap",
    "tap_problems",
]

JITTER_BUFFER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"
"""The receiver attribute replaced by the taps (aiortc 1.16: ``self.__jitter_buffer``)."""

PacketCallback = Callable[[RtpPacket], None]
FrameCallback = Callable[[bytes, int], None]


def tap_problems(receiver: RTCRtpReceiver | None = None) -> list[str]:
    """What in the installed aiortc no longer fits the hooks (empty when all is well). With a
    `receiver`, its instance is checked too."""
    problems = list(_class_problems())
    if receiver is not None:
        inner = getattr(receiver, JITTER_BUFFER_ATTRIBUTE, None)
        if inner is None or not callable(getattr(inner, "add", None)):
            problems.append(f"receiver has no {JITTER_BUFFER_ATTRIBUTE} with add()")
    return problems


@functools.cache
def _class_problems() -> tuple[str, ...]:
    problems: list[str] = []
    source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    if "self.__jitter_buffer.add(packet)" not in source:
        problems.append("RTCRtpReceiver._handle_rtp_packet no longer calls __jitter_buffer.add")
    if "StreamStatistics" not in inspect.getsource(RTCRtpReceiver):
        problems.append("RTCRtpReceiver no longer keeps StreamStatistics")
    if not callable(getattr(RTCRtpSender, "_send_keyframe", None)):
        problems.append("RTCRtpSender._send_keyframe is gone")
    return tuple(problems)


class AudioTap:
    """Stands in for an audio receiver's jitter buffer: every packet goes to `on_packet`."""

    def __init__(self, on_packet: PacketCallback) -> None:
        self.on_packet = on_packet
        self.packets = 0
        self.errors = 0

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self.packets += 1
        try:
            self.on_packet(packet)
        except Exception:
            self.errors += 1
            if self.errors == 1:
                logger.exception("audio tap callback failed")
        return False, None

    def remove(self, count: int) -> None:
        """aiortc's JitterBuffer API (not called by the receiver); nothing is held here."""


class VideoTap:
    """Wraps a video receiver's jitter buffer: assembled encoded frames go to `on_frame(data,
    rtp_timestamp)` instead of the decoder; `request_keyframe` makes aiortc send a PLI."""

    def __init__(self, inner: Any, on_frame: FrameCallback) -> None:
        self.inner = inner
        self.on_frame = on_frame
        self.frames = 0
        self.errors = 0
        self.keyframe_requests = 0
        self._want_pli = False

    def request_keyframe(self) -> None:
        """Send a PLI to the sender with the next packet received."""
        self._want_pli = True

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        pli, frame = self.inner.add(packet)
        if frame is not None:
            self.frames += 1
            try:
                self.on_frame(bytes(frame.data), int(frame.timestamp))
            except Exception:
                self.errors += 1
                if self.errors == 1:
                    logger.exception("video tap callback failed")
        if self._want_pli:
            self._want_pli = False
            self.keyframe_requests += 1
            pli = True
        return bool(pli), None

    def remove(self, count: int) -> None:
        self.inner.remove(count)


def install_audio_tap(receiver: RTCRtpReceiver, on_packet: PacketCallback) -> AudioTap | None:
    """Replace `receiver`'s audio jitter buffer with an `AudioTap`; None if aiortc changed."""
    problems = tap_problems(receiver)
    if problems:
        logger.warning("aiortc receive tap unavailable: %s", "; ".join(problems))
        return None
    tap = AudioTap(on_packet)
    setattr(receiver, JITTER_BUFFER_ATTRIBUTE, tap)
    return tap


def install_video_tap(receiver: RTCRtpReceiver, on_frame: FrameCallback) -> VideoTap | None:
    """Wrap `receiver`'s video jitter buffer in a `VideoTap`; None if aiortc changed."""
    problems = tap_problems(receiver)
    if problems:
        logger.warning("aiortc video tap unavailable: %s", "; ".join(problems))
        return None
    tap = VideoTap(getattr(receiver, JITTER_BUFFER_ATTRIBUTE), on_frame)
    setattr(receiver, JITTER_BUFFER_ATTRIBUTE, tap)
    return tap


def hook_keyframe_requests(sender: RTCRtpSender, on_request: Callable[[], None]) -> bool:
    """Call `on_request` whenever the far end asks `sender` for a keyframe (PLI/FIR)."""
    original = getattr(sender, "_send_keyframe", None)
    if not callable(original):
        return False

    def send_keyframe() -> None:
        original()
        try:
            on_request()
        except Exception:
            logger.exception("keyframe request callback failed")

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
    return True
