"""Upkeep of the calls' media: RTCP reports on every leg, and the media-timeout sweep.

Theory of operation. One timer a second sends the RTCP reports that are due on every leg a
target holds (RFC 3550 §6.2; each leg keeps its own randomised schedule). A second timer, every
quarter of ``media.timeout`` (between 0.25 and 5 s), ends the calls whose media stood still for
longer than the timeout: RTP has no keep-alive, so a peer that stopped sending is gone, unless the
call is on hold (RFC 3264 §8.4). Targets show what to report on (`legs`) and what to watch
(`watched()`: the call to end, its `MediaWatch`, its packet count); this module decides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from media.leg import RtpLeg
from omlmedia.logs import event
from sip.service import SipService
from sip.ua import Call

__all__ = ["HasLegs", "MediaWatch", "Upkeep", "Watched"]

logger = logging.getLogger(__name__)


@dataclass
class MediaWatch:
    """Media-timeout bookkeeping: the packet count at the last sweep, since when it stood still."""

    packets: int = -1
    idle_since: float | None = None
    on_hold: bool = False

    def set_hold(self, on_hold: bool) -> None:
        """Hold suspends the check; the silence before a resume does not count against it."""
        if on_hold != self.on_hold:
            self.on_hold = on_hold
            self.packets = -1
            self.idle_since = None

    def idle_for(self, packets: int, now: float) -> float:
        """Seconds the count has not moved, given the count and time of this sweep."""
        if packets != self.packets:
            self.packets = packets
            self.idle_since = now
            return 0.0
        if self.idle_since is None:
            self.idle_since = now
        return now - self.idle_since


class HasLegs(Protocol):
    """A target holding RTP legs."""

    @property
    def legs(self) -> Iterable[RtpLeg]:
        """The legs it holds now."""
        ...


class Watched(Protocol):
    """A target whose calls the media-timeout sweep checks."""

    def watched(self) -> Iterable[tuple[Call, MediaWatch, int]]:
        """The calls to check now (confirmed, media running, not on hold): the call to end when
        its media stands still, its watch, and its packet count."""
        ...


class Upkeep:
    """The RTCP timer and the media-timeout sweep over the targets' legs and calls."""

    def __init__(
        self,
        service: SipService,
        reported: Sequence[HasLegs],
        watched: Sequence[Watched],
        timeout: float,
        on_timeout: Callable[[], None] = lambda: None,
    ) -> None:
        self.service = service
        self.reported = reported
        self.watched = watched
        self.timeout = timeout
        """Seconds of standing-still media that end a call; 0 turns the sweep off."""
        self.on_timeout = on_timeout
        """Called once per call the sweep ends (the router counts them)."""
        self._sweeper: asyncio.TimerHandle | None = None
        self._rtcp_ticker: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Arm both timers (in the running loop)."""
        loop = asyncio.get_running_loop()
        if self.timeout > 0:
            interval = min(5.0, max(0.25, self.timeout / 4))
            self._sweeper = loop.call_later(interval, self._sweep, interval)
        self._rtcp_ticker = loop.call_later(1.0, self._rtcp_tick)

    def stop(self) -> None:
        """Cancel both timers (at shutdown); safe to call twice."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._rtcp_ticker is not None:
            self._rtcp_ticker.cancel()
            self._rtcp_ticker = None

    def _rtcp_tick(self) -> None:
        """Send the RTCP reports that are due on every leg (RFC 3550 §6.2): one timer for all
        legs, each with its own randomised schedule."""
        self._rtcp_ticker = asyncio.get_running_loop().call_later(1.0, self._rtcp_tick)
        seen: set[int] = set()
        for target in self.reported:
            for leg in target.legs:
                if id(leg) in seen:
                    continue
                seen.add(id(leg))
                try:
                    leg.send_report(leg.clock())
                except Exception:
                    logger.exception("RTCP report failed on port %d", leg.port)

    def _sweep(self, interval: float) -> None:
        """End calls whose media stood still for longer than the timeout."""
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(interval, self._sweep, interval)
        now = loop.time()
        limit = self.timeout
        dead: list[Call] = []
        for target in self.watched:
            for call, watch, packets in list(target.watched()):
                if watch.idle_for(packets, now) > limit:
                    dead.append(call)
        service = self.service
        for call in dead:
            self.on_timeout()
            event(logger, "media-timeout", call_id=call.call_id, seconds=limit)
            call.end_cause = "media-timeout"
            service.act(partial(service.ua.hangup, call))
