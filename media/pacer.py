"""A drift-free packet clock on the event loop, for media we generate (prompts, music, tones).

`Pacer` calls `tick(index)` at loop time `epoch + index * interval`: timer lateness never
accumulates into drift, a late timer catches up with at most `MAX_BURST` ticks at once, and a
longer stall skips the missed ticks (counted) rather than sending a burst the peer's jitter
buffer would have to drop.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)

__all__ = ["MAX_BURST", "Pacer", "PacerStats"]

MAX_BURST = 3
"""The most ticks a late timer catches up with at once."""


class PacerStats(Protocol):
    """Where a pacer counts skipped ticks and failed ones."""

    skipped: int
    errors: int


def _log_error(stats: PacerStats, message: str) -> None:
    if stats.errors == 1:
        logger.exception(message)
    else:
        logger.debug(message, exc_info=True)


class Pacer:
    """Calls `tick(index)` at loop time `epoch + index * interval` until it returns False."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        tick: Callable[[int], bool],
        stats: PacerStats,
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
                _log_error(self.stats, "media tick failed")
                more = True
            if not more:
                self.handle = None
                return
        self.handle = self.loop.call_at(self.epoch + self.next_index * self.interval, self._run)
