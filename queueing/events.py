"""Values the ACD engine hands to its asyncio side: events, states and results.

Events are drained with `AcdEngine.next_event()` in the order they happened. Every change is also
reported as a `QueueLogEntry`, so a queue log table rebuilt from those entries alone carries
every report (see `queueing.stats`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from queueing.config import Destination


class AgentState(Enum):
    """What an agent is doing; owned by the engine and shared with the agent page."""

    LOGGED_OUT = "logged-out"
    READY = "ready"
    PAUSED = "paused"
    RINGING = "ringing"
    ON_CALL = "on-call"
    WRAPUP = "wrapup"


class LogEvent(Enum):
    """Queue log verbs (app_queue's queue_log, in our words)."""

    ENTER = "enter"
    """data: priority, position, caller_number"""
    OFFER = "offer"
    """data: ring_timeout, callback (the number when the offer is a callback, else "")"""
    ANSWER = "answer"
    """data: wait (seconds since enter), ring (seconds since the offer)"""
    NO_ANSWER = "no-answer"
    """data: ring, reason ("timeout" or "rejected")"""
    ABANDON = "abandon"
    """data: wait, position, state ("waiting", "ringing" or "callback")"""
    COMPLETE = "complete"
    """data: wait, talk (seconds since the answer), reason"""
    TRANSFER = "transfer"
    """data: wait, talk, destination"""
    CALLBACK = "callback"
    """data: number, wait, position"""
    OVERFLOW = "overflow"
    """data: reason ("full", "join-empty", "leave-empty", "timeout"), destination, wait"""
    EXIT_TIMEOUT = "exit-timeout"
    """data: wait, position (logged before the OVERFLOW it causes)"""
    EXIT_EMPTY = "exit-empty"
    """data: wait, position (leave_when_empty; logged before its OVERFLOW)"""
    LOGIN = "login"
    LOGOUT = "logout"
    """data: reason ("" or "forced by NAME")"""
    PAUSE = "pause"
    """data: reason"""
    UNPAUSE = "unpause"
    """data: reason (the pause reason that ended)"""


LogValue = str | float | int


@dataclass(frozen=True, slots=True)
class QueueLogEntry:
    """One queue log row: when, where, which call and agent, what, and its data."""

    time: float
    queue: str
    """Queue name, or "" for agent-wide events (login, logout, pause, unpause)."""
    call_id: str
    """Call id, or "" for agent events."""
    agent: str
    """Agent, or "" for caller events without one."""
    event: LogEvent
    data: dict[str, LogValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OfferCall:
    """Ring `agent` with the caller `call_id` waiting in `queue`."""

    call_id: str
    agent: str
    queue: str
    ring_timeout: float
    caller_number: str
    caller_name: str
    priority: int
    waited: float


@dataclass(frozen=True, slots=True)
class CallbackDial:
    """Ring `agent` for a callback; once answered, dial `number` and bridge it to the agent."""

    call_id: str
    agent: str
    queue: str
    number: str
    ring_timeout: float
    caller_name: str
    waited: float


@dataclass(frozen=True, slots=True)
class CancelOffer:
    """Stop ringing `agent` for `call_id`.

    `reason`: "answered-elsewhere" (a ringall sibling answered), "abandoned", "callback",
    "timeout" (ring or max wait), "paused", "logout" or "overflow".
    """

    call_id: str
    agent: str
    reason: str


@dataclass(frozen=True, slots=True)
class Overflow:
    """The caller leaves `queue` for `destination` because of `reason`.

    When `destination` is a queue, the engine has already put the caller in it; otherwise the
    call layer acts (dial, record, prompt and hang up). `reason`: "full", "join-empty",
    "leave-empty" or "timeout".
    """

    call_id: str
    queue: str
    destination: Destination
    reason: str


@dataclass(frozen=True, slots=True)
class Announce:
    """Tell the waiting caller its position and estimated wait (None when unknown)."""

    call_id: str
    queue: str
    position: int
    estimated_wait: float | None


@dataclass(frozen=True, slots=True)
class AgentStateChanged:
    """The agent entered `state` at `since`; `reason` is the pause reason when paused."""

    agent: str
    state: AgentState
    reason: str
    since: float
    call_id: str = ""


Event = (
    OfferCall | CallbackDial | CancelOffer | Overflow | Announce | AgentStateChanged | QueueLogEntry
)


@dataclass(frozen=True, slots=True)
class Joined:
    """`caller_enter` result: the caller waits in `queue` at `position` (1 is next)."""

    call_id: str
    queue: str
    position: int


@dataclass(frozen=True, slots=True)
class Overflowed:
    """`caller_enter` result: the caller was refused and goes to `destination`."""

    call_id: str
    queue: str
    destination: Destination
    reason: str


EnterResult = Joined | Overflowed


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """A snapshot of one agent."""

    agent: str
    state: AgentState
    reason: str
    since: float
    call_id: str
    queues: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """A live snapshot of one queue."""

    queue: str
    waiting: int
    """Callers in the queue (waiting, ringing or waiting for a callback)."""
    ringing: int
    callbacks: int
    longest_wait: float
    """Seconds the oldest caller in the queue has waited (0 when empty)."""
    members_logged_in: int
    members_ready: int
    members_paused: int
    members_busy: int
