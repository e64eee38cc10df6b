"""The server's queues on the cluster's one ACD (``[cluster] acd = "shared"``).

Theory of operation. Every node runs a `omlmedia.acd_shared.SharedAcd` in *following* mode:
what happens to its callers and agents goes into the shared input stream, every node applies the
stream in order to its own replica of the engine, and so every node computes the same decisions
(`queueing.replica`). `SharedEngine` gives `omlmedia.acd.AcdRuntime` the engine's interface over
that: the runtime's calls become inputs, its queries read the node's replica (cluster-wide
figures), and of the decisions it receives those that are this node's to act on:

- an offer, its withdrawal, an announcement, an overflow or a callback: the node where the caller
  entered the queue (it holds the caller's SIP dialog and media);
- an agent's state: the node the agent logged in on (it holds the page);
- a queue-log entry: the node whose input produced it (exactly one node writes each entry; the
  owner writes those of its timer ticks and of nodes it found lost).

Where a caller's node is offered an agent whose page is on another node, `RemoteOffers` rings
the agent there with an internal INVITE signed as in `omlmedia.crossnode` (the caller's codec
only, so the far node's leg is a passthrough); the far node rings its agent with the offer marked
as the ACD's (its desk leaves the agent's states to the ACD), the 200 OK is the agent's answer
(`OfferAnswered`, awaited: in ``ringall`` another agent may have been first), 486 a decline, any
other refusal a ring timeout; once answered the caller's leg and the internal leg are bridged
without transcoding until either side hangs up. A callback offered to an agent on another node
goes the same way (the agent's page shows the number); when the agent answers, the caller's node
dials the number through its campaign's trunk and joins it to the internal leg, and writes the
callback's record as for a local agent.

The inputs whose result the runtime needs at once (an answer: was the offer still standing?) are
awaited until the node's follower applies them (`SharedEngine.decide`); the others are sent and
their effects arrive as decisions. While Redis is unreachable nothing is decided: inputs wait,
in order, and go in when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from media.bridge import MediaBridge, codec_transcoder
from media.leg import RtpLeg
from media.ports import PortsExhausted, RtpSocketPool
from media.srtp import offer_crypto
from omlmedia.acd import AGENT_GONE_REASON, RECORDING_HEADER
from omlmedia.acd_shared import SharedAcd
from omlmedia.crossnode import (
    HEADER,
    ClusterEnd,
    InternalLegs,
    OfferHeader,
    RemoteGaps,
    place_internal,
    sign_offer,
)
from omlmedia.logs import event
from omlmedia.offer_answer import apply_answer
from omlmedia.services import CAPABILITIES
from queueing.config import AcdConfig, AgentConfig, QueueConfig
from queueing.engine import AcdEngine, CallerState
from queueing.events import (
    AgentState,
    AgentStateChanged,
    AgentStatus,
    Announce,
    CallbackDial,
    CancelOffer,
    Event,
    OfferCall,
    Overflow,
    QueueLogEntry,
    QueueStatus,
)
from queueing.replica import (
    AddAgent,
    AddQueue,
    AgentLogin,
    AgentLogout,
    AgentPause,
    AgentReady,
    AgentUnpause,
    CallbackRequest,
    CallCompleted,
    CallerAbandon,
    CallerEnter,
    CallTransferred,
    Decision,
    ForceLogout,
    ForcePause,
    Input,
    OfferRejected,
    OfferTimeout,
    Refused,
    RemoveAgent,
    RemoveQueue,
    ReplicatedAcd,
    Source,
    UpdateAgent,
    UpdateQueue,
)
from queueing.stats import Statistics
from sip.message import Request, Response
from sip.sdp import MediaCapabilities, create_offer
from sip.transaction import ServerTransaction
from sip.ua import Call, CallState

if TYPE_CHECKING:
    from omlmedia.acd import AcdRuntime, AgentSide, QueuedCaller
    from omlmedia.desk import DialOut

__all__ = ["ClusterAgents", "RemoteOffers", "SharedEngine", "node_of"]

logger = logging.getLogger(__name__)

_CALL_OUTPUTS = (OfferCall, CancelOffer, Announce, Overflow, CallbackDial)


def node_of(incarnation: str) -> str:
    """The node name of a `SharedAcd.incarnation` (``node/pid/random``)."""
    return incarnation.rsplit("/", 2)[0]


class SharedEngine:
    """`AcdEngine`'s interface for `AcdRuntime` over the cluster's one ACD (module docstring)."""

    def __init__(self, acd: SharedAcd, clock: Callable[[], float]) -> None:
        self.acd = acd
        self.clock = clock
        self.on_events: Callable[[], None] = lambda: None
        """Called when events for this node arrived (the runtime pumps them)."""
        self.on_lost: Callable[[list[str], list[str]], None] = lambda calls, agents: None
        """Called with this node's callers and agents another node recorded as lost (this
        node was taken for dead: paused, or cut off from Redis past the node timeout) so that
        the runtime puts those still here back (`AcdRuntime.rejoin`)."""
        self._events: list[Event] = []
        self._results: dict[int, asyncio.Future[bool]] = {}
        self._applied = 0
        self._acting = False

    # -- what the runtime reads ----------------------------------------------------------------

    @property
    def replicated(self) -> ReplicatedAcd:
        """The node's follower (its engine, and where each agent and caller came from)."""
        replica = self.acd.replica
        if replica is None:
            raise RuntimeError("the shared ACD is not started")
        return replica

    @property
    def replica(self) -> AcdEngine:
        return self.replicated.engine

    @property
    def config(self) -> AcdConfig:
        return self.replica.config

    @property
    def statistics(self) -> Statistics:
        return self.replica.statistics

    def agent_status(self, agent: str) -> AgentStatus:
        return self.replica.agent_status(agent)

    def queue_status(self, queue: str, now: float) -> QueueStatus:
        return self.replica.queue_status(queue, now)

    def call_state(self, call_id: str) -> CallerState:
        return self.replica.call_state(call_id)

    def call_queue(self, call_id: str) -> str:
        return self.replica.call_queue(call_id)

    def is_local_agent(self, agent: str) -> bool:
        """Whether `agent` logged in on this node (its page is here)."""
        return self.replicated.agent_origin(agent) == self.acd.incarnation

    def agent_node(self, agent: str) -> str | None:
        """The node `agent` logged in on, None when not known."""
        origin = self.replicated.agent_origin(agent)
        return node_of(origin) if origin else None

    # -- the engine's events and clock, for the runtime ------------------------------------------

    def events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def get_timer(self) -> float | None:
        """None: the owner of the ACD writes the ticks of the engine's timers."""
        return None

    def handle_timer(self, now: float) -> None:
        """Nothing: see `get_timer`."""

    # -- what the runtime does: inputs -----------------------------------------------------------

    def _submit(self, item: Input) -> int:
        return self.acd.submit(item)

    async def decide(self, item: Input) -> bool:
        """Send `item` and wait until it is applied: False when the engine refused it (or it
        could not be sent)."""
        count = self._submit(item)
        if not count:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._results[count] = future
        try:
            return await future
        finally:
            self._results.pop(count, None)

    def caller_enter(
        self,
        call_id: str,
        queue: str,
        now: float,
        *,
        priority: int = 0,
        caller_number: str = "",
        caller_name: str = "",
    ) -> None:
        self._submit(CallerEnter(call_id, queue, now, priority, caller_number, caller_name))

    def caller_abandon(self, call_id: str, now: float) -> bool:
        return bool(self._submit(CallerAbandon(call_id, now)))

    def callback_request(self, call_id: str, number: str, now: float) -> bool:
        """Sent; True (the runtime checked the number; the engine's refusal, rare, is logged)."""
        return bool(self._submit(CallbackRequest(call_id, number, now)))

    def offer_answered(self, call_id: str, agent: str, now: float) -> bool:
        raise RuntimeError("the shared ACD's answers are awaited (SharedEngine.decide)")

    def offer_rejected(self, call_id: str, agent: str, now: float) -> bool:
        return bool(self._submit(OfferRejected(call_id, agent, now)))

    def offer_timeout(self, call_id: str, agent: str, now: float) -> bool:
        return bool(self._submit(OfferTimeout(call_id, agent, now)))

    def call_completed(
        self, call_id: str, agent: str, now: float, *, reason: str = "agent"
    ) -> bool:
        return bool(self._submit(CallCompleted(call_id, agent, now, reason)))

    def call_transferred(self, call_id: str, agent: str, destination: str, now: float) -> bool:
        return bool(self._submit(CallTransferred(call_id, agent, destination, now)))

    def agent_login(self, agent: str, now: float, *, paused_reason: str | None = None) -> None:
        """Logged in here. An agent still logged in elsewhere (its page moved here when its
        node died, or it logged in again) is logged out there first: from now on its offers
        and states are this node's."""
        try:
            logged_in = self.replica.agent_status(agent).state is not AgentState.LOGGED_OUT
        except (KeyError, ValueError):
            logged_in = False
        if logged_in:
            self._submit(AgentLogout(agent, now))
        self._submit(AgentLogin(agent, now, paused_reason))

    def agent_logout(self, agent: str, now: float) -> None:
        self._submit(AgentLogout(agent, now))

    def agent_ready(self, agent: str, now: float) -> None:
        self._submit(AgentReady(agent, now))

    def agent_pause(self, agent: str, reason: str, now: float) -> None:
        self._submit(AgentPause(agent, reason, now))

    def agent_unpause(self, agent: str, now: float) -> None:
        self._submit(AgentUnpause(agent, now))

    def force_pause(self, agent: str, reason: str, now: float, *, supervisor: str = "") -> None:
        self._submit(ForcePause(agent, reason, now, supervisor))

    def force_logout(self, agent: str, now: float, *, supervisor: str = "") -> None:
        self._submit(ForceLogout(agent, now, supervisor))

    def add_agent(self, agent: AgentConfig, now: float) -> None:
        self._submit(AddAgent(agent, now))

    def update_agent(self, agent: AgentConfig) -> None:
        self._submit(UpdateAgent(agent, self.clock()))

    def remove_agent(self, agent: str, now: float) -> None:
        self._submit(RemoveAgent(agent, now))

    def add_queue(self, config: QueueConfig, now: float) -> None:
        self._submit(AddQueue(config, now))

    def update_queue(self, config: QueueConfig, now: float) -> None:
        self._submit(UpdateQueue(config, now))

    def remove_queue(self, queue: str, now: float) -> None:
        self._submit(RemoveQueue(queue, now))

    # -- the followed stream -----------------------------------------------------------------

    def _taken_for_lost(self, item: Input, replicated: ReplicatedAcd, me: str) -> None:
        """Another node (the owner) recorded a caller or an agent of this node as lost."""
        calls, agents = _lost_of(item, replicated, me)
        if calls or agents:
            event(
                logger,
                "acd-taken-for-lost",
                level=logging.WARNING,
                calls=calls or None,
                agents=agents or None,
            )
            self.on_lost(calls, agents)

    def applied(
        self, entry_id: str, item: Input, source: Source | None, decisions: list[Decision]
    ) -> None:
        """`SharedAcd`'s ``on_applied``: note origins, keep this node's events, settle the
        awaited inputs."""
        me = self.acd.incarnation
        sender = source[0] if source is not None else ""
        refused = any(
            isinstance(d.output, Refused) and d.output.kind == item.kind for d in decisions
        )
        replicated = self.replicated
        mine = sender == me
        if not self._acting:
            # What came before this process's first input was acted on by others (or is
            # history): only where callers and agents are matters.
            self._acting = mine
            if not mine:
                return
        if not mine and not refused and source is not None:
            self._taken_for_lost(item, replicated, me)
        kept: list[Event] = []
        for decision in decisions:
            out = decision.output
            if isinstance(out, QueueLogEntry):
                if mine:
                    kept.append(out)
            elif isinstance(out, AgentStateChanged):
                if replicated.agent_origin(out.agent) == me:
                    kept.append(out)
            elif isinstance(out, _CALL_OUTPUTS):
                if replicated.call_origin(out.call_id) == me:
                    kept.append(out)
            elif isinstance(out, Refused) and mine:
                event(
                    logger,
                    "acd-input-refused",
                    level=logging.DEBUG,
                    kind=out.kind,
                    call_id=out.call_id or None,
                    agent=out.agent or None,
                    reason=out.reason,
                )
        if mine and source is not None:
            future = self._results.get(source[1])
            if future is not None and not future.done():
                future.set_result(not refused)
        self._applied += 1
        if self._applied % 1000 == 0:
            replicated.senders()  # forgets the agents and callers gone
        if kept:
            self._events.extend(kept)
            self.on_events()


def _lost_of(item: Input, replicated: ReplicatedAcd, me: str) -> tuple[list[str], list[str]]:
    if isinstance(item, CallerAbandon) and replicated.call_origin(item.call) == me:
        return [item.call], []
    if (
        isinstance(item, ForceLogout)
        and item.supervisor == "node-lost"
        and replicated.agent_origin(item.agent) == me
    ):
        return [], [item.agent]
    return [], []


REMOTE_SEGMENT = re.compile(r"\d{4}/\d{2}/\d{2}/[A-Za-z0-9_-][A-Za-z0-9_.-]*\.(?:opus|wav)")
"""The only recording path the agent's node may name (`RECORDING_HEADER`): what
`omlmedia.recordings.reserve_segment` makes, ``YYYY/MM/DD/<name>.opus`` (or ``.wav``), relative
to the recordings directory every node shares."""
MAX_REMOTE_SEGMENT = 255


def remote_segment(value: str | None) -> str | None:
    """`value` when it is a recording path the caller's record may name (`REMOTE_SEGMENT`, at
    most `MAX_REMOTE_SEGMENT` characters: never absolute, never ``..``), else None."""
    if not value or len(value) > MAX_REMOTE_SEGMENT or ".." in value:
        return None
    return value if REMOTE_SEGMENT.fullmatch(value) else None


@dataclass(eq=False)
class RemoteOffer:
    """A queue's caller here rung to an agent on another node over an internal leg."""

    qc: QueuedCaller
    agent: str
    node: str
    leg: RtpLeg
    offer: bytes
    call: Call | None = None
    answered: bool = False
    bridge: MediaBridge | None = None
    ended: bool = False
    callback: str = ""
    """A callback's number: once the agent answers, this node dials it through its trunk and
    joins it to the internal leg."""
    outbound: Call | None = None
    outbound_leg: RtpLeg | None = None
    outbound_offer: bytes = b""
    outbound_answered: bool = False
    segment: str = ""
    """The recording the agent's node reserved for this answer (its 200's `RECORDING_HEADER`,
    relative to the shared recordings directory): the caller's next segment."""


class RemoteOffers(InternalLegs):
    """The caller's node's half of an offer to an agent on another node (module docstring)."""

    def __init__(
        self,
        runtime: AcdRuntime,
        end: ClusterEnd,
        *,
        pool: RtpSocketPool,
        media_host: str,
        dial_out: DialOut | None = None,
    ) -> None:
        super().__init__(end, pool=pool, media_host=media_host)
        self.runtime = runtime
        self.dial_out = dial_out
        """Places a callback's call (`omlmedia.b2bua.B2bua.place_call`)."""
        self.offers: dict[tuple[str, str], RemoteOffer] = {}
        self.by_call: dict[str, RemoteOffer] = {}
        self.gaps = RemoteGaps(end.secret, end.clock)
        """The recording pauses the agents' nodes send (`omlmedia.crossnode`)."""

    def offer(self, qc: QueuedCaller, agent: str, node: str, queue: str) -> bool:
        """Ring `agent` on `node` with `qc`; False when that cannot even be tried."""
        if node not in self.nodes or node == self.node or qc.leg.format is None:
            return False
        self._spawn(self._place(qc, agent, node, queue, self._position()))
        return True

    def _position(self) -> str:
        """The input stream's entry being applied (an offer's: the far node rings once its
        replica has applied it, `omlmedia.crossnode`)."""
        engine = self.runtime.engine
        return "" if isinstance(engine, AcdEngine) else engine.acd.followed

    def offer_callback(self, qc: QueuedCaller, ev: CallbackDial, node: str) -> bool:
        """Ring `ev.agent` on `node` with the callback of `qc`; on its answer the number is
        dialled from here and joined to the internal leg."""
        if node not in self.nodes or node == self.node or self.dial_out is None:
            return False
        self._spawn(self._place(qc, ev.agent, node, ev.queue, self._position(), callback=ev.number))
        return True

    def _offer_sdp(self, leg: RtpLeg, caller: RtpLeg | None, *, srtp: bool = False) -> bytes:
        """Our offer on `leg`: the caller's codec only (a passthrough), or every codec (a
        callback: the far end's codec is not known yet); SDES keys with `srtp`."""
        fmt = caller.format if caller is not None else None
        if fmt is None:
            codecs = CAPABILITIES.codecs
        else:
            wanted = (fmt.encoding_name.lower(), "telephone-event")
            codecs = tuple(
                c
                for c in CAPABILITIES.codecs
                if c.encoding_name.lower() in wanted and c.clock_rate == fmt.clock_rate
            )
        capabilities = MediaCapabilities(codecs, rtcp_mux=False)
        offer = create_offer(
            capabilities,
            secrets.randbelow(2**31) + 1,
            0,
            self.media_host,
            leg.port,
            crypto=offer_crypto() if srtp else (),
        )
        return bytes(offer)

    async def _place(
        self,
        qc: QueuedCaller,
        agent: str,
        node: str,
        queue: str,
        position: str,
        *,
        callback: str = "",
    ) -> None:
        call_id = qc.call.call_id
        try:
            leg = RtpLeg(await self.pool.acquire())
        except (PortsExhausted, OSError):
            self.runtime.rejected(call_id, agent)
            return
        waiting = call_id in self.runtime.callbacks if callback else call_id in self.runtime.callers
        if not waiting or (qc.ended and not callback):
            self._release(leg)
            return
        sdp = self._offer_sdp(leg, None if callback else qc.leg, srtp=self.srtp)
        offer = RemoteOffer(qc, agent, node, leg, sdp, callback=callback)
        self.offers[(call_id, agent)] = offer
        where = self.nodes[node]
        caller = callback or qc.call.invite.from_.uri.user or ""
        campaign = qc.campaign.name if qc.campaign is not None else ""
        header = OfferHeader(call_id, queue, caller, self.node, campaign, position)
        signed = sign_offer(self.secret, agent, header, self.clock())
        call = place_internal(
            self.service,
            where,
            agent,
            caller or "queue",
            self.media_host,
            offer.offer,
            (HEADER, signed),
        )
        call.app = self
        offer.call = call
        self.by_call[call.call_id] = offer
        event(logger, "acd-remote-offer", call_id=call_id, agent=agent, node=node)

    # -- the internal leg's events (its owner) ----------------------------------------------

    def on_response(self, call: Call, response: Response) -> None:
        offer = self.by_call.get(call.call_id)
        if offer is not None and offer.outbound is call:
            self._outbound_response(offer, response)
            return
        if offer is None or offer.ended or response.status < 200 or offer.answered:
            return
        if response.status >= 300:
            self._not_answered(offer, response.status)
            return
        offer.answered = True
        offer.segment = self._segment(offer, response)
        try:
            apply_answer(offer.leg, offer.offer, response.body, CAPABILITIES.codecs)
        except ValueError as exc:
            logger.warning("remote offer %s: bad answer: %s", offer.qc.call.call_id, exc)
            self._end(offer, hang_up=True)
            self.runtime.rejected(offer.qc.call.call_id, offer.agent)
            return
        self._spawn(self._callback_answered(offer) if offer.callback else self._answered(offer))

    def _segment(self, offer: RemoteOffer, response: Response) -> str:
        """The segment the agent's node records, as its 200 names it (`RECORDING_HEADER`), or
        "" (none; a path `remote_segment` refuses is logged and ignored)."""
        value = response.headers.get(RECORDING_HEADER)
        if value is None or offer.callback:
            return ""
        segment = remote_segment(value)
        if segment is None:
            logger.warning(
                "remote offer %s: %s refused: %r",
                offer.qc.call.call_id,
                RECORDING_HEADER,
                value[:300],
            )
            return ""
        return segment

    async def _callback_answered(self, offer: RemoteOffer) -> None:
        """The agent took the callback: dial the number from here."""
        call_id, agent = offer.qc.call.call_id, offer.agent
        if not await self.runtime.callback_answered(call_id, agent):
            self._end(offer, hang_up=True)
            return
        if offer.ended or self.dial_out is None:
            return
        try:
            leg = RtpLeg(await self.pool.acquire())
        except (PortsExhausted, OSError):
            self._callback_over(offer, "no-ports")
            return
        offer.outbound_leg = leg
        offer.outbound_offer = self._offer_sdp(leg, None)
        campaign = offer.qc.campaign
        trunk = campaign.trunk if campaign is not None else ""
        outbound = self.dial_out(offer.callback, trunk, offer.outbound_offer, None)
        if outbound is None:
            self._callback_over(offer, "no-trunk")
            return
        outbound.app = self
        offer.outbound = outbound
        self.by_call[outbound.call_id] = offer
        event(logger, "acd-remote-callback", call_id=call_id, agent=agent, node=offer.node)

    def _outbound_response(self, offer: RemoteOffer, response: Response) -> None:
        """The callback's number answered (join it to the agent's leg) or refused."""
        if offer.ended or response.status < 200 or offer.outbound_answered:
            return
        if response.status >= 300:
            self._callback_over(offer, f"status-{response.status}")
            return
        offer.outbound_answered = True
        leg = offer.outbound_leg
        assert leg is not None
        try:
            apply_answer(leg, offer.outbound_offer, response.body, CAPABILITIES.codecs)
            offer.bridge = MediaBridge(offer.leg, leg, codec_transcoder)
            offer.bridge.start()
        except ValueError as exc:
            logger.warning("remote callback %s: %s", offer.qc.call.call_id, exc)
            offer.bridge = None
            self._callback_over(offer, "bad-answer")

    def _callback_over(self, offer: RemoteOffer, cause: str) -> None:
        """A callback ends (either side hung up, or the number never answered)."""
        self._end(offer, hang_up=True)
        self.runtime.callback_done(
            offer.qc.call.call_id, offer.agent, offer.outbound_answered, cause
        )

    async def _answered(self, offer: RemoteOffer) -> None:
        call_id = offer.qc.call.call_id
        if not await self.runtime.answer_offer(call_id, offer.agent):
            self._end(offer, hang_up=True)
            return
        if offer.segment:  # as a local answer's: the record lists it whatever happens later
            qc = offer.qc
            qc.recording = qc.recording or offer.segment
            qc.segments.append((offer.segment, offer.agent))
        if offer.ended:
            return
        try:
            offer.bridge = MediaBridge(offer.qc.leg, offer.leg, codec_transcoder)
            offer.bridge.start()
        except ValueError as exc:
            logger.warning("remote offer %s: cannot bridge: %s", call_id, exc)
            offer.bridge = None
            self.runtime.agent_hung_up(call_id)
            return
        event(
            logger,
            "acd-remote-answered",
            call_id=call_id,
            agent=offer.agent,
            node=offer.node,
            passthrough=offer.bridge.passthrough,
        )

    def _not_answered(self, offer: RemoteOffer, status: int) -> None:
        self._end(offer, hang_up=False)
        call_id = offer.qc.call.call_id
        event(logger, "acd-remote-refused", call_id=call_id, agent=offer.agent, status=status)
        if status in (486, 600, 603):
            self.runtime.rejected(call_id, offer.agent)
        else:
            self.runtime.timed_out(call_id, offer.agent)

    def on_ended(self, call: Call, cause: str) -> None:
        """The internal leg ended: the agent hung up (or its node did; its page went away:
        `AGENT_GONE_REASON`, the caller is requeued); or a callback's number hung up."""
        offer = self.by_call.get(call.call_id)
        if offer is None or offer.ended:
            return
        if offer.callback and offer.answered:
            self._callback_over(offer, "completed" if call is offer.outbound else "agent-hangup")
            return
        self._end(offer, hang_up=False)
        if offer.answered and call.bye_reason == AGENT_GONE_REASON:
            # the agent's page went away: the caller goes back to the queue, as for a local agent
            self.runtime.requeue(offer.qc.call.call_id, offer.agent)
        elif offer.answered:
            self.runtime.agent_hung_up(offer.qc.call.call_id)
        else:
            self._not_answered(offer, 480)

    def on_dtmf(self, call: Call, digit: str) -> None:
        """Nothing: the agent's digits go to the caller with the media."""

    def on_session_modified(self, call: Call, txn: ServerTransaction, request: Request) -> None:
        """The far node re-offers (hold on the agent's side): our session stays as it is; or
        it tells the recording's pauses (`RemoteGaps`)."""
        offer = self.by_call.get(call.call_id)
        origin, segment = (offer.qc.call.call_id, offer.segment) if offer else ("", "")
        if self.gaps.answer(self.service, call, txn, request, origin, segment):
            return
        body = offer.offer if offer is not None else b""
        service = self.service
        service.act(
            lambda now: service.ua.respond(
                call, txn, 200, now, body, "application/sdp" if body else None
            )
        )

    def on_transfer_outcome(self, call: Call, status: int) -> None:
        """Nothing: no REFER is sent on an internal leg."""

    # -- the runtime's side --------------------------------------------------------------------

    def owns(self, call_id: str, agent: str) -> bool:
        return (call_id, agent) in self.offers

    def cancel(self, call_id: str, agent: str) -> None:
        """The ACD withdrew the offer (rang out, answered elsewhere, the caller left)."""
        offer = self.offers.get((call_id, agent))
        if offer is not None and not offer.answered:
            self._end(offer, hang_up=True)

    def caller_ended(self, call_id: str) -> None:
        """The caller's call ended: the internal legs of its offers end too."""
        for (cid, _agent), offer in list(self.offers.items()):
            if cid == call_id:
                self._end(offer, hang_up=True)

    def _end(self, offer: RemoteOffer, *, hang_up: bool) -> None:
        if offer.ended:
            return
        offer.ended = True
        self.offers.pop((offer.qc.call.call_id, offer.agent), None)
        gaps = self.gaps.pop(offer.call.call_id) if offer.call is not None else []
        if gaps and offer.segment:  # its record lists them, as a local recording's
            self.runtime.note_gaps(offer.qc.call.call_id, gaps, offer.segment)
        for call in (offer.call, offer.outbound):
            if call is None:
                continue
            self.by_call.pop(call.call_id, None)
            if hang_up and call.state is not CallState.ENDED:
                self._hang_up(call)
        if offer.bridge is not None:
            offer.bridge.stop()
            offer.bridge = None
        self._release(offer.leg)
        if offer.outbound_leg is not None:
            self._release(offer.outbound_leg)

    def _hang_up(self, call: Call) -> None:
        service = self.service
        service.act(lambda now: service.ua.hangup(call, now))

    async def close(self) -> None:
        self._cancel_tasks()
        for offer in list(self.offers.values()):
            self._end(offer, hang_up=True)


class ClusterAgents:
    """The runtime's `AgentSide` on a cluster node: offers to agents whose page is here go to
    the desk, the others to `RemoteOffers`."""

    def __init__(self, desk: AgentSide, remote: RemoteOffers, engine: SharedEngine) -> None:
        self.desk = desk
        self.remote = remote
        self.engine = engine

    def offer_queued(
        self, qc: QueuedCaller, agent: str, queue: str, waited: float, direct: bool = False
    ) -> bool:
        if self.engine.is_local_agent(agent) or direct:
            return self.desk.offer_queued(qc, agent, queue, waited, direct=direct)
        node = self.engine.agent_node(agent)
        return node is not None and self.remote.offer(qc, agent, node, queue)

    def offer_callback(self, qc: QueuedCaller, ev: CallbackDial) -> bool:
        if self.engine.is_local_agent(ev.agent):
            return self.desk.offer_callback(qc, ev)
        node = self.engine.agent_node(ev.agent)
        return node is not None and self.remote.offer_callback(qc, ev, node)

    def cancel_offer(self, call_id: str, agent: str, reason: str) -> None:
        if self.remote.owns(call_id, agent):
            self.remote.cancel(call_id, agent)
        else:
            self.desk.cancel_offer(call_id, agent, reason)

    def queued_call_ended(self, call_id: str, cause: str) -> None:
        self.remote.caller_ended(call_id)
        self.desk.queued_call_ended(call_id, cause)

    def engine_state(self, agent: str, state: AgentState, reason: str) -> None:
        self.desk.engine_state(agent, state, reason)

    def connected(self, agent: str) -> bool:
        return self.desk.connected(agent)

    async def log_out(self, agent: str, reason: str) -> None:
        await self.desk.log_out(agent, reason)
