"""omlmedia.router: each call's events go to the target that owns it (`call.app`), and nowhere
else; new calls go to the target of their route. No sockets: the targets are recorders."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import pytest

from omlmedia.acd import AcdRuntime
from omlmedia.agents import AgentDesk
from omlmedia.b2bua import B2bua
from omlmedia.config import Config, Route, RouteAction, load_config
from omlmedia.media_targets import MediaTargets
from omlmedia.router import CallRouter, RouteTable
from omlmedia.targets import CallTarget, Refusal, RouterStats, TransferTarget, owner_of
from queueing.config import build_config
from queueing.engine import AcdEngine
from queueing.events import AgentState
from sip.message import Request, Response, parse_message
from sip.service import SipService
from sip.transaction import ServerTransaction
from sip.ua import (
    Call,
    CallEnded,
    CallProgress,
    CallState,
    DtmfReceived,
    IncomingCall,
    InDialogRequest,
    SessionModified,
    TransferProgress,
)
from tests.omlmedia.deskfakes import (
    HOST,
    FakeClock,
    FakeHub,
    FakeService,
    FakeTimers,
    inbound_call,
    local_pool,
    until,
)

CONFIG = """
[[trunks]]
name = "pbx"
host = "127.0.0.1"
port = 5080
allowed_targets = ["*"]

[[routes]]
user = "600"
target = "echo"

[[routes]]
user = "601"
target = "moh"

[[routes]]
user = "486"
target = "busy"

[[routes]]
pattern = "^conf-(.+)$"
target = "conference"
strip = 5

[[routes]]
pattern = "^9(\\\\d+)$"
target = "trunk:pbx"
strip = 1
"""


class Recorder:
    """A target that records the events it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_ended(self, call: Call, cause: str) -> None:
        self.events.append(("ended", call.call_id, cause))

    def on_dtmf(self, call: Call, digit: str) -> None:
        self.events.append(("dtmf", call.call_id, digit))

    def on_session_modified(self, call: Call, txn: ServerTransaction, request: Request) -> None:
        self.events.append(("session-modified", call.call_id))

    def on_response(self, call: Call, response: Response) -> None:
        self.events.append(("response", call.call_id, response.status))

    def on_transfer_outcome(self, call: Call, status: int) -> None:
        self.events.append(("transfer-outcome", call.call_id, status))


class TransferRecorder(Recorder):
    """A target that also takes REFER and Replaces."""

    def on_refer(self, call: Call, request: Request, txn: ServerTransaction) -> None:
        self.events.append(("refer", call.call_id))

    def on_replaces(self, call: Call, replaced: Call) -> None:
        call.app = self
        self.events.append(("replaces", call.call_id, replaced.call_id))


class Taker(Recorder):
    """A route target stand-in: takes every call of its route actions, or refuses them all."""

    def __init__(self, *actions: RouteAction, refusal: Refusal | None = None) -> None:
        super().__init__()
        self.route_actions = actions
        self.refusal = refusal

    def take_route(self, call: Call, route: Route, user: str) -> Refusal | None:
        if self.refusal is not None:
            return self.refusal
        call.app = self
        self.events.append(("take", call.call_id, route.action, user))
        return None


class World:
    def __init__(self, tmp_path: Path) -> None:
        path = tmp_path / "omlmedia.toml"
        path.write_text(CONFIG)
        self.config: Config = load_config(path)
        self.clock = FakeClock()
        self.service = FakeService(self.clock)
        self.media = Taker(RouteAction.ECHO, RouteAction.MOH, RouteAction.RECORD, RouteAction.DTMF)
        self.b2bua = Taker(RouteAction.TRUNK)
        self.stats = RouterStats()
        self.router = CallRouter(
            self.config,
            cast(SipService, self.service),
            RouteTable(self.config),
            self.stats,
            [self.media, self.b2bua],
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def response(status: int) -> Response:
    text = (
        f"SIP/2.0 {status} Whatever\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1\r\n"
        "From: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:b@127.0.0.1>;tag=b\r\nCall-ID: x\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Response)
    return message


def in_dialog(call: Call, method: str, headers: str = "") -> Request:
    text = (
        f"{method} sip:server@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-2\r\n"
        "From: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:b@127.0.0.1>;tag=b\r\n"
        f"Call-ID: {call.call_id}\r\n"
        f"CSeq: 2 {method}\r\nMax-Forwards: 70\r\n{headers}Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


TXN = cast(ServerTransaction, object())


def every_event(call: Call) -> list[Any]:
    return [
        DtmfReceived(call, "5", 100),
        SessionModified(call, in_dialog(call, "INVITE"), TXN),
        CallProgress(call, response(180)),
        TransferProgress(call, 200, final=True),
        CallEnded(call, "bye"),
    ]


def test_an_event_reaches_only_the_owning_target(world: World) -> None:
    mine, theirs = Recorder(), Recorder()
    call, other = inbound_call("600"), inbound_call("601")
    call.app, other.app = mine, theirs
    for ev in every_event(call):
        world.router.on_event(ev)
    assert mine.events == [
        ("dtmf", call.call_id, "5"),
        ("session-modified", call.call_id),
        ("response", call.call_id, 180),
        ("transfer-outcome", call.call_id, 200),
        ("ended", call.call_id, "bye"),
    ]
    assert theirs.events == []
    assert world.stats.ended == 1 and world.stats.dtmf == 1


def test_a_call_handed_to_another_target_reaches_only_its_new_owner(world: World) -> None:
    first, second = Recorder(), Recorder()
    call = inbound_call("600")
    call.app = first
    world.router.on_event(DtmfReceived(call, "1", 100))
    call.app = second  # e.g. a queue hands its caller to an agent's transfer
    world.router.on_event(DtmfReceived(call, "2", 100))
    world.router.on_event(CallEnded(call, "bye"))
    assert first.events == [("dtmf", call.call_id, "1")]
    assert second.events == [("dtmf", call.call_id, "2"), ("ended", call.call_id, "bye")]


def test_a_call_nobody_owns_gets_the_defaults(world: World) -> None:
    call = inbound_call("600")
    assert owner_of(call) is None
    for ev in every_event(call):
        world.router.on_event(ev)
    refer = in_dialog(call, "REFER", "Refer-To: <sip:700@127.0.0.1>\r\n")
    world.router.on_event(InDialogRequest(call, refer, TXN))
    world.router.on_event(InDialogRequest(call, in_dialog(call, "REFER"), TXN))
    world.router.on_event(InDialogRequest(call, in_dialog(call, "NOTIFY"), TXN))
    world.router.on_event(InDialogRequest(call, in_dialog(call, "MESSAGE"), TXN))
    statuses = [a[2] for a in world.service.ua.of(call) if a[0] == "respond"]
    assert statuses == [488, 603, 400, 200, 501]


def test_refer_goes_to_an_owner_that_takes_transfers_only(world: World) -> None:
    plain, transfers = Recorder(), TransferRecorder()
    call = inbound_call("600")
    refer = in_dialog(call, "REFER", "Refer-To: <sip:700@127.0.0.1>\r\n")
    call.app = plain
    world.router.on_event(InDialogRequest(call, refer, TXN))
    assert [a[2] for a in world.service.ua.of(call)] == [603]
    call.app = transfers
    world.router.on_event(InDialogRequest(call, refer, TXN))
    assert transfers.events == [("refer", call.call_id)]
    assert not isinstance(plain, TransferTarget) and isinstance(transfers, TransferTarget)


def test_a_replaces_invite_goes_to_the_owner_of_the_replaced_call(world: World) -> None:
    owner = TransferRecorder()
    replaced, new = inbound_call("600"), inbound_call("600")
    replaced.app = owner
    new.replaces = replaced
    world.router.on_event(IncomingCall(new))
    assert owner.events == [("replaces", new.call_id, replaced.call_id)]
    assert new.app is owner
    orphan, another = inbound_call("600"), inbound_call("600")
    another.replaces = orphan
    world.router.on_event(IncomingCall(another))
    assert world.service.ua.of(another) == [("reject", another.call_id, 603)]


def test_new_calls_go_to_the_target_of_their_route(world: World) -> None:
    echo, moh, trunk = inbound_call("600"), inbound_call("601"), inbound_call("95551234")
    busy, unknown = inbound_call("486"), inbound_call("777")
    trunk.trunk = "pbx"  # the PBX may call out through itself (allowed_targets)
    for call in (echo, moh, trunk, busy, unknown):
        world.router.on_event(IncomingCall(call))
    assert world.media.events == [
        ("take", echo.call_id, RouteAction.ECHO, "600"),
        ("take", moh.call_id, RouteAction.MOH, "601"),
    ]
    assert world.b2bua.events == [("take", trunk.call_id, RouteAction.TRUNK, "5551234")]
    assert owner_of(echo) is world.media and owner_of(trunk) is world.b2bua
    assert world.service.ua.of(busy) == [("reject", busy.call_id, 486)]
    assert world.service.ua.of(unknown) == [("reject", unknown.call_id, 404)]
    assert (world.stats.offered, world.stats.rejected, world.stats.not_found) == (5, 1, 1)


def test_a_new_kind_of_target_is_one_class_given_to_the_router(world: World) -> None:
    rooms = Taker(RouteAction.CONFERENCE)
    router = CallRouter(
        world.config,
        cast(SipService, world.service),
        RouteTable(world.config),
        world.stats,
        [world.media, rooms],
    )
    call = inbound_call("conf-blue")
    router.on_event(IncomingCall(call))
    assert rooms.events == [("take", call.call_id, RouteAction.CONFERENCE, "blue")]
    assert owner_of(call) is rooms


def test_a_route_with_no_target_or_a_refusing_target_is_refused(world: World) -> None:
    full = Taker(RouteAction.CONFERENCE, refusal=Refusal(486, "conference-unavailable"))
    router = CallRouter(
        world.config,
        cast(SipService, world.service),
        RouteTable(world.config),
        world.stats,
        [full],
    )
    refused, orphan = inbound_call("conf-blue"), inbound_call("600")
    router.on_event(IncomingCall(refused))
    router.on_event(IncomingCall(orphan))
    assert world.service.ua.of(refused) == [("reject", refused.call_id, 486)]
    assert world.service.ua.of(orphan) == [("reject", orphan.call_id, 503)]
    assert owner_of(refused) is None and owner_of(orphan) is None


def test_two_targets_for_one_route_action_are_refused_at_start(world: World) -> None:
    with pytest.raises(ValueError, match="two route targets serve 'echo' routes"):
        CallRouter(
            world.config,
            cast(SipService, world.service),
            RouteTable(world.config),
            world.stats,
            [world.media, Taker(RouteAction.ECHO)],
        )


def test_the_server_s_targets_serve_every_route_action_but_busy_and_reject() -> None:
    from omlmedia.conference import ConferenceService

    served = [
        action
        for cls in (MediaTargets, B2bua, ConferenceService, AgentDesk, AcdRuntime)
        for action in cls.route_actions
    ]
    assert len(served) == len(set(served))
    assert set(served) | {RouteAction.BUSY, RouteAction.REJECT} == set(RouteAction)


def test_the_targets_implement_the_protocol() -> None:
    from omlmedia.conference import ConferenceService

    for cls in (MediaTargets, B2bua, ConferenceService, AgentDesk, AcdRuntime):
        for name in ("on_ended", "on_dtmf", "on_session_modified", "on_response"):
            assert callable(getattr(cls, name)), (cls, name)
        assert callable(cls.on_transfer_outcome)
    assert issubclass(B2bua, TransferTarget)
    assert not issubclass(MediaTargets, TransferTarget)
    assert issubclass(MediaTargets, CallTarget)


async def test_a_queued_call_answered_by_an_agent_moves_from_the_queue_to_the_desk(
    world: World,
) -> None:
    """The queue owns its caller while it waits; once an agent answers, the desk owns it (its
    digits and re-INVITEs go there), and its end still reaches the queue's books through the
    desk."""
    clock, timers = world.clock, FakeTimers(world.clock)
    service, pool, hub = world.service, local_pool(), FakeHub()
    engine = AcdEngine(
        build_config({"agents": {"agent1": {}}, "queues": {"support": {"members": ["agent1"]}}}),
        rng=random.Random(1),
    )
    sip = cast(SipService, service)
    acd = AcdRuntime(engine, pool, HOST, service=sip, clock=clock, call_later=timers.call_later)

    def hub_for(desk: AgentDesk) -> Any:
        hub.control = desk
        return hub

    desk = AgentDesk(
        pool,
        HOST,
        service=sip,
        hub=hub_for,
        acd=acd,
        clock=clock,
        call_later=timers.call_later,
    )
    router = CallRouter(
        world.config,
        sip,
        RouteTable(world.config),
        world.stats,
        [world.media, world.b2bua, desk, acd],
    )
    try:
        call = inbound_call("support")
        acd.enter(call, "support")
        await until(lambda: call.call_id in acd.callers)
        assert owner_of(call) is acd

        await hub.login("agent1")
        await desk.set_agent_state("agent1", AgentState.READY, None)
        assert hub.call_state("agent1", call.call_id) == "ringing"
        assert owner_of(call) is acd
        await desk.answer("agent1", call.call_id)
        assert owner_of(call) is desk

        router.on_event(DtmfReceived(call, "7", 100))
        assert hub.of("dtmf", "agent1") == [("dtmf", "agent1", call.call_id, "7")]
        call.state = CallState.ENDED
        router.on_event(CallEnded(call, "bye"))
        assert call.call_id not in acd.callers
        assert hub.of("call-ended", "agent1")[-1][2] == call.call_id
    finally:
        acd.close()
        desk.hangup_all()
        pool.close()


def test_the_owner_of_a_call_is_known_by_its_class_or_by_what_the_object_itself_has() -> None:
    class Partial:
        def on_ended(self, call: object, cause: str) -> None:
            """Only one of the target's methods."""

    call = inbound_call("600")
    call.app = Recorder()
    assert owner_of(call) is call.app and owner_of(call) is call.app  # the class, then cached
    call.app = Partial()
    assert owner_of(call) is None and owner_of(call) is None
    # An object whose own attributes complete the protocol is still an owner (isinstance).
    completed = Partial()
    for name in ("on_dtmf", "on_session_modified", "on_response", "on_transfer_outcome"):
        setattr(completed, name, lambda *args: None)
    call.app = completed
    assert owner_of(call) is completed
    call.app = object()
    assert owner_of(call) is None
