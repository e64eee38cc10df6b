"""The agent desk: SIP calls delivered to browser agents, through their open agent channel.

The desk is the server side of the agent page (`webrtc.signaling.CallControl`). It keeps each
logged-in agent's state, rings an agent with a SIP call (`offer`: 180 to the caller, an incoming
call on the page, a ring timeout), and on Answer binds an RtpLeg for the caller, answers the
INVITE and joins the leg to the agent's channel through a `PcmPort`: the channel's 20 ms clock
pulls the caller's audio out of a capped jitter buffer and pushes the agent's audio into the leg.
No ICE or DTLS happens at answer time: the channel was set up at login.

Hold plays music on hold to the caller (the agent hears nothing); mute stops the agent's audio;
the DTMF pad sends RFC 4733 events on the SIP leg, and digits from the caller (RFC 4733 or SIP
INFO) are shown on the page. Hanging up on either side ends the call on the other and puts the
agent in wrap-up for `wrapup_time` seconds, then back to Ready.

Consultations and transfers are `omlmedia.transfers`, web callers `omlmedia.webcalls`;
`omlmedia.agents.AgentDesk` is the three together.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from media.bridge import MediaBridge, codec_transcoder
from media.feed import LegFeed
from media.leg import RtpLeg
from media.pcmport import PcmPort, port_rate
from media.ports import PortsExhausted, RtpSocketPool
from omlmedia.acd import AGENT_GONE_REASON, RECORDING_HEADER, AcdRuntime, QueuedCaller
from omlmedia.authz import Identity, Role
from omlmedia.clock import CallLater, Timer, loop_call_later
from omlmedia.config import Route, RouteAction
from omlmedia.events import AGENT_STATE, NO_EVENTS, EventSink
from omlmedia.logs import event
from omlmedia.offer_answer import answer_on_leg, apply_answer
from omlmedia.recording import CallRecorder
from omlmedia.recordings import reserve_segment
from omlmedia.services import CAPABILITIES
from omlmedia.targets import Refusal
from queueing.events import AgentState, CallbackDial
from sip.message import Request, Response
from sip.sdp import (
    MediaCapabilities,
    OfferAnswerError,
    SDPError,
    SessionDescription,
    create_offer,
)
from sip.transaction import ServerTransaction
from sip.ua import Call, CallState
from webrtc.channel import AgentChannel
from webrtc.exceptions import CommandError
from webrtc.signaling import AgentHub, CallInfo
from webrtc.webcaller import WebCaller, WebCallerHub, join_audio

if TYPE_CHECKING:
    from sip.service import SipService

logger = logging.getLogger(__name__)

__all__ = ["DIALABLE", "AgentCall", "CallAudio", "Desk", "DeskStats", "JoinedCall"]

Samples = npt.NDArray[np.int16]

DialOut = Callable[[str, str, bytes, Call | None], Call | None]
"""Places an outbound call: (number, trunk name or "", SDP offer, related call) -> the call,
or None when it cannot be placed."""

CALL_RECORDING = "call.recording"
"""A call's recording was paused or resumed (data: paused, offset, by)."""

AuditWriter = Callable[
    [Identity, str, str, Mapping[str, Any] | None, Mapping[str, Any] | None], Awaitable[None]
]
"""Writes one audit entry: (identity, action, target, before, after)."""

DIALABLE = re.compile(r"[0-9+*#]{1,32}")
"""A number the desk dials or transfers to (digits, ``+``, ``*``, ``#``)."""


def _peer_cause(ac: AgentCall, cause: str) -> str:
    """Why the other side of an agent consultation ends when the side `ac` ends for `cause`."""
    if cause != "agent-hangup":
        return cause
    if ac.answered_at is not None:
        return "hangup"
    return "cancelled" if ac.consult_of else "declined"


def _campaign_url(template: str, number: str) -> str:
    """The campaign's page for a call: ``{caller}`` becomes the caller's number (escaped)."""
    if not template:
        return ""
    return template.replace("{caller}", quote(number, safe="+"))


@dataclass(eq=False)
class CallAudio:
    """An answered SIP call's audio at its agent's channel: `source()` gives the caller's next
    frame (None on hold), `sink(frame)` sends a frame to the caller (recorded, silenced on
    mute and hold), both at `rate`. The desk relays them directly; a supervisor's monitor
    (`omlmedia.monitor`) sets `diverted` and routes them through a mixing room instead."""

    source: Callable[[], Samples | None]
    sink: Callable[[Samples], None]
    rate: int
    channel: AgentChannel
    diverted: bool = False
    """A monitor carries the audio: the caller's frames wait for its room, not the channel."""

    def reattach(self) -> None:
        """Back to the direct relay between the caller's leg and the agent's channel."""
        self.diverted = False
        self.channel.attach(self.source, self.sink, rate=self.rate, relay=True)


@dataclass(eq=False)
class AgentCall:
    """A call offered to or carried by an agent: a SIP call (`call`) or a web caller (`web`)."""

    call_id: str
    call: Call | None
    agent: str
    info: CallInfo
    offered_at: float
    answered_at: float | None = None
    leg: RtpLeg | None = None
    port: PcmPort | None = None
    music: LegFeed | None = None
    held: bool = False
    muted: bool = False
    ring_timer: Timer | None = field(default=None, repr=False)
    disposition: str = ""
    notes: str = ""
    local_sdp: bytes = b""
    session_id: int = 0
    version: int = 0
    web: WebCaller | None = None
    queued: QueuedCaller | None = None
    """The queue's caller (its leg belongs to the queue) when the ACD offered the call."""
    engine_call: str = ""
    """The call id, on the caller's node, of a queue's caller the cluster's ACD offered to this
    agent from another node (`omlmedia.acd_cluster`): the ACD owns the agent's states."""
    callback: str = ""
    """The number a callback (or a manual call) dials once the agent answers."""
    outbound: Call | None = None
    """The outbound SIP call of a callback, a manual call or a consultation."""
    trunk: str = ""
    """The trunk `callback` is dialled through (empty: the campaign's, else the default)."""
    origin: str = ""
    """Who asked for the call when not the page or a caller: ``api`` (click-to-call)."""
    recorder: CallRecorder | None = None
    consult_of: str = ""
    """For a consultation call (attended transfer): the call id of the held call."""
    peer: str = ""
    """For a consultation between two agents: the other agent (both sides share the call id)."""
    audio: CallAudio | None = None
    """The call's audio while the agent's channel carries it (a SIP call)."""
    requeued: bool = False
    """Another node's queue caller whose agent's page went away: that node requeues it."""
    recording: str = ""
    """The recording of another node's queue call (`engine_call`), relative to the recordings
    directory every node shares: named in the 200 OK to that node (`RECORDING_HEADER`), whose
    caller's record lists it."""


@dataclass(eq=False)
class JoinedCall:
    """A caller and the party an agent transferred it to, joined by the desk: their legs
    exchange media through a `MediaBridge` (once `target` answers) until either hangs up, and
    then the other gets a BYE. `caller_sdp` and `target_sdp` are our side of each session
    (re-INVITEs are answered with them)."""

    call_id: str
    caller: Call
    caller_leg: RtpLeg
    caller_sdp: bytes
    target: Call
    target_leg: RtpLeg
    target_sdp: bytes
    kind: str
    bridge: MediaBridge | None = None
    music: LegFeed | None = None
    """What the caller hears while the target rings (blind transfer)."""


@dataclass
class DeskStats:
    """What the desk did, for the API."""

    offered: int = 0
    answered: int = 0
    unanswered: int = 0
    refused: int = 0
    transfers: int = 0


class Desk:
    """Agents' states and calls: offers, answer, hang-up, hold, the ACD's side, callbacks and
    manual calls, and the joined calls transfers leave behind. `omlmedia.agents.AgentDesk`
    adds transfers and web calls to it."""

    def __init__(
        self,
        pool: RtpSocketPool,
        media_host: str,
        *,
        service: SipService,
        hub: Callable[[Self], AgentHub],
        web: Callable[[Self], WebCallerHub | None] | None = None,
        acd: AcdRuntime | None = None,
        dial_out: DialOut | None = None,
        route: Callable[[str], tuple[RouteAction, str] | None] | None = None,
        resolve: Callable[[str], str | None] = lambda target: None,
        recordings: Path | None = None,
        ring_timeout: float = 30.0,
        wrapup_time: float = 5.0,
        hold_music: Path | None = None,
        max_delay_ms: int = 60,
        clock: Callable[[], float] = time.time,
        call_later: CallLater | None = None,
        events: EventSink = NO_EVENTS,
    ) -> None:
        self.pool = pool
        self.events = events
        """Where agents' states are published (``agent.state``), as their pages show them."""
        self.clock = clock
        """Wall-clock time of offers, answers and states."""
        self.call_later: CallLater = call_later or loop_call_later
        """Arms ring and wrap-up timers (the running loop's `call_later` by default)."""
        self.media_host = media_host
        self.ring_timeout = ring_timeout
        self.wrapup_time = wrapup_time
        self.hold_music = hold_music
        self.max_delay_ms = max_delay_ms
        self.service = service
        self.logged_in: set[str] = set()
        """The agents with a session."""
        self._states: dict[str, AgentState] = {}
        """The states the desk owns (see `state`): of agents outside the queues, and of
        agents of the queues while a call outside them has them (`_engine_busy`)."""
        self.calls: dict[tuple[str, str], AgentCall] = {}
        """By call id and agent (a ringall queue offers one call to several agents)."""
        self.stats = DeskStats()
        self.acd = acd
        """The ACD, when queues are configured: it owns the states of its agents, and tells
        the desk of its offers (`omlmedia.acd.AgentSide`)."""
        self.dial_out = dial_out
        """Places an outbound call (number, trunk name or "", SDP offer, related call); None:
        the desk places no calls (callbacks and manual calls fail, numbers are REFERred)."""
        self.recordings = recordings
        """Where campaign calls are recorded (None: not recorded)."""
        self._engine_busy: set[str] = set()
        self.resolve = resolve
        """The agent a web caller's target rings (the router's `agent` routes)."""
        self.route = route
        """The server's route for a transfer target (`CallRouter.route_for`): its action and
        the agent, queue or campaign it names. Unset: agents by `resolve`, queues and
        campaigns by their names."""
        self._engine_calls: dict[str, str] = {}
        """This node's call id -> the caller's node's, for the cluster ACD's calls that ended
        here lately (their dispositions go to the record there)."""
        self.joined: list[JoinedCall] = []
        """Callers joined to the party an agent transferred them to."""
        self._wrapups: dict[str, Timer] = {}
        self._attached: dict[str, AgentCall] = {}
        """The call whose audio each agent's channel carries."""
        self.web = web(self) if web is not None else None
        """The web callers' side of the socket, when web calls are enabled: made for the desk
        (its `WebCallControl`) by `web`."""
        self.on_detach: list[Callable[[AgentCall, str], None]] = []
        """Told when an agent's channel stops carrying a call (it ended, was held for a
        consultation, transferred): a monitor of the call stops."""
        self.hub = hub(self)
        """The agent pages: made for the desk (their `CallControl`) by `hub`, the one the desk
        tells what happened."""
        self.audit: AuditWriter | None = None
        """Writes the audit entries of recording pauses (the server's account book), when set."""
        self.remote: Callable[[Call, str], Refusal | None] | None = None
        """Rings an agent not logged in here on the node its page is on (`omlmedia.crossnode`),
        when the node is part of a cluster: the direct route's fallback."""
        self.on_presence: list[Callable[[str, bool], None]] = []
        """Told when an agent logs in here (True) and when it leaves (False)."""
        self.on_recording: list[Callable[[AgentCall], None]] = []
        """Told when a call's recording paused or resumed (`omlmedia.crossnode` tells the
        caller's node of another node's queue call)."""
        if acd is not None:
            acd.listen(self)

    # -- agent states -----------------------------------------------------------------------

    def state(self, agent: str) -> AgentState:
        """The agent's state. For an agent of the queues it is the ACD engine's (the one
        truth), except while a call outside the queues (a direct, web or manual call, a
        consultation) has it: the engine then holds it paused and the desk owns the state the
        page shows, until it gives the agent back (`_release_engine`)."""
        if agent not in self.logged_in:
            return AgentState.LOGGED_OUT
        if self.acd is not None and self._in_engine(agent) and agent not in self._engine_busy:
            return self.acd.agent_state(agent)
        return self._states.get(agent, AgentState.PAUSED)

    def _set_state(self, agent: str, state: AgentState, reason: str | None = None) -> None:
        """A state the desk owns changes (see `state`): kept, logged and shown."""
        if state is AgentState.LOGGED_OUT:
            self.logged_in.discard(agent)
            self._states.pop(agent, None)
        else:
            self.logged_in.add(agent)
            if not self._in_engine(agent) or agent in self._engine_busy:
                self._states[agent] = state
        event(logger, "agent-state", agent=agent, state=state.value, reason=reason)
        self.events.publish(AGENT_STATE, agent=agent, data={"state": state.value, "reason": reason})
        if state is not AgentState.LOGGED_OUT:
            self.hub.state_changed(agent, state, reason)

    def _call_of(self, agent: str, call_id: str) -> AgentCall:
        ac = self.calls.get((call_id, agent))
        if ac is None:
            raise CommandError("unknown-call", "no such call for this agent")
        return ac

    def _for_call(self, call_id: str) -> list[AgentCall]:
        return [ac for (cid, _), ac in self.calls.items() if cid == call_id]

    def _in_engine(self, agent: str) -> bool:
        return self.acd is not None and agent in self.acd.engine_agents

    def engine_state(self, agent: str, state: AgentState, reason: str) -> None:
        """The ACD changed the agent's state (shown on its page) unless a call outside the
        queues (a direct or web call) has the agent: its page shows that call's states."""
        if agent in self._engine_busy or agent not in self.logged_in:
            return
        event(logger, "agent-state", agent=agent, state=state.value, reason=reason or None)
        self.events.publish(
            AGENT_STATE, agent=agent, data={"state": state.value, "reason": reason or None}
        )
        self.hub.state_changed(agent, state, reason or None)

    def connected(self, agent: str) -> bool:
        """Whether the agent's page is connected now."""
        return self.hub.connected(agent)

    async def log_out(self, agent: str, reason: str) -> None:
        """End the agent's session from the server (a supervisor): the page is told `reason`,
        then `agent_gone` ends or requeues its calls."""
        await self.hub.logout(agent, reason)

    async def agent_logged_in(self, agent: str) -> None:
        """A new session: the agent starts paused, until they press Ready."""
        self._set_state(agent, AgentState.PAUSED, "login")
        if self.acd is not None and self._in_engine(agent):
            self.acd.agent_login(agent)
        for told in self.on_presence:
            told(agent, True)

    async def agent_gone(self, agent: str, reason: str) -> None:
        """Logout, a closed tab past the grace period, or an expired session: end its calls."""
        for ac in [c for c in self.calls.values() if c.agent == agent]:
            if ac.queued is not None and self.acd is not None:
                self._finish(ac, f"agent-{reason}")
                if ac.answered_at is not None:
                    self.acd.requeue(ac.call_id, agent)  # the caller goes back to the queue
                else:
                    self.acd.rejected(ac.call_id, agent)
            elif ac.engine_call and ac.answered_at is not None and ac.call is not None:
                # Another node's queue caller: that node puts it back in the queue (the BYE's
                # Reason says why), as for a caller of this node.
                ac.requeued = True
                self._end_call(ac, f"agent-{reason}", reason=AGENT_GONE_REASON)
            elif ac.engine_call and self.acd is not None:
                # Another node's queue caller still ringing: declined at once, as a local
                # agent's offer (before the logout below), and 486 tells that node why.
                self.acd.rejected(ac.engine_call, agent)
                self._end_call(ac, f"agent-{reason}", status=486, reason=AGENT_GONE_REASON)
            else:
                self._end_call(ac, f"agent-{reason}")
        timer = self._wrapups.pop(agent, None)
        if timer is not None:
            timer.cancel()
        self._engine_busy.discard(agent)
        self._set_state(agent, AgentState.LOGGED_OUT)
        if self.acd is not None and self._in_engine(agent):
            self.acd.agent_logout(agent)
        for told in self.on_presence:
            told(agent, False)

    async def set_agent_state(self, agent: str, state: AgentState, reason: str | None) -> None:
        """Ready or paused, from the page (not while a call is ringing or carried)."""
        if state not in (AgentState.READY, AgentState.PAUSED):
            raise CommandError("bad-state", "only ready and paused can be chosen")
        if any(c.agent == agent for c in self.calls.values()):
            raise CommandError("busy", "finish the call first")
        timer = self._wrapups.pop(agent, None)
        if timer is not None:
            timer.cancel()
        self._engine_busy.discard(agent)
        self._states.pop(agent, None)
        if self.acd is not None and self._in_engine(agent):
            if state is AgentState.READY:
                self.acd.agent_ready(agent)
            else:
                self.acd.agent_pause(agent, reason or "break")
            return
        self._set_state(agent, state, reason if state is AgentState.PAUSED else None)

    # -- calls from the router --------------------------------------------------------------

    route_actions: tuple[RouteAction, ...] = (RouteAction.AGENT,)

    def take_route(self, call: Call, route: Route, user: str) -> Refusal | None:
        """A route target (`omlmedia.targets.RouteTarget`): ring the agent the route names
        (or `user`), refused when that agent cannot take it."""
        agent = route.trunk or user
        if agent not in self.logged_in and self.remote is not None:
            return self.remote(call, agent)
        status = self.offer(call, agent)
        if status is None:
            return None
        return Refusal(status, "agent-unavailable", target=f"agent:{agent}")

    def offer(
        self,
        call: Call,
        agent: str,
        queue: str = "",
        wait: float = 0.0,
        engine_call: str = "",
        campaign: str = "",
    ) -> int | None:
        """Ring `agent` with `call`; the SIP status to refuse with when that cannot be.
        `engine_call`: the cluster's ACD offers another node's queue caller (its call id there)
        and owns the agent's states meanwhile; `campaign`: the one it came in by (the page gets
        its CRM address and dispositions)."""
        if engine_call:
            if agent not in self.logged_in or any(c.agent == agent for c in self.calls.values()):
                self.stats.refused += 1
                return 480
        elif self.state(agent) is not AgentState.READY:
            self.stats.refused += 1
            return 480
        if not call.remote_sdp:
            self.stats.refused += 1
            return 488
        caller = call.invite.from_
        number = caller.uri.user or ""
        known = self.acd.campaigns.get(campaign) if self.acd is not None and campaign else None
        # Another node's queue caller is known by its call id there (the record's and the queue
        # log's, the CRM link's), not by the internal leg's.
        call_id = engine_call or call.call_id
        info = CallInfo(
            call_id=call_id,
            caller_number=number,
            caller_name=caller.display_name or "",
            queue=known.name if known is not None else queue or f"agent-{agent}",
            wait_seconds=wait,
            url=_campaign_url(known.url, number) if known is not None else "",
            dispositions=known.dispositions if known is not None else (),
            campaign=known.name if known is not None else "",
        )
        ac = AgentCall(
            call_id=call_id,
            call=call,
            agent=agent,
            info=info,
            offered_at=self.clock(),
            engine_call=engine_call,
        )
        if not self.hub.offer_call(agent, info):
            self.stats.refused += 1
            return 480
        self.calls[(call_id, agent)] = ac
        call.app = self
        if not engine_call:
            self._hold_engine(agent)
        self.stats.offered += 1
        service = self.service
        service.act(lambda now: service.ua.ring(call, now))
        ac.ring_timer = self.call_later(self.ring_timeout, self._ring_timeout, ac)
        self._set_state(agent, AgentState.RINGING)
        event(
            logger,
            "agent-offered",
            call_id=call_id,
            agent=agent,
            queue=info.queue,
            leg=call.call_id if engine_call else None,
        )
        return None

    def _hold_engine(self, agent: str) -> None:
        """A call outside the queues has the agent: the ACD must not offer it queue calls."""
        if self.acd is not None and self._in_engine(agent) and agent not in self._engine_busy:
            self._engine_busy.add(agent)
            self.acd.agent_pause(agent, "direct-call")

    def _release_engine(self, agent: str) -> None:
        if agent in self._engine_busy:
            self._engine_busy.discard(agent)
            self._states.pop(agent, None)
            if self.acd is not None and agent in self.logged_in:
                self.acd.agent_ready(agent)

    def owns(self, call: Call) -> bool:
        """True when the desk carries `call` (a direct agent call, an outbound leg, or a side
        of a joined call)."""
        return (
            any(
                (ac.queued is None and ac.call is call) or ac.outbound is call
                for ac in self.calls.values()
            )
            or self._joined_of(call) is not None
        )

    def _joined_of(self, call: Call) -> JoinedCall | None:
        for joined in self.joined:
            if joined.caller is call or joined.target is call:
                return joined
        return None

    def _by_sip(self, call: Call) -> AgentCall | None:
        for ac in self.calls.values():
            if ac.call is call or ac.outbound is call:
                return ac
        return None

    def _ring_timeout(self, ac: AgentCall) -> None:
        if ac.answered_at is None and self.calls.get((ac.call_id, ac.agent)) is ac:
            self.stats.unanswered += 1
            event(logger, "agent-no-answer", call_id=ac.call_id, agent=ac.agent)
            self._end_call(ac, "no-answer", status=480)

    def on_ended(self, call: Call, cause: str) -> None:
        """The caller hung up (or the call failed). A queue's caller goes to the queue, which
        keeps its books and tells the desk (`queued_call_ended`)."""
        if self.acd is not None and self.acd.owns(call):
            self.acd.on_ended(call, cause)
            return
        joined = self._joined_of(call)
        if joined is not None:
            self._unjoin(joined, call, cause)
            return
        ac = self._by_sip(call)
        if ac is None:
            return
        if ac.outbound is call and ac.queued is not None and self.acd is not None:
            # A callback's far end hung up (or never answered).
            answered = ac.answered_at is not None
            self._finish(ac, cause)
            self.acd.callback_done(ac.call_id, ac.agent, answered, cause)
            return
        if ac.outbound is call and ac.call is not None and ac.call is not call:
            self._end_call(ac, cause)
            return
        self._finish(ac, cause)

    def _answer_web(self, ac: AgentCall) -> None:
        """Join the visitor's peer connection and the agent's channel: audio through two short
        frame queues (at most 60 ms each way), video relayed as encoded VP8 frames."""
        assert ac.web is not None
        channel = self.hub.channel(ac.agent)
        if not isinstance(channel, AgentChannel):
            raise CommandError("no-channel", "the agent channel is not connected")
        join_audio(
            ac.web,
            channel,
            first_talks=lambda: not ac.held,
            second_talks=lambda: not (ac.held or ac.muted),
        )
        channel.attach_video(ac.web.video_in)
        ac.web.attach_video(channel.video_in)  # the agent's camera, when the page sends it
        if ac.ring_timer is not None:
            ac.ring_timer.cancel()
        ac.answered_at = self.clock()
        self.stats.answered += 1
        if self.web is not None:
            self.web.web_call_answered(ac.call_id)
        self._set_state(ac.agent, AgentState.ON_CALL)
        self.hub.call_answered(ac.agent, ac.call_id)
        event(logger, "agent-answered", call_id=ac.call_id, agent=ac.agent, source="web")

    def on_dtmf(self, call: Call, digit: str) -> None:
        """A digit from the caller by SIP INFO (or RFC 4733 through the leg's port)."""
        carrier = self._by_sip(call)  # another node's caller: known by its call id there
        for ac in self._for_call(carrier.call_id if carrier is not None else call.call_id):
            if ac.answered_at is not None:
                self.hub.dtmf_received(ac.agent, ac.call_id, digit)

    # -- commands from the page -------------------------------------------------------------

    async def answer(self, agent: str, call_id: str) -> None:
        """Answer the ringing call and join it to the agent's channel."""
        ac = self._call_of(agent, call_id)
        if ac.answered_at is not None:
            return
        if ac.peer:
            self._answer_consult(ac)
            return
        if ac.web is not None:
            self._answer_web(ac)
            return
        channel = self.hub.channel(agent)
        if not isinstance(channel, AgentChannel):
            raise CommandError("no-channel", "the agent channel is not connected")
        if ac.callback:
            if ac.queued is not None and self.acd is not None:
                if not await self.acd.callback_answered(call_id, agent):
                    self._finish(ac, "taken")
                    raise CommandError("gone", "the callback was taken elsewhere")
            await self._dial_for(ac)
            return
        if ac.queued is not None:
            assert self.acd is not None
            if not await self.acd.answer_offer(call_id, agent):
                self._finish(ac, "taken")
                raise CommandError("gone", "the call was answered elsewhere or the caller left")
            if self.calls.get((call_id, agent)) is not ac:  # gone while the answer went in
                self.acd.agent_hung_up(call_id)
                raise CommandError("gone", "the call has ended")
            if ac.call is not None:
                ac.call.app = self  # the queue hands its caller over (its end still goes there)
            ac.leg = ac.queued.leg
            self._join(ac, channel)
            return
        call = ac.call
        assert call is not None
        if ac.leg is not None and ac.queued is None:
            # A caller another agent transferred here: answered already, its leg ready.
            if ac.music is not None:
                ac.music.stop()
                ac.music = None
            self._join(ac, channel)
            self._set_state(agent, AgentState.ON_CALL)
            return
        if call.state is not CallState.OFFERED:
            raise CommandError("gone", "the caller hung up")
        try:
            offer = SessionDescription.parse(call.remote_sdp)
            pair = await self.pool.acquire()
        except SDPError:
            self._end_call(ac, "bad-sdp", status=488)
            raise CommandError("bad-call", "the caller's SDP is not valid") from None
        except (PortsExhausted, OSError):
            self._end_call(ac, "no-ports", status=503)
            raise CommandError("no-ports", "no media port is free") from None
        leg = RtpLeg(pair)
        ac.leg = leg
        if self.calls.get((call_id, agent)) is not ac or call.state is not CallState.OFFERED:
            self._release(ac)
            raise CommandError("gone", "the caller hung up")
        try:
            answer = answer_on_leg(
                leg, offer, self.media_host, session_id=secrets.randbelow(2**31) + 1
            )
        except (OfferAnswerError, ValueError) as exc:
            self._end_call(ac, "codecs", status=488)
            raise CommandError("bad-call", f"cannot answer: {exc}") from None
        body = bytes(answer.description)
        ac.local_sdp = body
        ac.session_id = answer.description.origin.session_id
        self._join(ac, channel)
        # Another node's caller: its record there names the segment reserved here (`_join`).
        headers = ((RECORDING_HEADER, ac.recording),) if ac.recording else ()
        service = self.service
        service.act(lambda now: service.ua.answer(call, body, now, headers=headers))
        self._set_state(agent, AgentState.ON_CALL)

    def _join(self, ac: AgentCall, channel: AgentChannel) -> None:
        """The call's leg and the agent's channel exchange 20 ms frames (the channel's clock
        pulls the caller's audio out of the port's capped jitter buffer)."""
        assert ac.leg is not None
        call = ac.outbound or ac.call
        ac.port = PcmPort(
            ac.leg,
            port_rate(ac.leg),
            max_delay_ms=self.max_delay_ms,
            on_digit=lambda digit, _ms: self._digit_from(ac, call, digit),
        )
        ac.recorder = self._recorder_for(ac)
        self._attach(ac, channel)
        if ac.ring_timer is not None:
            ac.ring_timer.cancel()
        ac.answered_at = self.clock()
        self.stats.answered += 1
        self.hub.call_answered(ac.agent, ac.call_id)
        if ac.recorder is not None:
            self.hub.recording_changed(ac.agent, ac.call_id, "on")
        fmt = ac.leg.format
        event(
            logger,
            "agent-answered",
            call_id=ac.call_id,
            agent=ac.agent,
            codec=fmt.encoding_name if fmt else "-",
            srtp=ac.leg.srtp is not None,
            queue=ac.info.queue,
            recording=ac.recorder.path.name if ac.recorder is not None else None,
        )

    def _attach(self, ac: AgentCall, channel: AgentChannel) -> None:
        """The agent's channel carries `ac`'s audio (through its port) from now on."""
        port, recorder = ac.port, ac.recorder
        assert port is not None
        previous = self._attached.get(ac.agent)
        if previous is not None and previous is not ac:
            self._detached(previous, "call-held")  # another call has the line: a consultation
        # Both ways as the packets arrive, no jitter buffer of ours: the caller's frames are
        # pushed to the page (whose NetEq buffers them) and the page's go to the leg (whose far
        # end buffers them), as the SIP-to-SIP bridge transcodes. `arrived` holds at most three
        # frames for the moments the channel takes them on its own clock (no fast path).
        arrived: deque[Samples] = deque(maxlen=3)

        def on_frame(frame: Samples) -> None:
            if ac.held:
                return
            if recorder is not None:
                recorder.caller(frame)
            arrived.append(frame)
            if not audio.diverted:
                channel.kick()

        def source() -> Samples | None:
            return arrived.popleft() if arrived and not ac.held else None

        def sink(frame: Samples) -> None:
            if recorder is not None and not ac.muted:
                recorder.agent(frame)
            port.write(None if ac.muted or ac.held else frame)

        audio = ac.audio = CallAudio(source, sink, port.rate, channel)
        port.on_frame = on_frame
        audio.reattach()
        self._attached[ac.agent] = ac

    def _detached(self, ac: AgentCall, reason: str) -> None:
        """The agent's channel no longer carries `ac`: the hooks (a monitor) are told why
        (``call-ended``; ``call-held``: another call took the line, a consultation;
        ``transferred``: someone else took the caller's leg)."""
        for hook in self.on_detach:
            try:
                hook(ac, reason)
            except Exception:
                logger.exception("a detach hook failed for %s", ac.call_id)
        ac.audio = None

    def carried(self, call_id: str) -> AgentCall | None:
        """The SIP call `call_id` while an agent's channel carries its audio (a monitor's
        target), or None."""
        for ac in self._attached.values():
            if ac.call_id == call_id and ac.audio is not None:
                return ac
        return None

    def _detach(self, ac: AgentCall, reason: str = "call-ended") -> None:
        """The channel stops carrying `ac` (when it carries it); `reason` as `_detached`'s."""
        if self._attached.get(ac.agent) is not ac:
            return
        self._detached(ac, reason)
        del self._attached[ac.agent]
        if ac.port is not None:
            ac.port.on_frame = None
        channel = self.hub.channel(ac.agent)
        if isinstance(channel, AgentChannel):
            channel.detach()

    def _digit_from(self, ac: AgentCall, call: Call | None, digit: str) -> None:
        """An RFC 4733 digit on the leg of `ac` (a consultation's digits are its own)."""
        if ac.consult_of:
            self.hub.dtmf_received(ac.agent, ac.call_id, digit)
        elif call is not None:
            self.on_dtmf(call, digit)

    def _recorder_for(self, ac: AgentCall) -> CallRecorder | None:
        """The recorder of a campaign call that records: a queue's caller here, or another
        node's (`engine_call`: this node decodes both sides, so it records; the campaign is the
        one the signed offer named, the file goes to the recordings directory every node
        shares and its path, relative to it, goes in the 200 OK to the caller's node)."""
        qc = ac.queued
        if qc is not None:
            campaign = qc.campaign
        elif ac.engine_call and self.acd is not None and ac.info.campaign:
            campaign = self.acd.campaigns.get(ac.info.campaign)
        else:
            return None
        if campaign is None or not campaign.recording or self.recordings is None:
            return None
        day = time.strftime("%Y/%m/%d")
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in ac.call_id)
        try:
            relative = reserve_segment(self.recordings, f"{day}/{campaign.name}-{name}")
            path = self.recordings / relative
            recorder = CallRecorder(path, ac.port.rate if ac.port is not None else 48000)
        except (OSError, ValueError) as exc:
            logger.warning("cannot record %s: %s", ac.call_id, exc)
            return None
        if qc is not None:
            qc.recording = qc.recording or str(path)  # the first segment's (compatibility)
            qc.segments.append((str(path), ac.agent))
        else:
            ac.recording = relative
        return recorder

    async def hangup(self, agent: str, call_id: str) -> None:
        """The agent ends the call (or declines it while ringing)."""
        ac = self._call_of(agent, call_id)
        if ac.queued is not None and self.acd is not None and not ac.callback:
            if ac.answered_at is None:
                self._finish(ac, "declined")
                self.acd.rejected(call_id, agent)
            else:
                self.acd.agent_hung_up(call_id)
            return
        self._end_call(ac, "agent-hangup", status=486 if ac.answered_at is None else 0)

    # -- recording pauses (PCI) -------------------------------------------------------------

    async def set_recording(self, agent: str, call_id: str, paused: bool) -> None:
        """The agent pauses or resumes the call's recording (its page's ``recording``)."""
        ac = self._answered(agent, call_id)
        await self.pause_recording(ac, paused, Identity(agent, Role.AGENT, account=agent))

    def recording_view(self, ac: AgentCall) -> dict[str, Any]:
        """The call's recording as the API shows it: ``recording`` ("on", "paused", "" when
        not recorded), ``offset`` (seconds into the file) and ``gaps``."""
        recorder = ac.recorder
        if recorder is None:
            return {"recording": "", "offset": None, "gaps": []}
        return {
            "recording": "paused" if recorder.paused else "on",
            "offset": recorder.offset,
            "gaps": recorder.gap_list(),
        }

    async def pause_recording(
        self, ac: AgentCall, paused: bool, by: Identity, *, audit: bool = True
    ) -> dict[str, Any]:
        """Pause (silence from now on) or resume the recording of `ac` for `by`: shown on the
        agent's page, published (``call.recording``) and audited (unless the caller audits it
        itself: the API) when it changed. Raises `CommandError` ``not-recorded`` for a call
        that is not recorded."""
        recorder = ac.recorder
        if recorder is None:
            raise CommandError("not-recorded", "the call is not recorded")
        before = self.recording_view(ac)
        if not (recorder.pause() if paused else recorder.resume()):
            return before
        after = self.recording_view(ac)
        qc = ac.queued
        event(
            logger,
            "recording-paused" if paused else "recording-resumed",
            call_id=ac.call_id,
            agent=ac.agent,
            offset=recorder.offset,
            by=by.actor,
        )
        self.events.publish(
            CALL_RECORDING,
            call_id=ac.call_id,
            queue=qc.queue if qc is not None else "",
            campaign=qc.campaign.name if qc is not None and qc.campaign is not None else "",
            agent=ac.agent,
            data={"paused": paused, "offset": recorder.offset, "by": by.actor},
        )
        self.hub.recording_changed(ac.agent, ac.call_id, after["recording"])
        for told in self.on_recording:
            told(ac)
        if audit and self.audit is not None:
            action = "call.recording-pause" if paused else "call.recording-resume"
            try:
                await self.audit(by, action, ac.call_id, before, after)
            except Exception:
                logger.exception("audit of %s on %s failed", action, ac.call_id)
        return after

    def _note_gaps(self, call_id: str, gaps: list[dict[str, float]], file: str = "") -> None:
        """Add the recording's pauses to the call's record (`AcdRuntime.note_gaps`)."""
        if self.acd is None:
            logger.warning("the recording gaps of %s have no record to go to", call_id)
            return
        self.acd.note_gaps(call_id, gaps, file)

    async def hold(self, agent: str, call_id: str) -> None:
        """Music on hold to the caller; nothing crosses until resume."""
        ac = self._answered(agent, call_id)
        if ac.held:
            return
        ac.held = True
        if ac.leg is not None and self.hold_music is not None:
            try:
                ac.music = LegFeed(ac.leg, self.hold_music, loop=True)
                ac.music.start()
            except (ValueError, OSError) as exc:
                logger.warning("no music on hold for %s: %s", call_id, exc)
        self.hub.call_held(agent, call_id, True)
        event(logger, "agent-hold", call_id=call_id, agent=agent)

    async def resume(self, agent: str, call_id: str) -> None:
        """Back to the conversation."""
        ac = self._answered(agent, call_id)
        if not ac.held:
            return
        ac.held = False
        if ac.music is not None:
            ac.music.stop()
            ac.music = None
        self.hub.call_held(agent, call_id, False)
        event(logger, "agent-resume", call_id=call_id, agent=agent)

    async def mute(self, agent: str, call_id: str, muted: bool) -> None:
        """Stop (or restart) sending the agent's audio."""
        self._answered(agent, call_id).muted = muted

    async def send_dtmf(self, agent: str, call_id: str, digit: str) -> None:
        """One RFC 4733 digit on the caller's leg."""
        ac = self._answered(agent, call_id)
        try:
            sent = ac.port is not None and ac.port.send_digit(digit)
        except ValueError:
            raise CommandError("bad-digit", "not a DTMF digit") from None
        if not sent:
            raise CommandError("no-dtmf", "the caller's side did not offer telephone-event")

    def service_hangup(self, call: Call) -> None:
        """BYE (or CANCEL) `call` unless it has ended."""
        service = self.service
        if call.state is not CallState.ENDED:
            service.act(lambda now: service.ua.hangup(call, now))

    def _bridge(self, joined: JoinedCall) -> bool:
        """Join the two legs (passthrough or transcoding); False when they cannot be."""
        if joined.music is not None:
            joined.music.stop()
            joined.music = None
        try:
            joined.bridge = MediaBridge(joined.caller_leg, joined.target_leg, codec_transcoder)
            joined.bridge.start()
        except ValueError as exc:
            logger.warning("cannot join %s: %s", joined.call_id, exc)
            joined.bridge = None
            return False
        event(
            logger,
            "transfer-joined",
            call_id=joined.call_id,
            target=joined.target.call_id,
            kind=joined.kind,
            passthrough=joined.bridge.passthrough,
        )
        return True

    def _unjoin(self, joined: JoinedCall, ended: Call | None, cause: str) -> None:
        """One side ended (`ended`, or None to end both): BYE the other, release the legs."""
        if joined not in self.joined:
            return
        self.joined.remove(joined)
        for call in (joined.caller, joined.target):
            if call is not ended:
                self.service_hangup(call)
        if joined.music is not None:
            joined.music.stop()
        if joined.bridge is not None:
            joined.bridge.stop()
        self.release_leg(joined.caller_leg)
        self.release_leg(joined.target_leg)
        event(logger, "transfer-ended", call_id=joined.call_id, kind=joined.kind, cause=cause)

    def _target_answered(self, joined: JoinedCall, status: int, body: bytes) -> None:
        """A response to the call placed for a blind transfer."""
        if joined.bridge is not None or status < 200:
            return
        if status >= 300:
            self._unjoin(joined, joined.target, f"status-{status}")
            return
        try:
            self._settle_leg(joined.target_leg, joined.target_sdp, body)
        except ValueError:
            self._unjoin(joined, None, "bad-answer")
            return
        if not self._bridge(joined):
            self._unjoin(joined, None, "codecs")

    def _settle_leg(self, leg: RtpLeg, offer: bytes, answer: bytes) -> None:
        """The far end's answer to our `offer` sets the leg's keys, codec and address."""
        try:
            apply_answer(leg, offer, answer, CAPABILITIES.codecs)
        except ValueError as exc:
            raise ValueError(f"bad answer: {exc}") from None

    def _answer_consult(self, ac: AgentCall) -> None:
        """The consulted agent answers: the two agents' channels are joined."""
        other = self.calls.get((ac.call_id, ac.peer))
        if other is None:
            self._finish(ac, "gone")
            raise CommandError("gone", "the consultation has ended")
        mine, theirs = self.hub.channel(ac.agent), self.hub.channel(ac.peer)
        if not isinstance(mine, AgentChannel) or not isinstance(theirs, AgentChannel):
            raise CommandError("no-channel", "the agent channel is not connected")
        join_audio(
            theirs,
            mine,
            first_talks=lambda: not (other.held or other.muted or ac.held),
            second_talks=lambda: not (ac.held or ac.muted or other.held),
        )
        self._attached[ac.agent] = ac
        self._attached[other.agent] = other
        if ac.ring_timer is not None:
            ac.ring_timer.cancel()
            ac.ring_timer = None
        ac.answered_at = other.answered_at = self.clock()
        self._set_state(ac.agent, AgentState.ON_CALL)
        self.hub.call_answered(ac.agent, ac.call_id)
        self.hub.call_answered(other.agent, ac.call_id)
        event(logger, "agent-consult-answered", call_id=ac.call_id, agent=ac.agent, by=ac.peer)

    async def dial(self, agent: str, number: str) -> CallInfo:
        """A manual outbound call: the number through the default trunk, joined to the agent
        when it answers."""
        if not DIALABLE.fullmatch(number):
            raise CommandError("bad-number", "not a number or extension")
        if self.state(agent) not in (AgentState.READY, AgentState.PAUSED):
            raise CommandError("busy", "finish the call first")
        call_id = f"out-{secrets.token_hex(8)}"
        info = CallInfo(call_id=call_id, caller_number=number, direction="outbound")
        ac = AgentCall(call_id=call_id, call=None, agent=agent, info=info, offered_at=self.clock())
        ac.callback = number
        self.calls[(call_id, agent)] = ac
        self._hold_engine(agent)
        try:
            await self._dial_for(ac)
        except CommandError:
            self.calls.pop((call_id, agent), None)
            self._release_engine(agent)
            raise
        return info

    async def set_disposition(self, agent: str, call_id: str, disposition: str, notes: str) -> None:
        """The disposition and notes of the agent's last call (the ACD's record has them)."""
        if self.acd is not None:
            ac = self.calls.get((call_id, agent))
            origin = ac.engine_call if ac is not None else self._engine_calls.get(call_id, "")
            if origin:  # another node's queue call: its record is there
                self.acd.remote_disposition(origin, disposition[:64], notes[:2000])
            else:
                self.acd.set_disposition(call_id, disposition[:64], notes[:2000])
        event(
            logger,
            "agent-disposition",
            call_id=call_id,
            agent=agent,
            disposition=disposition,
            notes=notes[:200],
        )

    def on_session_modified(self, call: Call, txn: ServerTransaction, request: Request) -> None:
        """A re-INVITE or UPDATE from the caller's side (a PBX's hold, a new address): the leg
        follows it with the codec it has (RFC 3264 §8)."""
        service = self.service
        joined = self._joined_of(call)
        if joined is not None:
            # Joined parties keep the session they have (our side of it, unchanged).
            mine = joined.caller_sdp if joined.caller is call else joined.target_sdp
            service.act(
                lambda now: service.ua.respond(
                    call, txn, 200, now, mine, "application/sdp" if mine else None
                )
            )
            return
        ac = self._by_sip(call)
        leg = ac.leg if ac is not None else None
        if ac is None or leg is None or leg.format is None:
            service.act(lambda now: service.ua.respond(call, txn, 491, now))
            return
        if not request.body:
            body = ac.local_sdp
            service.act(
                lambda now: service.ua.respond(call, txn, 200, now, body, "application/sdp")
            )
            return
        fmt = leg.format
        current = tuple(
            c
            for c in CAPABILITIES.codecs
            if c.encoding_name.lower() == fmt.encoding_name.lower()
            and c.clock_rate == fmt.clock_rate
        ) + tuple(c for c in CAPABILITIES.codecs if c.encoding_name == "telephone-event")
        try:
            offer = SessionDescription.parse(request.body)
            answer = answer_on_leg(
                leg,
                offer,
                self.media_host,
                session_id=ac.session_id,
                version=ac.version + 1,
                capabilities=MediaCapabilities(current, rtcp_mux=False),
            )
        except (SDPError, OfferAnswerError, ValueError) as exc:
            event(logger, "reinvite-rejected", call_id=call.call_id, reason=str(exc))
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
        stream = answer.audio
        ac.version += 1
        body = bytes(answer.description)
        ac.local_sdp = body
        event(
            logger,
            "session-modified",
            call_id=call.call_id,
            method=request.method,
            direction=stream.direction.value,
            hold=offer.is_hold(),
        )
        service.act(lambda now: service.ua.respond(call, txn, 200, now, body, "application/sdp"))

    # -- ending -----------------------------------------------------------------------------

    def _answered(self, agent: str, call_id: str) -> AgentCall:
        ac = self._call_of(agent, call_id)
        if ac.answered_at is None:
            raise CommandError("not-answered", "answer the call first")
        return ac

    def _end_call(self, ac: AgentCall, cause: str, status: int = 0, reason: str = "") -> None:
        """End the SIP side (BYE, or `status` while it rings) and the agent side; `reason`: the
        BYE's ``Reason`` header."""
        service = self.service
        outbound = ac.outbound
        if outbound is not None and outbound.state is not CallState.ENDED:
            service.act(lambda now: service.ua.hangup(outbound, now))
        call = ac.call if ac.queued is None else None
        if ac.web is not None:
            if self.web is not None:
                self.web.web_call_ended(ac.call_id, cause)
        elif call is not None and call.state is CallState.OFFERED:
            code, extra = status or 480, (("Reason", reason),) if reason else ()
            service.act(lambda now: service.ua.reject(call, code, now, headers=extra))
        elif call is not None and call.state is not CallState.ENDED and reason:
            service.act(lambda now: service.ua.hangup(call, now, reason))
        elif call is not None and call.state is not CallState.ENDED:
            service.act(lambda now: service.ua.hangup(call, now))
        if ac.callback and ac.queued is not None and self.acd is not None:
            answered = ac.answered_at is not None
            self._finish(ac, cause)
            self.acd.callback_done(ac.call_id, ac.agent, answered, cause)
            return
        self._finish(ac, cause)

    def _finish(self, ac: AgentCall, cause: str, *, settle: bool = True) -> None:
        """Forget `ac` and release its media; unless `settle` is False (or another call of the
        agent goes on), the agent moves on to wrap-up or Ready."""
        if self.calls.pop((ac.call_id, ac.agent), None) is None:
            return
        if ac.ring_timer is not None:
            ac.ring_timer.cancel()
        self._release(ac)
        agent = ac.agent
        self.hub.call_ended(agent, ac.call_id, cause)
        event(logger, "agent-call-ended", call_id=ac.call_id, agent=agent, cause=cause)
        peer = self.calls.get((ac.call_id, ac.peer)) if ac.peer else None
        if peer is not None:
            self._finish(peer, _peer_cause(ac, cause), settle=settle)  # one ends, both end
        if agent not in self.logged_in or not settle:
            return
        held = self.calls.get((ac.consult_of, agent)) if ac.consult_of else None
        if held is not None:
            self._back_to(held)  # the consultation is over: back to the held caller
            return
        consult = self._consult_for(ac)
        if consult is not None:
            if consult.peer and consult.answered_at is None:
                # The held caller left while the consulted agent's page rings: withdrawn.
                self._finish(consult, "caller-gone")
            return  # the held caller left: the agent still talks to the consulted party
        if ac.peer and not ac.consult_of:
            # The consulted agent had no caller of its own: no wrap-up.
            if agent in self._engine_busy:
                self._release_engine(agent)
            else:
                self._set_state(agent, AgentState.READY)
            return
        if ac.consult_of:
            # The held caller left before the consultation ended: now the agent is done.
            if self._in_engine(agent) and agent not in self._engine_busy:
                return  # the ACD owns this agent's states
            ac.answered_at = ac.answered_at or self.clock()
        if ac.engine_call and self.acd is not None:
            if ac.answered_at is not None:  # the caller's node says so too, if it is alive
                reason = "agent-gone" if ac.requeued else "agent"
                self.acd.remote_call_ended(ac.engine_call, agent, reason)
                self._engine_calls[ac.call_id] = ac.engine_call  # for its disposition
                while len(self._engine_calls) > 1000:
                    self._engine_calls.pop(next(iter(self._engine_calls)))
            return  # the ACD owns this agent's states (wrap-up included)
        if ac.queued is not None and agent not in self._engine_busy:
            return  # the ACD owns this agent's states (wrap-up included)
        if ac.answered_at is None:
            if agent in self._engine_busy:
                self._release_engine(agent)
            else:
                self._set_state(agent, AgentState.READY)
            return
        self._set_state(agent, AgentState.WRAPUP)
        self._wrapups[agent] = self.call_later(self.wrapup_time, self._wrapup_over, agent)

    def _consult_for(self, ac: AgentCall) -> AgentCall | None:
        """The consultation call the agent placed while `ac` is held."""
        return next(
            (c for c in self.calls.values() if c.consult_of == ac.call_id and c.agent == ac.agent),
            None,
        )

    def _back_to(self, held: AgentCall) -> None:
        """The agent's channel carries the held call again (it stays held until resumed)."""
        channel = self.hub.channel(held.agent)
        if held.port is not None and isinstance(channel, AgentChannel):
            self._attach(held, channel)

    def _wrapup_over(self, agent: str) -> None:
        self._wrapups.pop(agent, None)
        if self.state(agent) is AgentState.WRAPUP:
            if agent in self._engine_busy:
                self._release_engine(agent)
            else:
                self._set_state(agent, AgentState.READY)

    def _release(self, ac: AgentCall) -> None:
        if ac.recorder is not None:
            gaps = ac.recorder.gap_list()
            recorder_path = ac.recorder.path
            ac.recorder.close()
            ac.recorder = None
            if gaps and not ac.engine_call:  # another node's: it was told (on_recording)
                self.call_later(0, self._note_gaps, ac.call_id, gaps, str(recorder_path))
        if ac.web is not None:
            ac.web.detach()
            channel = self.hub.channel(ac.agent)
            if isinstance(channel, AgentChannel):
                channel.detach()
        if ac.music is not None:
            ac.music.stop()
            ac.music = None
        self._detach(ac)
        if ac.port is not None:
            ac.port.close()
            ac.port = None
        if ac.leg is not None:
            if ac.queued is None or ac.leg is not ac.queued.leg:
                self.release_leg(ac.leg)
            ac.leg = None

    # -- the ACD's side -----------------------------------------------------------------------

    def offer_queued(
        self, qc: QueuedCaller, agent: str, queue: str, waited: float, direct: bool = False
    ) -> bool:
        """Ring `agent` with a caller waiting in `queue` (the caller keeps its music)."""
        if agent not in self.logged_in:
            return False
        if direct and self.state(agent) is not AgentState.READY:
            return False
        call = qc.call
        caller = call.invite.from_
        campaign = qc.campaign
        number = caller.uri.user or ""
        info = CallInfo(
            call_id=call.call_id,
            caller_number=number,
            caller_name=caller.display_name or "",
            queue=campaign.name if campaign is not None else queue,
            wait_seconds=round(waited, 1),
            url=_campaign_url(campaign.url, number) if campaign is not None else "",
            dispositions=campaign.dispositions if campaign is not None else (),
            campaign=campaign.name if campaign is not None else "",
        )
        if not self.hub.offer_call(agent, info):
            return False
        ac = AgentCall(
            call_id=call.call_id,
            call=call,
            agent=agent,
            info=info,
            offered_at=self.clock(),
            queued=qc,
        )
        self.calls[(call.call_id, agent)] = ac
        self.stats.offered += 1
        if direct:
            self._hold_engine(agent)
            self._set_state(agent, AgentState.RINGING)
            ac.ring_timer = self.call_later(self.ring_timeout, self._ring_timeout, ac)
        event(logger, "agent-offered", call_id=call.call_id, agent=agent, queue=info.queue)
        return True

    def cancel_offer(self, call_id: str, agent: str, reason: str) -> None:
        """The ACD withdrew an offer (ring timeout, answered elsewhere, the caller left)."""
        ac = self.calls.get((call_id, agent))
        if ac is not None and ac.answered_at is None:
            if reason == "timeout":
                self.stats.unanswered += 1
            self._finish(ac, reason)

    def queued_call_ended(self, call_id: str, cause: str) -> None:
        """A queue's caller is gone: its agent's side ends too."""
        for ac in self._for_call(call_id):
            if ac.queued is not None:
                self._finish(ac, cause)

    def release_leg(self, leg: RtpLeg) -> None:
        """Give a leg's port pair back to the pool."""
        leg.close()
        self.pool.release(leg.pair)

    def offer_callback(self, qc: QueuedCaller, ev: CallbackDial) -> bool:
        """Ring `ev.agent` with a callback: on Answer the desk calls the number."""
        if ev.agent not in self.logged_in:
            return False
        info = CallInfo(
            call_id=ev.call_id,
            caller_number=ev.number,
            caller_name=ev.caller_name or "Callback",
            queue=qc.campaign.name if qc.campaign is not None else ev.queue,
            wait_seconds=round(ev.waited, 1),
            direction="outbound",
        )
        if not self.hub.offer_call(ev.agent, info):
            return False
        ac = AgentCall(
            call_id=ev.call_id,
            call=qc.call,
            agent=ev.agent,
            info=info,
            offered_at=self.clock(),
            queued=qc,
            callback=ev.number,
        )
        self.calls[(ev.call_id, ev.agent)] = ac
        ac.ring_timer = self.call_later(
            ev.ring_timeout or self.ring_timeout, self._ring_timeout, ac
        )
        event(logger, "agent-offered", call_id=ev.call_id, agent=ev.agent, callback=ev.number)
        return True

    async def _dial_for(self, ac: AgentCall) -> None:
        """The agent answered a callback (or asked for a call): call the number."""
        if self.dial_out is None:
            raise CommandError("no-trunk", "no trunk to call through")
        if ac.ring_timer is not None:
            ac.ring_timer.cancel()
            ac.ring_timer = None
        try:
            pair = await self.pool.acquire()
        except (PortsExhausted, OSError):
            raise CommandError("no-ports", "no media port is free") from None
        leg = RtpLeg(pair)
        ac.leg = leg
        trunk = ac.trunk or (ac.queued.campaign.trunk if ac.queued and ac.queued.campaign else "")
        offer = create_offer(
            MediaCapabilities(CAPABILITIES.codecs, rtcp_mux=False),
            secrets.randbelow(2**31) + 1,
            0,
            self.media_host,
            leg.port,
        )
        ac.local_sdp = bytes(offer)
        outbound = self.dial_out(ac.callback, trunk, ac.local_sdp, ac.call)
        if outbound is None:
            self.release_leg(leg)
            ac.leg = None
            raise CommandError("no-trunk", "the number cannot be reached")
        outbound.app = self
        ac.outbound = outbound
        self.hub.notify(ac.agent, f"Calling {ac.callback}...")
        event(logger, "agent-dialing", call_id=ac.call_id, agent=ac.agent, number=ac.callback)

    def on_response(self, call: Call, response: Response) -> None:
        """A response to an INVITE the desk sent (`omlmedia.targets.CallTarget`)."""
        body = response.body if response.content_type == "application/sdp" else b""
        self.on_progress(call, response.status, body)

    def on_progress(self, call: Call, status: int, body: bytes) -> None:
        """A response to an outbound call the desk placed."""
        joined = self._joined_of(call)
        if joined is not None:
            if joined.target is call:
                self._target_answered(joined, status, body)
            return
        ac = self._by_sip(call)
        if ac is None or ac.outbound is not call or ac.answered_at is not None:
            return
        if status < 200:
            return
        if status >= 300:
            self._end_call(ac, f"status-{status}")
            return
        leg = ac.leg
        try:
            if leg is None:
                raise ValueError("no leg")
            apply_answer(leg, ac.local_sdp, body, CAPABILITIES.codecs)
        except ValueError:
            self._end_call(ac, "bad-answer")
            return
        channel = self.hub.channel(ac.agent)
        if not isinstance(channel, AgentChannel):
            self._end_call(ac, "no-channel")
            return
        self._join(ac, channel)
        if ac.queued is None:
            self._set_state(ac.agent, AgentState.ON_CALL)

    def hangup_all(self) -> None:
        """End every agent call (shutdown)."""
        for ac in list(self.calls.values()):
            self._end_call(ac, "shutdown")
        for joined in list(self.joined):
            self._unjoin(joined, None, "shutdown")

    @property
    def legs(self) -> list[RtpLeg]:
        """The legs the desk holds (for RTCP reports and status)."""
        legs = [ac.leg for ac in self.calls.values() if ac.leg is not None]
        for joined in self.joined:
            legs += (joined.caller_leg, joined.target_leg)
        return legs
