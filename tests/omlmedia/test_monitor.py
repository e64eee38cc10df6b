"""omlmedia.monitor: the supervisors' socket messages (through the real AgentHub), their access
rules, and the mixing room a monitored call goes through (frames in, mixes out, no network)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from omlmedia.authz import Identity, Role, Scopes
from omlmedia.desk import AgentCall, CallAudio
from omlmedia.monitor import CALL_MONITORED, MonitorMode, MonitorService
from tests.webrtc.fakes import FakeCallControl, FakeChannel, FakeClock, FakeConnection
from tests.webrtc.test_signaling import HASH, check
from webrtc.accounts import Account, AccountStore
from webrtc.exceptions import CommandError
from webrtc.signaling import AgentHub, CallInfo

RATE = 8000
SIZE = RATE // 50


def tone(value: int) -> np.ndarray:
    return np.full(SIZE, value, np.int16)


class MediaChannel:
    """A channel as the desk and the monitor use it: what is attached, and kicks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source: Any = None
        self.sink: Any = None
        self.rate = 0
        self.kicks = 0
        self.closed = False
        self.peer_connection: object | None = None

    def attach(self, source: Any, sink: Any, rate: int = 48000, *, relay: bool = False) -> None:
        self.source, self.sink, self.rate = source, sink, rate

    def detach(self) -> None:
        self.source = self.sink = None

    def kick(self) -> None:
        self.kicks += 1

    async def accept_offer(self, sdp: str) -> str:
        if "bad" in sdp:
            raise ValueError("offer cannot be answered: bad")
        self.peer_connection = object()
        return "v=0\r\nanswer"

    async def close(self) -> None:
        self.closed = True


@dataclass
class Campaign:
    name: str


@dataclass
class Queued:
    queue: str
    campaign: Campaign | None


@dataclass
class FakeDeskHub:
    notices: list[tuple[str, str]] = field(default_factory=list)

    def notify(self, agent: str, text: str) -> None:
        self.notices.append((agent, text))


class FakeDesk:
    """The desk's side a monitor needs: the calls its channels carry, the detach hooks."""

    def __init__(self) -> None:
        self.carrying: dict[str, AgentCall] = {}
        self.calls: dict[tuple[str, str], AgentCall] = {}
        self.on_detach: list[Any] = []
        self.hub = FakeDeskHub()
        self.acd = None
        self.to_caller: list[np.ndarray | None] = []
        self.from_caller: list[np.ndarray] = []

    def carried(self, call_id: str) -> AgentCall | None:
        return self.carrying.get(call_id)

    def put_call(self, call_id: str, agent: str, queue: str, campaign: str = "") -> MediaChannel:
        channel = MediaChannel(agent)
        ac = AgentCall(call_id, None, agent, CallInfo(call_id, "+5491100"), 0.0)
        ac.queued = Queued(queue, Campaign(campaign) if campaign else None)  # type: ignore[assignment]
        frames = self.from_caller

        def source() -> np.ndarray | None:
            return frames.pop(0) if frames else None

        ac.audio = CallAudio(source, self.to_caller.append, RATE, channel)  # type: ignore[arg-type]
        ac.audio.reattach()
        self.carrying[call_id] = ac
        return channel

    def end(self, call_id: str) -> None:
        ac = self.carrying.pop(call_id)
        for hook in self.on_detach:
            hook(ac)


class Events:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, type: str, **fields: Any) -> None:
        self.published.append({"type": type, **fields})


TOKENS = {
    "sup-support": Identity("sue", Role.SUPERVISOR, frozenset({"support"})),
    "sup-all": Identity("sam", Role.SUPERVISOR),
    "admin": Identity("ada", Role.ADMIN),
    "reporting": Identity("rita", Role.REPORTING),
    "agent": Identity("agent1", Role.AGENT),
}


class World:
    def __init__(self, show_agents: bool = False) -> None:
        self.clock = FakeClock()
        self.tokens = dict(TOKENS)
        self.audits: list[tuple[str, str, str, Any, Any]] = []
        self.events = Events()
        self.channels: list[MediaChannel] = []

        async def audit(identity: Identity, action: str, target: str, before: Any, after: Any):
            self.audits.append((identity.actor, action, target, before, after))

        def factory(name: str) -> MediaChannel:
            self.channels.append(MediaChannel(name))
            return self.channels[-1]

        self.monitor = MonitorService(
            self.tokens.get,
            lambda: Scopes({"support": "support"}, {"support": frozenset({"agent1"})}),
            factory,  # type: ignore[arg-type]
            audit=audit,
            events=self.events,  # type: ignore[arg-type]
            show_agents=show_agents,
        )
        self.desk = FakeDesk()
        self.monitor.bind(self.desk)  # type: ignore[arg-type]
        accounts = AccountStore([Account("agent1", "Ana", HASH)], clock=self.clock)
        self.hub = AgentHub(
            accounts,
            FakeCallControl(),
            FakeChannel,
            clock=self.clock,
            check_password=check,
            supervisors=self.monitor,
        )

    def connect(self) -> FakeConnection:
        conn = FakeConnection()
        self.hub.connection_opened(conn)
        return conn

    async def send(self, conn: FakeConnection, kind: str, **fields: Any) -> dict[str, Any]:
        await self.hub.handle_text(conn, json.dumps({"v": 1, "type": kind, "id": 7, **fields}))
        return conn.last()

    async def supervisor(self, token: str = "sup-support") -> FakeConnection:
        conn = self.connect()
        reply = await self.send(conn, "supervisor-auth", token=token)
        assert reply["type"] == "supervisor-auth-ok", reply
        reply = await self.send(conn, "supervisor-offer", sdp="v=0\r\noffer")
        assert reply["type"] == "answer" and reply["sdp"].startswith("v=0"), reply
        return conn


@pytest.mark.parametrize(
    ("token", "code"),
    [("nope", "session-invalid"), ("agent", "forbidden"), ("reporting", "forbidden")],
)
async def test_only_a_supervisor_or_admin_token_opens_a_supervisor_socket(
    token: str, code: str
) -> None:
    world = World()
    conn = world.connect()
    reply = await world.send(conn, "supervisor-auth", token=token)
    assert reply["type"] == "error" and reply["code"] == code, reply
    reply = await world.send(conn, "monitor", call_id="c1", mode="listen")
    assert reply["code"] == "not-authenticated"
    assert world.channels == [] and world.audits == []


@pytest.mark.parametrize(
    "text",
    [
        '{"v":1,"type":"monitor","call_id":"c1","mode":"spy","id":1}',
        '{"v":1,"type":"monitor","mode":"listen","id":1}',
        '{"v":1,"type":"monitor","call_id":["c1"],"mode":"listen","id":1}',
        '{"v":1,"type":"monitor-stop","now":true,"id":1}',
        '{"v":1,"type":"supervisor-offer","sdp":12,"id":1}',
        '{"v":1,"type":"supervisor-auth","id":1}',
    ],
)
async def test_bad_supervisor_messages_are_malformed_and_change_nothing(text: str) -> None:
    world = World()
    conn = await world.supervisor()
    world.desk.put_call("c1", "agent1", "support", "support")
    await world.hub.handle_text(conn, text)
    assert conn.last()["type"] == "error" and conn.last()["code"] == "malformed"
    assert world.audits == [] and not world.desk.carrying["c1"].audio.diverted  # type: ignore[union-attr]


async def test_a_call_out_of_the_supervisors_scope_is_refused() -> None:
    world = World()
    conn = await world.supervisor("sup-support")
    agent_channel = world.desk.put_call("c9", "agent2", "billing")
    reply = await world.send(conn, "monitor", call_id="c9", mode="listen")
    assert reply["type"] == "error" and reply["code"] == "forbidden", reply
    reply = await world.send(conn, "monitor", call_id="nope", mode="listen")
    assert reply["code"] == "unknown-call"
    assert world.audits == [] and world.events.published == []
    assert world.channels[0].source is None  # the supervisor's channel carries nothing
    assert agent_channel.sink == world.desk.to_caller.append  # the direct relay is untouched


async def test_a_call_outside_every_queue_is_for_unscoped_supervisors_only() -> None:
    world = World()
    scoped = await world.supervisor("sup-support")
    unscoped = await world.supervisor("sup-all")
    world.desk.put_call("d1", "agent1", "")
    world.desk.carrying["d1"].queued = None
    assert (await world.send(scoped, "monitor", call_id="d1", mode="listen"))["code"] == "forbidden"
    reply = await world.send(unscoped, "monitor", call_id="d1", mode="listen")
    assert reply["type"] == "monitor-state" and reply["mode"] == "listen"


async def test_agent_and_web_sockets_cannot_monitor_and_supervisors_cannot_log_in() -> None:
    world = World()
    agent = world.connect()
    assert (await world.send(agent, "login", username="agent1", password="pw1"))["type"] == (
        "login-ok"
    )
    reply = await world.send(agent, "supervisor-auth", token="admin")
    assert reply["code"] == "bad-state"
    sup = await world.supervisor("admin")
    reply = await world.send(sup, "login", username="agent1", password="pw1")
    assert reply["code"] == "bad-state"
    assert (await world.send(sup, "supervisor-auth", token="admin"))["code"] == (
        "already-authenticated"
    )


async def test_listen_whisper_barge_and_stop_route_the_audio_through_the_mixer() -> None:
    world = World(show_agents=True)
    conn = await world.supervisor("sup-support")
    agent_channel = world.desk.put_call("c1", "agent1", "support", "support")
    supervisor_channel = world.channels[0]
    reply = await world.send(conn, "monitor", call_id="c1", mode="listen")
    assert reply == {
        "v": 1,
        "type": "monitor-state",
        "reason": "",
        "call_id": "c1",
        "agent": "agent1",
        "mode": "listen",
        "queue": "",
        "caller": "+5491100",
    }
    assert conn.sent[-2]["type"] == "ack"
    audio = world.desk.carrying["c1"].audio
    assert audio is not None and audio.diverted
    session = world.monitor._by_call["c1"].monitoring
    assert session is not None
    room = session.room

    def tick(caller: int, agent: int, supervisor: int) -> tuple[int, int, int]:
        """One room tick with a frame of each party; what the caller, the agent and the
        supervisor then hear (one sample of each mix)."""
        while agent_channel.source() is not None or supervisor_channel.source() is not None:
            pass  # what the room's own clock pushed while the test awaited
        world.desk.from_caller.append(tone(caller))
        agent_channel.sink(tone(agent))  # the agent's page, as its packets arrive
        supervisor_channel.sink(tone(supervisor))
        world.desk.to_caller.clear()
        room.tick(0.0)
        heard_by_agent = agent_channel.source()
        heard_by_supervisor = supervisor_channel.source()
        to_caller = world.desk.to_caller[-1]
        return int(to_caller[0]), int(heard_by_agent[0]), int(heard_by_supervisor[0])

    # listen: the supervisor hears both; nobody hears the supervisor
    assert tick(100, 20, 3) == (20, 100, 120)
    assert await world.send(conn, "monitor", call_id="c1", mode="whisper")
    assert tick(100, 20, 3) == (20, 103, 120)  # only the agent hears the supervisor
    await world.send(conn, "monitor", call_id="c1", mode="barge")
    assert tick(100, 20, 3) == (23, 103, 120)  # both do
    assert agent_channel.kicks >= 3 and supervisor_channel.kicks >= 3
    reply = await world.send(conn, "monitor-stop")
    assert reply["type"] == "monitor-state" and reply["mode"] is None
    assert not audio.diverted and agent_channel.source is audio.source  # the direct relay again
    assert supervisor_channel.source is None and room.closed

    actions = [(a[1], a[2], (a[4] or {}).get("mode")) for a in world.audits]
    assert actions == [
        ("call.monitor", "c1", "listen"),
        ("call.monitor", "c1", "whisper"),
        ("call.monitor", "c1", "barge"),
        ("call.monitor-stop", "c1", None),
    ]
    assert all(a[0] == "sue" for a in world.audits)
    modes = [(e["type"], e["data"]["mode"], e["campaign"]) for e in world.events.published]
    assert modes == [
        (CALL_MONITORED, "listen", "support"),
        (CALL_MONITORED, "whisper", "support"),
        (CALL_MONITORED, "barge", "support"),
        (CALL_MONITORED, None, "support"),
    ]
    assert [agent for agent, _ in world.desk.hub.notices] == ["agent1"] * 4


async def test_switching_calls_keeps_the_supervisors_channel_and_frees_the_first_call() -> None:
    world = World()
    conn = await world.supervisor("sup-all")
    first = world.desk.put_call("c1", "agent1", "support", "support")
    second = world.desk.put_call("c2", "agent2", "billing")
    await world.send(conn, "monitor", call_id="c1", mode="listen")
    reply = await world.send(conn, "monitor", call_id="c2", mode="barge")
    assert reply["call_id"] == "c2" and reply["mode"] == "barge"
    assert len(world.channels) == 1  # one channel, never renegotiated
    assert not world.desk.carrying["c1"].audio.diverted  # type: ignore[union-attr]
    assert first.source is world.desk.carrying["c1"].audio.source  # type: ignore[union-attr]
    assert world.desk.carrying["c2"].audio.diverted  # type: ignore[union-attr]
    assert second.source is not world.desk.carrying["c2"].audio.source  # type: ignore[union-attr]
    other = await world.supervisor("admin")
    reply = await world.send(other, "monitor", call_id="c2", mode="listen")
    assert reply["code"] == "monitored"  # one supervisor at a time per call


async def test_the_end_of_a_monitored_call_tells_the_supervisor_and_a_closed_page_frees_it() -> (
    None
):
    world = World()
    conn = await world.supervisor("sup-support")
    world.desk.put_call("c1", "agent1", "support", "support")
    await world.send(conn, "monitor", call_id="c1", mode="listen")
    world.desk.end("c1")
    assert conn.last()["type"] == "monitor-state"
    assert conn.last()["reason"] == "call-ended" and conn.last()["call_id"] is None
    assert world.events.published[-1]["data"]["reason"] == "call-ended"

    world.desk.put_call("c2", "agent1", "support", "support")
    await world.send(conn, "monitor", call_id="c2", mode="whisper")
    world.hub.connection_closed(conn)
    assert not world.desk.carrying["c2"].audio.diverted  # type: ignore[union-attr]
    assert world.monitor._by_call == {}


async def test_a_revoked_token_ends_the_supervisor_socket() -> None:
    world = World()
    conn = await world.supervisor("sup-support")
    world.desk.put_call("c1", "agent1", "support", "support")
    del world.tokens["sup-support"]
    await world.send(conn, "monitor", call_id="c1", mode="listen")
    assert conn.last() == {"v": 1, "type": "session-ended", "reason": "expired"} and conn.closed
    assert world.audits == []


async def test_monitoring_is_refused_before_the_channel_is_up() -> None:
    world = World()
    conn = world.connect()
    await world.send(conn, "supervisor-auth", token="admin")
    world.desk.put_call("c1", "agent1", "support", "support")
    reply = await world.send(conn, "monitor", call_id="c1", mode="listen")
    assert reply["code"] == "no-channel"
    reply = await world.send(conn, "supervisor-offer", sdp="v=0\r\nbad")
    assert reply["code"] == "bad-offer"


async def test_one_account_keeps_at_most_four_supervisor_pages_open() -> None:
    world = World()
    pages = [world.connect() for _ in range(5)]
    replies = [await world.send(conn, "supervisor-auth", token="sup-all") for conn in pages]
    assert [r["type"] for r in replies[:4]] == ["supervisor-auth-ok"] * 4
    assert replies[4]["code"] == "too-many-pages" and len(world.channels) == 4
    world.hub.connection_closed(pages[0])
    assert (await world.send(pages[4], "supervisor-auth", token="sup-all"))["type"] == (
        "supervisor-auth-ok"
    )


class FakeStore:
    """The ACD's store: what it was asked to write."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def append(self, row: Any) -> None:
        pass

    def call_started(self, *args: Any) -> None:
        pass

    def call_ended(self, record: Any) -> None:
        self.records.append(record)


async def test_a_queue_call_on_the_real_desk_held_while_monitored_and_its_record() -> None:
    from tests.omlmedia.deskfakes import until
    from tests.omlmedia.test_desk import World as DeskWorld
    from webrtc.signaling import parse_message

    world = DeskWorld()
    store = FakeStore()
    world.acd.store = store  # type: ignore[assignment]
    service = MonitorService(
        {"tok": Identity("sue", Role.SUPERVISOR, frozenset({"support"}))}.get,
        lambda: Scopes({}, {"support": frozenset({"agent1", "agent2"})}),
        MediaChannel,  # type: ignore[arg-type]
    )
    service.bind(world.desk)
    conn = FakeConnection()

    async def send(kind: str, **fields: Any) -> dict[str, Any]:
        text = json.dumps({"v": 1, "type": kind, "id": 1, **fields})
        await service.handle(conn, parse_message(text))
        return conn.last()

    try:
        await world.ready("agent1")
        call = await world.queue_call("support")
        await until(lambda: world.hub.call_state("agent1", call.call_id) == "ringing")
        await world.desk.answer("agent1", call.call_id)
        await send("supervisor-auth", token="tok")
        await send("supervisor-offer", sdp="v=0\r\n")
        assert (await send("monitor", call_id=call.call_id, mode="whisper"))["mode"] == "whisper"
        ac = world.desk.carried(call.call_id)
        agent_channel = world.hub.channel("agent1")
        assert ac is not None and ac.audio is not None and agent_channel is not None
        assert ac.audio.diverted and agent_channel.source is not ac.audio.source
        monitored = service._by_call[call.call_id].monitoring
        assert monitored is not None
        room = monitored.room
        room.pacer.stop()  # the test ticks the room itself
        leg = ac.leg
        assert leg is not None and agent_channel.sink is not None
        sent = leg.counters.sent
        agent_channel.sink(tone(20))
        room.tick(0.0)
        assert leg.counters.sent == sent + 1  # the agent reaches the caller through the room
        await world.desk.hold("agent1", call.call_id)
        agent_channel.sink(tone(20))
        room.tick(0.0)
        assert leg.counters.sent == sent + 1  # on hold the caller hears nobody
        await world.desk.resume("agent1", call.call_id)

        world.caller_hangs_up(call)
        assert conn.last()["type"] == "monitor-state" and conn.last()["reason"] == "call-ended"
        assert room.closed and not agent_channel.carrying
        await until(lambda: any(len(r.legs) > 1 for r in store.records))
        legs = [leg for leg in store.records[-1].legs if leg["role"] == "supervisor"]
        assert legs[0]["supervisor"] == "sue" and legs[0]["modes"] == ["whisper"]
        assert world.acd.records[call.call_id].legs[-1]["supervisor"] == "sue"
    finally:
        world.close()


class MonitoredOnTheDesk:
    """A queue call answered by agent1 on the real desk and ACD (`tests.omlmedia.test_desk`),
    monitored by supervisor sue through a `MonitorService` bound to that desk."""

    def __init__(self) -> None:
        from tests.omlmedia.test_desk import World as DeskWorld

        self.world = DeskWorld()
        self.store = FakeStore()
        self.world.acd.store = self.store  # type: ignore[assignment]
        self.service = MonitorService(
            {"tok": Identity("sue", Role.SUPERVISOR, frozenset({"support"}))}.get,
            lambda: Scopes({}, {"support": frozenset({"agent1", "agent2"})}),
            MediaChannel,  # type: ignore[arg-type]
        )
        self.service.bind(self.world.desk)
        self.conn = FakeConnection()

    async def send(self, kind: str, **fields: Any) -> dict[str, Any]:
        from webrtc.signaling import parse_message

        text = json.dumps({"v": 1, "type": kind, "id": 1, **fields})
        await self.service.handle(self.conn, parse_message(text))
        return self.conn.last()

    async def monitored_call(self, mode: str) -> Any:
        from tests.omlmedia.deskfakes import until

        world = self.world
        await world.ready("agent1")
        call = await world.queue_call("support")
        await until(lambda: world.hub.call_state("agent1", call.call_id) == "ringing")
        await world.desk.answer("agent1", call.call_id)
        await self.send("supervisor-auth", token="tok")
        await self.send("supervisor-offer", sdp="v=0\r\n")
        assert (await self.send("monitor", call_id=call.call_id, mode=mode))["mode"] == mode
        return call

    def told(self) -> str:
        """Why the supervisor's monitoring stopped (the last ``monitor-state``)."""
        last = self.conn.last()
        assert last["type"] == "monitor-state" and last["call_id"] is None, last
        return str(last["reason"])

    def supervisor_legs(self, record: Any) -> list[tuple[str, list[str]]]:
        return [
            (leg["supervisor"], leg["modes"]) for leg in record.legs if leg["role"] == "supervisor"
        ]


async def test_a_supervisor_leg_of_a_call_that_went_into_a_consultation_reaches_its_record() -> (
    None
):
    """The agent consults a number while monitored: the caller is held and its audio leaves
    the agent's channel (the monitor ends, the supervisor is told why) but the call goes on.
    The supervisor's leg waits with the caller and is in the record written when the caller
    leaves (it once stayed behind, out of every record)."""
    from tests.omlmedia.deskfakes import caller_sdp, until

    desk = MonitoredOnTheDesk()
    world = desk.world
    try:
        call = await desk.monitored_call("listen")
        info = await world.desk.transfer_attended_consult("agent1", call.call_id, "5550009")
        ((_, _, _, consulted),) = world.dialled
        world.hub.placed("agent1", info)
        world.desk.on_progress(consulted, 200, caller_sdp(49400))  # the agent hears it now
        assert world.desk.carried(call.call_id) is None
        assert desk.told() == "call-held"  # not "call-ended": the call goes on
        await until(lambda: call.call_id not in desk.service._notes)  # the leg went to the caller
        assert call.call_id in world.acd.callers and not desk.store.records  # the call goes on
        await world.desk.transfer_attended_cancel("agent1", call.call_id)
        assert world.desk.carried(call.call_id) is not None  # back with its agent
        world.caller_hangs_up(call)
        (record,) = desk.store.records
        assert desk.supervisor_legs(record) == [("sue", ["listen"])]
        assert world.acd.records[call.call_id] == record
    finally:
        world.close()


async def test_a_monitored_call_transferred_away_tells_the_supervisor_so_and_keeps_the_leg() -> (
    None
):
    from tests.omlmedia.deskfakes import until

    desk = MonitoredOnTheDesk()
    world = desk.world
    try:
        call = await desk.monitored_call("whisper")
        await world.desk.transfer_blind("agent1", call.call_id, "2000")
        assert desk.told() == "transferred"
        (record,) = desk.store.records  # the caller left the queue's books
        assert record.cause == "transferred"
        await until(lambda: call.call_id not in desk.service._notes)
        (record,) = desk.store.records[1:]  # written again with the supervisor's leg
        assert desk.supervisor_legs(record) == [("sue", ["whisper"])]
    finally:
        world.close()


async def test_a_narrowed_scope_applies_at_the_next_message_and_a_lost_role_ends_the_socket() -> (
    None
):
    world = World()
    conn = await world.supervisor("sup-all")
    world.desk.put_call("c9", "agent2", "billing")
    world.tokens["sup-all"] = Identity("sam", Role.SUPERVISOR, frozenset({"support"}))
    reply = await world.send(conn, "monitor", call_id="c9", mode="listen")
    assert reply["code"] == "forbidden"
    world.tokens["sup-all"] = Identity("sam", Role.REPORTING)
    reply = await world.send(conn, "monitor", call_id="c9", mode="listen")
    assert reply == {"v": 1, "type": "session-ended", "reason": "forbidden"} and conn.closed


async def test_a_revoked_token_stops_the_monitoring_within_the_hubs_expiry_tick() -> None:
    world = World()
    conn = await world.supervisor("sup-support")
    world.desk.put_call("c1", "agent1", "support", "support")
    await world.send(conn, "monitor", call_id="c1", mode="listen")
    await world.hub.expire()
    assert world.monitor._by_call  # still valid: nothing changes
    del world.tokens["sup-support"]
    await world.hub.expire()
    assert conn.last() == {"v": 1, "type": "session-ended", "reason": "expired"} and conn.closed
    assert world.monitor._by_call == {}
    assert not world.desk.carrying["c1"].audio.diverted  # type: ignore[union-attr]


# -- another node's supervisor on a call here (a monitor leg, omlmedia.monitor_remote) ----------


async def test_a_monitor_leg_from_another_node_goes_through_the_room_in_each_mode_and_ends_with_the_call() -> (  # noqa: E501
    None
):
    world = World(show_agents=True)
    agent_channel = world.desk.put_call("c1", "agent1", "support", "support")
    ac = world.desk.carrying["c1"]
    leg = MediaChannel("leg from node a")  # what a LegPeer does: attach, kick, detach
    ended: list[str] = []
    world.monitor.attach_inbound(
        ac, leg, MonitorMode.LISTEN, supervisor="sue", node="a", end=lambda: ended.append("bye")
    )
    assert world.monitor.is_monitored("c1") and world.monitor.carried("c1") is ac
    room = world.monitor._inbound["c1"].monitored.room

    def tick(caller: int, agent: int, supervisor: int) -> tuple[int, int, int]:
        while agent_channel.source() is not None or leg.source() is not None:
            pass
        world.desk.from_caller.append(tone(caller))
        agent_channel.sink(tone(agent))
        leg.sink(tone(supervisor))
        world.desk.to_caller.clear()
        room.tick(0.0)
        return (
            int(world.desk.to_caller[-1][0]),
            int(agent_channel.source()[0]),
            int(leg.source()[0]),
        )

    assert tick(100, 20, 3) == (20, 100, 120)  # listen
    assert world.monitor.set_inbound_mode("c1", MonitorMode.WHISPER)
    assert tick(100, 20, 3) == (20, 103, 120)  # only the agent hears the supervisor
    assert world.monitor.set_inbound_mode("c1", MonitorMode.BARGE)
    assert tick(100, 20, 3) == (23, 103, 120)
    assert not world.monitor.set_inbound_mode("other", MonitorMode.LISTEN)

    # A supervisor here cannot take the call meanwhile (one at a time, whatever the node).
    conn = await world.supervisor("sup-support")
    reply = await world.send(conn, "monitor", call_id="c1", mode="listen")
    assert reply["type"] == "error" and reply["code"] == "monitored", reply

    # The call ends here: the room closes, the leg is hung up, the agent is told; the
    # supervisor's node (not this one) audits and publishes.
    world.desk.end("c1")
    assert ended == ["bye"] and room.closed and not world.monitor.is_monitored("c1")
    notes = world.monitor._notes["c1"]
    assert [(n["supervisor"], n["modes"]) for n in notes] == [
        ("sue", ["listen", "whisper", "barge"])
    ]
    assert world.audits == [] and world.events.published == []
    assert [agent for agent, _ in world.desk.hub.notices] == ["agent1"] * 4


async def test_a_monitor_leg_that_hangs_up_gives_the_call_back_to_the_direct_relay() -> None:
    world = World()
    agent_channel = world.desk.put_call("c1", "agent1", "support")
    ac = world.desk.carrying["c1"]
    audio = ac.audio
    assert audio is not None
    leg = MediaChannel("leg")
    world.monitor.attach_inbound(
        ac, leg, MonitorMode.WHISPER, supervisor="sue", node="a", end=lambda: None
    )
    assert audio.diverted
    with pytest.raises(CommandError) as refused:  # a second leg for the same call
        world.monitor.attach_inbound(
            ac, MediaChannel("l2"), MonitorMode.LISTEN, supervisor="sam", node="c", end=print
        )
    assert refused.value.code == "monitored"
    world.monitor.stop_inbound("c1", "stopped")
    assert not audio.diverted and agent_channel.source is audio.source
    assert leg.source is None and not world.monitor.is_monitored("c1")
    world.monitor.stop_inbound("c1", "stopped")  # twice: nothing


async def test_a_supervisors_new_leg_from_the_same_node_replaces_the_leg_their_node_gave_up() -> (
    None
):
    # Node a gave up a leg this node answered late (frozen or loaded past a's answer timeout;
    # a's hang-up not here yet) and the supervisor asks again: the new leg is theirs, the old
    # one is hung up.
    world = World()
    world.desk.put_call("c1", "agent1", "support")
    ac = world.desk.carrying["c1"]
    audio = ac.audio
    assert audio is not None
    ended: list[str] = []
    stale, fresh = MediaChannel("gave up"), MediaChannel("asked again")
    world.monitor.attach_inbound(
        ac,
        stale,
        MonitorMode.LISTEN,
        supervisor="sue",
        node="a",
        end=lambda: ended.append("old"),
        signed_at=1000,
    )
    # Another supervisor, the same name from another node, or a request signed before the leg
    # here (the given-up one arriving after the new one) is refused.
    for supervisor, node, signed in (("sam", "a", 1005), ("sue", "c", 1005), ("sue", "a", 999)):
        assert world.monitor.is_monitored("c1", by=(supervisor, node, signed))
        with pytest.raises(CommandError) as refused:
            world.monitor.attach_inbound(
                ac,
                MediaChannel("x"),
                MonitorMode.LISTEN,
                supervisor=supervisor,
                node=node,
                end=print,
                signed_at=signed,
            )
        assert refused.value.code == "monitored"
    assert not world.monitor.is_monitored("c1", by=("sue", "a", 1005))
    world.monitor.attach_inbound(
        ac,
        fresh,
        MonitorMode.LISTEN,
        supervisor="sue",
        node="a",
        end=lambda: ended.append("new"),
        signed_at=1005,
    )
    assert ended == ["old"] and stale.source is None
    inbound = world.monitor._inbound["c1"]
    assert inbound.supervisor == "sue" and inbound.monitored.supervisor is fresh
    assert audio.diverted and world.monitor.is_monitored("c1")
    assert [n["supervisor"] for n in world.monitor._notes["c1"]] == ["sue"]  # the old one's
    world.desk.end("c1")
    assert ended == ["old", "new"]
