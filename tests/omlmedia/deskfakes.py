"""Fakes around the agent desk and the ACD runtime: a clock with timers, a SIP service whose user
agent records what it is asked (and moves each call's state as the real one does), an agent hub
that records what it is told, and agent channels that keep what is attached to them.

The media legs are real (`RtpLeg` on a pool of local UDP ports): nothing else of the server is.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from media.ports import PortAllocator, RtpSocketPool
from omlmedia.acd import AcdRuntime
from omlmedia.agents import AgentDesk
from queueing.events import AgentState
from sip.endpoint import Endpoint
from sip.message import Address, Request, parse_message
from sip.ua import Call, CallState
from webrtc.channel import AgentChannel, Sink, Source
from webrtc.signaling import CallControl, CallInfo

if TYPE_CHECKING:
    from omlmedia.acd_cluster import SharedEngine
    from queueing.engine import AcdEngine

HOST = "127.0.0.1"

CALLER_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)

_ids = itertools.count(1)


def caller_sdp(port: int = 49170) -> bytes:
    return CALLER_SDP.format(port=port).encode()


def inbound_call(user: str = "agent1", number: str = "5551234", sdp: bytes | None = None) -> Call:
    """An INVITE from the PBX to `user`, as the user agent hands it to the application."""
    call_id = f"call-{next(_ids)}@pbx"
    body = caller_sdp() if sdp is None else sdp
    text = (
        f"INVITE sip:{user}@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-test\r\n"
        f'From: "Test Caller" <sip:{number}@127.0.0.1>;tag=caller\r\n'
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:caller@127.0.0.1:5080>\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    invite = parse_message(text)
    assert isinstance(invite, Request)
    return Call(
        call_id=call_id,
        direction="inbound",
        source=Endpoint("udp", "127.0.0.1", 5080),
        invite=invite,
        state=CallState.OFFERED,
        local_tag="ours",
    )


def outbound_call(number: str) -> Call:
    """An INVITE we place (a callback, a manual call, a transfer's target), still calling."""
    call = inbound_call(number, "server", b"")
    call.direction, call.state = "outbound", CallState.CALLING
    return call


class FakeClock:
    """Wall-clock time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass(eq=False)
class FakeTimer:
    due: float
    callback: Callable[..., object]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimers:
    """`call_later` on the fake clock; `advance` fires what falls due, in order."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pending: list[FakeTimer] = []

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(self.clock.now + delay, callback, args)
        self.pending.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        until = self.clock.now + seconds
        while True:
            due = [t for t in self.pending if not t.cancelled and t.due <= until]
            if not due:
                break
            timer = min(due, key=lambda t: t.due)
            self.pending.remove(timer)
            self.clock.now = max(self.clock.now, timer.due)
            timer.callback(*timer.args)
        self.clock.now = until
        self.pending = [t for t in self.pending if not t.cancelled]


class FakeUA:
    """The user agent's application side: records each action, moves the call's state as
    `sip.ua.UserAgent` does and keeps the calls it ended (its `CallEnded` events)."""

    def __init__(self) -> None:
        self.actions: list[tuple[Any, ...]] = []
        self.ended: list[tuple[Call, str]] = []

    def _end(self, call: Call, cause: str) -> None:
        if call.state is not CallState.ENDED:
            call.state = CallState.ENDED
            call.end_cause = call.end_cause or cause
            self.ended.append((call, call.end_cause))

    def ring(self, call: Call, now: float, body: bytes = b"", status: int = 180) -> None:
        self.actions.append(("ring", call.call_id, status))

    def answer(
        self,
        call: Call,
        body: bytes,
        now: float,
        content_type: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        if call.state is CallState.OFFERED:
            call.state = CallState.ANSWERED
            self.actions.append(("answer", call.call_id, body))

    def reject(
        self,
        call: Call,
        status: int,
        now: float,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        if call.state is CallState.OFFERED:
            self.actions.append(("reject", call.call_id, status, *headers))
            self._end(call, "rejected")

    def hangup(self, call: Call, now: float) -> None:
        if call.state is CallState.ENDED:
            return
        if call.state is CallState.OFFERED:
            self.reject(call, 480, now)
            return
        self.actions.append(("hangup", call.call_id))
        self._end(call, "cancel" if call.state is CallState.CALLING else "hangup")

    def send_in_dialog(
        self,
        call: Call,
        method: str,
        now: float,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.actions.append(("in-dialog", call.call_id, method, tuple(headers)))

    def refer(self, call: Call, target: Address, now: float, replaces: Any = None) -> None:
        self.actions.append(("refer", call.call_id, str(target)))

    def respond(
        self,
        call: Call,
        txn: Any,
        status: int,
        now: float,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> None:
        self.actions.append(("respond", call.call_id, status, body))

    def of(self, call: Call) -> list[tuple[Any, ...]]:
        return [a for a in self.actions if a[1] == call.call_id]


class FakeService:
    """`SipService` as the desk and the ACD use it: `act(action)` runs an action on `ua`."""

    def __init__(self, clock: FakeClock) -> None:
        self.ua = FakeUA()
        self.clock = clock

    def act(self, action: Callable[[float], object]) -> None:
        action(self.clock())


class ProbeChannel(AgentChannel):
    """A real agent channel (no page behind it) that keeps what is attached to it."""

    def __init__(self, agent: str) -> None:
        super().__init__(agent)
        self.source: Source | None = None
        self.sink: Sink | None = None
        self.attached_rate = 0
        self.attachments = 0

    def attach(
        self, source: Source | None, sink: Sink | None, rate: int = 48000, *, relay: bool = False
    ) -> None:
        super().attach(source, sink, rate, relay=relay)
        self.source, self.sink, self.attached_rate = source, sink, rate
        self.attachments += 1

    def detach(self) -> None:
        super().detach()
        self.source = self.sink = None

    @property
    def carrying(self) -> bool:
        return self.sink is not None


@dataclass
class _Page:
    channel: ProbeChannel
    state: AgentState = AgentState.LOGGED_OUT
    reason: str | None = None
    calls: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """`webrtc.signaling.AgentHub` as the server side sees it: what it is told, as pushes
    (``(kind, agent, ...)``), with the hub's own rules (an offer needs a session and a new
    call id; a state it already shows is not pushed again). `login` opens a session."""

    def __init__(self) -> None:
        self.control: CallControl | None = None
        self.pages: dict[str, _Page] = {}
        self.pushes: list[tuple[Any, ...]] = []

    # -- sessions, as the real hub opens and ends them --

    async def login(self, agent: str) -> ProbeChannel:
        assert self.control is not None
        page = _Page(ProbeChannel(agent))
        self.pages[agent] = page
        await self.control.agent_logged_in(agent)
        return page.channel

    async def logout(self, agent: str, reason: str) -> bool:
        page = self.pages.pop(agent, None)
        if page is None:
            return False
        self.pushes.append(("session-ended", agent, reason))
        assert self.control is not None
        await self.control.agent_gone(agent, reason)
        return True

    # -- queries --

    def channel(self, agent: str) -> ProbeChannel | None:
        page = self.pages.get(agent)
        return page.channel if page is not None else None

    def display_name(self, agent: str) -> str:
        return agent.title()

    def connected(self, agent: str) -> bool:
        return agent in self.pages

    def shown(self, agent: str) -> AgentState:
        page = self.pages.get(agent)
        return page.state if page is not None else AgentState.LOGGED_OUT

    def call_state(self, agent: str, call_id: str) -> str | None:
        page = self.pages.get(agent)
        return page.calls.get(call_id) if page is not None else None

    def of(self, kind: str, agent: str | None = None) -> list[tuple[Any, ...]]:
        return [p for p in self.pushes if p[0] == kind and (agent is None or p[1] == agent)]

    # -- pushes --

    def state_changed(self, agent: str, state: AgentState, reason: str | None = None) -> None:
        page = self.pages.get(agent)
        if page is None:
            return
        reason = reason if state is AgentState.PAUSED else None
        if (page.state, page.reason) == (state, reason):
            return
        page.state, page.reason = state, reason
        self.pushes.append(("state", agent, state.value, reason))

    def offer_call(self, agent: str, call: CallInfo) -> bool:
        page = self.pages.get(agent)
        if page is None or call.call_id in page.calls:
            return False
        page.calls[call.call_id] = "ringing"
        self.pushes.append(("call-incoming", agent, call))
        return True

    def placed(self, agent: str, call: CallInfo) -> None:
        """What the real hub does itself once `dial` or `transfer_attended_consult` returns:
        the page shows the call it placed, dialing."""
        self.pages[agent].calls[call.call_id] = "dialing"
        self.pushes.append(("call-dialing", agent, call))

    def call_joined(self, agent: str, call: CallInfo) -> bool:
        page = self.pages.get(agent)
        if page is None or call.call_id in page.calls:
            return False
        page.calls[call.call_id] = "active"
        self.pushes.append(("call-joined", agent, call))
        return True

    def _set_call(self, agent: str, call_id: str, state: str, kind: str) -> None:
        page = self.pages.get(agent)
        if page is None or page.calls.get(call_id, state) == state:
            return
        page.calls[call_id] = state
        self.pushes.append((kind, agent, call_id))

    def call_answered(self, agent: str, call_id: str) -> None:
        self._set_call(agent, call_id, "active", "call-answered")

    def call_held(self, agent: str, call_id: str, held: bool = True) -> None:
        if held:
            self._set_call(agent, call_id, "held", "call-held")
        else:
            self._set_call(agent, call_id, "active", "call-resumed")

    def call_ended(self, agent: str, call_id: str, reason: str = "hangup") -> None:
        page = self.pages.get(agent)
        if page is None or page.calls.pop(call_id, None) is None:
            return
        self.pushes.append(("call-ended", agent, call_id, reason))

    def recording_changed(self, agent: str, call_id: str, recording: str) -> None:
        page = self.pages.get(agent)
        if page is not None and call_id in page.calls:
            self.pushes.append(("call-recording", agent, call_id, recording))

    def dtmf_received(self, agent: str, call_id: str, digit: str) -> None:
        page = self.pages.get(agent)
        if page is not None and call_id in page.calls:
            self.pushes.append(("dtmf", agent, call_id, digit))

    def notify(self, agent: str, text: str) -> None:
        if agent in self.pages:
            self.pushes.append(("notice", agent, text))


def local_pool() -> RtpSocketPool:
    low = random.randrange(41000, 59000, 2)
    return RtpSocketPool(PortAllocator(low, low + 200), HOST)


async def until(predicate: Callable[[], bool]) -> None:
    """Let the loop run (port binding, tasks) until `predicate()` holds (20 s at most)."""
    async with asyncio.timeout(20.0):
        while not predicate():  # noqa: ASYNC110 - binding ports has no event to await
            await asyncio.sleep(0.001)


class DeskWorld:
    """What surrounds an agent desk under test: a fake clock and its timers, SIP through the
    fake service, RTP ports on loopback and the pages' hub (the desk's ``hub`` is `_hub_for`).
    A subclass builds `acd` and `desk` on them; `close` ends both and frees the ports."""

    acd: AcdRuntime
    desk: AgentDesk

    def __init__(self, hub: FakeHub | None = None) -> None:
        self.clock = FakeClock()
        self.timers = FakeTimers(self.clock)
        self.service = FakeService(self.clock)
        self.pool = local_pool()
        self.hub = hub if hub is not None else FakeHub()

    def runtime(self, engine: AcdEngine | SharedEngine, **options: Any) -> AcdRuntime:
        """An ACD runtime over `engine` in these surroundings (`options`: its others)."""
        return AcdRuntime(
            engine,
            self.pool,
            HOST,
            service=self.service,  # type: ignore[arg-type]
            clock=self.clock,
            call_later=self.timers.call_later,
            **options,
        )

    def agent_desk(self, **options: Any) -> AgentDesk:
        """The desk in these surroundings over `acd` (`options`: its others)."""
        return AgentDesk(
            self.pool,
            HOST,
            service=self.service,  # type: ignore[arg-type]
            hub=self._hub_for,
            acd=self.acd,
            clock=self.clock,
            call_later=self.timers.call_later,
            **options,
        )

    def _hub_for(self, desk: AgentDesk) -> Any:
        self.hub.control = desk
        return self.hub

    def close(self) -> None:
        self.acd.close()
        self.desk.hangup_all()
        self.pool.close()
