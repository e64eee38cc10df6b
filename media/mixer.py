"""An N-party audio mixer for conferences and supervisor listen, whisper and barge; sans-IO.

Each party has a role. A `PARTICIPANT` (and a `BARGE` supervisor, who is one) hears everyone and
is heard by everyone; `LISTEN` hears everyone and is heard by nobody; `WHISPER` hears everyone and
is heard only by its target (the agent). A muted party still hears and is heard by nobody.
`set_hears(listener, speaker, ...)` overrides a single pair for what roles cannot say. Nobody
ever hears itself. Parties come and go at any time, between ticks; a party that whispered to one
who left becomes a listener.

Every 20 ms (`ptime`) the caller hands `mix()` one int16 frame per party (`frame_size` samples at
the `sample_rate` given at construction), or None for a party that had nothing (silence or a
frame the jitter buffer could not conceal); a party left out counts as None. `mix()` returns each
party's own mix: the sum of the frames it may hear, saturated to int16 (no wrap-around).

Theory of operation. Who hears whom is an N x N 0/1 matrix H (row: listener, column: speaker), so
the mixes are H @ F for the N x S matrix of frames F: one product, whatever the roles, which is
what a tick does while N²·S is at most 65536 (up to 20 parties at 8 kHz, 8 at 48 kHz). A larger
product costs too much, and BLAS spreads it over both cores, burning CPU as the threads wait for
each other: at 50 parties and 48 kHz it took 1.2 to 2.1 ms of CPU per tick on the loaded machine.
But H is almost always "everyone hears every public speaker but itself": H = 1·cᵀ - diag(c) + R,
where c marks the speakers that most other parties hear and R, the residual, holds the few
exceptions (a whisper heard by its agent, overrides, a muted party). So a large tick sums the
public frames once (cᵀF, N·S additions), subtracts each public party's own frame, and adds R's rows
with one small product over only the rows and columns R touches. H, c and R are rebuilt only when
the membership, a role, a mute or an override changes. Sums are float32, exact for up to 512 summed
int16 frames (2^24 > 512·32768), so `MAX_PARTIES` is 512; each result is clipped to [-32768, 32767]
and cast to int16. The arrays returned are fresh every tick: a caller may keep them.

Measured with `time.process_time` (best of 7, 2000 ticks) on the 2-core development machine while
other jobs ran (`sum(range(1000))` took 17-18 µs there), per 20 ms tick, every party sending a
frame, everyone hearing everyone (in brackets: with one listener and one whisperer among them):

| parties | 8 kHz (160 samples) | 16 kHz (320) | 48 kHz (960) |
|---|---|---|---|
| 3  | 12 µs (12) | 13 µs (14) | 16 µs (16) |
| 10 | 20 µs (20) | 23 µs (22) | 38 µs (55) |
| 50 | 63 µs (73) | 75 µs (86) | 127 µs (141) |

That is 0.06 % to 0.6 % of a core for a whole conference. About a third of it is the Python loop
that copies the caller's frames in (about 0.5 µs a party).

Command: `PYTHONPATH=. .venv/bin/python benchmarks/media_engine.py mixer` (prints the table).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from enum import Enum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_PARTIES",
    "SAMPLE_RATES",
    "AudioMixer",
    "MixerError",
    "Party",
    "Role",
]

Samples = npt.NDArray[np.int16]

MAX_PARTIES = 512
"""The most parties one mixer takes: float32 sums of up to 512 int16 frames are exact."""
SAMPLE_RATES = frozenset({8000, 16000, 24000, 32000, 48000})
"""The sample rates a mixer runs at: those of G.711, G.722 and Opus."""
_PRODUCT_LIMIT = 65536
"""Up to this many multiply-adds (N²·S) the plain product H @ F is the cheaper way."""
_LOWEST = np.float32(-32768)
_HIGHEST = np.float32(32767)


class MixerError(ValueError):
    """A call the mixer cannot honour: an unknown party, a frame of the wrong length..."""


class Role(Enum):
    """What a party hears and who hears it."""

    PARTICIPANT = "participant"
    """Hears everyone, heard by everyone: callers, agents, conference members."""
    LISTEN = "listen"
    """Hears everyone, heard by nobody: a supervisor listening in."""
    WHISPER = "whisper"
    """Hears everyone, heard only by its target: a supervisor coaching an agent."""
    BARGE = "barge"
    """Hears everyone, heard by everyone: a supervisor who joined the call."""


class Party(NamedTuple):
    """The state of one party: its role, whom it whispers to, and whether it is muted."""

    role: Role = Role.PARTICIPANT
    target: Hashable | None = None
    muted: bool = False


class AudioMixer:
    """Mixes one frame per party per tick into one mix per party (see the module docstring)."""

    def __init__(self, sample_rate: int = 8000, ptime: int = 20) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise MixerError("unsupported sample rate")
        if ptime <= 0 or sample_rate * ptime % 1000:
            raise MixerError("unsupported packet time")
        self.sample_rate = sample_rate
        """Samples per second of every frame."""
        self.ptime = ptime
        """Milliseconds per frame."""
        self.frame_size = sample_rate * ptime // 1000
        """Samples per frame."""
        self._parties: dict[Hashable, Party] = {}
        self._overrides: dict[tuple[Hashable, Hashable], bool] = {}
        self._index: dict[Hashable, int] = {}
        self._frames = np.zeros((0, self.frame_size), np.float32)
        self._public = np.zeros(0, np.float32)
        self._private: npt.NDArray[np.intp] = np.zeros(0, np.intp)
        self._order: tuple[Hashable, ...] = ()
        self._hears: npt.NDArray[np.float32] | None = None
        self._rows: npt.NDArray[np.intp] = np.zeros(0, np.intp)
        self._cols: npt.NDArray[np.intp] = np.zeros(0, np.intp)
        self._residual = np.zeros((0, 0), np.float32)
        self._dirty = True

    def __len__(self) -> int:
        return len(self._parties)

    def __contains__(self, party: object) -> bool:
        return party in self._parties

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._parties)

    def party(self, party: Hashable) -> Party:
        """The state of `party`; raises `MixerError` when it is not in the mixer."""
        try:
            return self._parties[party]
        except KeyError:
            raise MixerError("unknown party") from None

    def add(
        self,
        party: Hashable,
        role: Role = Role.PARTICIPANT,
        *,
        target: Hashable | None = None,
        muted: bool = False,
    ) -> None:
        """Add a party; a `WHISPER` needs the `target` that alone hears it."""
        if party in self._parties:
            raise MixerError("party is already in the mixer")
        if len(self._parties) >= MAX_PARTIES:
            raise MixerError("too many parties")
        self._parties[party] = self._checked(party, Party(role, target, muted))
        self._dirty = True

    def remove(self, party: Hashable) -> None:
        """Remove a party with its overrides; whoever whispered to it now listens."""
        self.party(party)
        del self._parties[party]
        for other, state in self._parties.items():
            if state.target == party:
                self._parties[other] = Party(Role.LISTEN, None, state.muted)
        for pair in [pair for pair in self._overrides if party in pair]:
            del self._overrides[pair]
        self._dirty = True

    def set_role(self, party: Hashable, role: Role, *, target: Hashable | None = None) -> None:
        """Change a party's role (listen → whisper → barge...), keeping its mute."""
        state = self.party(party)
        self._parties[party] = self._checked(party, Party(role, target, state.muted))
        self._dirty = True

    def set_muted(self, party: Hashable, muted: bool = True) -> None:
        """Mute or unmute a party: muted, it still hears and is heard by nobody."""
        self._parties[party] = self.party(party)._replace(muted=muted)
        self._dirty = True

    def set_hears(self, listener: Hashable, speaker: Hashable, hears: bool | None) -> None:
        """Override whether `listener` hears `speaker` (None: back to what roles say). Mute still
        silences the speaker, and nobody hears itself."""
        self.party(listener)
        self.party(speaker)
        if listener == speaker:
            raise MixerError("a party cannot hear itself")
        if hears is None:
            self._overrides.pop((listener, speaker), None)
        else:
            self._overrides[(listener, speaker)] = hears
        self._dirty = True

    def hears(self, listener: Hashable, speaker: Hashable) -> bool:
        """Whether `listener` hears `speaker` now."""
        state = self.party(speaker)
        self.party(listener)
        if listener == speaker or state.muted:
            return False
        override = self._overrides.get((listener, speaker))
        if override is not None:
            return override
        if state.role is Role.LISTEN:
            return False
        if state.role is Role.WHISPER:
            return listener == state.target
        return True

    def matrix(self) -> npt.NDArray[np.bool_]:
        """Who hears whom, rows listening and columns speaking, in the order of iteration."""
        index = {party: row for row, party in enumerate(self._parties)}
        count = len(index)
        hears = np.zeros((count, count), np.bool_)
        for column, state in enumerate(self._parties.values()):
            if state.muted:
                continue
            if state.role is Role.WHISPER:
                target = index.get(state.target)
                if target is not None:
                    hears[target, column] = True
            elif state.role is not Role.LISTEN:
                hears[:, column] = True
        for (listener, speaker), value in self._overrides.items():
            column = index[speaker]
            if not self._parties[speaker].muted:
                hears[index[listener], column] = value
        np.fill_diagonal(hears, False)
        return hears

    def mix(self, frames: Mapping[Hashable, Samples | None]) -> dict[Hashable, Samples]:
        """One tick: each party's mix of the frames it hears, int16, `frame_size` samples."""
        if self._dirty:
            self._rebuild()
        matrix = self._frames
        matrix.fill(0.0)
        index = self._index
        size = self.frame_size
        for party, frame in frames.items():
            row = index.get(party)
            if row is None:
                raise MixerError("frame of an unknown party")
            if frame is not None:
                if frame.shape != (size,):
                    raise MixerError("frame has the wrong length")
                matrix[row] = frame
        if self._hears is not None:
            mixed = self._hears @ matrix
        else:
            common = self._public @ matrix
            mixed = common - matrix
            if self._private.size:
                mixed[self._private] = common
            if self._rows.size:
                mixed[self._rows] += self._residual @ matrix[self._cols]
        mixed.clip(_LOWEST, _HIGHEST, out=mixed)
        return dict(zip(self._order, mixed.astype(np.int16), strict=False))

    def _checked(self, party: Hashable, state: Party) -> Party:
        if not isinstance(state.role, Role):
            raise MixerError("unknown role")
        if state.role is Role.WHISPER:
            if state.target is None:
                raise MixerError("a whisper needs a target")
            if state.target == party:
                raise MixerError("a party cannot whisper to itself")
            self.party(state.target)
            return state
        return state._replace(target=None)

    def _rebuild(self) -> None:
        parties = list(self._parties)
        count = len(parties)
        self._index = {party: row for row, party in enumerate(parties)}
        self._frames = np.zeros((count, self.frame_size), np.float32)
        hears = self.matrix().astype(np.float32)
        heard_by = hears.sum(axis=0)
        public = (2 * heard_by > count - 1).astype(np.float32)
        residual = hears - (public[None, :] - np.diag(public))
        rows = np.flatnonzero(residual.any(axis=1))
        cols = np.flatnonzero(residual.any(axis=0))
        self._public = public
        self._private = np.flatnonzero(public == 0)
        self._order = tuple(parties)
        self._hears = hears if count * count * self.frame_size <= _PRODUCT_LIMIT else None
        self._rows, self._cols = rows, cols
        self._residual = np.ascontiguousarray(residual[np.ix_(rows, cols)])
        self._dirty = False
