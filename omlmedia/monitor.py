"""Supervisors monitor agents' calls from the browser: listen, whisper, barge.

`MonitorService` is the supervisors' side of the signalling socket
(`webrtc.signaling.SupervisorHandler`, protocol in docs/webrtc-signaling.md). A supervisor's
page authenticates its socket with the API session token it got from ``POST /api/v1/sessions``
(``supervisor-auth``: a WebSocket carries no Authorization header and tokens never travel in
URLs), for an account whose role is ``supervisor`` or ``admin``; the token is checked again on
every message and every second (`expire`, from the hub's tick): a revoked or expired one ends
the socket's session and what it monitors. The socket then keeps one
WebRTC channel (``supervisor-offer``, a `webrtc.channel.AgentChannel` like an agent's) for as
long as the page is open, and ``monitor`` puts it on any agent's call in its scope (the call's
campaign or queue, `omlmedia.authz.Identity.covers`; a call outside every queue only for an
unscoped identity) in one of three modes, ``listen``, ``whisper`` and ``barge``, switches mode
or call, and ``monitor-stop`` ends it. None of it renegotiates the supervisor's channel: what
is attached to the channel changes, not the channel. Every start, change and stop is audited
(``call.monitor`` / ``call.monitor-stop``, `omlmedia.audit`), published as a ``call.monitored``
event, and the call's record gets a ``supervisor`` leg (who, which modes, from when to when).
The agent's page is told (a notice) only when `show_agents` is set (``[webrtc]
show_monitoring``, default off).

In a cluster with one ACD, a call another node carries (its agent's node: the shared ACD's
replica says which) is monitored over a signed internal SIP leg to that node
(`omlmedia.monitor_remote`, `remote`): this node checks the role and the scope (the call's queue
from the replica), audits and publishes; that node puts the leg into the call's room as the
supervisor's party (`attach_inbound`, the same `MonitoredCall`), so whisper and barge are mixed
where the call's audio is. A call across nodes whose agent is here is found by the caller's call
id (the desk's ``engine_call``) and monitored here.

Design: a mixing room while monitored. An unmonitored call is the desk's direct relay: the
caller's frames go to the agent's channel the moment they arrive and the agent's frames to the
caller's leg (`omlmedia.desk`, no clock and no buffer of ours). Monitoring moves the call's audio
(`omlmedia.desk.CallAudio`) into a `omlmedia.conference.Room` of its own at the leg's rate
(8 kHz for G.711: nothing is resampled), with three parties: the caller (the desk's source and
sink: hold, mute and the recording work as before), the agent (its channel attached to the
room) and the supervisor (its channel attached to the room), PARTICIPANT, PARTICIPANT and
LISTEN, WHISPER (to the agent) or BARGE (`media.mixer`: who hears whom is the mixer's
matrix, so the caller never hears a listening or whispering supervisor). The room's pacer
ticks every 20 ms: it reads one frame of each (each a queue of at most three frames filled as
the packets arrive), mixes, and pushes each party's mix out at once (`kick` on a channel's
fast path). Switching modes is one `Mixer.set_role`; switching calls closes one room (the call
goes back to the direct relay) and opens the other. The desk tells the service when a channel
stops carrying a call (`Desk.on_detach`: the call ended, was held for a consultation,
transferred): the room closes and the supervisor's page is told which (its ``reason``).

Why a room rather than taps on the relay: the mixer already says who hears whom for the three
modes, a role change is atomic between two ticks, and the conversation under monitoring has
one clock instead of three frame pushers racing each other. The price is the room's 20 ms clock
on a conversation that otherwise has none: up to 20 ms more delay each way while monitored and,
when the caller's and the browsers' packets arrive near the tick, an occasional frame held one
tick longer or concealed as silence. One supervisor at a time per call.

Cost. End to end, the server process's CPU (``/proc/<pid>/stat``, 4 s windows) with one G.711
caller (baresip), one agent and one supervisor in Chromium (the supervisor's page open, its
channel idle, in the unmonitored window), on the shared 2-core machine, three runs (load 2-4):

| the call | run 1 | run 2 | run 3 |
|---|---|---|---|
| unmonitored | 6.7 % of a core | 7.0 % | 6.5 % |
| listened to | 7.5 % (+0.8) | 9.7 % (+2.7) | 7.7 % (+1.2) |
| whispered on | 8.0 % (+1.3) | 9.2 % (+2.2) | 7.5 % (+1.0) |

Command: ``OMLMEDIA_MEASURE_MONITOR=1 pytest -s tests/interop/test_monitor.py`` (prints the
figures). The windows are short and the machine shared, so the increments are noisy; what they
are made of is known: the room itself costs 9-11 us a tick whatever the mode (3 parties, 8 to
48 kHz; best of 5 x 2000 ticks with `time.process_time`, ``sum(range(1000))`` taking 12 us
there; ``PYTHONPATH=. .venv/bin/python benchmarks/monitor.py`` prints the table), 0.05 % of a
core, and the rest is the supervisor's channel, a second browser stream on the server (Opus
encode ~64 us and decode ~30-40 us per frame at 8 kHz, SRTP and two datagrams per 20 ms, see
`webrtc.channel`): about 1 % of a core, the cost of one more agent on a call. Whisper and barge
cost the same as listen (the mix is one matrix product whatever the roles).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from media.mixer import Role as MixRole
from omlmedia.acd_cluster import SharedEngine
from omlmedia.authz import Identity, Role, Scopes
from omlmedia.conference import ConferenceError, Room
from omlmedia.events import NO_EVENTS, EventSink
from omlmedia.logs import event
from webrtc.channel import PeerMedia
from webrtc.config import IceSource, ice_list
from webrtc.exceptions import CommandError, ProtocolError
from webrtc.signaling import PROTOCOL_VERSION, Connection, Message

if TYPE_CHECKING:
    from omlmedia.desk import AgentCall, CallAudio, Desk
    from omlmedia.monitor_remote import MonitorLegs, RemoteMonitoring

logger = logging.getLogger(__name__)

__all__ = [
    "CALL_MONITORED",
    "MAX_PAGES",
    "MAX_PAGES_PER_SUPERVISOR",
    "MonitorMode",
    "MonitorService",
    "MonitoredCall",
]

Samples = npt.NDArray[np.int16]

CALL_MONITORED = "call.monitored"
"""A supervisor started, changed or stopped monitoring a call (data: supervisor, mode: listen,
whisper, barge or None when it stopped, reason)."""

MONITOR_ROLES = frozenset({Role.SUPERVISOR, Role.ADMIN})
"""The account roles that may monitor calls."""

MAX_PAGES_PER_SUPERVISOR = 4
"""Supervisor sockets (each with its channel) one account may have open at once."""
MAX_PAGES = 200
"""Supervisor sockets the server keeps open at once."""

CALLER, AGENT, SUPERVISOR = "caller", "agent", "supervisor"
_QUEUED_FRAMES = 3
"""Frames a party's queue keeps between its packets and the room's tick (60 ms)."""

AuditWriter = Callable[
    [Identity, str, str, Mapping[str, Any] | None, Mapping[str, Any] | None], Awaitable[None]
]
"""Writes one audit entry: (identity, action, target, before, after)."""


class MonitorMode(enum.StrEnum):
    """What the supervisor does on the call."""

    LISTEN = "listen"
    """Hears the caller and the agent; heard by nobody."""
    WHISPER = "whisper"
    """Hears both; heard by the agent only."""
    BARGE = "barge"
    """Hears both; heard by both (a three-way call)."""


_ROLES = {
    MonitorMode.LISTEN: MixRole.LISTEN,
    MonitorMode.WHISPER: MixRole.WHISPER,
    MonitorMode.BARGE: MixRole.BARGE,
}
_NOTICES = {
    MonitorMode.LISTEN: "A supervisor is listening to this call",
    MonitorMode.WHISPER: "A supervisor is coaching you (the caller does not hear them)",
    MonitorMode.BARGE: "A supervisor joined the call",
    None: "The supervisor left the call",
}


class _Frames:
    """Frames pushed as their packets arrive, pulled one a tick; the oldest go first."""

    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames: deque[Samples] = deque(maxlen=_QUEUED_FRAMES)

    def push(self, frame: Samples) -> None:
        self.frames.append(frame)

    def pop(self) -> Samples | None:
        frames = self.frames
        return frames.popleft() if frames else None


class MonitorPeer(Protocol):
    """The supervisor's side of a room: a WebRTC channel (`webrtc.channel.PeerMedia`), or the
    internal leg from another node's supervisor (`omlmedia.monitor_remote.LegPeer`)."""

    def attach(
        self,
        source: Callable[[], Samples | None],
        sink: Callable[[Samples], None],
        *,
        rate: int,
        relay: bool = ...,
    ) -> None: ...

    def kick(self) -> None: ...

    def detach(self) -> None: ...


class MonitoredCall:
    """One call in a mixing room of its own while a supervisor's channel is on it (see the
    module docstring). `stop` gives the call back to the desk's direct relay."""

    def __init__(
        self,
        ac: AgentCall,
        audio: CallAudio,
        supervisor: MonitorPeer,
        mode: MonitorMode,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.call_id = ac.call_id
        self.agent = ac.agent
        self.audio = audio
        self.supervisor = supervisor
        self.mode = mode
        self.room = Room(f"monitor-{ac.call_id}", loop, clock or loop.time, rate=audio.rate)
        channel = audio.channel
        agent_in, agent_out = _Frames(), _Frames()
        supervisor_in, supervisor_out = _Frames(), _Frames()

        def to_agent(frame: Samples) -> None:
            agent_out.push(frame)
            channel.kick()

        def to_supervisor(frame: Samples) -> None:
            supervisor_out.push(frame)
            supervisor.kick()

        room = self.room
        role, target = self._role(mode)
        try:
            room.add_endpoint(CALLER, audio.source, audio.sink)
            room.add_endpoint(AGENT, agent_in.pop, to_agent)
            room.add_endpoint(SUPERVISOR, supervisor_in.pop, to_supervisor, role, target)
        except ConferenceError:
            room.close()
            raise
        audio.diverted = True
        channel.attach(agent_out.pop, agent_in.push, rate=audio.rate, relay=True)
        supervisor.attach(supervisor_out.pop, supervisor_in.push, rate=audio.rate, relay=True)

    @staticmethod
    def _role(mode: MonitorMode) -> tuple[MixRole, str | None]:
        return _ROLES[mode], AGENT if mode is MonitorMode.WHISPER else None

    def set_mode(self, mode: MonitorMode) -> None:
        """Listen, whisper or barge from the next tick on."""
        role, target = self._role(mode)
        self.room.set_role(SUPERVISOR, role, target)
        self.mode = mode

    def stop(self, *, restore: bool = True) -> None:
        """Close the room and detach the supervisor's channel; `restore`: the agent's channel
        relays the call directly again (False when the desk is detaching it anyway)."""
        self.room.close()
        self.supervisor.detach()
        if restore:
            self.audio.reattach()
        else:
            self.audio.diverted = False


@dataclass(eq=False)
class _Inbound:
    """A supervisor on another node monitoring a call here over an internal leg."""

    monitored: MonitoredCall
    supervisor: str
    node: str
    end: Callable[[], None]
    """Hangs up the leg (the call ended here)."""
    started: float
    modes: list[str]
    signed_at: int = 0
    """When the supervisor's node signed the leg's request (its clock, whole seconds)."""


def _replaces(by: tuple[str, str, int], inbound: _Inbound) -> bool:
    """Whether a leg of supervisor `by[0]` from node `by[1]` signed at `by[2]` replaces
    `inbound`: the same supervisor and node, signed no earlier."""
    return (inbound.supervisor, inbound.node) == by[:2] and by[2] >= inbound.signed_at


@dataclass(frozen=True, slots=True)
class _Located:
    """Where the shared ACD's replica says an agent's call is."""

    agent: str
    node: str
    """The agent's node (where its desk carries the call)."""
    queue: str


@dataclass(eq=False)
class _Supervisor:
    """One supervisor's socket: who, its channel, the call it monitors."""

    conn: Connection
    token: str
    identity: Identity
    channel: PeerMedia
    monitoring: MonitoredCall | RemoteMonitoring | None = None
    started: float = 0.0
    modes: list[str] = field(default_factory=list)
    busy: bool = False
    target: str = ""
    """The monitored call's id as the page asked for it (a call across nodes whose agent is
    here: the caller's call id, not the internal leg's the room has)."""


class MonitorService:
    """The supervisors' sockets and the calls they monitor (see the module docstring).

    `authenticate` turns an API session token into an identity (`AccountBook.authenticate`),
    `scopes` gives what scopes are checked against, `channel_factory(name)` makes a
    supervisor's channel, `audit` writes the audit entries, `events` takes the
    ``call.monitored`` events; `show_agents` tells agents' pages when they are monitored."""

    def __init__(
        self,
        authenticate: Callable[[str], Identity | None],
        scopes: Callable[[], Scopes],
        channel_factory: Callable[[str], PeerMedia],
        *,
        audit: AuditWriter | None = None,
        events: EventSink = NO_EVENTS,
        show_agents: bool = False,
        ice_servers: IceSource = (),
        clock: Callable[[], float] = time.time,
        media_clock: Callable[[], float] | None = None,
    ) -> None:
        self.authenticate = authenticate
        self.scopes = scopes
        self.channel_factory = channel_factory
        self.audit = audit
        self.events = events
        self.show_agents = show_agents
        self._ice = ice_servers
        self.clock = clock
        self.media_clock = media_clock
        self.desk: Desk | None = None
        self._sockets: dict[int, _Supervisor] = {}
        self._by_call: dict[str, _Supervisor] = {}
        self._notes: dict[str, list[dict[str, Any]]] = {}
        """Monitoring of each call not yet written to its record."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.remote: MonitorLegs | None = None
        """Monitor legs to and from other nodes (a cluster; `omlmedia.monitor_remote`)."""
        self._inbound: dict[str, _Inbound] = {}
        """Calls here monitored by another node's supervisor, by the desk's call id."""

    def bind(self, desk: Desk) -> None:
        """Monitor the calls of `desk` (told when its channels stop carrying a call)."""
        self.desk = desk
        desk.on_detach.append(self._call_detached)

    # -- webrtc.signaling.SupervisorHandler -------------------------------------------------

    def owns(self, conn: Connection) -> bool:
        return id(conn) in self._sockets

    def connection_closed(self, conn: Connection) -> None:
        """The page went away: its monitoring stops and its channel closes."""
        sup = self._sockets.pop(id(conn), None)
        if sup is None:
            return
        if sup.monitoring is not None:
            self._stop(sup, "closed", restore=True)
        self._spawn(sup.channel.close())

    async def close(self) -> None:
        """Stop every monitor and close every channel (shutdown)."""
        for sup in list(self._sockets.values()):
            if sup.monitoring is not None:
                self._stop(sup, "shutdown", restore=True)
            await sup.channel.close()
        self._sockets.clear()
        for task in list(self._tasks):
            task.cancel()

    async def handle(self, conn: Connection, message: Message) -> None:
        kind, fields, ref = message.type, message.fields, message.id
        if kind == "supervisor-auth":
            self._auth(conn, fields["token"], ref)
            return
        sup = self._sockets.get(id(conn))
        if sup is None:
            raise ProtocolError("not-authenticated", "send supervisor-auth first")
        if not self._still_valid(sup):
            return
        if sup.busy:
            raise ProtocolError("busy", "the previous command is still running")
        sup.busy = True
        try:
            if kind == "supervisor-offer":
                try:
                    answer = await sup.channel.accept_offer(fields["sdp"])
                except ValueError as exc:
                    raise CommandError("bad-offer", str(exc)[:200]) from None
                self._send(conn, {"type": "answer", "sdp": answer, "ref": ref})
            elif kind == "monitor":
                await self._monitor(sup, fields["call_id"], MonitorMode(fields["mode"]))
                self._send(conn, {"type": "ack", "ref": ref})
                self._state(sup)
            elif kind == "monitor-stop":
                if sup.monitoring is not None:
                    target = sup.target or sup.monitoring.call_id
                    await self._audit(sup, "call.monitor-stop", target, None)
                    self._stop(sup, "stopped", restore=True)
                self._send(conn, {"type": "ack", "ref": ref})
                self._state(sup, "stopped")
            else:  # pragma: no cover - the hub routes only SUPERVISOR_MESSAGES here
                raise ProtocolError("unknown-type", "unknown message type")
        finally:
            sup.busy = False

    def expire(self) -> None:
        """End the sockets whose token was revoked or expired, or whose account may no longer
        monitor: what they monitor stops at once, not at their next message."""
        for sup in list(self._sockets.values()):
            self._still_valid(sup)

    # -- inside -----------------------------------------------------------------------------

    def _still_valid(self, sup: _Supervisor) -> bool:
        """Read the socket's identity again (its account's current scope); end the socket and
        what it monitors when the token or the role no longer allows it."""
        identity = self.authenticate(sup.token)
        if identity is not None and identity.role in MONITOR_ROLES:
            sup.identity = identity
            return True
        conn = sup.conn
        self.connection_closed(conn)
        reason = "expired" if identity is None else "forbidden"
        self._send(conn, {"type": "session-ended", "reason": reason})
        conn.close()
        return False

    def _auth(self, conn: Connection, token: str, ref: str | int | None) -> None:
        if id(conn) in self._sockets:
            raise ProtocolError("already-authenticated", "this socket is authenticated")
        identity = self.authenticate(token)
        if identity is None:
            raise ProtocolError("session-invalid", "the token is unknown, revoked or expired")
        if identity.role not in MONITOR_ROLES:
            raise ProtocolError("forbidden", f"the role {identity.role} may not monitor calls")
        pages = sum(1 for sup in self._sockets.values() if sup.identity.actor == identity.actor)
        if pages >= MAX_PAGES_PER_SUPERVISOR or len(self._sockets) >= MAX_PAGES:
            raise ProtocolError("too-many-pages", "close another supervisor page first")
        channel = self.channel_factory(f"supervisor:{identity.actor}")
        self._sockets[id(conn)] = _Supervisor(conn, token, identity, channel)
        event(logger, "supervisor-connected", supervisor=identity.actor)
        reply: dict[str, Any] = {
            "type": "supervisor-auth-ok",
            "name": identity.actor,
            "role": identity.role.value,
            "ice_servers": ice_list(self._ice),
        }
        if ref is not None:
            reply["ref"] = ref
        self._send(conn, reply)

    async def _monitor(self, sup: _Supervisor, call_id: str, mode: MonitorMode) -> None:
        ac = self.carried(call_id)
        audio = ac.audio if ac is not None else None
        if ac is None or audio is None:
            remote = self.remote
            located = self._locate(call_id) if remote is not None else None
            if remote is not None and located is not None and located.node != remote.node:
                await self._monitor_remote(sup, call_id, mode, located)
                return
            raise CommandError("unknown-call", "no such call in progress")
        if not self._covers(sup.identity, ac):
            raise CommandError("forbidden", "the call's queue is out of your scope")
        key = ac.call_id  # a call across nodes: its id here (the internal leg's)
        other = self._by_call.get(key)
        if (other is not None and other is not sup) or key in self._inbound:
            raise CommandError("monitored", "another supervisor is monitoring this call")
        if sup.channel.peer_connection is None:
            raise CommandError("no-channel", "send supervisor-offer first")
        retarget = self._retarget(sup, key, mode)
        if retarget is None:
            return
        before, start = retarget
        if start:
            try:
                monitored = MonitoredCall(ac, audio, sup.channel, mode, clock=self.media_clock)
            except (ConferenceError, ValueError) as exc:
                raise CommandError("cannot-monitor", str(exc)) from None
            self._started(sup, monitored, mode, call_id, key)
        after = {"call_id": call_id, "agent": ac.agent, "mode": mode.value}
        await self._audit(sup, "call.monitor", call_id, before, after)
        self._publish(sup, ac, mode, "started" if before is None else "changed")
        event(
            logger,
            "call-monitor",
            call_id=call_id,
            agent=ac.agent,
            supervisor=sup.identity.actor,
            mode=mode.value,
        )

    def _retarget(
        self, sup: _Supervisor, key: str, mode: MonitorMode
    ) -> tuple[dict[str, Any] | None, bool] | None:
        """Before `sup` monitors the call `key` in `mode`: what it monitored (for the audit)
        and whether a monitoring must start. The current one's mode is changed when it is of
        `key`, it is stopped ("switched") when it is of another call; None when nothing
        changes (the same call in the same mode)."""
        current = sup.monitoring
        before = (
            None
            if current is None
            else {"call_id": sup.target or current.call_id, "mode": current.mode}
        )
        if current is not None and current.call_id == key:
            if current.mode is mode:
                return None
            current.set_mode(mode)
            sup.modes.append(mode.value)
            return before, False
        if current is not None:
            self._stop(sup, "switched", restore=True)
        return before, True

    def _started(
        self,
        sup: _Supervisor,
        monitored: MonitoredCall | RemoteMonitoring,
        mode: MonitorMode,
        call_id: str,
        key: str,
    ) -> None:
        """`sup` monitors `call_id` (`key` here) from now on, through `monitored`."""
        sup.monitoring = monitored
        sup.started = self.clock()
        sup.modes = [mode.value]
        sup.target = call_id
        self._by_call[key] = sup

    async def _monitor_remote(
        self, sup: _Supervisor, call_id: str, mode: MonitorMode, where: _Located
    ) -> None:
        """Monitor a call another node carries: a monitor leg to the agent's node
        (`omlmedia.monitor_remote`), after the same checks as here (scope from the replica)."""
        remote = self.remote
        assert remote is not None
        if not sup.identity.covers(self.scopes(), queue=where.queue):
            raise CommandError("forbidden", "the call's queue is out of your scope")
        other = self._by_call.get(call_id)
        if other is not None and other is not sup:
            # One leg per call from this node (the call's node replaces a supervisor's older
            # leg with their new one: `attach_inbound`).
            raise CommandError("monitored", "another supervisor is monitoring this call")
        if sup.channel.peer_connection is None:
            raise CommandError("no-channel", "send supervisor-offer first")
        retarget = self._retarget(sup, call_id, mode)
        if retarget is None:
            return
        before, start = retarget
        if start:
            placed: list[RemoteMonitoring] = []

            def ended() -> None:  # the call's node ended the leg: the call ended there
                if placed and sup.monitoring is placed[0]:
                    self._stop(sup, "call-ended", restore=False)
                    self._state(sup, "call-ended")

            monitored = await remote.open(
                call_id=call_id,
                agent=where.agent,
                node=where.node,
                queue=where.queue,
                supervisor=sup.identity.actor,
                mode=mode,
                channel=sup.channel,
                on_end=ended,
            )
            placed.append(monitored)
            if self._sockets.get(id(sup.conn)) is not sup or sup.monitoring is not None:
                monitored.stop()  # the page closed (or monitored another call) meanwhile
                raise CommandError("gone", "the supervisor's page closed")
            self._started(sup, monitored, mode, call_id, call_id)
        after = {"call_id": call_id, "agent": where.agent, "mode": mode.value, "node": where.node}
        await self._audit(sup, "call.monitor", call_id, before, after)
        self._publish(
            sup,
            None,
            mode,
            "started" if before is None else "changed",
            call_id=call_id,
            agent=where.agent,
            queue=where.queue,
            tell=False,
        )
        event(
            logger,
            "call-monitor",
            call_id=call_id,
            agent=where.agent,
            supervisor=sup.identity.actor,
            mode=mode.value,
            node=where.node,
        )

    def carried(self, call_id: str) -> AgentCall | None:
        """The call `call_id` while an agent's channel here carries its audio: by its id here,
        or by its id on the caller's node (a call across nodes, whose agent is here)."""
        desk = self.desk
        if desk is None:
            return None
        ac = desk.carried(call_id)
        if ac is not None:
            return ac
        return next(
            (c for c in desk.calls.values() if c.engine_call == call_id and c.audio is not None),
            None,
        )

    def is_monitored(self, call_id: str, *, by: tuple[str, str, int] | None = None) -> bool:
        """Whether a supervisor (here or on another node) monitors the call `call_id` here.
        With `by` (a supervisor, its node, when it signed the new leg's request): a leg of that
        supervisor from that node signed no later does not count, the new one replaces it
        (`attach_inbound`)."""
        inbound = self._inbound.get(call_id)
        if inbound is not None and by is not None and _replaces(by, inbound):
            return call_id in self._by_call
        return call_id in self._by_call or inbound is not None

    # -- another node's supervisor on a call here (`omlmedia.monitor_remote`) ------------------

    def attach_inbound(
        self,
        ac: AgentCall,
        peer: MonitorPeer,
        mode: MonitorMode,
        *,
        supervisor: str,
        node: str,
        end: Callable[[], None],
        signed_at: int = 0,
    ) -> None:
        """Put `peer` (a monitor leg from `node`, its request signed at `signed_at`) on `ac` in
        `mode`; `end` hangs the leg up when the call stops being carried here. Raises
        `CommandError`."""
        audio = ac.audio
        if audio is None:
            raise CommandError("unknown-call", "no such call in progress")
        if self.is_monitored(ac.call_id, by=(supervisor, node, signed_at)):
            raise CommandError("monitored", "another supervisor is monitoring this call")
        old = self._inbound.get(ac.call_id)
        if old is not None:
            # The same supervisor's node asks again: it places one leg per supervisor and call
            # at a time (`_monitor_remote`), so the leg here is one it gave up (not answered
            # within its timeout: this node was frozen or loaded) whose hang-up has not come
            # yet. It is ended (BYE) and the new leg takes its place, instead of a 486
            # "another supervisor" that would refuse the supervisor their own call. (An older
            # request coming after a newer one, signed earlier, is the given-up one: refused.)
            self.stop_inbound(ac.call_id, "superseded")
            old.end()
        try:
            monitored = MonitoredCall(ac, audio, peer, mode, clock=self.media_clock)
        except (ConferenceError, ValueError) as exc:
            raise CommandError("cannot-monitor", str(exc)) from None
        self._inbound[ac.call_id] = _Inbound(
            monitored, supervisor, node, end, self.clock(), [mode.value], signed_at
        )
        self._tell_agent(ac.agent, mode)
        event(
            logger,
            "call-monitor",
            call_id=ac.call_id,
            agent=ac.agent,
            supervisor=supervisor,
            mode=mode.value,
            supervisor_node=node,
        )

    def set_inbound_mode(self, call_id: str, mode: MonitorMode) -> bool:
        """Another node's supervisor changes mode on `call_id`; False when it monitors nothing
        here."""
        inbound = self._inbound.get(call_id)
        if inbound is None:
            return False
        if inbound.monitored.mode is not mode:
            inbound.monitored.set_mode(mode)
            inbound.modes.append(mode.value)
            self._tell_agent(inbound.monitored.agent, mode)
        return True

    def stop_inbound(self, call_id: str, reason: str) -> None:
        """Another node's supervisor stopped monitoring `call_id` (its leg ended)."""
        inbound = self._inbound.pop(call_id, None)
        if inbound is None:
            return
        inbound.monitored.stop(restore=True)
        self._inbound_over(inbound, reason)

    def _inbound_over(self, inbound: _Inbound, reason: str) -> None:
        monitored = inbound.monitored
        self._note(monitored.call_id, inbound.supervisor, inbound.modes, inbound.started)
        self._tell_agent(monitored.agent, None)
        event(
            logger,
            "call-monitor-stop",
            call_id=monitored.call_id,
            supervisor=inbound.supervisor,
            supervisor_node=inbound.node,
            reason=reason,
        )

    def _locate(self, call_id: str) -> _Located | None:
        """Where the shared ACD's replica (``[cluster] acd = "shared"``) says the agent's call
        `call_id` is: None on a node of its own or for a call no agent has."""
        desk = self.desk
        engine = getattr(desk.acd if desk is not None else None, "engine", None)
        if not isinstance(engine, SharedEngine):
            return None
        try:
            agent = next(
                (a for a in engine.config.agents if engine.agent_status(a).call_id == call_id),
                None,
            )
            if agent is None:
                return None
            agent_node = engine.agent_node(agent)
            queue = str(engine.call_queue(call_id) or "")
        except (RuntimeError, KeyError, ValueError):  # not started, or gone meanwhile
            return None
        if agent_node is None:
            return None
        return _Located(agent, agent_node, queue)

    def _covers(self, identity: Identity, ac: AgentCall) -> bool:
        qc = ac.queued
        if qc is None and ac.engine_call:  # another node's queue caller: the replica's queue
            located = self._locate(ac.engine_call)
            queue = located.queue if located is not None else ""
            return identity.covers(self.scopes(), queue=queue, campaign=ac.info.campaign)
        if qc is None:
            return identity.scope is None
        campaign = qc.campaign.name if qc.campaign is not None else ""
        return identity.covers(self.scopes(), queue=qc.queue, campaign=campaign)

    def _stop(self, sup: _Supervisor, reason: str, *, restore: bool) -> None:
        monitored = sup.monitoring
        if monitored is None:
            return
        sup.monitoring = None
        if self._by_call.get(monitored.call_id) is sup:
            del self._by_call[monitored.call_id]
        monitored.stop(restore=restore)
        local = isinstance(monitored, MonitoredCall)
        if isinstance(monitored, MonitoredCall):
            self._note(monitored.call_id, sup.identity.actor, sup.modes, sup.started)
            queue = ""
        else:  # the call's node writes the leg in the call's record
            queue = monitored.queue
        desk = self.desk
        ac = desk.carried(monitored.call_id) if desk is not None else None
        self._publish(
            sup,
            ac,
            None,
            reason,
            call_id=monitored.call_id,
            agent=monitored.agent,
            queue=queue,
            tell=local,
        )
        event(
            logger,
            "call-monitor-stop",
            call_id=monitored.call_id,
            supervisor=sup.identity.actor,
            reason=reason,
        )

    def _note(self, call_id: str, supervisor: str, modes: list[str], start: float) -> None:
        """A supervisor's leg, for the call's record."""
        self._notes.setdefault(call_id, []).append(
            {
                "role": "supervisor",
                "supervisor": supervisor,
                "modes": list(dict.fromkeys(modes)),
                "start": start,
                "end": self.clock(),
                "codec": "opus",
                "packets": 0,
                "lost": 0,
                "jitter_ms": 0.0,
                "rtt_ms": None,
                "mos": None,
            }
        )

    def _call_detached(self, ac: AgentCall, reason: str = "call-ended") -> None:
        """The desk's channel stops carrying `ac`: its monitor (if any) stops, and the
        supervisor is told why (``call-ended``, ``call-held``: the agent took another call, a
        consultation, ``transferred``)."""
        sup = self._by_call.get(ac.call_id)
        if sup is not None and sup.monitoring is not None and sup.monitoring.agent == ac.agent:
            self._stop(sup, reason, restore=False)
            self._state(sup, reason)
        inbound = self._inbound.get(ac.call_id)
        if inbound is not None and inbound.monitored.agent == ac.agent:
            del self._inbound[ac.call_id]
            inbound.monitored.stop(restore=False)
            self._inbound_over(inbound, reason)
            inbound.end()
        if ac.call_id in self._notes:
            asyncio.get_running_loop().call_soon(self._write_record, ac.call_id, ac.queued)

    def _write_record(self, call_id: str, queued: object) -> None:
        """Add the supervisors' legs to the call's record once the ACD has written it."""
        notes = self._notes.get(call_id)
        desk = self.desk
        acd = desk.acd if desk is not None else None
        if notes is None:
            return
        if queued is None or acd is None:
            del self._notes[call_id]  # not a queue's call: it gets no record here
            return
        # With the caller while it is here (its consultation goes on, say: the legs go in the
        # record written when it leaves), else in the record written already.
        del self._notes[call_id]
        acd.note_legs(call_id, notes)

    def _publish(
        self,
        sup: _Supervisor,
        ac: AgentCall | None,
        mode: MonitorMode | None,
        reason: str,
        *,
        call_id: str = "",
        agent: str = "",
        queue: str = "",
        tell: bool = True,
    ) -> None:
        qc = ac.queued if ac is not None else None
        agent = ac.agent if ac is not None else agent
        self.events.publish(
            CALL_MONITORED,
            call_id=ac.call_id if ac is not None else call_id,
            queue=qc.queue if qc is not None else queue,
            agent=agent,
            campaign=qc.campaign.name if qc is not None and qc.campaign is not None else "",
            data={
                "supervisor": sup.identity.actor,
                "mode": mode.value if mode is not None else None,
                "reason": reason,
            },
        )
        if tell:  # not for a call on another node: its agent is told there
            self._tell_agent(agent, mode)

    def _tell_agent(self, agent: str, mode: MonitorMode | None) -> None:
        """The agent's page (here) is told, when `show_agents`."""
        desk = self.desk
        if self.show_agents and desk is not None and agent:
            desk.hub.notify(agent, _NOTICES[mode])

    async def _audit(
        self,
        sup: _Supervisor,
        action: str,
        call_id: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None = None,
    ) -> None:
        if self.audit is None:
            return
        try:
            await self.audit(sup.identity, action, call_id, before, after)
        except Exception:
            logger.exception("audit of %s on %s failed", action, call_id)

    def _state(self, sup: _Supervisor, reason: str = "") -> None:
        monitored = sup.monitoring
        message: dict[str, Any] = {"type": "monitor-state", "reason": reason}
        if monitored is None:
            message.update(call_id=None, agent=None, mode=None, queue="", caller="")
        else:
            desk = self.desk
            ac = desk.carried(monitored.call_id) if desk is not None else None
            message.update(
                call_id=sup.target or monitored.call_id,
                agent=monitored.agent,
                mode=monitored.mode.value,
                queue=ac.info.queue if ac is not None else getattr(monitored, "queue", ""),
                caller=ac.info.caller_number if ac is not None else "",
            )
        self._send(sup.conn, message)

    def _send(self, conn: Connection, message: dict[str, Any]) -> None:
        message.setdefault("v", PROTOCOL_VERSION)
        try:
            conn.send(message)
        except Exception:
            logger.debug("send to supervisor page failed", exc_info=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                logger.exception("closing a supervisor channel failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
