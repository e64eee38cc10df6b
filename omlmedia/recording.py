"""Call recordings for campaigns, and voicemail mailboxes.

`CallRecorder` writes an agent call as stereo Ogg/Opus at the call's audio rate (8 kHz for a
G.711 caller, the rate the agent channel exchanges its frames at): the caller on the left, the
agent on the right, on the channel's 20 ms clock (the agent's frames are queued and paired with
the caller's). Any write
error stops the recording, never the call. A paused recording (PCI: a card number is read out)
keeps its clock and writes silence on both channels, so what follows still lines up; `gaps`
lists each pause as (start, end) offsets in seconds into the file.

`Mailbox` records a caller alone (voicemail, a queue's `record` overflow): the leg's packets go
through a `PcmPort` (capped jitter buffer, loss concealment) read by its own 20 ms `Pacer`, and
are written as a mono-in-stereo WAV (caller left) at 16 kHz.

Across nodes. A call of another node's queue is recorded on the agent's node, which sends the
caller's node the recording's pauses as they change (`omlmedia.crossnode`, ``X-Oml-Gaps``): the
text of `format_gaps`, read back strictly by `parse_gaps` (bounded, ordered, only the last pause
open).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from media.leg import RtpLeg
from media.oggopus import open_writer
from media.pacer import Pacer
from media.pcmport import PcmPort

logger = logging.getLogger(__name__)

__all__ = ["MAX_GAPS", "CallRecorder", "Mailbox", "format_gaps", "parse_gaps"]

Samples = npt.NDArray[np.int16]

MAX_GAPS = 100
"""The most pauses of one recording another node is told (the first ones; PCI pauses are an
agent's clicks, a handful a call)."""

_GAP = re.compile(r"(\d{1,7}(?:\.\d{1,3})?)-(\d{1,7}(?:\.\d{1,3})?)?")


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def format_gaps(gaps: Sequence[tuple[float, float | None]]) -> str:
    """`CallRecorder.gaps` as text: ``start-end`` in seconds into the file, comma-separated, a
    pause still running as ``start-``; the first `MAX_GAPS` only."""
    return ",".join(
        f"{_seconds(start)}-{'' if end is None else _seconds(end)}"
        for start, end in gaps[:MAX_GAPS]
    )


def parse_gaps(text: str) -> list[tuple[float, float | None]] | None:
    """The pauses `format_gaps` wrote, or None unless `text` is exactly that: at most
    `MAX_GAPS`, each ``start <= end``, in order and apart, only the last one open."""
    if not text:
        return []
    parts = text.split(",")
    if len(parts) > MAX_GAPS:
        return None
    gaps: list[tuple[float, float | None]] = []
    last = 0.0
    for index, part in enumerate(parts):
        match = _GAP.fullmatch(part)
        if match is None:
            return None
        start = float(match[1])
        end = float(match[2]) if match[2] is not None else None
        if end is None and index != len(parts) - 1:
            return None
        if start < last or (end is not None and end < start) or not math.isfinite(start):
            return None
        gaps.append((start, end))
        last = start if end is None else end
    return gaps


class CallRecorder:
    """Caller left, agent right, Ogg/Opus at `rate`."""

    def __init__(self, path: Path, rate: int = 48000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.rate = rate
        self.writer = open_writer(path, "opus", rate, 2)
        self._agent: deque[Samples] = deque(maxlen=5)
        self.failed = False
        self.samples = 0
        """Samples written per channel so far."""
        self.gaps: list[tuple[float, float | None]] = []
        """The pauses: start and end offsets in seconds (end None while paused)."""

    @property
    def offset(self) -> float:
        """Seconds into the file."""
        return round(self.samples / self.rate, 3)

    @property
    def paused(self) -> bool:
        """Whether the recording holds silence now."""
        return bool(self.gaps) and self.gaps[-1][1] is None

    def pause(self) -> bool:
        """Hold silence from now on; False when already paused."""
        if self.paused:
            return False
        self.gaps.append((self.offset, None))
        return True

    def resume(self) -> bool:
        """Record again; False when not paused."""
        if not self.paused:
            return False
        self.gaps[-1] = (self.gaps[-1][0], self.offset)
        return True

    def gap_list(self) -> list[dict[str, float]]:
        """The pauses, each ``{"start": s, "end": e}`` (a pause still running ends now)."""
        return [
            {"start": start, "end": end if end is not None else self.offset}
            for start, end in self.gaps
        ]

    def agent(self, frame: Samples) -> None:
        """A frame the agent said."""
        self._agent.append(frame)

    def caller(self, frame: Samples) -> None:
        """A frame the caller said: written with the agent's frame of the same time."""
        if self.failed:
            return
        agent = self._agent.popleft() if self._agent else None
        right = agent if agent is not None and len(agent) == len(frame) else np.zeros_like(frame)
        if self.paused:
            frame = right = np.zeros_like(frame)
        try:
            self.writer.write(np.stack((frame, right), axis=1))
            self.samples += len(frame)
        except (OSError, ValueError) as exc:
            self.failed = True
            logger.warning("recording %s stopped: %s", self.path, exc)

    def close(self) -> None:
        """Finish the file."""
        try:
            self.writer.close()
        except OSError as exc:
            logger.warning("recording %s did not close cleanly: %s", self.path, exc)


@dataclass
class _MailboxStats:
    skipped: int = 0
    errors: int = 0


class Mailbox:
    """A caller recorded alone until `close()`."""

    def __init__(self, leg: RtpLeg, path: Path, rate: int = 16000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.port = PcmPort(leg, rate)
        self.writer = open_writer(path, "wav", rate, 2)
        self.stats = _MailboxStats()
        self._loop = asyncio.get_running_loop()
        self._pacer = Pacer(self._loop, 0.02, self._tick, self.stats)
        self._pacer.start()

    def _tick(self, index: int) -> bool:
        frame = self.port.read(self._loop.time())
        try:
            self.writer.write(np.stack((frame, np.zeros_like(frame)), axis=1))
        except (OSError, ValueError) as exc:
            logger.warning("mailbox %s stopped: %s", self.path, exc)
            return False
        return True

    def close(self) -> None:
        """Stop and finish the file."""
        self._pacer.stop()
        self.port.close()
        try:
            self.writer.close()
        except OSError as exc:
            logger.warning("mailbox %s did not close cleanly: %s", self.path, exc)
