"""Call recordings: where a call's file is, the search over call records, and the retention job.

A campaign with ``recording = true`` records each call (`omlmedia.recording.CallRecorder`) under
``<data_dir>/recordings``; the call record keeps the file's path. `recording_file` gives that
file only when it is still there and lies inside the recordings directory (a record never makes
the server read elsewhere). A call requeued mid-call (its agent's page went away) is answered
again: each answered segment records into a new file (`reserve_segment`: ``-2``, ``-3``...,
created exclusively, never one that exists), and the record lists them in order (`segments`).
`search` filters call records as the API's search does.

Retention. A campaign's ``recording_retention_days`` (0: kept for ever) says how long its
recordings are kept. `sweep` deletes the files of the calls that ended more than that many days
before `now` and returns what it deleted; `RetentionJob` runs it at start and then once a day,
with an injected clock, and each deletion is logged and written to the audit log
(``recording.delete``, actor ``retention``) by the `audit` callback it is given.

Playback tickets. An ``<audio src>`` cannot send the bearer token, and a token never goes in a
URL. `PlaybackTickets` issues a short-lived ticket instead (``POST
/api/v1/recordings/{id}/ticket``, audited as the listen): an opaque random string (128 bits)
that opens one recording for the identity it was issued to, and nothing else. It lives `TTL`
seconds after its issue or its last use (the player's range requests while it seeks) and never
more than `MAX_LIFETIME` after its issue. Only its SHA-256 is kept, in memory; a redemption
compares digests in constant time; the ticket itself is never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Generic, TypeVar

from omlmedia.storage import CallRecord

Who = TypeVar("Who")

__all__ = [
    "DAY",
    "MAX_SEGMENTS",
    "Deleted",
    "PlaybackTickets",
    "RecordingQuery",
    "RetentionJob",
    "gaps",
    "media_type",
    "min_mos",
    "recording_file",
    "reserve_segment",
    "search",
    "segment_agents",
    "segments",
    "sweep",
]

logger = logging.getLogger(__name__)

DAY: Final = 86400.0
_MEDIA_TYPES: Final = {".opus": "audio/ogg", ".ogg": "audio/ogg", ".wav": "audio/wav"}


MAX_SEGMENTS: Final = 1000
"""Recorded segments of one call at most (a call requeued that many times records no more)."""


def reserve_segment(root: Path, stem: str, suffix: str = ".opus") -> str:
    """A new recording file under `root` for `stem` (relative, without suffix), created empty and
    never one that exists: ``stem.opus``, else ``stem-2.opus``, ``stem-3.opus``... each taken
    with an exclusive create (O_EXCL), so two recorders (a requeued call's next agent, another
    node writing the shared directory) never open the same file. Returns its path relative to
    `root`; raises `OSError` when none can be created."""
    (root / stem).parent.mkdir(parents=True, exist_ok=True)
    for index in range(1, MAX_SEGMENTS + 1):
        relative = f"{stem}{suffix}" if index == 1 else f"{stem}-{index}{suffix}"
        try:
            with open(root / relative, "xb"):
                pass
        except FileExistsError:
            continue
        return relative
    raise FileExistsError(f"{MAX_SEGMENTS} recordings of {stem} exist already")


def segments(record: CallRecord) -> list[str]:
    """The call's recordings in order, as the record names them: each answered segment's
    (``segment`` legs: a requeued call has several), else the one ``recording``."""
    files = [
        leg["file"]
        for leg in record.legs
        if leg.get("role") == "segment" and isinstance(leg.get("file"), str) and leg["file"]
    ]
    if not files and record.recording:
        files = [record.recording]
    return files


def segment_agents(record: CallRecord) -> list[str]:
    """The agent of each of `segments(record)` (the record's agent for a one-file record)."""
    agents = [
        str(leg.get("agent") or "")
        for leg in record.legs
        if leg.get("role") == "segment" and isinstance(leg.get("file"), str) and leg["file"]
    ]
    return agents or ([record.agent] if record.recording else [])


def recording_file(record: CallRecord, root: Path, segment: int = 1) -> Path | None:
    """The call's recording (its `segment`-th, from 1) when its file exists inside `root`;
    else None."""
    files = segments(record)
    if not 1 <= segment <= len(files):
        return None
    try:
        path = Path(files[segment - 1])
        if not path.is_absolute():
            path = root / path
        resolved = path.resolve()
        if not resolved.is_relative_to(root.resolve()) or not resolved.is_file():
            return None
    except (OSError, ValueError, RuntimeError):
        return None
    return resolved


def media_type(path: Path) -> str:
    """The Content-Type of a recording file (Ogg/Opus or WAV)."""
    return _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")


def min_mos(record: CallRecord) -> float | None:
    """The lowest MOS of the call's legs (None when no leg has one)."""
    scores = []
    for leg in record.legs:
        value = leg.get("mos")
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            scores.append(float(value))
    return min(scores) if scores else None


def gaps(record: CallRecord, segment: int = 1) -> list[dict[str, float]]:
    """The pauses (PCI) of the call's `segment`-th recording, each ``{"start", "end"}`` in
    seconds into the file (the ``recording`` legs' ``gaps`` whose ``file`` is that segment's,
    or without a ``file`` for the first: the file holds silence there), in order; malformed
    ones are left out."""
    files = segments(record)
    if not 1 <= segment <= len(files):
        return []
    spans = []
    for leg in record.legs:
        if leg.get("role") != "recording" or not isinstance(leg.get("gaps"), list):
            continue
        file = leg.get("file") or files[0]
        if file != files[segment - 1] and Path(str(file)).name != Path(files[segment - 1]).name:
            continue
        for gap in leg["gaps"]:
            if not isinstance(gap, Mapping):
                continue
            start, end = gap.get("start"), gap.get("end")
            if (
                isinstance(start, int | float)
                and isinstance(end, int | float)
                and not isinstance(start, bool)
                and not isinstance(end, bool)
                and math.isfinite(start)
                and math.isfinite(end)
                and 0 <= start <= end
            ):
                spans.append({"start": round(float(start), 3), "end": round(float(end), 3)})
    return sorted(spans, key=lambda g: g["start"])


def talk_seconds(record: CallRecord) -> float:
    """What a recording of the call lasts about: from the answer to the end."""
    return record.billsec if record.answer is not None else 0.0


@dataclass(frozen=True, slots=True)
class RecordingQuery:
    """The search's filters (None or empty: any). `caller` matches a part of the caller's
    number; durations are the talk time in seconds; `min_mos` keeps the calls whose every leg
    with a score has at least that MOS (a call without a score is left out)."""

    agent: str | None = None
    campaign: str | None = None
    caller: str | None = None
    disposition: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    min_mos: float | None = None

    def matches(self, record: CallRecord) -> bool:
        """Whether `record` passes every filter."""
        if self.agent is not None and record.agent != self.agent:
            return False
        if self.campaign is not None and record.campaign != self.campaign:
            return False
        if self.caller and self.caller not in record.caller:
            return False
        if self.disposition is not None and record.disposition != self.disposition:
            return False
        seconds = talk_seconds(record)
        if self.min_duration is not None and seconds < self.min_duration:
            return False
        if self.max_duration is not None and seconds > self.max_duration:
            return False
        if self.min_mos is not None:
            score = min_mos(record)
            if score is None or score < self.min_mos:
                return False
        return True


def search(
    records: Iterable[CallRecord], query: RecordingQuery, root: Path
) -> list[tuple[CallRecord, Path]]:
    """The records that match `query` and whose recording is there, with its file, by start
    time."""
    found = []
    for record in sorted(records, key=lambda r: (r.start, r.call_id)):
        if not record.recording or not query.matches(record):
            continue
        path = recording_file(record, root)
        if path is not None:
            found.append((record, path))
    return found


@dataclass(frozen=True, slots=True)
class Deleted:
    """A recording the retention job deleted."""

    call_id: str
    campaign: str
    path: Path
    ended: float
    days: int


def sweep(
    records: Iterable[CallRecord], retention: Mapping[str, int], root: Path, now: float
) -> list[Deleted]:
    """Delete the recordings of the calls of each campaign of `retention` (days, 0: kept) that
    ended more than its days before `now`; returns them. A file already gone, or outside
    `root`, is left alone."""
    deleted = []
    for record in records:
        days = retention.get(record.campaign, 0)
        if days <= 0 or record.end > now - days * DAY:
            continue
        for segment in range(1, len(segments(record)) + 1):  # every segment's file
            path = recording_file(record, root, segment)
            if path is None:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("retention: cannot delete %s: %s", path, exc)
                continue
            deleted.append(Deleted(record.call_id, record.campaign, path, record.end, days))
    return deleted


Audit = Callable[[Deleted], Awaitable[None]]
Records = Callable[[float], Awaitable[list[CallRecord]]]


class RetentionJob:
    """Runs `sweep` at `start` and then every `period` seconds (a day): `records(before)` gives
    the call records that started before a time, `clock` the time, `audit` writes each
    deletion to the audit log."""

    def __init__(
        self,
        retention: Mapping[str, int],
        root: Path,
        records: Records,
        audit: Audit,
        *,
        clock: Callable[[], float],
        period: float = DAY,
    ) -> None:
        self.retention = {name: days for name, days in retention.items() if days > 0}
        self.root = root
        self.records = records
        self.audit = audit
        self.clock = clock
        self.period = period
        self.runs = 0
        self.deleted = 0
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> list[Deleted]:
        """One sweep now: deletes, logs and audits each old recording."""
        if not self.retention:
            return []
        now = self.clock()
        shortest = min(self.retention.values())
        records = await self.records(now - shortest * DAY)
        loop = asyncio.get_running_loop()
        deleted = await loop.run_in_executor(None, sweep, records, self.retention, self.root, now)
        for item in deleted:
            logger.info(
                "retention: deleted the recording of %s (campaign %s, kept %d days): %s",
                item.call_id,
                item.campaign,
                item.days,
                item.path,
            )
            await self.audit(item)
        self.runs += 1
        self.deleted += len(deleted)
        return deleted

    def start(self) -> None:
        """Sweep now and then every period (nothing to do without a retention)."""
        if self._task is None and self.retention:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                logger.exception("the recording retention sweep failed; next one in a day")
            await asyncio.sleep(self.period)

    async def close(self) -> None:
        """Stop the daily sweep."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


# -- playback tickets ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Ticket(Generic[Who]):
    digest: bytes
    call_id: str
    who: Who
    issued: float
    expires: float


class PlaybackTickets(Generic[Who]):
    """Short-lived tickets that each open one recording for one identity (module docstring),
    on an injected `clock`. `who` is what a ticket acts as (the API's `Identity`); `account`
    gives what two of them must share to be the same account (default: themselves)."""

    TTL: Final = 60.0
    """Seconds a ticket lives after its issue or its last use."""
    MAX_LIFETIME: Final = 4 * 3600.0
    """Seconds a ticket lives at most, used or not."""
    MAX_TICKETS: Final = 10_000
    """Live tickets kept at most (the oldest go first)."""

    def __init__(
        self, clock: Callable[[], float], account: Callable[[Who], object] = lambda who: who
    ) -> None:
        self.clock = clock
        self.account = account
        self._tickets: dict[bytes, _Ticket[Who]] = {}

    @staticmethod
    def _digest(ticket: str) -> bytes:
        return hashlib.sha256(ticket.encode("utf-8", "surrogateescape")).digest()

    def issue(self, call_id: str, who: Who) -> str:
        """A new ticket for the recording of `call_id`, acting as `who`."""
        now = self.clock()
        self._prune(now)
        ticket = secrets.token_urlsafe(16)
        digest = self._digest(ticket)
        self._tickets[digest] = _Ticket(digest, call_id, who, now, now + self.TTL)
        while len(self._tickets) > self.MAX_TICKETS:
            del self._tickets[next(iter(self._tickets))]
        return ticket

    def redeem(self, ticket: str, call_id: str, who: Who | None = None) -> Who | None:
        """The identity `ticket` acts as, when it is live, for `call_id`, and (when the request
        names one, `who`) issued to that same identity; each use keeps it `TTL` seconds more.
        None otherwise: unknown, expired, another recording, another account."""
        if not ticket or len(ticket) > 64:
            return None
        now = self.clock()
        digest = self._digest(ticket)
        entry = self._tickets.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        if now >= entry.expires:
            del self._tickets[digest]
            return None
        if entry.call_id != call_id:
            return None
        if who is not None and self.account(who) != self.account(entry.who):
            return None
        entry.expires = min(now + self.TTL, entry.issued + self.MAX_LIFETIME)
        return entry.who

    def __len__(self) -> int:
        return len(self._tickets)

    def _prune(self, now: float) -> None:
        for digest in [d for d, t in self._tickets.items() if now >= t.expires]:
            del self._tickets[digest]
