"""Conference rooms: SIP callers, browser agents and supervisors mixed at 16 kHz.

`ConferenceService` is a target that owns calls, in the shape of `AgentDesk`: the router hands it
an offered INVITE (`offer(call, room)`), it answers the call itself and carries it until the
caller leaves (`on_ended`), follows re-INVITEs (`on_session_modified`), reports SIP INFO and
RFC 4733 digits (`on_dtmf`, `on_digit`), gives its legs to the router's RTCP timer (`legs`) and
ends everything at shutdown (`hangup_all`). Supervisors and the API drive rooms through
`rooms()`, `participants()`, `set_role()`, `mute()` and `kick()`, and `add_endpoint()` puts a
party that is not a SIP call in a room (a browser agent's channel, a recorder, a player): a
`source()` that gives the party's 20 ms frame (or None) and a `sink(frame)` that takes its mix.

Theory of operation. A SIP participant is one `RtpLeg` on a pair of the pool, answered like the
media services answer (any codec of `services.CAPABILITIES`, the offerer's preference; SDES-SRTP
when offered, RFC 4568), seen through a `PcmPort` at the room's rate: its capped adaptive jitter
buffer (60 ms by default) is the participant's playout buffer, G.711 is upsampled to 16 kHz on
the way in and downsampled on the way out, G.722 is at the room's rate, Opus is resampled from
and to 48 kHz. Each room has one `Pacer` that ticks every 20 ms, drift-free: a tick reads one
frame from every party (the jitter buffer decodes or conceals it), mixes them with one
`AudioMixer` (each party hears the others its role allows and never itself: PARTICIPANT and
BARGE are heard by everyone, LISTEN by nobody, WHISPER only by its target; a muted party is
heard by nobody), and writes each party's mix back (encoded and sent on its leg, or given to its
sink). Nothing else runs per frame: a room of N parties costs N reads, one mix and N writes
every 20 ms, and an idle service costs nothing.

A re-INVITE (RFC 3264 §8) may move the peer, change the codec or the keys, or hold: each
accepted one gives the participant a fresh `PcmPort` on the same leg (our SSRC, sequence numbers
and timestamps continue). A held participant (sendonly, inactive or 0.0.0.0, RFC 3264 §8.4) is
out of the mix both ways: it is not heard and hears nothing (we send nothing). A participant
who joins as PARTICIPANT or BARGE plays the join beep (`sound_path("beep")`) to the whole room;
LISTEN and WHISPER join silently. The last party to leave closes the room.

Limits and bad input. A room holds at most `max_participants` parties (calls being answered
included; 50 by default) and the service at most `max_rooms` rooms; an INVITE beyond them is
refused (486 and 503). What a peer sends is validated by the leg (counted and dropped); a frame
that cannot be decoded is concealed by the port; a source or sink that raises or gives a frame
of the wrong shape, and anything else that fails for one party in a tick, is counted in the
room's `stats` (first one logged with its traceback, the rest at debug level) and costs that
party one frame of silence: never the room, never the other parties.

Cost. Measured with `time.process_time` (best of 5 runs of 500 ticks, lowest of three runs) on
the 2-core development machine while other jobs ran (load 1-2; `sum(range(1000))` took 18-26 µs
there), per 20 ms tick, every party a PCMU leg whose packet arrives each tick. "tick" is the
room's own work: read (jitter buffer, decode, resample 8 -> 16 kHz), mix, write (resample
16 -> 8 kHz, encode, build the packet and hand it to a transport that discards it); "receive"
is the legs' receive handlers for the tick's packets (validation, statistics, jitter buffer put):

| parties | tick | receive | per party | share of one core |
|---|---|---|---|---|
| 3  | 172 µs  | 23 µs  | 65 µs | 1.0 % |
| 10 | 497 µs  | 55 µs  | 55 µs | 2.8 % |
| 30 | 1419 µs | 124 µs | 51 µs | 7.7 % |

The two resamplings are about 26 of the ~47 µs a party costs in a tick, the G.711 codec about
14, the mix itself 1-2 (see `mixer.py`). The UDP system calls (about 10 µs a packet each way,
see DESIGN.md) come on top; an Opus party adds its encode and decode (~0.2-0.35 ms a tick).
Command: `PYTHONPATH=. .venv/bin/python benchmarks/conference.py` (prints the table).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from media.leg import RtpLeg, leg_format
from media.mixer import AudioMixer, MixerError, Role
from media.pacer import Pacer
from media.pcmport import PcmPort
from media.player import MediaFileError, Player, load, sound_path
from media.ports import PortsExhausted, RtpSocketPool
from media.resample import Resampler
from media.srtp import SrtpSession
from omlmedia.config import Route, RouteAction
from omlmedia.logs import event
from omlmedia.offer_answer import answer_offer
from omlmedia.services import CAPABILITIES
from omlmedia.targets import Refusal
from sip.message import Request, Response
from sip.sdp import (
    NegotiatedStream,
    OfferAnswerError,
    SDPError,
    SessionDescription,
)
from sip.transaction import ServerTransaction
from sip.ua import Call, CallState

if TYPE_CHECKING:
    from sip.service import SipService

logger = logging.getLogger(__name__)

__all__ = [
    "ROOM_RATE",
    "ConferenceError",
    "ConferenceService",
    "ConferenceStats",
    "Participant",
    "Role",
    "Room",
    "RoomStats",
]

Samples = npt.NDArray[np.int16]
Source = Callable[[], "Samples | None"]
Sink = Callable[[Samples], None]

ROOM_RATE = 16000
"""The rate rooms mix at: wideband, G.722's own; G.711 legs are upsampled, Opus downsampled."""
FRAME_SECONDS = 0.02
"""The packet time of the mix (and of every participant's port)."""
_ROOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class ConferenceError(ValueError):
    """A room request that cannot be honoured: unknown room or party, a limit reached..."""


@dataclass
class RoomStats:
    """What one room did: the pacer's counters (`skipped`, `errors`) and the parties'."""

    ticks: int = 0
    skipped: int = 0
    """Ticks skipped because the event loop stalled (`Pacer`)."""
    errors: int = 0
    """Ticks that failed as a whole (a bug): logged once, then counted."""
    read_errors: int = 0
    """Frames a party's source could not give (a callback that raised, a bad frame)."""
    write_errors: int = 0
    """Mixes a party could not take (a sink that raised, a send that failed)."""
    busy: float = 0.0
    """Seconds spent in ticks (wall clock, `time.perf_counter`)."""


@dataclass
class ConferenceStats:
    """What the service did, for the API."""

    offered: int = 0
    joined: int = 0
    refused: int = 0
    left: int = 0
    kicked: int = 0
    rooms_opened: int = 0
    rooms_closed: int = 0


@dataclass(frozen=True, slots=True)
class Participant:
    """One party of a room as the API shows it."""

    id: str
    """The SIP call id, or the endpoint's name."""
    kind: str
    """``sip`` or ``endpoint``."""
    role: Role
    target: str | None
    """Whom a WHISPER party whispers to."""
    muted: bool
    held: bool
    codec: str | None
    """The SIP leg's codec (``PCMU``, ``opus``...), None for an endpoint."""
    joined_at: float
    """Wall-clock time of joining."""


class _Party:
    """A member of a room: gives a frame and takes its mix every tick."""

    kind = ""
    key: str
    joined_at: float
    failures: int

    def read(self, now: float) -> Samples | None:
        raise NotImplementedError

    def write(self, frame: Samples) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop exchanging frames (the party left)."""


class _SipParty(_Party):
    """A SIP call in a room: its leg, seen through a `PcmPort` at the room's rate."""

    kind = "sip"

    def __init__(self, call: Call, room: str, role: Role, target: str | None) -> None:
        self.call = call
        self.key = call.call_id
        self.room = room
        self.role = role
        self.target = target
        self.joined_at = time.time()
        self.failures = 0
        self.leg: RtpLeg | None = None
        self.port: PcmPort | None = None
        self.held = False
        self.sends = False
        """We send the room's mix to the peer (the stream lets us and it does not hold)."""
        self.receives = False
        """The peer's audio goes into the mix."""
        self.session_id = secrets.randbelow(2**31) + 1
        self.version = 0
        self.local_sdp = b""
        self.joined = False
        self.on_digit: Callable[[str, int], None] | None = None

    def configure(self, stream: NegotiatedStream, held: bool, max_delay_ms: int) -> None:
        """Carry `stream` (the first offer/answer or a re-INVITE): keys, formats, address, and a
        fresh port. Raises ValueError (SRTP keys, codec) leaving the party as it was."""
        leg = self.leg
        assert leg is not None
        srtp = SrtpSession.for_stream(stream, leg.srtp)
        fmt = leg_format(stream, CAPABILITIES.codecs, 20)
        old_format, old_mux = leg.format, leg.rtcp_mux
        leg.set_format(fmt, stream.rtcp_mux)
        try:
            port = PcmPort(leg, ROOM_RATE, max_delay_ms=max_delay_ms, on_digit=self._digit)
        except ValueError:
            if old_format is not None:
                leg.set_format(old_format, old_mux)
            raise
        leg.srtp = srtp
        peer = leg.peer
        moved = peer is not None and peer[0] != stream.remote_address
        if stream.remote_port and stream.remote_address not in ("0.0.0.0", "::"):
            leg.set_remote(
                stream.remote_address,
                stream.remote_port,
                stream.remote_rtcp_port or None,
                relatch=moved,
            )
        if self.port is not None:
            self.port.close()
        self.port = port
        self.held = held
        self.sends = stream.direction.sends and not held
        self.receives = stream.direction.receives and not held
        if not self.receives:
            port.close()  # the leg counts and drops what a held peer sends

    def _digit(self, digit: str, duration_ms: int) -> None:
        if self.on_digit is not None:
            self.on_digit(digit, duration_ms)

    def read(self, now: float) -> Samples | None:
        port = self.port
        if port is None or not self.receives:
            return None
        return port.read(now)

    def write(self, frame: Samples) -> None:
        port = self.port
        if port is not None and self.sends:
            port.write(frame)

    def close(self) -> None:
        if self.port is not None:
            self.port.close()
        self.sends = self.receives = False


class _Endpoint(_Party):
    """A party that is not a SIP call: frames from `source()`, mixes to `sink()`."""

    kind = "endpoint"

    def __init__(self, name: str, source: Source, sink: Sink, rate: int, room_rate: int) -> None:
        self.key = name
        self.source = source
        self.sink = sink
        self.joined_at = time.time()
        self.failures = 0
        self.size = room_rate // 50
        self.inbound = Resampler(rate, room_rate) if rate != room_rate else None
        self.outbound = Resampler(room_rate, rate) if rate != room_rate else None

    def read(self, now: float) -> Samples | None:
        frame = self.source()
        if frame is None:
            return None
        if not isinstance(frame, np.ndarray) or frame.dtype != np.int16:
            raise ConferenceError("endpoint frame is not int16 samples")
        if self.inbound is not None:
            frame = self.inbound.resample(frame)
        if frame.shape != (self.size,):
            raise ConferenceError("endpoint frame has the wrong length")
        return frame

    def write(self, frame: Samples) -> None:
        self.sink(frame if self.outbound is None else self.outbound.resample(frame))


class Room:
    """The parties of one conference, their mixer and the pacer that ticks them."""

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        rate: int = ROOM_RATE,
    ) -> None:
        self.name = name
        self.loop = loop
        self.clock = clock
        self.mixer = AudioMixer(rate)
        self.parties: dict[str, _Party] = {}
        self.joining: set[str] = set()
        """SIP calls being answered into the room: they count against its limit."""
        self.stats = RoomStats()
        self.created_at = time.time()
        self.pacer = Pacer(loop, FRAME_SECONDS, self._on_pacer, self.stats)
        self.beep: Player | None = None
        self.closed = False

    @property
    def size(self) -> int:
        """Parties in the room and calls being answered into it."""
        return len(self.parties) + len(self.joining)

    def add(self, party: _Party, role: Role, target: str | None, beep: Samples | None) -> None:
        """Put `party` in the mix; raises ConferenceError (a bad role or whisper target)."""
        if party.key in self.parties:
            raise ConferenceError("already in the room")
        try:
            self.mixer.add(party.key, role, target=target)
        except MixerError as exc:
            raise ConferenceError(str(exc)) from None
        self.parties[party.key] = party
        if beep is not None and role in (Role.PARTICIPANT, Role.BARGE):
            self.beep = Player(beep, self.mixer.frame_size)
        if not self.closed:
            self.pacer.start()

    def add_endpoint(
        self,
        name: str,
        source: Source,
        sink: Sink,
        role: Role = Role.PARTICIPANT,
        target: str | None = None,
    ) -> None:
        """Put a party that is not a SIP call in the mix at the room's own rate: `source()`
        gives its 20 ms frame (or None), `sink(frame)` takes its mix; no join sound. A room made
        on its own (not by `ConferenceService`) mixes what its owner wires into it: the agent
        desk's monitored calls (`omlmedia.monitor`). Raises ConferenceError."""
        rate = self.mixer.sample_rate
        self.add(_Endpoint(name, source, sink, rate, rate), role, target, None)

    def set_role(self, key: str, role: Role, target: str | None = None) -> None:
        """Change what a party hears and who hears it; raises ConferenceError."""
        try:
            self.mixer.set_role(key, role, target=target)
        except MixerError as exc:
            raise ConferenceError(str(exc)) from None

    def remove(self, key: str) -> _Party | None:
        """Take a party out (whoever whispered to it now listens); None when it was not in."""
        party = self.parties.pop(key, None)
        if party is None:
            return None
        self.mixer.remove(key)
        party.close()
        return party

    def close(self) -> None:
        self.closed = True
        self.pacer.stop()
        for key in list(self.parties):
            self.remove(key)

    def _on_pacer(self, index: int) -> bool:
        if self.closed:
            return False
        self.tick(self.clock())
        return True

    def tick(self, now: float) -> None:
        """One 20 ms frame for everyone: read every party, mix, write every party's mix."""
        started = time.perf_counter()
        stats = self.stats
        stats.ticks += 1
        frames: dict[str, Samples | None] = {}
        for key, party in list(self.parties.items()):
            try:
                frames[key] = party.read(now)
            except Exception:
                stats.read_errors += 1
                self._failed(party, "reading")
        mixer = self.mixer
        # A callback may have taken parties out (or put some in) while we read.
        mixes = mixer.mix({key: frame for key, frame in frames.items() if key in mixer})
        beep = self.beep
        if beep is not None:
            tone = beep.read()
            if tone is None:
                self.beep = None
            else:
                for listener, mix in mixes.items():
                    mixes[listener] = _saturated_sum(mix, tone)
        parties = self.parties
        for listener, mix in mixes.items():
            party = parties.get(listener)  # type: ignore[call-overload]
            if party is None:
                continue
            try:
                party.write(mix)
            except Exception:
                stats.write_errors += 1
                self._failed(party, "writing")
        stats.busy += time.perf_counter() - started

    def _failed(self, party: _Party, doing: str) -> None:
        party.failures += 1
        if party.failures == 1:
            logger.exception("conference %s: %s %s failed", self.name, doing, party.key)
        else:
            logger.debug("conference %s: %s %s failed", self.name, doing, party.key, exc_info=True)


def _saturated_sum(mix: Samples, tone: Samples) -> Samples:
    total = mix.astype(np.int32)
    total += tone
    np.clip(total, -32768, 32767, out=total)
    return total.astype(np.int16)


def _default_beep() -> Path | None:
    try:
        return sound_path("beep")
    except MediaFileError:  # pragma: no cover - the sound set ships with the package
        return None


_DEFAULT_JOIN_SOUND = _default_beep()


class ConferenceService:
    """Conference rooms for SIP calls and endpoints (see the module docstring).

    `service` is the SIP service the calls are answered through. `join_sound` is played to a
    room when a party joins it (the default sound set's beep; None for no sound). `clock` is the
    media clock (the event loop's time by default). `on_digit(room, call_id, digit)` is told of
    every digit a participant sends (RFC 4733 or SIP INFO).
    """

    def __init__(
        self,
        pool: RtpSocketPool,
        media_host: str,
        service: SipService,
        *,
        max_participants: int = 50,
        max_rooms: int = 100,
        max_delay_ms: int = 60,
        join_sound: Path | None = _DEFAULT_JOIN_SOUND,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if max_participants < 1 or max_rooms < 1:
            raise ValueError("conference limits must be at least 1")
        self.pool = pool
        self.media_host = media_host
        self.service = service
        self.max_participants = max_participants
        self.max_rooms = max_rooms
        self.max_delay_ms = max_delay_ms
        self.join_sound = join_sound
        self.clock = clock
        self.stats = ConferenceStats()
        self.on_digit: Callable[[str, str, str], None] | None = None
        self._rooms: dict[str, Room] = {}
        self._calls: dict[str, _SipParty] = {}
        """SIP parties by call id, from the offer (answering) until they leave."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._beep: Samples | None = None

    # -- the router's hooks -----------------------------------------------------------------

    route_actions: tuple[RouteAction, ...] = (RouteAction.CONFERENCE,)

    def take_route(self, call: Call, route: Route, user: str) -> Refusal | None:
        """A route target (`omlmedia.targets.RouteTarget`): `user` names the room."""
        status = self.offer(call, user)
        if status is None:
            return None
        return Refusal(status, "conference-unavailable", target=f"conference:{user}")

    def offer(
        self, call: Call, room: str, role: Role = Role.PARTICIPANT, target: str | None = None
    ) -> int | None:
        """Answer `call` into `room` (opened if need be); the SIP status to refuse with when
        that cannot be (404 a bad room name or an unknown whisper target, 488 no usable offer,
        486 the room is full, 503 too many rooms)."""
        self.stats.offered += 1
        status = self._check_offer(call, room, role, target)
        if status is not None:
            self.stats.refused += 1
            event(logger, "conference-refused", call_id=call.call_id, room=room, status=status)
            return status
        try:
            offer = SessionDescription.parse(call.remote_sdp)
        except SDPError:
            self.stats.refused += 1
            return 488
        party = _SipParty(call, room, role, target)
        call.app = self
        party.on_digit = lambda digit, _ms: self._digit(party, digit, "rfc4733")
        the_room = self._open(room)
        the_room.joining.add(call.call_id)
        self._calls[call.call_id] = party
        task = asyncio.get_running_loop().create_task(self._answer(party, offer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    def owns(self, call: Call) -> bool:
        """True while the service carries `call` (from `offer` until it leaves)."""
        return call.call_id in self._calls

    def on_ended(self, call: Call, cause: str) -> None:
        """The caller hung up (or the call failed): it leaves its room."""
        party = self._calls.get(call.call_id)
        if party is not None:
            self._leave(party, cause)

    def on_dtmf(self, call: Call, digit: str) -> None:
        """A digit from a participant by SIP INFO (RFC 6086)."""
        party = self._calls.get(call.call_id)
        if party is not None:
            self._digit(party, digit, "info")

    def on_response(self, call: Call, response: Response) -> None:
        """Nothing: the service sends no INVITE."""

    def on_transfer_outcome(self, call: Call, status: int) -> None:
        """Nothing: the service sends no REFER."""

    def on_session_modified(self, call: Call, txn: ServerTransaction, request: Request) -> None:
        """A re-INVITE or UPDATE (RFC 3264 §8): a new address, codec, keys, or hold."""
        service = self.service
        party = self._calls.get(call.call_id)
        if party is None or party.leg is None or not party.joined:
            service.act(lambda now: service.ua.respond(call, txn, 491, now))
            return
        if not request.body:
            body = party.local_sdp
            service.act(
                lambda now: service.ua.respond(call, txn, 200, now, body, "application/sdp")
            )
            return
        try:
            offer = SessionDescription.parse(request.body)
            answer = answer_offer(
                offer,
                CAPABILITIES,
                self.media_host,
                party.leg.port,
                session_id=party.session_id,
                version=party.version + 1,
                current=party.leg.srtp,
            )
            party.configure(answer.audio, offer.is_hold(), self.max_delay_ms)
        except (SDPError, OfferAnswerError, ValueError) as exc:
            event(logger, "reinvite-rejected", call_id=call.call_id, reason=str(exc))
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
        party.version += 1
        body = party.local_sdp = bytes(answer.description)
        event(
            logger,
            "conference-modified",
            call_id=call.call_id,
            room=party.room,
            codec=answer.audio.codec.encoding_name,
            hold=party.held,
        )
        service.act(lambda now: service.ua.respond(call, txn, 200, now, body, "application/sdp"))

    @property
    def legs(self) -> list[RtpLeg]:
        """The legs of the calls in rooms (for the router's RTCP reports)."""
        return [p.leg for p in self._calls.values() if p.leg is not None and p.joined]

    def hangup_all(self) -> None:
        """End every conference call and close every room (shutdown)."""
        for party in list(self._calls.values()):
            self._hang_up(party, "shutdown")
        for room in list(self._rooms.values()):
            self._close(room)

    # -- rooms, for supervisors and the API -------------------------------------------------

    def rooms(self) -> list[str]:
        """The names of the open rooms."""
        return sorted(self._rooms)

    def room(self, room: str) -> Room:
        """The room called `room`; ConferenceError when it is not open."""
        found = self._rooms.get(room)
        if found is None:
            raise ConferenceError("no such room")
        return found

    def participants(self, room: str) -> list[Participant]:
        """Who is in `room`, in order of joining."""
        found = self.room(room)
        result = []
        for key, party in found.parties.items():
            state = found.mixer.party(key)
            sip = party if isinstance(party, _SipParty) else None
            leg = sip.leg if sip is not None else None
            result.append(
                Participant(
                    id=key,
                    kind=party.kind,
                    role=state.role,
                    target=state.target if isinstance(state.target, str) else None,
                    muted=state.muted,
                    held=sip.held if sip is not None else False,
                    codec=leg.format.encoding_name if leg and leg.format else None,
                    joined_at=party.joined_at,
                )
            )
        return result

    def set_role(self, room: str, call_id: str, role: Role, target: str | None = None) -> None:
        """Change what a party (a call id or an endpoint's name) hears and who hears it:
        listen, whisper to `target`, barge, participate."""
        found, _ = self._party(room, call_id)
        try:
            found.mixer.set_role(call_id, role, target=target)
        except MixerError as exc:
            raise ConferenceError(str(exc)) from None
        event(logger, "conference-role", room=room, party=call_id, role=role.value, to=target)

    def mute(self, room: str, call_id: str, muted: bool = True) -> None:
        """Mute a party (it still hears the room) or unmute it."""
        found, _ = self._party(room, call_id)
        found.mixer.set_muted(call_id, muted)
        event(logger, "conference-mute", room=room, party=call_id, muted=muted)

    def kick(self, room: str, call_id: str) -> None:
        """Take a party out of the room: a call is hung up (BYE), an endpoint removed."""
        _, party = self._party(room, call_id)
        self.stats.kicked += 1
        if isinstance(party, _SipParty):
            self._hang_up(party, "kicked")
        else:
            self.remove_endpoint(room, call_id)

    def add_endpoint(
        self,
        room: str,
        name: str,
        source: Source,
        sink: Sink,
        role: Role = Role.PARTICIPANT,
        *,
        target: str | None = None,
        rate: int = ROOM_RATE,
    ) -> None:
        """Put a party that is not a SIP call in `room` (opened if need be): every 20 ms
        `source()` gives its frame (`rate` Hz mono int16, rate // 50 samples) or None, and
        `sink(frame)` takes its mix at `rate`. Raises ConferenceError (room name, limits, a
        name already in the room, an unknown whisper target, an unsupported rate)."""
        if _ROOM_NAME.fullmatch(room) is None:
            raise ConferenceError("bad room name")
        existing = self._rooms.get(room)
        if existing is None and len(self._rooms) >= self.max_rooms:
            raise ConferenceError("too many rooms")
        if existing is not None:
            if existing.size >= self.max_participants:
                raise ConferenceError("room is full")
            if name in existing.parties or name in existing.joining:
                raise ConferenceError("already in the room")
        try:
            endpoint = _Endpoint(name, source, sink, rate, ROOM_RATE)
        except ValueError:
            raise ConferenceError("unsupported endpoint rate") from None
        found = self._open(room)
        try:
            found.add(endpoint, role, target, self._beep)
        except ConferenceError:
            self._close_if_empty(found)
            raise
        event(logger, "conference-joined", room=room, party=name, kind="endpoint", role=role.value)

    def remove_endpoint(self, room: str, name: str) -> None:
        """Take an endpoint out of `room` (the last party out closes it)."""
        found, party = self._party(room, name)
        if isinstance(party, _SipParty):
            raise ConferenceError("not an endpoint")
        found.remove(name)
        event(logger, "conference-left", room=room, party=name, kind="endpoint")
        self._close_if_empty(found)

    # -- inside -----------------------------------------------------------------------------

    def _check_offer(self, call: Call, room: str, role: Role, target: str | None) -> int | None:
        if _ROOM_NAME.fullmatch(room) is None:
            return 404
        if not call.remote_sdp or call.call_id in self._calls:
            return 488
        existing = self._rooms.get(room)
        if existing is None:
            if len(self._rooms) >= self.max_rooms:
                return 503
        elif existing.size >= self.max_participants:
            return 486
        if role is Role.WHISPER and (existing is None or target not in existing.parties):
            return 404
        return None

    async def _answer(self, party: _SipParty, offer: SessionDescription) -> None:
        """Bind a leg, negotiate, join the room and send 200 OK; refuse on the way if need be."""
        service, call = self.service, party.call
        loop = asyncio.get_running_loop()
        if self._beep is None and self.join_sound is not None:
            try:
                self._beep = await loop.run_in_executor(None, load, self.join_sound, ROOM_RATE)
            except MediaFileError as exc:
                logger.warning("no conference join sound: %s", exc)
                self.join_sound = None
        if not self._still_offered(party):
            return
        try:
            pair = await self.pool.acquire()
        except (PortsExhausted, OSError):
            self._refuse(party, 503, "no-ports")
            return
        party.leg = RtpLeg(pair, clock=self.clock or loop.time)
        if not self._still_offered(party):
            self._release(party)
            return
        try:
            answer = answer_offer(
                offer,
                CAPABILITIES,
                self.media_host,
                pair.port,
                session_id=party.session_id,
                version=party.version,
            )
            party.configure(answer.audio, offer.is_hold(), self.max_delay_ms)
        except (OfferAnswerError, ValueError) as exc:
            event(logger, "conference-codecs", call_id=call.call_id, reason=str(exc))
            self._refuse(party, 488, "codecs")
            return
        room = self._rooms.get(party.room)
        if room is None:  # pragma: no cover - a room with a joining call stays open
            self._refuse(party, 503, "room-closed")
            return
        room.joining.discard(party.key)
        try:
            room.add(party, party.role, party.target, self._beep)
        except ConferenceError:
            self._refuse(party, 404, "whisper-target-left")
            return
        party.joined = True
        self.stats.joined += 1
        body = party.local_sdp = bytes(answer.description)
        assert party.leg is not None
        event(
            logger,
            "conference-joined",
            call_id=call.call_id,
            room=party.room,
            role=party.role.value,
            codec=answer.audio.codec.encoding_name,
            srtp=party.leg.srtp is not None,
            parties=len(room.parties),
        )
        service.act(lambda now: service.ua.answer(call, body, now))

    def _still_offered(self, party: _SipParty) -> bool:
        return self._calls.get(party.key) is party and party.call.state is CallState.OFFERED

    def _refuse(self, party: _SipParty, status: int, why: str) -> None:
        service, call = self.service, party.call
        self.stats.refused += 1
        self._leave(party, why, counted=False)
        event(logger, "conference-refused", call_id=call.call_id, room=party.room, status=status)
        service.act(lambda now: service.ua.reject(call, status, now))

    def _hang_up(self, party: _SipParty, cause: str) -> None:
        service, call = self.service, party.call
        self._leave(party, cause)
        if call.state is CallState.OFFERED:
            service.act(lambda now: service.ua.reject(call, 480, now))
        elif call.state is not CallState.ENDED:
            service.act(lambda now: service.ua.hangup(call, now))

    def _leave(self, party: _SipParty, cause: str, counted: bool = True) -> None:
        """Take a SIP party out of its room and release its leg; idempotent."""
        if self._calls.get(party.key) is not party:
            return
        del self._calls[party.key]
        room = self._rooms.get(party.room)
        if room is not None:
            room.joining.discard(party.key)
            if room.parties.get(party.key) is party:
                room.remove(party.key)
        party.close()
        self._release(party)
        if party.joined and counted:
            self.stats.left += 1
            event(logger, "conference-left", call_id=party.key, room=party.room, cause=cause)
        if room is not None:
            self._close_if_empty(room)

    def _release(self, party: _SipParty) -> None:
        leg = party.leg
        if leg is not None:
            party.leg = None
            leg.close()
            self.pool.release(leg.pair)

    def _party(self, room: str, key: str) -> tuple[Room, _Party]:
        found = self.room(room)
        party = found.parties.get(key)
        if party is None:
            raise ConferenceError("no such party in the room")
        return found, party

    def _open(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is None:
            loop = asyncio.get_running_loop()
            room = Room(name, loop, self.clock or loop.time)
            self._rooms[name] = room
            self.stats.rooms_opened += 1
            event(logger, "conference-opened", room=name)
        return room

    def _close_if_empty(self, room: Room) -> None:
        if not room.parties and not room.joining:
            self._close(room)

    def _close(self, room: Room) -> None:
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
            self.stats.rooms_closed += 1
            stats = room.stats
            event(
                logger,
                "conference-closed",
                room=room.name,
                ticks=stats.ticks,
                skipped=stats.skipped,
                errors=stats.errors + stats.read_errors + stats.write_errors,
                busy_ms=round(stats.busy * 1000, 1),
            )
        room.close()

    def _digit(self, party: _SipParty, digit: str, via: str) -> None:
        event(logger, "conference-dtmf", call_id=party.key, room=party.room, digit=digit, via=via)
        if self.on_digit is not None:
            try:
                self.on_digit(party.room, party.key, digit)
            except Exception:
                logger.exception("conference on_digit callback failed")
