"""Queues on the server: the ACD engine driven by calls, timers and the agent pages.

Theory of operation. `queueing.AcdEngine` decides (sans-IO, wall-clock `now`); this module is its
asyncio adapter. A call routed to a queue (`queue:<name>`, or a campaign's queue) is answered at
once with an RtpLeg and hears the queue's music on hold (`LegFeed`) while it waits. The engine's
events drive everything else:

- `OfferCall` rings an agent's page through the desk (the caller keeps hearing music); the agent
  answers and the desk joins the caller's leg to the agent channel; `CancelOffer` withdraws an
  offer (ring timeout, another agent answered first in ringall, the caller left);
- `Announce` plays "your position in the queue is N" and the estimated wait, then music again;
- `Overflow` sends the caller where the queue says: another queue (the engine moves it), an agent
  (rung directly), a number (REFER to the caller's side), a mailbox (beep, then recorded until
  the caller hangs up), or a prompt and hang-up;
- a caller who presses 1 while waiting (when the queue offers callbacks) is asked for a number
  ending in #, hears a confirmation and hangs up: the engine keeps its place, and when its turn
  comes `CallbackDial` rings an agent with the callback; on Answer the desk calls the number
  through the campaign's trunk and joins the agent to it;
- `AgentStateChanged` goes to the agent pages, `QueueLogEntry` to the queue log (SQLite).

Every call that enters a queue is noted as in progress in the store and gets a call record when
it ends (queue, agent, wait, who hung up, disposition, recording, per-leg media quality).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from media.dtmf import DtmfReceiver
from media.feed import LegFeed
from media.leg import RtpLeg
from media.player import MediaFileError, Player, load, sound_path
from media.ports import PortsExhausted, RtpSocketPool
from omlmedia.clock import CallLater, Timer, loop_call_later
from omlmedia.config import Campaign, Route, RouteAction
from omlmedia.events import CALL_QUALITY, NO_EVENTS, EventSink, queue_event_type
from omlmedia.logs import event
from omlmedia.offer_answer import answer_on_leg
from omlmedia.recording import Mailbox
from omlmedia.storage import AsyncStore, CallRecord, QueueLogRow
from omlmedia.targets import Refusal
from queueing.config import DestinationKind
from queueing.engine import AcdEngine
from queueing.events import (
    AgentState,
    Announce,
    CallbackDial,
    CancelOffer,
    Joined,
    LogEvent,
    OfferCall,
    Overflow,
    Overflowed,
    QueueLogEntry,
)
from queueing.events import AgentStateChanged as EngineStateChanged
from queueing.replica import OfferAnswered
from queueing.stats import AgentCounters, QueueCounters
from sip.message import Address, Request, Response
from sip.sdp import OfferAnswerError, SDPError, SessionDescription
from sip.transaction import ServerTransaction
from sip.ua import Call, CallState

if TYPE_CHECKING:
    from omlmedia.acd_cluster import SharedEngine
    from sip.service import SipService

logger = logging.getLogger(__name__)

__all__ = ["AcdRuntime", "QueuedCaller", "agent_figures", "engine_log", "queue_figures"]

DEFAULT_CALLBACK_RULES = Campaign("", "")
"""The callback rules of a queue's callers without a campaign: a campaign's defaults (national
numbers of 6 to 15 digits, never the international prefix 00 nor a short premium or service
code, one waiting callback per number, dropped after 4 hours). Toll fraud asks for callbacks to
numbers that pay the asker."""
CALLBACK_DIGIT = "1"
REMOTE_DISPOSITION_AGAIN = 5.0
"""Seconds after which an agent's disposition for another node's call is written again."""
RECORDING_HEADER = "X-Oml-Recording"
"""The header of the agent's node's 200 OK to the internal INVITE of another node's queue caller:
the path, relative to the recordings directory every node shares, of the segment it records
(reserved before the 200); the caller's node adds it to the caller's ``segments``."""
AGENT_GONE_REASON = 'SIP;cause=480;text="agent-gone"'
"""The ``Reason`` of the BYE with which the agent's node ends the internal leg of another node's
queue caller when the agent's page went away mid-call: that node puts the caller back in the
queue (`requeue`), as for an agent of its own, instead of hanging up."""


@dataclass(eq=False)
class QueuedCaller:
    """A caller the queue answered: its leg, what it hears, where it is."""

    call: Call
    queue: str
    campaign: Campaign | None
    leg: RtpLeg
    entered: float
    answer_sdp: bytes = b""
    feed: LegFeed | None = None
    agent: str = ""
    connected: float | None = None
    digits: str = ""
    collecting: bool = False
    callback_number: str = ""
    callback_at: float = 0.0
    """When the caller asked to be called back (its campaign's ``callback_expiry`` counts from
    then)."""
    ended: bool = False
    hangup_by: str = ""
    mailbox: Mailbox | None = None
    mailbox_timer: Timer | None = None
    """Ends the voicemail at `AcdRuntime.max_record_duration`."""
    disposition: str = ""
    """The disposition the agent gave the call (its record has it)."""
    recording: str = ""
    """The path of the call's recording or voicemail (empty when not recorded): the first one
    when the call was answered more than once (requeued)."""
    segments: list[tuple[str, str]] = field(default_factory=list)
    """Each answered segment's recording (its path, its agent), in order: a requeued call's
    next agent records into a file of its own (``segment`` legs of the record)."""
    extra_legs: list[dict[str, Any]] = field(default_factory=list)
    """Legs noted while it was still here (`note_legs`): its segments' pauses (PCI) as
    ``recording`` legs, the supervisors who monitored it: its record lists them."""


@dataclass
class AcdStats:
    """What the runtime did, for the API."""

    entered: int = 0
    overflowed: int = 0
    announcements: int = 0
    callbacks: int = 0
    events: int = 0
    errors: int = 0


class AgentSide(Protocol):
    """What the ACD tells the agents' side (`omlmedia.agents.AgentDesk`): one-way events
    (offers, withdrawn offers, callers gone, the engine's agent states) and the sessions a
    supervisor acts on. The ACD never asks it for an agent's state: the engine owns that."""

    def offer_queued(
        self, qc: QueuedCaller, agent: str, queue: str, waited: float, direct: bool = False
    ) -> bool:
        """Ring `agent` with a caller waiting in `queue`; False when it cannot be rung."""
        ...

    def offer_callback(self, qc: QueuedCaller, ev: CallbackDial) -> bool:
        """Ring `ev.agent` with a callback; False when it cannot be rung."""
        ...

    def cancel_offer(self, call_id: str, agent: str, reason: str) -> None:
        """The engine withdrew an offer (ring timeout, answered elsewhere, the caller left)."""
        ...

    def queued_call_ended(self, call_id: str, cause: str) -> None:
        """A queue's caller is gone (or transferred away): the agent's side ends too."""
        ...

    def engine_state(self, agent: str, state: AgentState, reason: str) -> None:
        """The engine changed `agent`'s state."""
        ...

    def connected(self, agent: str) -> bool:
        """Whether the agent's page is connected now."""
        ...

    async def log_out(self, agent: str, reason: str) -> None:
        """End the agent's session (its page is told `reason`)."""
        ...


class _NoAgents:
    """The agents' side until one listens: nobody can be rung."""

    def offer_queued(
        self, qc: QueuedCaller, agent: str, queue: str, waited: float, direct: bool = False
    ) -> bool:
        return False

    def offer_callback(self, qc: QueuedCaller, ev: CallbackDial) -> bool:
        return False

    def cancel_offer(self, call_id: str, agent: str, reason: str) -> None:
        pass

    def queued_call_ended(self, call_id: str, cause: str) -> None:
        pass

    def engine_state(self, agent: str, state: AgentState, reason: str) -> None:
        pass

    def connected(self, agent: str) -> bool:
        return False

    async def log_out(self, agent: str, reason: str) -> None:
        pass


class AcdRuntime:
    """The engine's clock, its events, and the callers waiting in its queues. The agents'
    side listens to it (`listen`); the ACD depends on nothing of it but `AgentSide`."""

    def __init__(
        self,
        engine: AcdEngine | SharedEngine,
        pool: RtpSocketPool,
        media_host: str,
        *,
        service: SipService,
        store: AsyncStore | None = None,
        campaigns: dict[str, Campaign] | None = None,
        music: Path | None = None,
        language: str = "en",
        recordings: Path | None = None,
        clock: Callable[[], float] = time.time,
        call_later: CallLater | None = None,
        events: EventSink = NO_EVENTS,
        max_record_duration: float = 600.0,
    ) -> None:
        self.engine = engine
        """The ACD: this node's own engine, or the cluster's (`omlmedia.acd_cluster`)."""
        self.max_record_duration = max_record_duration
        """Seconds a voicemail may last (``media.max_record_duration``): then BYE, and the call's
        record says ``hangup_by = "max-duration"``."""
        self.events = events
        """Where the queue log's entries and the callers' media quality are published."""
        self.clock = clock
        """The engine's clock: the wall clock, so the queue log has real times."""
        self.call_later: CallLater = call_later or loop_call_later
        self.service = service
        self._agents: AgentSide = _NoAgents()
        self.pool = pool
        self.media_host = media_host
        self.store = store
        self.live_quality: (
            Callable[[str, tuple[Mapping[str, Any], ...]], tuple[Any, ...]] | None
        ) = None
        """Adds what was measured while the call lasted to its record's legs (the low-MOS flag,
        the agent's leg: `omlmedia.livequality.LiveQuality.record_legs`), when set."""
        self.campaigns = campaigns or {}
        self.music = music
        self.language = language
        self.recordings = recordings
        self.callers: dict[str, QueuedCaller] = {}
        self.callbacks: dict[str, QueuedCaller] = {}
        """Callers who hung up to be called back, by call id, until their callback ends."""
        self.stats = AcdStats()
        self.records: dict[str, CallRecord] = {}
        """The last call records written (a disposition comes after the call ends)."""
        self._timer: Timer | None = None
        self.after_pump: list[Callable[[], None]] = []
        """Called after every `pump` (the directory logs out disabled agents whose call ended)."""

    def listen(self, agents: AgentSide) -> None:
        """`agents` is told of offers and agent states from now on (one listener)."""
        self._agents = agents

    def connected(self, agent: str) -> bool:
        """Whether `agent`'s page is connected to this node now."""
        return self._agents.connected(agent)

    # -- the engine's clock and events ------------------------------------------------------

    def now(self) -> float:
        """The engine's clock: the wall clock, so the queue log has real times."""
        return self.clock()

    def pump(self) -> None:
        """Act on every pending engine event and re-arm the timer."""
        for ev in self.engine.events():
            self.stats.events += 1
            try:
                self._on_event(ev)
            except Exception:
                self.stats.errors += 1
                logger.exception("ACD event %s failed", type(ev).__name__)
        self._arm()
        for hook in self.after_pump:
            hook()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.engine.get_timer()
        if due is not None:
            delay = max(0.0, due - self.now())
            self._timer = self.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.engine.handle_timer(self.now())
        self.pump()

    def close(self) -> None:
        """Stop the timer (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_event(self, ev: object) -> None:
        if isinstance(ev, QueueLogEntry):
            if self.store is not None:
                self.store.append(
                    QueueLogRow(
                        ev.time, ev.event.value, ev.call_id, ev.queue, ev.agent, dict(ev.data)
                    )
                )
            self.events.publish(
                queue_event_type(ev.event.value),
                call_id=ev.call_id,
                queue=ev.queue,
                agent=ev.agent,
                campaign=self._campaign_of(ev.call_id),
                data=ev.data,
                time=ev.time,
            )
        elif isinstance(ev, EngineStateChanged):
            self._agents.engine_state(ev.agent, ev.state, ev.reason)
        elif isinstance(ev, OfferCall):
            self._offer(ev)
        elif isinstance(ev, CancelOffer):
            self._agents.cancel_offer(ev.call_id, ev.agent, ev.reason)
        elif isinstance(ev, Announce):
            self._announce(ev)
        elif isinstance(ev, Overflow):
            self._overflow(ev.call_id, ev.destination.kind, ev.destination.target, ev.reason)
        elif isinstance(ev, CallbackDial):
            self._callback(ev)

    # -- callers ----------------------------------------------------------------------------

    route_actions: tuple[RouteAction, ...] = (RouteAction.QUEUE, RouteAction.CAMPAIGN)

    def take_route(self, call: Call, route: Route, user: str) -> Refusal | None:
        """A route target (`omlmedia.targets.RouteTarget`): a ``queue:`` route enters its
        queue, a ``campaign:`` route the campaign's queue."""
        name = route.trunk or ""
        if route.action is RouteAction.CAMPAIGN:
            campaign = self.campaigns.get(name)
            if campaign is None:
                return Refusal(503, "target-unavailable", "Target Not Available")
            self.enter(call, campaign.queue, campaign)
        else:
            self.enter(call, name)
        return None

    def enter(self, call: Call, queue: str, campaign: Campaign | None = None) -> None:
        """Answer `call` and put it in `queue` (its music starts at once)."""
        asyncio.get_running_loop().create_task(self._enter(call, queue, campaign))

    async def _enter(self, call: Call, queue: str, campaign: Campaign | None) -> None:
        service = self.service
        try:
            offer = SessionDescription.parse(call.remote_sdp)
            pair = await self.pool.acquire()
        except SDPError:
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        except (PortsExhausted, OSError) as exc:
            event(
                logger,
                "call-rejected",
                level=logging.WARNING,
                call_id=call.call_id,
                status=503,
                reason="no-media-port",
                error=str(exc) or type(exc).__name__,
            )
            service.act(lambda now: service.ua.reject(call, 503, now))
            return
        leg = RtpLeg(pair)
        if call.state is not CallState.OFFERED:
            leg.close()
            self.pool.release(pair)
            return
        try:
            answer = answer_on_leg(
                leg, offer, self.media_host, session_id=secrets.randbelow(2**31) + 1
            )
        except (OfferAnswerError, ValueError) as exc:
            leg.close()
            self.pool.release(pair)
            event(logger, "call-rejected", call_id=call.call_id, status=488, reason=str(exc))
            service.act(lambda now: service.ua.reject(call, 488, now))
            return
        qc = QueuedCaller(call, queue, campaign, leg, self.now(), bytes(answer.description))
        body = qc.answer_sdp
        service.act(lambda t: service.ua.answer(call, body, t))
        self._admit(qc)

    def enter_answered(
        self,
        call: Call,
        leg: RtpLeg,
        queue: str,
        campaign: Campaign | None = None,
        answer_sdp: bytes = b"",
    ) -> None:
        """Put a caller answered elsewhere (an agent's transfer) in `queue` with its `leg` (the
        queue owns it from now on) and `answer_sdp`, our side of its session."""
        self._admit(QueuedCaller(call, queue, campaign, leg, self.now(), answer_sdp))

    def hand_over(self, call_id: str, agent: str, destination: str) -> QueuedCaller | None:
        """`agent` transferred the queue's caller to `destination`: it leaves the queue's books
        (logged, recorded) but stays up; its leg now belongs to whoever takes the caller."""
        qc = self.callers.pop(call_id, None)
        if qc is None:
            return None
        self.engine.call_transferred(call_id, agent, destination, self.now())
        qc.hangup_by = "transfer"
        qc.ended = True
        self._stop_feed(qc)
        self._record(qc, self.now(), "transferred")
        self.pump()
        return qc

    def _admit(self, qc: QueuedCaller) -> None:
        call, queue, campaign, now = qc.call, qc.queue, qc.campaign, qc.entered
        caller = call.invite.from_
        self.callers[call.call_id] = qc
        call.app = self
        self._listen_digits(qc)
        self.stats.entered += 1
        self._play_music(qc)
        if self.store is not None:
            self.store.call_started(
                call.call_id,
                now,
                {
                    "queue": queue,
                    "campaign": campaign.name if campaign else "",
                    "caller": caller.uri.user or "",
                    "trunk": call.trunk or "",
                },
            )
        result = self.engine.caller_enter(
            call.call_id,
            queue,
            now,
            caller_number=caller.uri.user or "",
            caller_name=caller.display_name or "",
        )
        event(
            logger,
            "queue-enter",
            call_id=call.call_id,
            queue=queue,
            position=result.position if isinstance(result, Joined) else 0,
        )
        if isinstance(result, Overflowed):
            self.stats.overflowed += 1
        self.pump()  # a shared engine's result arrives as decisions

    def owns(self, call: Call) -> bool:
        """True while `call` is one of the queue's callers."""
        return call.call_id in self.callers

    def on_ended(self, call: Call, cause: str) -> None:
        """The caller hung up (or the call failed), at any moment."""
        qc = self.callers.get(call.call_id)
        if qc is None:
            return
        qc.hangup_by = qc.hangup_by or "caller"
        self._leave(qc, cause)

    def _leave(self, qc: QueuedCaller, cause: str) -> None:
        """The caller is gone from the queue and its media released; its record written."""
        if qc.ended:
            return
        qc.ended = True
        call_id = qc.call.call_id
        now = self.now()
        self._stop_feed(qc)
        if qc.mailbox is not None:
            qc.mailbox.close()
            qc.mailbox = None
        if qc.mailbox_timer is not None:
            qc.mailbox_timer.cancel()
            qc.mailbox_timer = None
        if qc.callback_number:
            # It left to be called back: the engine keeps its place until CallbackDial.
            self.callbacks[call_id] = qc
        else:
            if qc.agent:
                self._agents.queued_call_ended(call_id, cause)
                self.engine.call_completed(call_id, qc.agent, now, reason=qc.hangup_by or "caller")
            else:
                self.engine.caller_abandon(call_id, now)
            self._record(qc, now, cause)
        self.callers.pop(call_id, None)
        self._release_leg(qc.leg)
        self.pump()

    def agent_hung_up(self, call_id: str) -> None:
        """The agent ended a queued call."""
        qc = self.callers.get(call_id)
        if qc is None:
            return
        qc.hangup_by = "agent"
        service, call = self.service, qc.call
        service.act(lambda now: service.ua.hangup(call, now))
        self._leave(qc, "agent-hangup")

    def _record(self, qc: QueuedCaller, now: float, cause: str) -> None:
        if self.store is None:
            return
        caller = qc.call.invite.from_
        quality = qc.leg.quality()
        record = CallRecord(
            call_id=qc.call.call_id,
            start=qc.entered,
            end=now,
            answer=qc.connected,
            caller=caller.uri.user or "",
            caller_name=caller.display_name or "",
            callee=qc.call.request_user,
            target=f"queue:{qc.queue}",
            trunk=qc.call.trunk or "",
            campaign=qc.campaign.name if qc.campaign else "",
            queue=qc.queue,
            agent=qc.agent,
            disposition=qc.disposition,
            hangup_by=qc.hangup_by,
            cause=cause,
            recording=qc.recording,
            legs=(
                {
                    "role": "caller",
                    "codec": qc.leg.format.encoding_name if qc.leg.format else "",
                    "packets": quality.packets_received,
                    "lost": quality.packets_lost,
                    "jitter_ms": round(quality.jitter_ms, 2),
                    "rtt_ms": quality.round_trip_ms,
                    "mos": None if quality.mos is None else round(quality.mos, 2),
                },
            ),
        )
        if self.live_quality is not None:
            record = replace(record, legs=self.live_quality(record.call_id, record.legs))
        if qc.segments:  # every answered segment's file, in order (the first is `recording`)
            parts = [{"role": "segment", "file": f, "agent": a} for f, a in qc.segments]
            record = replace(record, legs=(*record.legs, *parts))
        if qc.extra_legs:
            record = replace(record, legs=(*record.legs, *qc.extra_legs))
        self.store.call_ended(record)
        self.events.publish(
            CALL_QUALITY,
            call_id=record.call_id,
            queue=record.queue,
            agent=record.agent,
            campaign=record.campaign,
            data={"leg": "caller", **record.legs[0]},
        )
        self.records[record.call_id] = record
        if len(self.records) > 10000:
            self.records.pop(next(iter(self.records)))

    def _campaign_of(self, call_id: str) -> str:
        """The campaign a caller came in by ("" when none, or not a caller's event)."""
        if not call_id:
            return ""
        qc = self.callers.get(call_id) or self.callbacks.get(call_id)
        if qc is not None:
            return qc.campaign.name if qc.campaign else ""
        record = self.records.get(call_id)
        return record.campaign if record is not None else ""

    # -- what the caller hears --------------------------------------------------------------

    def _play_music(self, qc: QueuedCaller) -> None:
        self._stop_feed(qc)
        if self.music is None or qc.ended or qc.agent:
            return
        try:
            qc.feed = LegFeed(qc.leg, self.music, loop=True)
            qc.feed.start()
        except (MediaFileError, ValueError, OSError) as exc:
            logger.warning("no music on hold for %s: %s", qc.call.call_id, exc)

    def _play(self, qc: QueuedCaller, names: list[str], then: Callable[[], None]) -> None:
        """Play prompts of the sound set one after the other, then `then()`."""
        self._stop_feed(qc)
        fmt = qc.leg.format
        if fmt is None:
            then()
            return
        try:
            from media.codecs import codec_for

            rate = codec_for(fmt.encoding_name, fmt.clock_rate, fmt.channels).sample_rate
            parts = [load(sound_path(name, self.language), rate) for name in names]
            samples = np.concatenate(parts)
            qc.feed = LegFeed(qc.leg, sound_path(names[0], self.language), loop=False)
            qc.feed.player = Player(samples, qc.feed.encoder.frame_samples, loop=False)
            qc.feed.on_finished = then
            qc.feed.start()
        except (MediaFileError, ValueError, OSError) as exc:
            logger.warning("cannot play %s to %s: %s", names, qc.call.call_id, exc)
            then()

    def _stop_feed(self, qc: QueuedCaller) -> None:
        if qc.feed is not None:
            qc.feed.stop()
            qc.feed = None

    def _announce(self, ev: Announce) -> None:
        qc = self.callers.get(ev.call_id)
        if qc is None or qc.agent or qc.collecting:
            return
        self.stats.announcements += 1
        names = ["queue-position", *(f"digit-{d}" for d in str(ev.position))]
        if ev.estimated_wait is not None:
            minutes = round(ev.estimated_wait / 60)
            if minutes < 1:
                names += ["estimated-wait", "less-than-a-minute"]
            else:
                names += ["estimated-wait", *(f"digit-{d}" for d in str(minutes)), "minutes"]
        if qc.campaign is None or qc.campaign.callback:
            names.append("callback-offer")
        event(logger, "queue-announce", call_id=ev.call_id, position=ev.position)
        self._play(qc, names, lambda: self._play_music(qc))

    # -- DTMF: the callback that keeps the caller's place -----------------------------------

    def _listen_digits(self, qc: QueuedCaller) -> None:
        """While it waits, the caller's RFC 4733 digits come to `on_dtmf` (its audio is not
        needed: nobody listens yet)."""
        fmt = qc.leg.format
        if fmt is None:
            return
        receiver = DtmfReceiver(fmt.event_clock_rate)
        events = fmt.event_receive_types

        def sink(data: bytes, second: int, seq: int, ts: int, ssrc: int, now: float) -> None:
            if second & 0x7F not in events:
                return
            try:
                digits = receiver.receive(seq, ts, bool(second & 0x80), data[12:], now)
            except ValueError:
                return
            for digit in digits:
                self.on_dtmf(qc.call, digit.digit)

        qc.leg.sink = sink

    def on_response(self, call: Call, response: Response) -> None:
        """Nothing: the queue's callers are inbound calls."""

    def on_transfer_outcome(self, call: Call, status: int) -> None:
        """Nothing: an overflow to a number (REFER) leaves the queue's books at once."""

    def on_session_modified(self, call: Call, txn: ServerTransaction, request: Request) -> None:
        """A re-INVITE from a waiting caller's side: it keeps its session (our description)."""
        service = self.service
        qc = self.callers.get(call.call_id)
        body = qc.answer_sdp if qc is not None else b""
        service.act(
            lambda now: service.ua.respond(
                call, txn, 200, now, body, "application/sdp" if body else None
            )
        )

    @property
    def legs(self) -> list[RtpLeg]:
        """The legs of waiting callers (for RTCP reports)."""
        return [qc.leg for qc in self.callers.values() if not qc.agent]

    def on_dtmf(self, call: Call, digit: str) -> None:
        """A digit from a waiting caller (RFC 4733 or SIP INFO)."""
        qc = self.callers.get(call.call_id)
        if qc is None or qc.agent or qc.ended:
            return
        if not qc.collecting:
            if digit == CALLBACK_DIGIT and (qc.campaign is None or qc.campaign.callback):
                qc.collecting = True
                qc.digits = ""
                self._play(qc, ["enter-phone-number"], lambda: None)
            return
        if digit == "#":
            number = qc.digits
            qc.collecting = False
            refusal = self._callback_refusal(number, self._callback_rules(qc))
            if refusal is not None:
                event(
                    logger,
                    "queue-callback-refused",
                    level=logging.WARNING,
                    call_id=call.call_id,
                    number=number,
                    reason=refusal,
                    source=str(call.source),
                )
                self._play(qc, ["invalid-option"], lambda: self._play_music(qc))
                return
            if not self.engine.callback_request(call.call_id, number, self.now()):
                self._play_music(qc)
                return
            self.stats.callbacks += 1
            qc.callback_number = number
            qc.callback_at = self.now()
            event(logger, "queue-callback", call_id=call.call_id, number=number)
            self._play(qc, ["callback-confirmed", "goodbye"], lambda: self._hang_up(qc))
            self.pump()
        elif digit.isdigit() and len(qc.digits) < 20:
            qc.digits += digit
        elif digit == "*":
            qc.collecting = False
            self._play_music(qc)

    def _callback_rules(self, qc: QueuedCaller) -> Campaign:
        """The callback rules of `qc`'s campaign as they are now (an administrator's change
        reaches callers already waiting), the defaults without a campaign."""
        if qc.campaign is None:
            return DEFAULT_CALLBACK_RULES
        return self.campaigns.get(qc.campaign.name, qc.campaign)

    def _callback_refusal(self, number: str, rules: Campaign) -> str | None:
        """Why a callback to `number` is refused under `rules`: not a number allowed for
        callbacks (length, international prefix), or one already waiting for its callback (when
        ``callback_one_per_number``: a flood of requests cannot make the agents call one victim
        again and again)."""
        if (
            not (number.isascii() and number.isdigit())
            or not rules.callback_min_digits <= len(number) <= rules.callback_max_digits
            or (number.startswith("00") and not rules.callback_international)
        ):
            return "number-not-allowed"
        if rules.callback_one_per_number:
            waiting = [*self.callbacks.values(), *self.callers.values()]
            if any(other.callback_number == number for other in waiting):
                return "already-pending"
        return None

    def _hang_up(self, qc: QueuedCaller) -> None:
        service, call = self.service, qc.call
        qc.hangup_by = qc.hangup_by or "system"
        service.act(lambda now: service.ua.hangup(call, now))

    # -- offers and overflow ----------------------------------------------------------------

    def _offer(self, ev: OfferCall) -> None:
        qc = self.callers.get(ev.call_id)
        if qc is None:
            self.engine.offer_rejected(ev.call_id, ev.agent, self.now())
            return
        if not self._agents.offer_queued(qc, ev.agent, ev.queue, ev.waited):
            self.engine.offer_rejected(ev.call_id, ev.agent, self.now())

    def answered(self, call_id: str, agent: str) -> bool:
        """The agent answered the offer: the caller stops hearing music (this node's own
        engine; `answer_offer` for either)."""
        qc = self.callers.get(call_id)
        if qc is None or not self.engine.offer_answered(call_id, agent, self.now()):
            return False
        return self._connected(qc, agent)

    async def answer_offer(self, call_id: str, agent: str) -> bool:
        """`answered`, waiting for the cluster's ACD when it is shared: False when the offer
        no longer stands (answered elsewhere, the caller left)."""
        engine = self.engine
        if isinstance(engine, AcdEngine):
            return self.answered(call_id, agent)
        if call_id not in self.callers:
            return False
        if not await engine.decide(OfferAnswered(call_id, agent, self.now())):
            return False
        qc = self.callers.get(call_id)
        if qc is None or qc.ended:
            # the caller left while the answer went in: the engine has the call connected
            engine.call_completed(call_id, agent, self.now(), reason="caller")
            self.pump()
            return False
        return self._connected(qc, agent)

    def _connected(self, qc: QueuedCaller, agent: str) -> bool:
        qc.agent = agent
        qc.connected = self.now()
        qc.collecting = False
        self._stop_feed(qc)
        self.pump()
        return True

    def requeue(self, call_id: str, agent: str) -> None:
        """The agent's page went away mid-call: the caller goes back to the queue (music again,
        first in line among its priority) rather than being dropped."""
        qc = self.callers.get(call_id)
        if qc is None:
            return
        if qc.queue not in self.engine.config.queues:
            # The queue was deleted during the call: there is no place to go back to.
            event(logger, "queue-requeue-gone", call_id=call_id, queue=qc.queue, agent=agent)
            qc.hangup_by = "system"
            service, call = self.service, qc.call
            service.act(lambda now: service.ua.hangup(call, now))
            self._leave(qc, "queue-deleted")
            return
        now = self.now()
        self.engine.call_completed(call_id, agent, now, reason="agent-gone")
        qc.agent = ""
        qc.connected = None
        qc.call.app = self  # back from the agent
        self._listen_digits(qc)
        caller = qc.call.invite.from_
        self.engine.caller_enter(
            call_id,
            qc.queue,
            now,
            priority=1,
            caller_number=caller.uri.user or "",
            caller_name=caller.display_name or "",
        )
        event(logger, "queue-requeue", call_id=call_id, queue=qc.queue, agent=agent)
        self._play_music(qc)
        self.pump()

    def transferred(self, call_id: str, agent: str) -> None:
        """The agent's blind transfer went through: the call leaves the queue's books."""
        qc = self.callers.get(call_id)
        if qc is None:
            return
        self.engine.call_transferred(call_id, agent, "refer", self.now())
        qc.agent = ""
        qc.hangup_by = "transfer"
        self._agents.queued_call_ended(call_id, "transferred")
        service, call = self.service, qc.call
        service.act(lambda now: service.ua.hangup(call, now))
        self.callers.pop(call_id, None)
        qc.ended = True
        self._stop_feed(qc)
        self._record(qc, self.now(), "transferred")
        self._release_leg(qc.leg)
        self.pump()

    def set_disposition(self, call_id: str, disposition: str, notes: str) -> None:
        """The agent's disposition for a call: kept for its record, or its record is written
        again with it when the call has ended."""
        qc = self.callers.get(call_id) or self.callbacks.get(call_id)
        if qc is not None:
            qc.disposition = disposition
        record = self.records.get(call_id)
        if record is not None and self.store is not None:
            self.store.call_ended(replace(record, disposition=disposition, notes=notes))

    def rejected(self, call_id: str, agent: str) -> None:
        """The agent declined (or missed) the offer."""
        self.engine.offer_rejected(call_id, agent, self.now())
        self.pump()

    def rejoin(self, calls: list[str], agents: list[str]) -> None:
        """The cluster's ACD recorded these callers and agents of this node as lost (the node
        was taken for dead, and is not): the callers still waiting here enter their queue again
        (first among their priority), the agents whose page is still here log in again,
        paused ("node-rejoined"): their page shows it, they press Ready."""
        now = self.now()
        for call_id in calls:
            qc = self.callers.get(call_id)
            if qc is None or qc.ended or qc.agent:
                continue
            caller = qc.call.invite.from_
            self.engine.caller_enter(
                call_id,
                qc.queue,
                now,
                priority=1,
                caller_number=caller.uri.user or "",
                caller_name=caller.display_name or "",
            )
            event(logger, "queue-rejoin", call_id=call_id, queue=qc.queue)
        for agent in agents:
            if self._agents.connected(agent):
                self.engine.agent_login(agent, now, paused_reason="node-rejoined")
        self.pump()

    def remote_disposition(self, call_id: str, disposition: str, notes: str) -> None:
        """The disposition of another node's queue call (`call_id` there), given by an agent
        of this node: written to the shared store's record of that call, now and once more a
        few seconds later (the caller's node writes the record when its call ends, which may
        come after the agent's end)."""
        store = self.store
        if store is None:
            return
        sql = "UPDATE cdr SET disposition = ?, notes = ? WHERE call_id = ?"
        args = (disposition, notes, call_id)
        store.append_write(sql, args)
        self.call_later(REMOTE_DISPOSITION_AGAIN, store.append_write, sql, args)

    def remote_call_ended(self, call_id: str, agent: str, reason: str = "agent") -> None:
        """The agent's end of another node's queue caller ended here (`call_id` is the call on
        that node, which reports it too: the engine takes the first); `reason` as in the
        queue log (``agent-gone``: the page went away, that node requeues its caller)."""
        self.engine.call_completed(call_id, agent, self.now(), reason=reason)
        self.pump()

    def note_gaps(self, call_id: str, gaps: list[dict[str, float]], file: str) -> None:
        """Add a recording's pauses (PCI) to its call's record, a ``recording`` leg with its
        ``gaps`` and its ``file`` (a requeued call has one per segment): see `note_legs`."""
        self.note_legs(call_id, [{"role": "recording", "gaps": gaps, "file": file}])

    def note_legs(self, call_id: str, legs: list[dict[str, Any]]) -> None:
        """Add `legs` to a queue call's record: kept with the caller while it is still here (a
        requeued caller, one in a consultation, or one whose record is being written), else
        added to the record written already."""
        qc = self.callers.get(call_id)
        if qc is not None:
            qc.extra_legs.extend(legs)
            return
        record = self.records.get(call_id)
        if record is None or self.store is None:
            roles = sorted({str(leg.get("role", "")) for leg in legs})
            logger.warning("the %s legs of %s have no record to go to", "/".join(roles), call_id)
            return
        updated = replace(record, legs=(*record.legs, *legs))
        self.records[call_id] = updated
        self.store.call_ended(updated)

    def timed_out(self, call_id: str, agent: str) -> None:
        """The offer rang out where the agent is (another node's ring timeout)."""
        self.engine.offer_timeout(call_id, agent, self.now())
        self.pump()

    def _overflow(self, call_id: str, kind: DestinationKind, target: str, reason: str) -> None:
        qc = self.callers.get(call_id)
        if qc is None:
            return
        self.stats.overflowed += 1
        event(logger, "queue-overflow", call_id=call_id, kind=kind.value, target=target)
        service, call = self.service, qc.call
        if kind is DestinationKind.QUEUE:
            return  # the engine moved the caller itself
        if kind is DestinationKind.NUMBER:
            host = call.source.host
            host = f"[{host}]" if ":" in host else host
            refer_to = Address.parse(f"<sip:{target}@{host}:{call.source.port}>")
            service.act(lambda now: service.ua.refer(call, refer_to, now))
            qc.hangup_by = "transfer"
            return
        if kind is DestinationKind.AGENT:
            self._play(qc, ["all-agents-busy"], lambda: self._to_agent(qc, target))
            return
        if kind is DestinationKind.RECORD:
            self._play(qc, ["beep"], lambda: self._mailbox(qc, target))
            return
        prompt = target or "goodbye"
        self._play(qc, [prompt], lambda: self._hang_up(qc))

    def _to_agent(self, qc: QueuedCaller, agent: str) -> None:
        if not self._agents.offer_queued(qc, agent, qc.queue, self.now() - qc.entered, direct=True):
            self._play(qc, ["goodbye"], lambda: self._hang_up(qc))

    def _mailbox(self, qc: QueuedCaller, mailbox: str) -> None:
        """Record the caller until it hangs up (voicemail)."""
        if self.recordings is None or qc.ended:
            self._hang_up(qc)
            return
        day = time.strftime("%Y/%m/%d")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in mailbox or "mailbox")
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in qc.call.call_id)
        path = self.recordings / "mailboxes" / safe / day / f"{name}.wav"
        try:
            qc.mailbox = Mailbox(qc.leg, path)
        except (OSError, ValueError) as exc:
            logger.warning("cannot record mailbox %s: %s", mailbox, exc)
            return
        qc.recording = str(path)
        event(logger, "mailbox-recording", call_id=qc.call.call_id, mailbox=mailbox)
        qc.mailbox_timer = self.call_later(self.max_record_duration, self._mailbox_full, qc)

    def _mailbox_full(self, qc: QueuedCaller) -> None:
        """The voicemail reached `max_record_duration`: BYE, and the record says why."""
        qc.mailbox_timer = None
        if qc.ended or qc.mailbox is None:
            return
        event(
            logger,
            "recording-stopped",
            level=logging.WARNING,
            call_id=qc.call.call_id,
            reason="max-duration",
            limit=self.max_record_duration,
        )
        qc.hangup_by = "max-duration"
        qc.call.end_cause = "max-duration"
        self._hang_up(qc)

    def _release_leg(self, leg: RtpLeg) -> None:
        leg.close()
        self.pool.release(leg.pair)

    def _callback(self, ev: CallbackDial) -> None:
        qc = self.callbacks.get(ev.call_id)
        now = self.now()
        if qc is not None and now - qc.callback_at > self._callback_rules(qc).callback_expiry:
            event(
                logger,
                "queue-callback-expired",
                call_id=ev.call_id,
                number=qc.callback_number,
                waited=round(now - qc.callback_at),
            )
            self.engine.call_completed(ev.call_id, ev.agent, now, reason="callback-expired")
            self.callbacks.pop(ev.call_id, None)
            self.pump()
            return
        if qc is None or not self._agents.offer_callback(qc, ev):
            self.engine.call_completed(ev.call_id, ev.agent, self.now(), reason="callback-failed")
            self.callbacks.pop(ev.call_id, None)
            self.pump()

    async def callback_answered(self, call_id: str, agent: str) -> bool:
        """The agent took the callback offered to it (the number is dialled next): the engine's
        offer is answered and the agent is on the call. False when the offer no longer stands."""
        qc = self.callbacks.get(call_id)
        now = self.now()
        engine = self.engine
        if qc is None:
            return False
        if isinstance(engine, AcdEngine):
            if not engine.offer_answered(call_id, agent, now):
                return False
        else:
            if not await engine.decide(OfferAnswered(call_id, agent, now)):
                return False
        qc.agent = agent
        qc.connected = now
        self.pump()
        return True

    def callback_done(self, call_id: str, agent: str, answered: bool, cause: str) -> None:
        """A callback's outbound call ended (or never connected)."""
        qc = self.callbacks.pop(call_id, None)
        now = self.now()
        if answered:
            self.engine.call_completed(call_id, agent, now, reason=cause)
        else:
            self.engine.call_completed(call_id, agent, now, reason="callback-failed")
        if qc is not None:
            qc.agent = agent
            self._record(qc, now, f"callback-{cause}")
        self.pump()

    # -- agents -----------------------------------------------------------------------------

    def agent_login(self, agent: str) -> None:
        """An agent logged in on the page: paused until it presses Ready."""
        if agent in self.engine_agents:
            self.engine.agent_login(agent, self.now(), paused_reason="login")
            self.pump()

    def agent_logout(self, agent: str) -> None:
        """The agent's session ended."""
        if agent in self.engine_agents and self.agent_state(agent) is not AgentState.LOGGED_OUT:
            self.engine.agent_logout(agent, self.now())
            self.pump()

    def agent_ready(self, agent: str) -> None:
        """Ready (ends a pause, cuts wrap-up short)."""
        self.engine.agent_ready(agent, self.now())
        self.pump()

    def agent_pause(self, agent: str, reason: str) -> None:
        """Paused with `reason`."""
        self.engine.agent_pause(agent, reason, self.now())
        self.pump()

    def agent_state(self, agent: str) -> AgentState:
        """The engine's state of `agent`: the truth for an agent of the queues."""
        return self.engine.agent_status(agent).state

    @property
    def engine_agents(self) -> frozenset[str]:
        """The agents the engine knows."""
        return frozenset(self.engine.config.agents)

    def queue_summary(self) -> dict[str, Any]:
        """Live queue figures for the API."""
        now = self.now()
        result: dict[str, Any] = {}
        for name in self.engine.config.queues:
            status = self.engine.queue_status(name, now)
            result[name] = {
                "waiting": status.waiting,
                "ringing": status.ringing,
                "callbacks": status.callbacks,
                "longest_wait": round(status.longest_wait, 1),
                "members_logged_in": status.members_logged_in,
                "members_ready": status.members_ready,
                "members_busy": status.members_busy,
            }
        return result

    # -- supervision (the API) --------------------------------------------------------------

    def period(self, now: float) -> tuple[float, float]:
        """The statistics period `now` falls in: [start, end) of one bucket of the engine's
        statistics."""
        length = self.engine.statistics.period
        start = math.floor(now / length) * length
        return start, start + length

    def stats_span(self, span: tuple[float, float] | None, now: float) -> tuple[float, float]:
        """The buckets the figures cover: the current period when `span` is None, otherwise
        the whole buckets that [since, until) touches (an infinite `until`: up to now), from
        the oldest bucket the statistics still keep on (`Statistics.retained_since`): a span
        older than that is cut to its kept part, empty (start = end) when nothing is kept."""
        if span is None:
            return self.period(now)
        length = self.engine.statistics.period
        since, until = span
        until = min(until, now)
        start = math.floor(since / length) * length
        end = max(start + length, math.ceil(until / length) * length)
        kept = self.engine.statistics.retained_since
        if kept is not None and start < kept:
            start = min(kept, end)
        return start, end

    def stats_window(self, start: float, end: float) -> dict[str, Any]:
        """``start``, ``end`` and ``retained_since`` of a report's ``stats``."""
        return {"start": start, "end": end, "retained_since": self.engine.statistics.retained_since}

    def queue_report(self, span: tuple[float, float] | None = None) -> dict[str, dict[str, Any]]:
        """Every queue, live (callers, members by state) and over the current period (the
        engine's statistics) or the periods `span` touches (`stats_span`), by name."""
        now = self.now()
        start, end = self.stats_span(span, now)
        window = self.stats_window(start, end)
        statistics = self.engine.statistics
        report: dict[str, dict[str, Any]] = {}
        for name, config in self.engine.config.queues.items():
            status = self.engine.queue_status(name, now)
            by_state = {state.value: 0 for state in AgentState}
            members = []
            for member in config.members:
                agent = self.engine.agent_status(member.agent)
                by_state[agent.state.value] += 1
                members.append(
                    {
                        "agent": member.agent,
                        "penalty": member.penalty,
                        "state": agent.state.value,
                        "reason": agent.reason,
                    }
                )
            report[name] = {
                "queue": name,
                "strategy": config.strategy.value,
                "waiting": status.waiting,
                "ringing": status.ringing,
                "callbacks": status.callbacks,
                "longest_wait": round(status.longest_wait, 1),
                "members": members,
                "members_by_state": by_state,
                "stats": {
                    **window,
                    **queue_figures(statistics.queue(name, start, end), config.service_level),
                },
            }
        return report

    def agent_report(self, span: tuple[float, float] | None = None) -> dict[str, dict[str, Any]]:
        """Every agent of the queues: state, pause reason, since when, current call, and its
        figures over the current period or the periods `span` touches, by name."""
        now = self.now()
        start, end = self.stats_span(span, now)
        window = self.stats_window(start, end)
        report: dict[str, dict[str, Any]] = {}
        for name, config in self.engine.config.agents.items():
            status = self.engine.agent_status(name)
            call: dict[str, Any] | None = None
            if status.call_id:
                qc = self.callers.get(status.call_id) or self.callbacks.get(status.call_id)
                call = {
                    "call_id": status.call_id,
                    "queue": self.engine.call_queue(status.call_id),
                    "caller": (qc.call.invite.from_.uri.user or "") if qc is not None else "",
                    "callback": qc.callback_number if qc is not None else "",
                }
            report[name] = {
                "agent": name,
                "name": config.name,
                "state": status.state.value,
                "reason": status.reason,
                "since": status.since if status.since else None,
                "queues": list(status.queues),
                "connected": self._agents.connected(name),
                "call": call,
                "stats": {
                    **window,
                    **agent_figures(self.engine.statistics.agent(name, start, end)),
                },
            }
        return report

    def force_pause(self, agent: str, reason: str, supervisor: str) -> dict[str, Any]:
        """A supervisor pauses `agent` (at once, or at the end of its call); its page shows it.
        Raises `UnknownAgentError` (a KeyError) or `AgentStateError` (logged out)."""
        self.engine.force_pause(agent, reason, self.now(), supervisor=supervisor)
        self.pump()
        return self.agent_report()[agent]

    def force_unpause(self, agent: str, supervisor: str) -> dict[str, Any]:
        """A supervisor ends `agent`'s pause; its page shows it. Raises like `force_pause`."""
        self.engine.agent_unpause(agent, self.now())
        self.pump()
        event(logger, "agent-unpaused", agent=agent, by=supervisor)
        return self.agent_report()[agent]

    async def force_logout(self, agent: str, supervisor: str) -> dict[str, Any]:
        """A supervisor logs `agent` out: the engine first (the queue log says who), then its
        session (the page gets ``session-ended`` with reason ``forced-logout``). Raises like
        `force_pause`."""
        self.engine.force_logout(agent, self.now(), supervisor=supervisor)
        self.pump()
        await self._agents.log_out(agent, "forced-logout")
        return self.agent_report()[agent]


def queue_figures(counters: QueueCounters, service_level: float) -> dict[str, Any]:
    """A queue's counters over a span, as the API reports them (`QueueCounters` definitions)."""
    return {
        "offered": counters.entered,
        "answered": counters.answered,
        "abandoned": counters.abandoned,
        "overflowed": counters.overflowed,
        "callbacks": counters.callbacks,
        "completed": counters.completed,
        "transferred": counters.transferred,
        "service_level_seconds": service_level,
        "service_level": _rounded(counters.service_level, 4),
        "abandon_rate": _rounded(counters.abandon_rate, 4),
        "average_wait": _rounded(counters.average_wait, 1),
        "average_abandon_wait": _rounded(counters.average_abandon_wait, 1),
        "longest_wait_answered": round(counters.longest_wait_answered, 1),
        "average_handle_time": _rounded(counters.average_handle_time, 1),
    }


def agent_figures(counters: AgentCounters) -> dict[str, Any]:
    """An agent's counters over a span, as the API reports them."""
    return {
        "offers": counters.offers,
        "answered": counters.answered,
        "no_answers": counters.no_answers,
        "completed": counters.completed,
        "transferred": counters.transferred,
        "talk": round(counters.talk, 1),
        "paused": round(counters.paused, 1),
        "pauses": counters.pauses,
        "answer_rate": _rounded(counters.answer_rate, 4),
        "average_handle_time": _rounded(counters.average_handle_time, 1),
    }


def engine_log(entries: Iterable[QueueLogRow]) -> Iterator[QueueLogEntry]:
    """A stored queue log as the engine's entries, for `queueing.Statistics.from_log`; rows
    the engine did not write (``closed-at-restart``) are skipped."""
    for entry in entries:
        try:
            verb = LogEvent(entry.event)
        except ValueError:
            continue
        data = {k: v for k, v in entry.data.items() if isinstance(v, str | int | float)}
        yield QueueLogEntry(entry.time, entry.queue, entry.call_id, entry.agent, verb, data)


def _rounded(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


def default_music() -> Path | None:
    """The sound set's music on hold."""
    try:
        return sound_path("moh")
    except MediaFileError:
        return None
