"""The agent desk: SIP calls delivered to browser agents, through their open agent channel.

The desk is the server side of the agent page (`webrtc.signaling.CallControl`). It keeps each
logged-in agent's state, rings an agent with a SIP call (`offer`: 180 to the caller, an incoming
call on the page, a ring timeout), and on Answer binds an RtpLeg for the caller, answers the
INVITE and joins the leg to the agent's channel through a `PcmPort`: the channel's 20 ms clock
pulls the caller's audio out of a capped jitter buffer and pushes the agent's audio into the leg.
No ICE or DTLS happens at answer time: the channel was set up at login.

Hold plays music on hold to the caller (the agent hears nothing); mute stops the agent's audio;
the DTMF pad sends RFC 4733 events on the SIP leg, and digits from the caller (RFC 4733 or SIP
INFO) are shown on the page. A blind transfer sends REFER to the caller's side (RFC 3515): the PBX
that sent the call takes it back to the extension. Hanging up on either side ends the call on the
other and puts the agent in wrap-up for `wrapup_time` seconds, then back to Ready.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from omlmedia.logs import event
from omlmedia.media.feed import LegFeed
from omlmedia.media.leg import RtpLeg, leg_format
from omlmedia.media.pcmport import PcmPort
from omlmedia.media.ports import PortsExhausted, RtpSocketPool
from omlmedia.media.services import CAPABILITIES
from omlmedia.media.srtp import SrtpSession, is_usable, offer_crypto
from sip.message import Address, Request
from sip.sdp import (
    MediaCapabilities,
    OfferAnswerError,
    SDPError,
    SessionDescription,
    negotiate,
)
from sip.transaction import ServerTransaction
from sip.ua import Call, CallState
from webrtc.channel import AgentChannel
from webrtc.exceptions import CommandError
from webrtc.signaling import AgentHub, AgentState, CallInfo
from webrtc.webcaller import WebCaller, WebCallerHub, WebCallerInfo

if TYPE_CHECKING:
    from sip.service import SipService

logger = logging.getLogger(__name__)

__all__ = ["AgentCall", "AgentDesk"]

Samples = npt.NDArray[np.int16]


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
    ring_timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    disposition: str = ""
    notes: str = ""
    local_sdp: bytes = b""
    session_id: int = 0
    version: int = 0
    web: WebCaller | None = None


@dataclass
class DeskStats:
    """What the desk did, for the API."""

    offered: int = 0
    answered: int = 0
    unanswered: int = 0
    refused: int = 0
    transfers: int = 0


class AgentDesk:
    """Agents' states and calls; the `CallControl` of the agent hub."""

    def __init__(
        self,
        pool: RtpSocketPool,
        media_host: str,
        *,
        ring_timeout: float = 30.0,
        wrapup_time: float = 5.0,
        hold_music: Path | None = None,
        max_delay_ms: int = 60,
    ) -> None:
        self.pool = pool
        self.media_host = media_host
        self.ring_timeout = ring_timeout
        self.wrapup_time = wrapup_time
        self.hold_music = hold_music
        self.max_delay_ms = max_delay_ms
        self.hub: AgentHub | None = None
        self.service: SipService | None = None
        self.states: dict[str, tuple[AgentState, str | None, float]] = {}
        """Logged-in agents: state, pause reason, since (wall clock)."""
        self.calls: dict[str, AgentCall] = {}
        """By call id."""
        self.stats = DeskStats()
        self.web: WebCallerHub | None = None
        """The web callers' side of the socket, when web calls are enabled."""
        self.resolve: Callable[[str], str | None] = lambda target: None
        """The agent a web caller's target rings (the router's `agent` routes)."""
        self.on_call_done: Callable[[AgentCall, str], None] | None = None
        """Told of every ended agent call (for call records)."""
        self._wrapups: dict[str, asyncio.TimerHandle] = {}

    # -- agent states -----------------------------------------------------------------------

    def state(self, agent: str) -> AgentState:
        """The agent's state (logged out when not logged in)."""
        entry = self.states.get(agent)
        return entry[0] if entry is not None else AgentState.LOGGED_OUT

    def _set_state(self, agent: str, state: AgentState, reason: str | None = None) -> None:
        if state is AgentState.LOGGED_OUT:
            self.states.pop(agent, None)
        else:
            self.states[agent] = (state, reason, time.time())
        event(logger, "agent-state", agent=agent, state=state.value, reason=reason)
        if self.hub is not None and state is not AgentState.LOGGED_OUT:
            self.hub.state_changed(agent, state, reason)

    def _call_of(self, agent: str, call_id: str) -> AgentCall:
        ac = self.calls.get(call_id)
        if ac is None or ac.agent != agent:
            raise CommandError("unknown-call", "no such call for this agent")
        return ac

    async def agent_logged_in(self, agent: str) -> None:
        """A new session: the agent starts paused, until they press Ready."""
        self._set_state(agent, AgentState.PAUSED, "login")

    async def agent_gone(self, agent: str, reason: str) -> None:
        """Logout, a closed tab past the grace period, or an expired session: end its calls."""
        for ac in [c for c in self.calls.values() if c.agent == agent]:
            self._end_call(ac, f"agent-{reason}")
        timer = self._wrapups.pop(agent, None)
        if timer is not None:
            timer.cancel()
        self._set_state(agent, AgentState.LOGGED_OUT)

    async def set_agent_state(self, agent: str, state: AgentState, reason: str | None) -> None:
        """Ready or paused, from the page (not while a call is ringing or carried)."""
        if state not in (AgentState.READY, AgentState.PAUSED):
            raise CommandError("bad-state", "only ready and paused can be chosen")
        if any(c.agent == agent for c in self.calls.values()):
            raise CommandError("busy", "finish the call first")
        timer = self._wrapups.pop(agent, None)
        if timer is not None:
            timer.cancel()
        self._set_state(agent, state, reason if state is AgentState.PAUSED else None)

    # -- calls from the router --------------------------------------------------------------

    def offer(self, call: Call, agent: str, queue: str = "", wait: float = 0.0) -> int | None:
        """Ring `agent` with `call`; the SIP status to refuse with when that cannot be."""
        assert self.service is not None
        if self.hub is None or self.state(agent) is not AgentState.READY:
            self.stats.refused += 1
            return 480
        if not call.remote_sdp:
            self.stats.refused += 1
            return 488
        caller = call.invite.from_
        info = CallInfo(
            call_id=call.call_id,
            caller_number=caller.uri.user or "",
            caller_name=caller.display_name or "",
            queue=queue or f"agent-{agent}",
            wait_seconds=wait,
        )
        ac = AgentCall(
            call_id=call.call_id, call=call, agent=agent, info=info, offered_at=time.time()
        )
        if not self.hub.offer_call(agent, info):
            self.stats.refused += 1
            return 480
        self.calls[call.call_id] = ac
        self.stats.offered += 1
        service = self.service
        service.act(lambda now: service.ua.ring(call, now))
        ac.ring_timer = asyncio.get_running_loop().call_later(
            self.ring_timeout, self._ring_timeout, ac
        )
        self._set_state(agent, AgentState.RINGING)
        event(logger, "agent-offered", call_id=call.call_id, agent=agent, queue=info.queue)
        return None

    def owns(self, call: Call) -> bool:
        """True when the desk carries `call`."""
        return call.call_id in self.calls

    def _ring_timeout(self, ac: AgentCall) -> None:
        if ac.answered_at is None and self.calls.get(ac.call_id) is ac:
            self.stats.unanswered += 1
            event(logger, "agent-no-answer", call_id=ac.call_id, agent=ac.agent)
            self._end_call(ac, "no-answer", status=480)

    def on_ended(self, call: Call, cause: str) -> None:
        """The caller hung up (or the call failed)."""
        ac = self.calls.get(call.call_id)
        if ac is not None:
            self._finish(ac, cause)

    # -- web callers (`webrtc.webcaller.WebCallControl`) --------------------------------------

    async def web_call(self, target: str, caller: WebCallerInfo) -> str:
        """A website visitor calls `target`: ring the agent it names (as for a SIP caller)."""
        agent = self.resolve(target)
        if agent is None or self.hub is None or self.state(agent) is not AgentState.READY:
            self.stats.refused += 1
            raise CommandError("unavailable", "nobody can take the call now")
        call_id = f"web-{secrets.token_hex(8)}"
        info = CallInfo(
            call_id=call_id,
            caller_number="web",
            caller_name=caller.name or "Web visitor",
            queue=target,
            direction="inbound",
        )
        if not self.hub.offer_call(agent, info):
            self.stats.refused += 1
            raise CommandError("unavailable", "nobody can take the call now")
        ac = AgentCall(
            call_id=call_id,
            call=None,
            agent=agent,
            info=info,
            offered_at=time.time(),
            web=caller.media,
        )
        self.calls[call_id] = ac
        self.stats.offered += 1
        ac.ring_timer = asyncio.get_running_loop().call_later(
            self.ring_timeout, self._ring_timeout, ac
        )
        self._set_state(agent, AgentState.RINGING)
        if self.web is not None:
            self.web.web_call_ringing(call_id)
        event(
            logger,
            "agent-offered",
            call_id=call_id,
            agent=agent,
            queue=target,
            source="web",
            video=caller.video,
        )
        return call_id

    async def web_hangup(self, call_id: str) -> None:
        """The visitor hung up or closed the page."""
        ac = self.calls.get(call_id)
        if ac is not None and ac.web is not None:
            self._finish(ac, "caller-hangup")

    async def web_dtmf(self, call_id: str, digit: str) -> None:
        """The visitor pressed a key: shown to the agent."""
        ac = self.calls.get(call_id)
        if ac is not None and ac.web is not None and self.hub is not None:
            self.hub.dtmf_received(ac.agent, call_id, digit)

    def _answer_web(self, ac: AgentCall) -> None:
        """Join the visitor's peer connection and the agent's channel: audio through two short
        frame queues (at most 60 ms each way), video relayed as encoded VP8 frames."""
        assert self.hub is not None and ac.web is not None
        channel = self.hub.channel(ac.agent)
        if not isinstance(channel, AgentChannel):
            raise CommandError("no-channel", "the agent channel is not connected")
        to_agent: deque[Samples] = deque(maxlen=3)
        to_caller: deque[Samples] = deque(maxlen=3)

        def caller_source() -> Samples | None:
            return to_caller.popleft() if to_caller and not ac.held else None

        def agent_source() -> Samples | None:
            return to_agent.popleft() if to_agent and not ac.held else None

        def from_agent(frame: Samples) -> None:
            if not ac.muted:
                to_caller.append(frame)

        ac.web.attach(caller_source, to_agent.append)
        channel.attach(agent_source, from_agent)
        channel.attach_video(ac.web.video_in)
        if ac.ring_timer is not None:
            ac.ring_timer.cancel()
        ac.answered_at = time.time()
        self.stats.answered += 1
        if self.web is not None:
            self.web.web_call_answered(ac.call_id)
        self._set_state(ac.agent, AgentState.ON_CALL)
        self.hub.call_answered(ac.agent, ac.call_id)
        event(logger, "agent-answered", call_id=ac.call_id, agent=ac.agent, source="web")

    def on_dtmf(self, call: Call, digit: str) -> None:
        """A digit from the caller by SIP INFO."""
        ac = self.calls.get(call.call_id)
        if ac is not None and self.hub is not None:
            self.hub.dtmf_received(ac.agent, call.call_id, digit)

    # -- commands from the page -------------------------------------------------------------

    async def answer(self, agent: str, call_id: str) -> None:
        """Answer the ringing call and join it to the agent's channel."""
        assert self.service is not None and self.hub is not None
        ac = self._call_of(agent, call_id)
        if ac.answered_at is not None:
            return
        if ac.web is not None:
            self._answer_web(ac)
            return
        call = ac.call
        assert call is not None
        if call.state is not CallState.OFFERED:
            raise CommandError("gone", "the caller hung up")
        channel = self.hub.channel(agent)
        if not isinstance(channel, AgentChannel):
            raise CommandError("no-channel", "the agent channel is not connected")
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
        if self.calls.get(call_id) is not ac or call.state is not CallState.OFFERED:
            self._release(ac)
            raise CommandError("gone", "the caller hung up")
        try:
            answer = negotiate(
                offer,
                CAPABILITIES,
                self.media_host,
                leg.port,
                session_id=secrets.randbelow(2**31) + 1,
                version=0,
                crypto=offer_crypto(),
                accept_crypto=is_usable,
            )
            stream = answer.audio
            leg.srtp = SrtpSession.for_stream(stream)
            leg.set_format(leg_format(stream, CAPABILITIES.codecs), stream.rtcp_mux)
            leg.set_remote(stream.remote_address, stream.remote_port, stream.remote_rtcp_port)
            port = PcmPort(
                leg,
                48000,
                max_delay_ms=self.max_delay_ms,
                on_digit=lambda digit, _ms: self.on_dtmf(call, digit),
            )
        except (OfferAnswerError, ValueError) as exc:
            self._end_call(ac, "codecs", status=488)
            raise CommandError("bad-call", f"cannot answer: {exc}") from None
        ac.port = port
        loop = asyncio.get_running_loop()

        def source() -> Samples | None:
            if ac.held:
                return None
            return port.read(loop.time())

        def sink(frame: Samples) -> None:
            port.write(None if ac.muted or ac.held else frame)

        channel.attach(source, sink)
        if ac.ring_timer is not None:
            ac.ring_timer.cancel()
        ac.answered_at = time.time()
        self.stats.answered += 1
        body = bytes(answer.description)
        ac.local_sdp = body
        ac.session_id = answer.description.origin.session_id
        service = self.service
        service.act(lambda now: service.ua.answer(call, body, now))
        self._set_state(agent, AgentState.ON_CALL)
        self.hub.call_answered(agent, call_id)
        event(
            logger,
            "agent-answered",
            call_id=call_id,
            agent=agent,
            codec=stream.codec.encoding_name,
            srtp=leg.srtp is not None,
        )

    async def hangup(self, agent: str, call_id: str) -> None:
        """The agent ends the call (or declines it while ringing)."""
        ac = self._call_of(agent, call_id)
        self._end_call(ac, "agent-hangup", status=486 if ac.answered_at is None else 0)

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
        assert self.hub is not None
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
        assert self.hub is not None
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

    async def transfer_blind(self, agent: str, call_id: str, to: str) -> None:
        """REFER the caller's side to `to` (RFC 3515): the PBX takes the call back."""
        assert self.service is not None
        ac = self._answered(agent, call_id)
        call = ac.call
        if call is None:
            raise CommandError("unsupported", "a web call cannot be transferred yet")
        if not to or any(c in to for c in " <>\"'\r\n;") or len(to) > 64:
            raise CommandError("bad-target", "not a number or extension")
        host = call.source.host
        host = f"[{host}]" if ":" in host else host
        try:
            target = Address.parse(f"<sip:{to}@{host}:{call.source.port}>")
        except ValueError:
            raise CommandError("bad-target", "not a number or extension") from None
        service = self.service
        service.act(lambda now: service.ua.refer(call, target, now))
        self.stats.transfers += 1
        event(logger, "agent-transfer", call_id=call_id, agent=agent, to=to, kind="blind")

    async def transfer_attended_consult(self, agent: str, call_id: str, to: str) -> CallInfo:
        """Consultation calls need outbound agent calls, which come with the dialer."""
        raise CommandError("unsupported", "attended transfer is not available yet")

    async def transfer_attended_complete(self, agent: str, call_id: str) -> None:
        raise CommandError("unsupported", "attended transfer is not available yet")

    async def transfer_attended_cancel(self, agent: str, call_id: str) -> None:
        raise CommandError("unsupported", "attended transfer is not available yet")

    async def dial(self, agent: str, number: str) -> CallInfo:
        """Manual outbound calls come with the dialer."""
        raise CommandError("unsupported", "manual outbound calls are not available yet")

    async def set_disposition(self, agent: str, call_id: str, disposition: str, notes: str) -> None:
        """Remember the disposition and notes of the agent's last call."""
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
        assert self.service is not None
        service = self.service
        ac = self.calls.get(call.call_id)
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
        crypto = offer_crypto()
        if isinstance(leg.srtp, SrtpSession):
            crypto = (leg.srtp.local, *crypto)
        try:
            offer = SessionDescription.parse(request.body)
            answer = negotiate(
                offer,
                MediaCapabilities(current, rtcp_mux=False),
                self.media_host,
                leg.port,
                session_id=ac.session_id,
                version=ac.version + 1,
                crypto=crypto,
                accept_crypto=is_usable,
            )
            stream = answer.audio
            if stream.local_crypto is not None and stream.remote_crypto is not None:
                leg.srtp = (
                    leg.srtp.rekey(stream.local_crypto, stream.remote_crypto)
                    if isinstance(leg.srtp, SrtpSession)
                    else SrtpSession(stream.local_crypto, stream.remote_crypto)
                )
            else:
                leg.srtp = None
        except (SDPError, OfferAnswerError, ValueError) as exc:
            event(logger, "reinvite-rejected", call_id=call.call_id, reason=str(exc))
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
        moved = leg.peer is None or leg.peer[0] != stream.remote_address
        leg.set_remote(
            stream.remote_address, stream.remote_port, stream.remote_rtcp_port, relatch=moved
        )
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

    def on_transfer_outcome(self, call: Call, status: int) -> None:
        """NOTIFY of a REFER we sent: a 2xx sipfrag means the PBX has the caller; we hang up."""
        ac = self.calls.get(call.call_id)
        if ac is not None and 200 <= status < 300:
            self._end_call(ac, "transferred")

    # -- ending -----------------------------------------------------------------------------

    def _answered(self, agent: str, call_id: str) -> AgentCall:
        ac = self._call_of(agent, call_id)
        if ac.answered_at is None:
            raise CommandError("not-answered", "answer the call first")
        return ac

    def _end_call(self, ac: AgentCall, cause: str, status: int = 0) -> None:
        """End the SIP side (BYE, or `status` while it rings) and the agent side."""
        assert self.service is not None
        service, call = self.service, ac.call
        if call is None:
            if self.web is not None:
                self.web.web_call_ended(ac.call_id, cause)
        elif call.state is CallState.OFFERED:
            code = status or 480
            service.act(lambda now: service.ua.reject(call, code, now))
        elif call.state is not CallState.ENDED:
            service.act(lambda now: service.ua.hangup(call, now))
        self._finish(ac, cause)

    def _finish(self, ac: AgentCall, cause: str) -> None:
        if self.calls.pop(ac.call_id, None) is None:
            return
        if ac.ring_timer is not None:
            ac.ring_timer.cancel()
        self._release(ac)
        agent = ac.agent
        if self.hub is not None:
            self.hub.call_ended(agent, ac.call_id, cause)
        event(logger, "agent-call-ended", call_id=ac.call_id, agent=agent, cause=cause)
        if self.on_call_done is not None:
            self.on_call_done(ac, cause)
        if agent not in self.states:
            return
        if ac.answered_at is None:
            self._set_state(agent, AgentState.READY)
            return
        self._set_state(agent, AgentState.WRAPUP)
        self._wrapups[agent] = asyncio.get_running_loop().call_later(
            self.wrapup_time, self._wrapup_over, agent
        )

    def _wrapup_over(self, agent: str) -> None:
        self._wrapups.pop(agent, None)
        if self.state(agent) is AgentState.WRAPUP:
            self._set_state(agent, AgentState.READY)

    def _release(self, ac: AgentCall) -> None:
        if ac.web is not None:
            ac.web.detach()
            channel = self.hub.channel(ac.agent) if self.hub is not None else None
            if isinstance(channel, AgentChannel):
                channel.detach()
        if ac.music is not None:
            ac.music.stop()
            ac.music = None
        if ac.port is not None:
            ac.port.close()
            ac.port = None
            channel = self.hub.channel(ac.agent) if self.hub is not None else None
            if isinstance(channel, AgentChannel):
                channel.detach()
        if ac.leg is not None:
            ac.leg.close()
            self.pool.release(ac.leg.pair)
            ac.leg = None

    def hangup_all(self) -> None:
        """End every agent call (shutdown)."""
        for ac in list(self.calls.values()):
            self._end_call(ac, "shutdown")

    @property
    def legs(self) -> list[RtpLeg]:
        """The legs the desk holds (for RTCP reports and status)."""
        return [ac.leg for ac in self.calls.values() if ac.leg is not None]
