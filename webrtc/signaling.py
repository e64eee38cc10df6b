"""Agent signalling: the versioned JSON WebSocket protocol and the hub that owns connected agents.

Theory of operation. Every message is one JSON object ``{"v": 1, "type": ..., "id": ...}``
(``id`` optional, echoed as ``ref`` in the answer). `parse_message` validates a text frame
against `CLIENT_MESSAGES` (type, required and optional fields, each with its own check) and
raises `ProtocolError` with a fixed code: ``malformed`` (not JSON, not an object, a bad or
missing field, an unknown field), ``unsupported-version``, ``unknown-type``.

`AgentHub` is the state of all connected agents; it does no I/O of its own. A transport adapter
(`webrtc.app`) calls `connected`/`handle_text`/`disconnected` for each WebSocket and `expire`
every second; each `Connection` only needs a non-blocking `send(dict)` and `close()`. The
server implements `CallControl` (commands from the page) and calls the hub's push methods
(`offer_call`, `call_answered`, `call_joined`, `call_held`, `recording_changed`, `call_ended`,
`dtmf_received`, `state_changed`) to tell the page what happened.

Order. A connection must `login` (username and password) or `auth` (the token of an existing
session: a reconnect) before anything else. The hub keeps, per agent, the state the server last
set (it decides none: an agent's state is the ACD engine's, `queueing.events.AgentState`, and
the server tells the hub every change, a ``state`` command's outcome included) and the calls it
was told about, and refuses a command that does not fit (``answer`` of a
call that is not ringing, ``hold`` of a call on hold, any ``call_id`` that is not this agent's)
with ``bad-state`` or ``unknown-call``; such a message, like a malformed one, gets an
``error`` and changes nothing. A command accepted by `CallControl` updates the hub's view and
is confirmed with ``ack`` plus the matching event; a `CommandError` from the server is sent as
an ``error`` with its code. Push methods are idempotent: telling the hub a state it already has
sends nothing.

Sessions. One session per agent (`webrtc.accounts`): a second login takes the session over;
the first page gets ``{"type": "session-ended", "reason": "taken-over"}`` and its socket is
closed, while the agent's calls, state and media channel carry on under the new page. A socket
that drops keeps its session, calls and channel; the page reconnects with ``auth`` and its
token and gets a snapshot (state and calls). If no connection comes back within
`reconnect_grace` seconds (a closed tab), the session ends and `CallControl.agent_gone` is
called. ``logout`` ends the session at once. An expired token ends the session with reason
``expired``.

The agent channel (`webrtc.channel.AgentChannel`, or any `Channel`) is made at login by
`channel_factory` and lives as long as the session, whatever the pages do: an ``offer`` (first
one, a reload, or an ICE restart: aiortc cannot restart ICE, so the channel swaps in a fresh
peer connection) is answered by `Channel.accept_offer` with all candidates in the SDP (aiortc
does not trickle), and what the server attached to the channel stays attached.

Supervisors. The messages of `SUPERVISOR_MESSAGES` (``supervisor-auth`` with an API session
token, ``supervisor-offer``, ``monitor``, ``monitor-stop``) go to the `SupervisorHandler` the
hub was given (`omlmedia.monitor.MonitorService`, which owns those sockets, their channels and
their access checks); without one they get ``unknown-type``. A supervisor's socket cannot log
in as an agent nor place web calls, and an agent's or a web caller's cannot send them
(``bad-state``).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from queueing.events import AgentState
from webrtc.accounts import AccountStore, Session, source_key
from webrtc.accounts import check_password as _check_password
from webrtc.config import IceSource, ice_list
from webrtc.exceptions import CommandError, LoginError, ProtocolError

logger = logging.getLogger(__name__)

__all__ = [
    "CLIENT_MESSAGES",
    "PROTOCOL_VERSION",
    "SUPERVISOR_MESSAGES",
    "AgentCallState",
    "AgentHub",
    "CallControl",
    "CallInfo",
    "Channel",
    "Connection",
    "Message",
    "SupervisorHandler",
    "WebCallHandler",
    "parse_message",
]

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 128 * 1024
HISTORY_LENGTH = 50
LOGIN_DEADLINE = 10.0
"""Seconds a socket may stay open before it logs in (`AgentHub.expire` closes it after)."""


class AgentCallState(enum.Enum):
    """One call as the agent's page sees it (not the SIP dialog's `sip.ua.AgentCallState`)."""

    RINGING = "ringing"
    """Offered to the agent, not answered yet (inbound)."""
    DIALING = "dialing"
    """Placed by the agent (dial, consult), the far end not answered yet."""
    ACTIVE = "active"
    HELD = "held"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the page shows of a call: `caller_number` and `caller_name` of the far end,
    `queue` (or target) it came through, `wait_seconds` it waited before it was offered,
    `direction` ``inbound``, ``outbound``, ``consult`` (a consultation the agent placed) or
    ``consult-in`` (another agent consults this one: `caller_number` and `caller_name` are
    that agent's, `consult_for` the caller it is about); for a campaign's call, `url` the page
    the agent opens for it (the caller's number filled in) and the `dispositions` to choose
    from (`campaign` names it: an administrator's change of its dispositions reaches the call,
    `AgentHub.dispositions_changed`); `video`: the far end is a web caller who sends video (and
    takes the agent's camera)."""

    call_id: str
    caller_number: str = ""
    caller_name: str = ""
    queue: str = ""
    wait_seconds: float = 0.0
    direction: str = "inbound"
    url: str = ""
    dispositions: tuple[str, ...] = ()
    consult_for: str = ""
    video: bool = False
    campaign: str = ""


# --- message validation -----------------------------------------------------------------------

Check = Callable[[Any], bool]

_CALL_ID = re.compile(r"[A-Za-z0-9._@:+-]{1,128}")
_NUMBER = re.compile(r"[A-Za-z0-9+*#._@:-]{1,64}")
_PRINTABLE = re.compile(r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*")


def _string(
    max_length: int, pattern: re.Pattern[str] | None = None, *, empty: bool = False
) -> Check:
    def check(value: Any) -> bool:
        if not isinstance(value, str) or not (0 if empty else 1) <= len(value) <= max_length:
            return False
        if pattern is not None:
            return pattern.fullmatch(value) is not None
        return _PRINTABLE.fullmatch(value) is not None

    return check


def _one_of(*values: str) -> Check:
    return lambda value: isinstance(value, str) and value in values


def _sdp(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 * 1024 and value.startswith("v=0")


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


_call_id = _string(128, _CALL_ID)
_number = _string(64, _NUMBER)
_target = _number
"""A transfer's or a consultation's target: a number, a queue, a campaign or an agent (the
server's routes tell which)."""

CLIENT_MESSAGES: Mapping[str, tuple[Mapping[str, Check], Mapping[str, Check]]] = {
    "login": ({"username": _string(64), "password": _string(1024)}, {}),
    "auth": ({"token": _string(128)}, {}),
    "logout": ({}, {}),
    "ping": ({}, {}),
    "state": ({"state": _one_of("ready", "paused")}, {"reason": _string(64)}),
    "offer": ({"sdp": _sdp}, {}),
    "ice-restart": ({"sdp": _sdp}, {}),
    "answer": ({"call_id": _call_id}, {}),
    "hangup": ({"call_id": _call_id}, {}),
    "hold": ({"call_id": _call_id}, {}),
    "resume": ({"call_id": _call_id}, {}),
    "mute": ({"call_id": _call_id, "muted": _boolean}, {}),
    "recording": ({"call_id": _call_id, "paused": _boolean}, {}),
    "dtmf": ({"call_id": _call_id, "digit": _one_of(*"0123456789*#ABCD")}, {}),
    "transfer-blind": ({"call_id": _call_id, "to": _target}, {}),
    "transfer-consult": ({"call_id": _call_id, "to": _target}, {}),
    "transfer-complete": ({"call_id": _call_id}, {}),
    "transfer-cancel": ({"call_id": _call_id}, {}),
    "disposition": (
        {"call_id": _call_id, "disposition": _string(64)},
        {"notes": _string(4000, empty=True)},
    ),
    "dial": ({"number": _number}, {}),
    "web-call-prepare": ({"target": _number}, {}),
    "web-call": (
        {"target": _number, "sdp": _sdp},
        {"name": _string(64, empty=True)},
    ),
    "web-call-hangup": ({"call_id": _call_id}, {}),
    "web-call-dtmf": ({"call_id": _call_id, "digit": _one_of(*"0123456789*#ABCD")}, {}),
    "supervisor-auth": ({"token": _string(256)}, {}),
    "supervisor-offer": ({"sdp": _sdp}, {}),
    "monitor": ({"call_id": _call_id, "mode": _one_of("listen", "whisper", "barge")}, {}),
    "monitor-stop": ({}, {}),
}
"""Every message the page may send: type -> (required fields, optional fields)."""

SUPERVISOR_MESSAGES = frozenset({"supervisor-auth", "supervisor-offer", "monitor", "monitor-stop"})
"""The supervisor page's messages (`SupervisorHandler`): its channel and call monitoring."""

_ENVELOPE = {"v", "type", "id"}


@dataclass(frozen=True, slots=True)
class Message:
    """One validated message from the page."""

    type: str
    id: str | int | None
    fields: Mapping[str, Any]


def parse_message(text: str | bytes) -> Message:
    """Validate one WebSocket text frame; raises `ProtocolError` (``malformed``,
    ``unsupported-version``, ``unknown-type``)."""
    if isinstance(text, bytes | bytearray):
        raise ProtocolError("malformed", "binary messages are not accepted")
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError("malformed", "message is too large")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("malformed", "message is not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("malformed", "message is not a JSON object")
    version = data.get("v")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ProtocolError("unsupported-version", "protocol version must be 1")
    ident = data.get("id")
    if ident is not None and not (
        (isinstance(ident, str) and len(ident) <= 64)
        or (isinstance(ident, int) and not isinstance(ident, bool) and 0 <= ident < 2**53)
    ):
        raise ProtocolError("malformed", "id must be a short string or an integer")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("malformed", "type is missing")
    schema = CLIENT_MESSAGES.get(kind)
    if schema is None:
        raise ProtocolError("unknown-type", "unknown message type")
    required, optional = schema
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if key in _ENVELOPE:
            continue
        check = required.get(key) or optional.get(key)
        if check is None:
            raise ProtocolError("malformed", f"unknown field {key[:32]!r}")
        if not check(value):
            raise ProtocolError("malformed", f"invalid field {key!r}")
        fields[key] = value
    for key in required:
        if key not in fields:
            raise ProtocolError("malformed", f"missing field {key!r}")
    return Message(kind, ident, fields)


# --- the layers around the hub ----------------------------------------------------------------


class Connection(Protocol):
    """One page's WebSocket, seen by the hub: `send` queues a message (never blocks)."""

    @property
    def source(self) -> str:
        """The peer's IP address."""
        ...

    @property
    def port(self) -> int:
        """The peer's port."""
        ...

    def send(self, message: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class Channel(Protocol):
    """The agent's media channel, as the hub needs it (`webrtc.channel.AgentChannel`)."""

    async def accept_offer(self, sdp: str) -> str:
        """Answer the page's offer (a first one or a restart) with every candidate."""
        ...

    async def close(self) -> None: ...


class CallControl(Protocol):
    """What the server does for the agent page. Each command raises `CommandError` to refuse
    (its code and reason go to the page); returning means it was done."""

    async def agent_logged_in(self, agent: str) -> None:
        """A session started (the channel is `hub.channel(agent)`)."""
        ...

    async def agent_gone(self, agent: str, reason: str) -> None:
        """The session ended: ``logout``, ``closed`` (no reconnection within the grace period)
        or ``expired``. The server ends or requeues the agent's calls."""
        ...

    async def set_agent_state(self, agent: str, state: AgentState, reason: str | None) -> None:
        """Ready, or paused with a reason: asked of whoever owns the agent's state (the ACD
        engine), which tells the hub what the state became (`AgentHub.state_changed`)."""
        ...

    async def answer(self, agent: str, call_id: str) -> None: ...

    async def hangup(self, agent: str, call_id: str) -> None: ...

    async def hold(self, agent: str, call_id: str) -> None: ...

    async def resume(self, agent: str, call_id: str) -> None: ...

    async def mute(self, agent: str, call_id: str, muted: bool) -> None: ...

    async def set_recording(self, agent: str, call_id: str, paused: bool) -> None:
        """Pause (PCI: a card number is read out) or resume the call's recording; the server
        tells the hub what the recording became (`AgentHub.recording_changed`)."""
        ...

    async def send_dtmf(self, agent: str, call_id: str, digit: str) -> None:
        """Send one digit to the far end (RFC 4733 on a SIP leg)."""
        ...

    async def transfer_blind(self, agent: str, call_id: str, to: str) -> None: ...

    async def transfer_attended_consult(self, agent: str, call_id: str, to: str) -> CallInfo:
        """Hold `call_id` and call `to` (a number, or another agent whose page rings with a
        ``consult-in`` call); returns the consultation call."""
        ...

    async def transfer_attended_complete(self, agent: str, call_id: str) -> None:
        """Join the held caller with the consulted party; the agent leaves both."""
        ...

    async def transfer_attended_cancel(self, agent: str, call_id: str) -> None:
        """Hang up the consultation and go back to the held caller (still held)."""
        ...

    async def dial(self, agent: str, number: str) -> CallInfo:
        """Place an outbound call for the agent; returns it (ringing at the far end)."""
        ...

    async def set_disposition(
        self, agent: str, call_id: str, disposition: str, notes: str
    ) -> None: ...


class WebCallHandler(Protocol):
    """The web-caller side of the socket (`webrtc.webcaller.WebCallerHub`)."""

    def owns(self, conn: Connection) -> bool:
        """Whether `conn` carries web calls (it cannot log in then)."""
        ...

    def allows(self, target: str) -> bool:
        """Whether `target` may be called from the web (``/call/<target>``)."""
        ...

    async def handle(self, conn: Connection, message: Message) -> None:
        """One ``web-call*`` message; raises `ProtocolError` or `CommandError` to refuse."""
        ...

    def connection_closed(self, conn: Connection) -> None: ...

    async def close(self) -> None: ...


class SupervisorHandler(Protocol):
    """The supervisors' side of the socket (`omlmedia.monitor.MonitorService`): a socket that
    authenticates with ``supervisor-auth`` (an API session token of a supervisor or an admin)
    keeps one media channel and monitors agents' calls with it."""

    def owns(self, conn: Connection) -> bool:
        """Whether `conn` is a supervisor's socket (it cannot log in as an agent then)."""
        ...

    async def handle(self, conn: Connection, message: Message) -> None:
        """One message of `SUPERVISOR_MESSAGES`; raises `ProtocolError` or `CommandError` to
        refuse."""
        ...

    def connection_closed(self, conn: Connection) -> None: ...

    def expire(self) -> None:
        """End the sockets whose token is no longer valid (called about once a second)."""
        ...

    async def close(self) -> None: ...


ChannelFactory = Callable[[str], Channel]
PasswordCheck = Callable[[str, str], Awaitable[bool]]
Clock = Callable[[], float]


@dataclass(slots=True)
class _Call:
    info: CallInfo
    state: AgentCallState
    since: float
    muted: bool = False
    recording: str = ""
    """The call's recording: "" (not recorded), "on" or "paused"."""
    consult_of: str | None = None
    end_reason: str = ""
    disposition: str | None = None

    def view(self, now: float) -> dict[str, Any]:
        return {
            "call_id": self.info.call_id,
            "caller_number": self.info.caller_number,
            "caller_name": self.info.caller_name,
            "queue": self.info.queue,
            "wait_seconds": round(self.info.wait_seconds, 1),
            "direction": self.info.direction,
            "url": self.info.url,
            "dispositions": list(self.info.dispositions),
            "consult_for": self.info.consult_for,
            "video": self.info.video,
            "state": self.state.value,
            "muted": self.muted,
            "recording": self.recording,
            "elapsed": round(max(0.0, now - self.since), 1),
            "reason": self.end_reason,
            "disposition": self.disposition,
        }


@dataclass(slots=True)
class _Agent:
    name: str
    display_name: str
    session: Session
    channel: Channel
    conn: Connection | None = None
    detached_at: float | None = None
    state: AgentState = AgentState.LOGGED_OUT
    reason: str | None = None
    state_since: float = 0.0
    calls: dict[str, _Call] = field(default_factory=dict)
    ended: deque[_Call] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))
    busy: bool = False
    channel_id: str = ""
    """Names `channel` among every node's and every run's (``<hub>-<n>``): sent in the
    snapshot and with each ``answer``, so a page that reconnects and finds another id knows its
    peer connection was negotiated with a channel that is gone (its node died) and opens one
    afresh at once instead of waiting for ICE to give up the dead path."""


class AgentHub:
    """The connected agents: validates and routes page messages to `control`, pushes server
    events to pages, keeps sessions across reconnects. Time from `clock`."""

    def __init__(
        self,
        accounts: AccountStore,
        control: CallControl,
        channel_factory: ChannelFactory,
        *,
        clock: Clock,
        reconnect_grace: float = 30.0,
        check_password: PasswordCheck = _check_password,
        ice_servers: IceSource = (),
        web: WebCallHandler | None = None,
        supervisors: SupervisorHandler | None = None,
        login_deadline: float = LOGIN_DEADLINE,
        pause_reasons: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self.accounts = accounts
        self.pause_reasons = pause_reasons
        """The reasons an agent may pause with, now (sent in ``login-ok``/``auth-ok`` and by
        `pause_reasons_changed`; a ``state`` message with another is refused with
        ``invalid-reason``); None: any reason."""
        self.login_deadline = login_deadline
        """Seconds a socket may stay open without logging in (an agent's ``login``/``auth``, a
        supervisor's, a web caller's ``web-call``) before `expire` closes it."""
        self.supervisors = supervisors
        """The supervisors' sockets (`SUPERVISOR_MESSAGES`); None refuses them with
        ``unknown-type``."""
        self._ice = ice_servers
        self.web = web
        """The web callers (``web-call`` messages); None refuses them with ``unknown-type``."""
        self.control = control
        self.channel_factory = channel_factory
        self.clock = clock
        self.reconnect_grace = reconnect_grace
        self.check_password = check_password
        self._agents: dict[str, _Agent] = {}
        self._bound: dict[int, tuple[Connection, str]] = {}
        self._connections: dict[int, Connection] = {}
        self._unauthenticated: dict[int, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        """Writes to the shared sessions under way (`AccountStore.shared`)."""
        self._hub_id = secrets.token_urlsafe(6)
        """This hub's random name: the prefix of its channels' ids (`_Agent.channel_id`)."""
        self._channels = 0
        """Sockets not logged in yet, with the time they opened."""

    # --- queries ---

    @property
    def ice_servers(self) -> list[dict[str, Any]]:
        """STUN/TURN servers for the pages (W3C ``RTCIceServer`` dicts), sent in ``login-ok``
        and ``auth-ok``; made at each call when given as a function (fresh TURN credentials)."""
        return ice_list(self._ice)

    def channel(self, agent: str) -> Channel | None:
        """The agent's media channel while logged in."""
        entry = self._agents.get(agent)
        return entry.channel if entry is not None else None

    def agents(self) -> list[str]:
        """The agents with a session (connected or within their grace period)."""
        return list(self._agents)

    def agent_state(self, agent: str) -> AgentState:
        """The state the hub shows for `agent`."""
        entry = self._agents.get(agent)
        return entry.state if entry is not None else AgentState.LOGGED_OUT

    def display_name(self, agent: str) -> str:
        """The agent's display name (its name when it has none or no session)."""
        entry = self._agents.get(agent)
        return (entry.display_name or agent) if entry is not None else agent

    def connected(self, agent: str) -> bool:
        """Whether the agent's page is connected now."""
        entry = self._agents.get(agent)
        return entry is not None and entry.conn is not None

    # --- the transport adapter's calls ---

    def connection_opened(self, conn: Connection) -> None:
        """A WebSocket opened; it must authenticate first."""
        self._connections[id(conn)] = conn
        self._unauthenticated[id(conn)] = self.clock()

    def connection_closed(self, conn: Connection) -> None:
        """A WebSocket closed: its session stays for `reconnect_grace` seconds."""
        self._connections.pop(id(conn), None)
        self._unauthenticated.pop(id(conn), None)
        if self.web is not None:
            self.web.connection_closed(conn)
        if self.supervisors is not None:
            self.supervisors.connection_closed(conn)
        bound = self._bound.pop(id(conn), None)
        if bound is None:
            return
        entry = self._agents.get(bound[1])
        if entry is not None and entry.conn is conn:
            entry.conn = None
            entry.detached_at = self.clock()
            logger.info("agent %s disconnected; session kept", entry.name)

    async def expire(self) -> None:
        """End sessions whose page did not come back in time or whose token expired; call
        about once a second. Also close the sockets that did not log in within
        `login_deadline` (error ``login-timeout``), so an idle socket holds nothing for long."""
        now = self.clock()
        for key, opened in list(self._unauthenticated.items()):
            conn = self._connections.get(key)
            if conn is None:
                del self._unauthenticated[key]
            elif (
                key in self._bound
                or (self.web is not None and self.web.owns(conn))
                or (self.supervisors is not None and self.supervisors.owns(conn))
            ):
                del self._unauthenticated[key]
            elif now - opened >= self.login_deadline:
                del self._unauthenticated[key]
                logger.info(
                    "socket from %s closed: no login within %g s", conn.source, self.login_deadline
                )
                self._error(conn, "login-timeout", "no login in time", None)
                conn.close()
        if self.supervisors is not None:
            self.supervisors.expire()
        for entry in list(self._agents.values()):
            if not entry.session.valid(now):
                await self._end(entry, "expired", notify=True)
            elif entry.detached_at is not None and now - entry.detached_at >= self.reconnect_grace:
                await self._end(entry, "closed", notify=False)

    async def close(self) -> None:
        """Close every page and channel (server shutdown); no `agent_gone` calls. With shared
        sessions (a cluster) the pages are not told their session ended: they reconnect, through
        the balancer, to another node, which takes their session (`_adopt`)."""
        shared = self.accounts.shared is not None
        for entry in list(self._agents.values()):
            if entry.conn is not None:
                if not shared:
                    self._send(entry.conn, {"type": "session-ended", "reason": "shutdown"})
                entry.conn.close()
            await entry.channel.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._agents.clear()
        self._bound.clear()
        if self.web is not None:
            await self.web.close()
        if self.supervisors is not None:
            await self.supervisors.close()

    async def handle_text(self, conn: Connection, text: str | bytes) -> None:
        """One message from a page: answered on `conn`; never raises for bad input."""
        ref: str | int | None = None
        try:
            message = parse_message(text)
            ref = message.id
            await self._dispatch(conn, message)
        except ProtocolError as exc:
            self._error(conn, exc.code, exc.reason, ref)
        except CommandError as exc:
            self._error(conn, exc.code, exc.reason, ref, exc.details)
        except Exception:
            logger.exception("agent message failed")
            self._error(conn, "internal", "the server could not handle the message", ref)

    # --- server pushes ---

    def state_changed(self, agent: str, state: AgentState, reason: str | None = None) -> None:
        """The agent's state changed on the server (ACD): shown on the page."""
        entry = self._agents.get(agent)
        if entry is None:
            return
        reason = reason if state is AgentState.PAUSED else None
        if entry.state is state and entry.reason == reason:
            return
        entry.state, entry.reason, entry.state_since = state, reason, self.clock()
        self._push(entry, self._state_message(entry))
        if self.accounts.shared is not None:
            self._background(self.accounts.shared.note_state(entry.session.token_hash, state.value))

    def offer_call(self, agent: str, call: CallInfo) -> bool:
        """Ring the agent with `call`; False when the agent has no session (or it is known)."""
        entry = self._agents.get(agent)
        if entry is None or call.call_id in entry.calls:
            return False
        entry.calls[call.call_id] = _Call(call, AgentCallState.RINGING, self.clock())
        self._push_call(entry, "call-incoming", call.call_id)
        return True

    def call_joined(self, agent: str, call: CallInfo) -> bool:
        """A call already up joins the agent (the caller of a consultation the other agent
        completed): pushed as ``call-answered``; False when the agent has no session."""
        entry = self._agents.get(agent)
        if entry is None or call.call_id in entry.calls:
            return False
        entry.calls[call.call_id] = _Call(call, AgentCallState.ACTIVE, self.clock())
        self._push_call(entry, "call-answered", call.call_id)
        return True

    def call_answered(self, agent: str, call_id: str) -> None:
        """The call is up (the agent answered, or the far end of a dial answered)."""
        self._set_call(agent, call_id, AgentCallState.ACTIVE, "call-answered")

    def call_held(self, agent: str, call_id: str, held: bool = True) -> None:
        """The call was put on hold (or resumed) by the server."""
        if held:
            self._set_call(agent, call_id, AgentCallState.HELD, "call-held")
        else:
            self._set_call(agent, call_id, AgentCallState.ACTIVE, "call-resumed")

    def recording_changed(self, agent: str, call_id: str, recording: str) -> None:
        """The call's recording is now `recording` ("on", "paused" or "" when it stopped):
        pushed as ``call-recording``."""
        entry = self._agents.get(agent)
        call = entry.calls.get(call_id) if entry is not None else None
        if entry is None or call is None or call.recording == recording:
            return
        call.recording = recording
        self._push_call(entry, "call-recording", call_id)

    def call_ended(self, agent: str, call_id: str, reason: str = "hangup") -> None:
        """The call ended (caller hung up, transfer done, ...)."""
        entry = self._agents.get(agent)
        if entry is None:
            return
        call = entry.calls.pop(call_id, None)
        if call is None:
            return
        call.state, call.end_reason, call.since = AgentCallState.ENDED, reason, self.clock()
        entry.ended.append(call)
        self._push(entry, {"type": "call-ended", "call": call.view(self.clock())})

    def dtmf_received(self, agent: str, call_id: str, digit: str) -> None:
        """A digit from the far end, shown to the agent."""
        entry = self._agents.get(agent)
        if entry is None or call_id not in entry.calls:
            return
        self._push(entry, {"type": "dtmf", "call_id": call_id, "digit": digit})

    def notify(self, agent: str, text: str) -> None:
        """A free-text notice for the agent (shown in the page's status line)."""
        entry = self._agents.get(agent)
        if entry is not None:
            self._push(entry, {"type": "notice", "text": text[:500]})

    async def logout(self, agent: str, reason: str) -> bool:
        """End the agent's session from the server (a supervisor's forced logout): the page gets
        ``session-ended`` with `reason`, its socket and channel are closed and
        `CallControl.agent_gone` is called. False when the agent has no session."""
        entry = self._agents.get(agent)
        if entry is None:
            return False
        await self._end(entry, reason, notify=True)
        return True

    # --- internals ---

    def _send(self, conn: Connection, message: dict[str, Any]) -> None:
        message.setdefault("v", PROTOCOL_VERSION)
        try:
            conn.send(message)
        except Exception:
            logger.debug("send to agent page failed", exc_info=True)

    def _error(
        self,
        conn: Connection,
        code: str,
        reason: str,
        ref: str | int | None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        message: dict[str, Any] = {**(details or {}), "type": "error", "code": code}
        message["reason"] = reason
        if ref is not None:
            message["ref"] = ref
        self._send(conn, message)

    def _push(self, entry: _Agent, message: dict[str, Any]) -> None:
        if entry.conn is not None:
            self._send(entry.conn, message)

    def _push_call(self, entry: _Agent, kind: str, call_id: str) -> None:
        call = entry.calls[call_id]
        self._push(entry, {"type": kind, "call": call.view(self.clock())})

    def _set_call(self, agent: str, call_id: str, state: AgentCallState, kind: str) -> None:
        entry = self._agents.get(agent)
        if entry is None:
            return
        call = entry.calls.get(call_id)
        if call is None or call.state is state:
            return
        if call.state in (AgentCallState.RINGING, AgentCallState.DIALING):
            call.since = self.clock()
        call.state = state
        self._push_call(entry, kind, call_id)

    def _state_message(self, entry: _Agent) -> dict[str, Any]:
        return {
            "type": "state",
            "state": entry.state.value,
            "reason": entry.reason,
            "elapsed": round(max(0.0, self.clock() - entry.state_since), 1),
        }

    def _snapshot(self, entry: _Agent) -> dict[str, Any]:
        now = self.clock()
        return {
            "agent": entry.name,
            "display_name": entry.display_name,
            "expires_in": round(entry.session.expires - now),
            "state": entry.state.value,
            "reason": entry.reason,
            "elapsed": round(max(0.0, now - entry.state_since), 1),
            "calls": [c.view(now) for c in entry.calls.values()],
            "history": [c.view(now) for c in entry.ended],
            "pause_reasons": list(self.pause_reasons()) if self.pause_reasons else [],
            "channel": entry.channel_id,
        }

    def pause_reasons_changed(self) -> None:
        """Send the pause reasons as they are now to every connected agent page
        (``{"type": "pause-reasons", "reasons": [...]}``): its menu follows."""
        if self.pause_reasons is None:
            return
        message = {"type": "pause-reasons", "reasons": list(self.pause_reasons())}
        for entry in self._agents.values():
            if entry.conn is not None:
                self._send(entry.conn, message)

    def dispositions_changed(self, campaign: str, dispositions: tuple[str, ...]) -> None:
        """`campaign`'s dispositions changed (an administrator's change, see
        `omlmedia.directory`): its calls on the pages, ringing, connected or ended (the
        wrap-up), offer `dispositions` from now on, and each page is sent ``{"type":
        "call-dispositions", "call_id", "dispositions"}`` (its wrap-up menu follows)."""
        for entry in self._agents.values():
            for call in (*entry.calls.values(), *entry.ended):
                if call.info.campaign != campaign or call.info.dispositions == dispositions:
                    continue
                call.info = replace(call.info, dispositions=dispositions)
                if entry.conn is not None:
                    message = {
                        "type": "call-dispositions",
                        "call_id": call.info.call_id,
                        "dispositions": list(dispositions),
                    }
                    self._send(entry.conn, message)

    async def _end(self, entry: _Agent, reason: str, *, notify: bool) -> None:
        if self._agents.get(entry.name) is not entry:
            return
        del self._agents[entry.name]
        self.accounts.logout(entry.session)
        if reason == "logout" and self.accounts.shared is not None:
            self._background(self.accounts.shared.drop(entry.session.token_hash))
        if entry.conn is not None:
            if notify:
                self._send(entry.conn, {"type": "session-ended", "reason": reason})
            self._bound.pop(id(entry.conn), None)
            entry.conn.close()
        logger.info("agent %s session ended: %s", entry.name, reason)
        try:
            await entry.channel.close()
        finally:
            await self.control.agent_gone(entry.name, reason)

    def _attach(self, entry: _Agent, conn: Connection) -> None:
        old = entry.conn
        if old is not None and old is not conn:
            self._bound.pop(id(old), None)
            self._send(old, {"type": "session-ended", "reason": "replaced"})
            old.close()
        entry.conn, entry.detached_at = conn, None
        self._bound[id(conn)] = (conn, entry.name)

    async def _dispatch(self, conn: Connection, message: Message) -> None:
        bound = self._bound.get(id(conn))
        kind, ref = message.type, message.id
        supervisors = self.supervisors
        supervising = supervisors is not None and supervisors.owns(conn)
        if kind in SUPERVISOR_MESSAGES:
            if supervisors is None:
                raise ProtocolError("unknown-type", "monitoring is not enabled")
            if bound is not None:
                raise ProtocolError("bad-state", "an agent socket cannot monitor calls")
            if self.web is not None and self.web.owns(conn):
                raise ProtocolError("bad-state", "this socket carries a web call")
            await supervisors.handle(conn, message)
            return
        if kind.startswith("web-call"):
            if self.web is None:
                raise ProtocolError("unknown-type", "web calls are not enabled")
            if bound is not None or supervising:
                raise ProtocolError("bad-state", "an agent socket cannot place web calls")
            await self.web.handle(conn, message)
            return
        if kind in ("login", "auth"):
            if self.web is not None and self.web.owns(conn):
                raise ProtocolError("bad-state", "this socket carries a web call")
            if supervising:
                raise ProtocolError("bad-state", "this socket is a supervisor's")
            if bound is not None:
                raise ProtocolError("already-authenticated", "this connection is logged in")
            if kind == "login":
                await self._login(conn, message)
            else:
                await self._auth(conn, message)
            return
        if bound is None:
            raise ProtocolError("not-authenticated", "log in first")
        entry = self._agents.get(bound[1])
        if entry is None or entry.conn is not conn:
            self._bound.pop(id(conn), None)
            raise ProtocolError("not-authenticated", "the session has ended")
        if not entry.session.valid(self.clock()):
            await self._end(entry, "expired", notify=True)
            return
        if kind == "ping":
            self._send(conn, {"type": "pong", "ref": ref})
            return
        if entry.busy and kind not in ("logout",):
            raise ProtocolError("busy", "the previous command is still running")
        entry.busy = True
        try:
            await self._command(entry, conn, message)
        finally:
            entry.busy = False

    async def _login(self, conn: Connection, message: Message) -> None:
        name = message.fields["username"]
        password = message.fields["password"]
        ok = False
        lockouts = self.accounts.lockouts
        source = source_key(conn.source)
        # The cluster's counts (all nodes' failures) as well as this node's own.
        elsewhere = lockouts is not None and await lockouts.locked(name, source)
        try:
            if not elsewhere and not self.accounts.locked(name, conn.source):
                ok = await self.check_password(password, self.accounts.password_hash_for(name))
            result = self.accounts.login(
                name, ok, conn.source, conn.port, locked_elsewhere=elsewhere
            )
        except LoginError as exc:  # busy, locked-out, bad-credentials
            if lockouts is not None and exc.code == "bad-credentials":
                await lockouts.failed(name, source, name in self.accounts.accounts)
            raise ProtocolError(exc.code, exc.reason) from None
        if lockouts is not None:
            await lockouts.succeeded(name, source)
        if id(conn) not in self._connections:
            self.accounts.logout(result.session)
            return
        if self.accounts.shared is not None:
            await self.accounts.shared.put(
                result.session.token_hash, name, result.session.expires - self.clock()
            )
        account = self.accounts.accounts[name]
        entry = self._agents.get(name)
        if entry is not None:
            old = entry.conn
            entry.session = result.session
            entry.conn = None
            if old is not None:
                self._bound.pop(id(old), None)
                self._send(old, {"type": "session-ended", "reason": "taken-over"})
                old.close()
            self._attach(entry, conn)
        else:
            entry = _Agent(
                name,
                account.display_name,
                result.session,
                self.channel_factory(name),
                state_since=self.clock(),
                channel_id=self._new_channel_id(),
            )
            self._agents[name] = entry
            self._attach(entry, conn)
            await self.control.agent_logged_in(name)
        reply = {
            "type": "login-ok",
            "token": result.token,
            "ice_servers": self.ice_servers,
            **self._snapshot(entry),
        }
        if message.id is not None:
            reply["ref"] = message.id
        self._send(conn, reply)

    async def _auth(self, conn: Connection, message: Message) -> None:
        token = message.fields["token"]
        session = self.accounts.authenticate(token)
        entry = self._agents.get(session.agent) if session is not None else None
        if session is None and self.accounts.shared is not None:
            entry = await self._adopt(conn, token)
            session = entry.session if entry is not None else None
        if session is None or entry is None or entry.session is not session:
            raise ProtocolError("session-invalid", "the session has ended: log in again")
        self._attach(entry, conn)
        reply = {"type": "auth-ok", "ice_servers": self.ice_servers, **self._snapshot(entry)}
        if message.id is not None:
            reply["ref"] = message.id
        self._send(conn, reply)

    def _new_channel_id(self) -> str:
        self._channels += 1
        return f"{self._hub_id}-{self._channels}"

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _adopt(self, conn: Connection, token: str) -> _Agent | None:
        """The session of `token` opened on another node (`AccountStore.shared`), whose page
        came here because that node died: the agent is logged in here with it, and Ready again
        if it was. None when there is no such session or the agent is logged in here."""
        shared = self.accounts.shared
        if shared is None or not isinstance(token, str):
            return None
        found = await shared.get(hashlib.sha256(token.encode("utf-8")).digest())
        if found is None or id(conn) not in self._connections:
            return None
        agent, ttl, last = found
        if agent in self._agents:
            return None
        session = self.accounts.adopt(agent, token, ttl, conn.source)
        if session is None:
            return None
        entry = _Agent(
            agent,
            self.accounts.accounts[agent].display_name,
            session,
            self.channel_factory(agent),
            state_since=self.clock(),
            channel_id=self._new_channel_id(),
        )
        self._agents[agent] = entry
        self._attach(entry, conn)
        await self.control.agent_logged_in(agent)
        if last == AgentState.READY.value:
            await self.control.set_agent_state(agent, AgentState.READY, None)
        return entry

    def _call(self, entry: _Agent, call_id: str, *states: AgentCallState) -> _Call:
        call = entry.calls.get(call_id)
        if call is None:
            raise ProtocolError("unknown-call", "no such call for this agent")
        if states and call.state not in states:
            raise ProtocolError("bad-state", f"the call is {call.state.value}")
        return call

    def _ack(self, conn: Connection, ref: str | int | None, **extra: Any) -> None:
        self._send(conn, {"type": "ack", "ref": ref, **extra})

    async def _command(self, entry: _Agent, conn: Connection, message: Message) -> None:
        kind, f, ref, agent = message.type, message.fields, message.id, entry.name
        control = self.control
        active = (AgentCallState.ACTIVE,)
        up = (AgentCallState.ACTIVE, AgentCallState.HELD)
        if kind == "logout":
            self._ack(conn, ref)
            await self._end(entry, "logout", notify=True)
        elif kind == "state":
            state = AgentState(f["state"])
            reason = f.get("reason", "break") if state is AgentState.PAUSED else None
            if reason is not None and self.pause_reasons is not None:
                known = list(self.pause_reasons())
                if "reason" not in f and known:
                    reason = known[0]
                elif reason not in known:
                    raise ProtocolError("invalid-reason", f"not a pause reason: {reason}")
            await control.set_agent_state(agent, state, reason)
            self._ack(conn, ref)
        elif kind in ("offer", "ice-restart"):
            answer = await entry.channel.accept_offer(f["sdp"])
            reply = {"type": "answer", "sdp": answer, "channel": entry.channel_id, "ref": ref}
            self._send(conn, reply)
        elif kind == "answer":
            call = self._call(entry, f["call_id"], AgentCallState.RINGING)
            await control.answer(agent, call.info.call_id)
            self._ack(conn, ref)
            self.call_answered(agent, call.info.call_id)
        elif kind == "hangup":
            call = self._call(entry, f["call_id"])
            await control.hangup(agent, call.info.call_id)
            self._ack(conn, ref)
            self.call_ended(agent, call.info.call_id, "agent-hangup")
        elif kind == "hold":
            call = self._call(entry, f["call_id"], *active)
            await control.hold(agent, call.info.call_id)
            self._ack(conn, ref)
            self.call_held(agent, call.info.call_id, True)
        elif kind == "resume":
            call = self._call(entry, f["call_id"], AgentCallState.HELD)
            await control.resume(agent, call.info.call_id)
            self._ack(conn, ref)
            self.call_held(agent, call.info.call_id, False)
        elif kind == "mute":
            call = self._call(entry, f["call_id"], *up)
            await control.mute(agent, call.info.call_id, f["muted"])
            self._ack(conn, ref)
            if call.muted != f["muted"]:
                call.muted = f["muted"]
                self._push_call(entry, "call-muted", call.info.call_id)
        elif kind == "recording":
            call = self._call(entry, f["call_id"], *up)
            await control.set_recording(agent, call.info.call_id, f["paused"])
            self._ack(conn, ref)
        elif kind == "dtmf":
            call = self._call(entry, f["call_id"], *active)
            await control.send_dtmf(agent, call.info.call_id, f["digit"])
            self._ack(conn, ref)
        elif kind == "transfer-blind":
            call = self._call(entry, f["call_id"], *up)
            await control.transfer_blind(agent, call.info.call_id, f["to"])
            self._ack(conn, ref)
            self.call_ended(agent, call.info.call_id, "transferred")
        elif kind == "transfer-consult":
            call = self._call(entry, f["call_id"], *up)
            if any(c.consult_of == call.info.call_id for c in entry.calls.values()):
                raise ProtocolError("bad-state", "a consultation is already in progress")
            info = await control.transfer_attended_consult(agent, call.info.call_id, f["to"])
            info = replace(info, direction="consult")
            self._ack(conn, ref, consult_call_id=info.call_id)
            self.call_held(agent, call.info.call_id, True)
            entry.calls[info.call_id] = _Call(
                info, AgentCallState.DIALING, self.clock(), consult_of=call.info.call_id
            )
            self._push_call(entry, "call-dialing", info.call_id)
        elif kind in ("transfer-complete", "transfer-cancel"):
            call = self._call(entry, f["call_id"], *up)
            consult = next(
                (c for c in entry.calls.values() if c.consult_of == call.info.call_id), None
            )
            if consult is None:
                raise ProtocolError("bad-state", "no consultation in progress for this call")
            if kind == "transfer-complete":
                await control.transfer_attended_complete(agent, call.info.call_id)
                self._ack(conn, ref)
                self.call_ended(agent, consult.info.call_id, "transferred")
                self.call_ended(agent, call.info.call_id, "transferred")
            else:
                await control.transfer_attended_cancel(agent, call.info.call_id)
                self._ack(conn, ref)
                self.call_ended(agent, consult.info.call_id, "consult-cancelled")
        elif kind == "disposition":
            call_id = f["call_id"]
            target = entry.calls.get(call_id) or next(
                (c for c in entry.ended if c.info.call_id == call_id), None
            )
            if target is None:
                raise ProtocolError("unknown-call", "no such call for this agent")
            allowed = target.info.dispositions
            if allowed and f["disposition"] not in allowed:
                raise ProtocolError(
                    "invalid-disposition",
                    f"not a disposition of this call's campaign: {f['disposition']}",
                )
            await control.set_disposition(agent, call_id, f["disposition"], f.get("notes", ""))
            target.disposition = f["disposition"]
            self._ack(conn, ref)
        elif kind == "dial":
            if any(
                c.state in (AgentCallState.RINGING, AgentCallState.DIALING, AgentCallState.ACTIVE)
                for c in entry.calls.values()
            ):
                raise ProtocolError("bad-state", "finish the current call first")
            info = replace(await control.dial(agent, f["number"]), direction="outbound")
            self._ack(conn, ref, call_id=info.call_id)
            entry.calls[info.call_id] = _Call(info, AgentCallState.DIALING, self.clock())
            self._push_call(entry, "call-dialing", info.call_id)
        else:  # pragma: no cover - parse_message admits only the types above
            raise ProtocolError("unknown-type", "unknown message type")
