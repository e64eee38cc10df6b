"""VP8 relayed between peer connections as encoded frames: no decode, no encode.

A `VideoRelay` is the video a peer connection receives: `webrtc.rtptap.VideoTap` hands it each
assembled VP8 frame (aiortc's depayloaded frame, the payload descriptor stripped) with its RTP
timestamp. Any number of `EncodedVideoTrack`s subscribe to it; each is a track added to another
peer connection whose `recv()` returns the frames as `av.Packet`s, so aiortc's sender only
re-packetises them (its VP8 `pack`, a fresh payload descriptor and picture id). Nothing is
transcoded; the CPU per frame is the packetising and SRTP.

Keyframes. A track starts (and restarts after a queue overflow) by waiting for a keyframe
(RFC 6386 §9.1: bit 0 of the first byte is 0) and asks the relay for one; the relay asks its
source (a PLI through `VideoTap.request_keyframe`), at most every `keyframe_interval` seconds.
A PLI or FIR that the far end of a track sends to aiortc's sender reaches the track through
`webrtc.rtptap.hook_keyframe_requests` and goes the same way.

Timestamps. The track's pts (90 kHz) follows the source's RTP timestamps (unwrapped); when the
track is moved to another relay it carries on from its last pts plus one frame time, so the
receiving browser sees a continuous stream.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

__all__ = ["EncodedVideoTrack", "VideoRelay", "is_vp8_keyframe"]

VIDEO_CLOCK = 90000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
_MASK = 0xFFFFFFFF
_QUEUE = 30
_FRAME_TICKS = 3000


def is_vp8_keyframe(data: bytes) -> bool:
    """Whether a VP8 frame (payload descriptor stripped) is a keyframe (RFC 6386 §9.1)."""
    return len(data) >= 3 and data[0] & 1 == 0


class VideoRelay:
    """Encoded video received on one peer connection, fanned out to subscribed tracks."""

    def __init__(
        self, *, keyframe_interval: float = 0.5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keyframe_interval = keyframe_interval
        self.clock = clock
        self.requester: Callable[[], None] | None = None
        """Asks the source for a keyframe (set by the owner of the receiving side)."""
        self.frames = 0
        self.keyframes = 0
        self.last_frame_at: float | None = None
        self._subscribers: list[EncodedVideoTrack] = []
        self._last_request = -1e9

    @property
    def subscribers(self) -> list[EncodedVideoTrack]:
        return list(self._subscribers)

    def push(self, data: bytes, timestamp: int) -> None:
        """One encoded frame from the source (`timestamp`: its RTP timestamp, 90 kHz)."""
        self.frames += 1
        key = is_vp8_keyframe(data)
        if key:
            self.keyframes += 1
        self.last_frame_at = self.clock()
        for track in self._subscribers:
            track.feed(self, data, timestamp, key)

    def subscribe(self, track: EncodedVideoTrack) -> None:
        if track not in self._subscribers:
            self._subscribers.append(track)
            track.waiting_keyframe = True
            self.request_keyframe(force=True)

    def unsubscribe(self, track: EncodedVideoTrack) -> None:
        if track in self._subscribers:
            self._subscribers.remove(track)

    def request_keyframe(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_request < self.keyframe_interval:
            return
        self._last_request = now
        if self.requester is not None:
            self.requester()


class EncodedVideoTrack(MediaStreamTrack):
    """A video track whose `recv()` returns pre-encoded VP8 `av.Packet`s from a `VideoRelay`."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.source: VideoRelay | None = None
        self.waiting_keyframe = True
        self.sent = 0
        self.dropped = 0
        self._queue: asyncio.Queue[av.Packet[Any] | None] = asyncio.Queue(_QUEUE)
        self._origin_source: VideoRelay | None = None
        self._high = 0
        self._offset = 0
        self._last_pts = -_FRAME_TICKS

    def attach(self, relay: VideoRelay | None) -> None:
        """Take frames from `relay` from now on (None: none)."""
        if self.source is relay:
            return
        if self.source is not None:
            self.source.unsubscribe(self)
        self.source = relay
        if relay is not None:
            relay.subscribe(self)

    def request_keyframe(self) -> None:
        """The far end asked for a keyframe (PLI/FIR)."""
        if self.source is not None:
            self.source.request_keyframe()

    def feed(self, relay: VideoRelay, data: bytes, timestamp: int, keyframe: bool) -> None:
        if relay is not self.source or self.readyState != "live":
            return
        if self.waiting_keyframe:
            if not keyframe:
                self.dropped += 1
                relay.request_keyframe()
                return
            self.waiting_keyframe = False
        packet = av.Packet(data)
        packet.pts = self._pts(relay, timestamp)
        packet.time_base = TIME_BASE
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            self.dropped += 1
            self.waiting_keyframe = True
            relay.request_keyframe()

    def _pts(self, relay: VideoRelay, timestamp: int) -> int:
        if relay is not self._origin_source:
            self._origin_source = relay
            self._high = timestamp
            self._offset = self._last_pts + _FRAME_TICKS - timestamp
        else:
            delta = ((timestamp - self._high + 0x80000000) & _MASK) - 0x80000000
            self._high += delta
        pts = self._high + self._offset
        if pts <= self._last_pts:  # a reordered or repeated timestamp: keep pts increasing
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        self.sent += 1
        return packet

    def stop(self) -> None:
        self.attach(None)
        super().stop()
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            pass
