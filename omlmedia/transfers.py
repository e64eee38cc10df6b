"""Consultations and transfers at the agent desk.

Transfers keep the caller inside the server whenever they can. A blind transfer to a queue or a
campaign hands the caller's leg to the ACD (`AcdRuntime.enter_answered`); to another agent it
rings that agent with the same leg (the caller hears music meanwhile); to a number it places a
call through a trunk (`dial_out`) and, once answered, joins the two SIP legs with a
`MediaBridge` (a `JoinedCall`, passthrough or transcoding) until either side hangs up, when the
other gets a BYE. Without `dial_out` a number is REFERred to the caller's side (RFC 3515). An
attended transfer holds the caller (music), places a consultation call the agent talks to, and
then either joins the two parties the same way (complete) or hangs the consultation up and goes
back to the held caller (cancel).

Consulting another agent (``to`` names an agent the way a blind transfer does; it must be
logged in and Ready) needs no SIP at all. The consultation is one call id with a side for each
agent: the consulting agent's (``consult``, `AgentCall.consult_of` the held call) and the
consulted agent's (``consult-in``, its page rings showing who consults and for which caller,
`CallInfo.consult_for`); `AgentCall.peer` links the two, and whatever ends one side ends the
other (the consulting agent's page gets the reason: ``declined``, ``no-answer`` after the ring
timeout, ``hangup``, ``agent-logout``...). On Answer the two agent channels are joined
browser to browser through two short frame queues (`webrtc.webcaller.join_audio`, as a web
caller is joined to an agent). Complete: the held caller becomes the consulted agent's call
(its leg, its `CallInfo`: caller, queue or campaign), shown on that page as answered at once
(`AgentHub.call_joined`); a queue's caller leaves the queue's books as in a blind transfer
(queue log ``transfer``, call record ``transferred``); the consulting agent goes to wrap-up.
Completed while the consulted agent's page still rings, the caller rings it instead (music
meanwhile), as in a blind transfer. Cancel, or either agent hanging up: both sides end, the
consulting agent is back with the held caller (still held), the consulted agent back to Ready
(a consultation gets no wrap-up: no caller of its own).

When the held caller hangs up during a consultation with an agent: while the consulted page
still rings, the consultation is withdrawn (``caller-gone`` on both pages: nobody is disturbed
for a caller who left) and the consulting agent goes to wrap-up; once the agents talk, their
conversation goes on as an ordinary call between them (the page shows the caller's call ended;
there is nothing left to complete or cancel) until either hangs up, then the consulting agent
goes to wrap-up and the consulted one back to Ready. A consultation with a number behaves the
same once it is up, and keeps ringing otherwise (its far end is not one of our agents).

Consulting a queue is refused (``bad-target``): a consultation has no SIP leg, and the ACD
runtime (`omlmedia.acd`) queues only SIP callers with an RtpLeg, logging and recording each
as a customer call.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import replace

from media.feed import LegFeed
from media.leg import RtpLeg
from media.ports import PortsExhausted
from omlmedia.config import Campaign, RouteAction
from omlmedia.desk import DIALABLE, AgentCall, Desk, JoinedCall
from omlmedia.logs import event
from omlmedia.services import CAPABILITIES
from queueing.events import AgentState
from sip.message import Address
from sip.sdp import MediaCapabilities, create_offer
from sip.ua import Call
from webrtc.channel import AgentChannel
from webrtc.exceptions import CommandError
from webrtc.signaling import CallInfo

logger = logging.getLogger(__name__)

__all__ = ["Transfers"]


class Transfers(Desk):
    """Blind and attended transfers, and consultations, of the desk's calls."""

    async def transfer_blind(self, agent: str, call_id: str, to: str) -> None:
        """Send the caller to `to`: a queue or campaign (the ACD takes its leg), another agent
        (rung with the same leg), or a number (called through a trunk and joined to the
        caller; REFER to the caller's side when the desk cannot place calls)."""
        ac = self._transferable(agent, call_id, to)
        destination = self._destination(to)
        if destination is None and not DIALABLE.fullmatch(to):
            raise CommandError("bad-target", "not a number, queue or agent")
        self.stats.transfers += 1
        event(logger, "agent-transfer", call_id=call_id, agent=agent, to=to, kind="blind")
        if destination is not None:
            self._move(ac, *destination)
            return
        if self.dial_out is None:
            self._refer(ac, to)
            return
        leg = await self._acquire_leg()
        offer = self._offer_for(leg)
        target = self.dial_out(to, "", offer, None)
        if target is None:
            self.release_leg(leg)
            raise CommandError("no-trunk", "the number cannot be reached")
        target.app = self
        if self.calls.get((call_id, agent)) is not ac:
            self.service_hangup(target)
            self.release_leg(leg)
            raise CommandError("gone", "the caller hung up")
        joined = self._take_caller(ac, target, leg, offer, "blind", f"number:{to}")
        self._ringing_music(joined)
        self._finish(ac, "transferred")

    def _ringing_music(self, joined: JoinedCall) -> None:
        """The caller hears music while the party it was transferred to rings."""
        if self.hold_music is None:
            return
        try:
            joined.music = LegFeed(joined.caller_leg, self.hold_music, loop=True)
            joined.music.start()
        except (ValueError, OSError) as exc:
            logger.warning("no music for %s while the transfer rings: %s", joined.call_id, exc)
            joined.music = None

    def _transferable(self, agent: str, call_id: str, to: str) -> AgentCall:
        ac = self._answered(agent, call_id)
        if ac.call is None or ac.leg is None or ac.consult_of or ac.callback:
            raise CommandError("unsupported", "this call cannot be transferred")
        if not to or len(to) > 64 or any(c in to for c in " <>\"'\r\n;"):
            raise CommandError("bad-target", "not a number, queue or agent")
        return ac

    def _destination(self, to: str) -> tuple[RouteAction, str, Campaign | None] | None:
        """What `to` names inside the server: an agent, a queue or a campaign."""
        found = self.route(to) if self.route is not None else None
        if found is None:
            agent = self.resolve(to)
            if agent is not None:
                found = (RouteAction.AGENT, agent)
            elif self.acd is not None and to in self.acd.campaigns:
                found = (RouteAction.CAMPAIGN, to)
            elif self.acd is not None and to in self.acd.engine.config.queues:
                found = (RouteAction.QUEUE, to)
        if found is None:
            return None
        action, name = found
        if action is RouteAction.AGENT:
            return action, name, None
        if self.acd is None:
            return None
        if action is RouteAction.CAMPAIGN:
            campaign = self.acd.campaigns.get(name)
            return (action, campaign.queue, campaign) if campaign is not None else None
        if action is RouteAction.QUEUE and name in self.acd.engine.config.queues:
            return action, name, None
        return None

    def _move(
        self, ac: AgentCall, action: RouteAction, name: str, campaign: Campaign | None
    ) -> None:
        """Hand the caller's leg to a queue, or ring another agent with it."""
        assert ac.call is not None and ac.leg is not None
        if action is RouteAction.AGENT:
            if name == ac.agent or self.state(name) is not AgentState.READY:
                raise CommandError("unavailable", f"{name} cannot take a call now")
        call, leg = ac.call, ac.leg
        sdp, session_id, version = ac.local_sdp, ac.session_id, ac.version
        if ac.queued is not None:
            assert self.acd is not None
            qc = self.acd.hand_over(ac.call_id, ac.agent, f"{action.value}:{name}")
            if qc is None:
                raise CommandError("gone", "the caller hung up")
            sdp = qc.answer_sdp
        self._let_go(ac)
        self._finish(ac, "transferred")
        if action is RouteAction.AGENT:
            self._offer_answered(call, leg, name, ac.info, sdp, session_id, version)
        else:
            assert self.acd is not None
            self.acd.enter_answered(call, leg, name, campaign, sdp)

    def _let_go(self, ac: AgentCall) -> None:
        """The agent lets go of the caller's leg (someone else takes it): no music, no port."""
        if ac.music is not None:
            ac.music.stop()
            ac.music = None
        self._detach(ac, "transferred")
        if ac.port is not None:
            ac.port.close()
            ac.port = None
        ac.leg = None
        ac.call = None

    def _offer_answered(
        self,
        call: Call,
        leg: RtpLeg,
        agent: str,
        info: CallInfo,
        sdp: bytes,
        session_id: int,
        version: int,
    ) -> None:
        """Ring `agent` with a caller already answered (a transfer): music until Answer."""
        info = replace(info, queue=f"transfer from {info.queue}" if info.queue else "transfer")
        ac = AgentCall(
            call_id=call.call_id,
            call=call,
            agent=agent,
            info=info,
            offered_at=self.clock(),
            leg=leg,
            local_sdp=sdp,
            session_id=session_id,
            version=version,
        )
        self.calls[(call.call_id, agent)] = ac
        call.app = self
        if not self.hub.offer_call(agent, info):
            self._end_call(ac, "unavailable")
            return
        self._hold_engine(agent)
        self.stats.offered += 1
        if self.hold_music is not None:
            try:
                ac.music = LegFeed(leg, self.hold_music, loop=True)
                ac.music.start()
            except (ValueError, OSError) as exc:
                logger.warning("no music for %s while it rings: %s", call.call_id, exc)
        ac.ring_timer = self.call_later(self.ring_timeout, self._ring_timeout, ac)
        self._set_state(agent, AgentState.RINGING)
        event(logger, "agent-offered", call_id=call.call_id, agent=agent, queue=info.queue)

    def _refer(self, ac: AgentCall, to: str) -> None:
        """REFER the caller's side to `to` (RFC 3515): the PBX that sent the call takes it."""
        assert ac.call is not None
        call = ac.call
        host = call.source.host
        host = f"[{host}]" if ":" in host else host
        try:
            target = Address.parse(f"<sip:{to}@{host}:{call.source.port}>")
        except ValueError:
            raise CommandError("bad-target", "not a number or extension") from None
        service = self.service
        service.act(lambda now: service.ua.refer(call, target, now))

    async def _acquire_leg(self) -> RtpLeg:
        try:
            return RtpLeg(await self.pool.acquire())
        except (PortsExhausted, OSError):
            raise CommandError("no-ports", "no media port is free") from None

    def _offer_for(self, leg: RtpLeg) -> bytes:
        return bytes(
            create_offer(
                MediaCapabilities(CAPABILITIES.codecs, rtcp_mux=False),
                secrets.randbelow(2**31) + 1,
                0,
                self.media_host,
                leg.port,
            )
        )

    def _take_caller(
        self,
        ac: AgentCall,
        target: Call,
        target_leg: RtpLeg,
        target_sdp: bytes,
        kind: str,
        destination: str,
    ) -> JoinedCall:
        """The caller of `ac` leaves the agent for `target` (its leg and session with it); a
        queue's caller leaves the queue's books for `destination`."""
        assert ac.call is not None and ac.leg is not None
        caller, leg, sdp = ac.call, ac.leg, ac.local_sdp
        if ac.queued is not None:
            assert self.acd is not None
            qc = self.acd.hand_over(ac.call_id, ac.agent, destination)
            sdp = qc.answer_sdp if qc is not None else sdp
        self._let_go(ac)
        joined = JoinedCall(ac.call_id, caller, leg, sdp, target, target_leg, target_sdp, kind)
        self.joined.append(joined)
        return joined

    async def transfer_attended_consult(self, agent: str, call_id: str, to: str) -> CallInfo:
        """Hold the caller (music) and consult `to`: another agent (its page rings, see the
        module docstring) or a number called through a trunk; the agent talks to it."""
        ac = self._transferable(agent, call_id, to)
        if self._consult_for(ac) is not None:
            raise CommandError("busy", "a consultation is already in progress")
        destination = self._destination(to)
        if destination is not None:
            action, name, _ = destination
            if action is not RouteAction.AGENT:
                raise CommandError(
                    "bad-target", "a queue cannot be consulted: consult an agent or a number"
                )
            info = await self._consult_agent(ac, name)
            event(logger, "agent-transfer", call_id=call_id, agent=agent, to=to, kind="consult")
            return info
        if not DIALABLE.fullmatch(to):
            raise CommandError("bad-target", "not a number, queue or agent")
        await self.hold(agent, call_id)
        consult_id = f"consult-{secrets.token_hex(8)}"
        info = CallInfo(call_id=consult_id, caller_number=to, direction="consult")
        consult = AgentCall(
            call_id=consult_id,
            call=None,
            agent=agent,
            info=info,
            offered_at=self.clock(),
            callback=to,
            consult_of=call_id,
        )
        self.calls[(consult_id, agent)] = consult
        try:
            await self._dial_for(consult)
        except CommandError:
            self.calls.pop((consult_id, agent), None)
            raise
        event(logger, "agent-transfer", call_id=call_id, agent=agent, to=to, kind="consult")
        return info

    async def _consult_agent(self, ac: AgentCall, target: str) -> CallInfo:
        """Ring `target`'s page with a consultation about the caller of `ac` (held)."""
        agent = ac.agent
        if target == agent or self.state(target) is not AgentState.READY:
            raise CommandError("unavailable", f"{target} cannot take a call now")
        held = ac.info
        about = held.caller_number or "unknown"
        if held.caller_name:
            about += f" ({held.caller_name})"
        consult_id = f"consult-{secrets.token_hex(8)}"
        now = self.clock()
        incoming = AgentCall(
            call_id=consult_id,
            call=None,
            agent=target,
            info=CallInfo(
                call_id=consult_id,
                caller_number=agent,
                caller_name=self.hub.display_name(agent),
                queue=held.queue,
                direction="consult-in",
                consult_for=about,
            ),
            offered_at=now,
            peer=agent,
        )
        if not self.hub.offer_call(target, incoming.info):
            raise CommandError("unavailable", f"{target} cannot take a call now")
        outgoing = AgentCall(
            call_id=consult_id,
            call=None,
            agent=agent,
            info=CallInfo(
                call_id=consult_id,
                caller_number=target,
                caller_name=self.hub.display_name(target),
                queue=held.queue,
                direction="consult",
                consult_for=about,
            ),
            offered_at=now,
            consult_of=ac.call_id,
            peer=target,
        )
        self.calls[(consult_id, target)] = incoming
        self.calls[(consult_id, agent)] = outgoing
        self._hold_engine(target)
        incoming.ring_timer = self.call_later(self.ring_timeout, self._ring_timeout, incoming)
        self._set_state(target, AgentState.RINGING)
        await self.hold(agent, ac.call_id)
        event(logger, "agent-consult-offered", call_id=consult_id, agent=target, by=agent)
        return outgoing.info

    def _complete_to_agent(self, ac: AgentCall, consult: AgentCall) -> None:
        """The held caller of `ac` becomes the consulted agent's call; the agent leaves."""
        target = consult.peer
        incoming = self.calls.get((consult.call_id, target))
        if incoming is None or ac.call is None or ac.leg is None:
            raise CommandError("bad-state", "no consultation in progress for this call")
        channel = self.hub.channel(target)
        answered = incoming.answered_at is not None
        if answered and not isinstance(channel, AgentChannel):
            raise CommandError("no-channel", f"{target} has no audio channel")
        call, leg = ac.call, ac.leg
        sdp, session_id, version = ac.local_sdp, ac.session_id, ac.version
        if ac.queued is not None:
            assert self.acd is not None
            qc = self.acd.hand_over(ac.call_id, ac.agent, f"agent:{target}")
            if qc is None:
                raise CommandError("gone", "the caller hung up")
            sdp = qc.answer_sdp
        self.stats.transfers += 1
        event(
            logger, "agent-transfer", call_id=ac.call_id, agent=ac.agent, to=target, kind="attended"
        )
        self._let_go(ac)
        self._finish(consult, "transferred", settle=False)  # both sides of the consultation
        if answered and isinstance(channel, AgentChannel):
            taken = AgentCall(
                call_id=call.call_id,
                call=call,
                agent=target,
                info=ac.info,
                offered_at=self.clock(),
                leg=leg,
                local_sdp=sdp,
                session_id=session_id,
                version=version,
            )
            self.calls[(call.call_id, target)] = taken
            self.hub.call_joined(target, taken.info)
            self._join(taken, channel)
            self._set_state(target, AgentState.ON_CALL)
        else:
            # Completed while the consulted page rings: the caller rings it (music meanwhile).
            self._offer_answered(call, leg, target, ac.info, sdp, session_id, version)
        self._finish(ac, "transferred")

    async def transfer_attended_complete(self, agent: str, call_id: str) -> None:
        """Join the held caller and the consulted party; the agent leaves both."""
        ac = self._answered(agent, call_id)
        consult = self._consult_for(ac)
        if consult is not None and consult.peer:
            self._complete_to_agent(ac, consult)
            return
        if consult is None or consult.outbound is None or consult.leg is None:
            raise CommandError("bad-state", "no consultation in progress for this call")
        target, leg, offer = consult.outbound, consult.leg, consult.local_sdp
        answered = consult.answered_at is not None
        self._let_go(consult)
        consult.outbound = None
        self._finish(consult, "transferred", settle=False)
        joined = self._take_caller(ac, target, leg, offer, "attended", f"number:{consult.callback}")
        self.stats.transfers += 1
        event(
            logger,
            "agent-transfer",
            call_id=call_id,
            agent=agent,
            to=consult.callback,
            kind="attended",
        )
        if not answered:
            self._ringing_music(joined)  # completed while it rings: joined when it answers
        elif not self._bridge(joined):
            self._unjoin(joined, None, "codecs")
        self._finish(ac, "transferred")

    async def transfer_attended_cancel(self, agent: str, call_id: str) -> None:
        """Hang up the consultation and go back to the held caller (still held)."""
        ac = self._answered(agent, call_id)
        consult = self._consult_for(ac)
        if consult is None:
            raise CommandError("bad-state", "no consultation in progress for this call")
        outbound, consult.outbound = consult.outbound, None
        self._finish(consult, "consult-cancelled")  # back to the held caller
        if outbound is not None:
            self.service_hangup(outbound)
        event(logger, "agent-transfer-cancelled", call_id=call_id, agent=agent)

    def on_transfer_outcome(self, call: Call, status: int) -> None:
        """NOTIFY of a REFER we sent: a 2xx sipfrag means the PBX has the caller; we hang up."""
        carrier = self._by_sip(call)  # another node's queue caller: known by its call id there
        for ac in self._for_call(carrier.call_id if carrier is not None else call.call_id):
            if not 200 <= status < 300:
                continue
            if ac.queued is not None and self.acd is not None:
                self.acd.transferred(ac.call_id, ac.agent)
            else:
                self._end_call(ac, "transferred")
