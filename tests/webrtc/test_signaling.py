"""webrtc.signaling: message validation and the agent hub (fake clock, connections, control)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from queueing.events import AgentState
from tests.webrtc.fakes import FakeCallControl, FakeChannel, FakeClock, FakeConnection
from webrtc.accounts import Account, AccountStore, hash_password, verify_password
from webrtc.exceptions import CommandError, ProtocolError
from webrtc.signaling import CLIENT_MESSAGES, AgentHub, CallInfo, parse_message

HASH = hash_password("pw1", n=2**10)


async def check(password: str, password_hash: str) -> bool:
    return verify_password(password, password_hash)


class World:
    def __init__(self, grace: float = 30.0) -> None:
        self.clock = FakeClock()
        self.control = FakeCallControl()
        self.channels: list[FakeChannel] = []
        accounts = AccountStore(
            [Account("agent1", "Ana", HASH), Account("agent2", "Bea", HASH)],
            clock=self.clock,
            max_failures=3,
        )

        def factory(agent: str) -> FakeChannel:
            self.channels.append(FakeChannel(agent))
            return self.channels[-1]

        self.hub = AgentHub(
            accounts,
            self.control,
            factory,
            clock=self.clock,
            reconnect_grace=grace,
            check_password=check,
        )
        self.control.hub = self.hub

    def connect(self, source: str = "192.0.2.10") -> FakeConnection:
        conn = FakeConnection(source)
        self.hub.connection_opened(conn)
        return conn

    async def send(self, conn: FakeConnection, kind: str, **fields: Any) -> dict[str, Any]:
        await self.hub.handle_text(conn, json.dumps({"v": 1, "type": kind, "id": 7, **fields}))
        return conn.last()

    async def login(self, agent: str = "agent1") -> FakeConnection:
        conn = self.connect()
        reply = await self.send(conn, "login", username=agent, password="pw1")
        assert reply["type"] == "login-ok", reply
        return conn

    def snapshot(self) -> Any:
        entry = self.hub._agents.get("agent1")
        return (
            None
            if entry is None
            else (entry.state, {k: (c.state, c.muted) for k, c in entry.calls.items()})
        )


CALL = CallInfo("c1", caller_number="+5491100", caller_name="Juan", queue="sales", wait_seconds=12)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "malformed"),
        ("[1]", "malformed"),
        ('{"type":"ping"}', "unsupported-version"),
        ('{"v":2,"type":"ping"}', "unsupported-version"),
        ('{"v":true,"type":"ping"}', "unsupported-version"),
        ('{"v":1}', "malformed"),
        ('{"v":1,"type":"fly"}', "unknown-type"),
        ('{"v":1,"type":"answer"}', "malformed"),
        ('{"v":1,"type":"answer","call_id":"a b"}', "malformed"),
        ('{"v":1,"type":"answer","call_id":"c1","extra":1}', "malformed"),
        ('{"v":1,"type":"dtmf","call_id":"c1","digit":"x"}', "malformed"),
        ('{"v":1,"type":"mute","call_id":"c1","muted":"yes"}', "malformed"),
        ('{"v":1,"type":"offer","sdp":"hello"}', "malformed"),
        ('{"v":1,"type":"ping","id":[1]}', "malformed"),
        ('{"v":1,"type":"state","state":"sleeping"}', "malformed"),
        ('{"v":1,"type":"monitor","call_id":"c1"}', "malformed"),
        ('{"v":1,"type":"monitor","call_id":"c1","mode":"spy"}', "malformed"),
        ('{"v":1,"type":"monitor","call_id":"c 1","mode":"listen"}', "malformed"),
        ('{"v":1,"type":"monitor-stop","call_id":"c1"}', "malformed"),
        ('{"v":1,"type":"supervisor-auth","token":7}', "malformed"),
        ('{"v":1,"type":"supervisor-offer","sdp":"hello"}', "malformed"),
    ],
)
def test_bad_messages_are_refused_with_a_code(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_message(text)
    assert error.value.code == code


def test_every_message_type_has_a_valid_example() -> None:
    examples = {
        "login": {"username": "a", "password": "b"},
        "auth": {"token": "t" * 43},
        "logout": {},
        "ping": {},
        "state": {"state": "paused", "reason": "lunch"},
        "offer": {"sdp": "v=0\r\n"},
        "ice-restart": {"sdp": "v=0\r\n"},
        "answer": {"call_id": "c1"},
        "hangup": {"call_id": "c1"},
        "hold": {"call_id": "c1"},
        "resume": {"call_id": "c1"},
        "mute": {"call_id": "c1", "muted": True},
        "recording": {"call_id": "c1", "paused": True},
        "dtmf": {"call_id": "c1", "digit": "#"},
        "transfer-blind": {"call_id": "c1", "to": "2001"},
        "transfer-consult": {"call_id": "c1", "to": "2001"},
        "transfer-complete": {"call_id": "c1"},
        "transfer-cancel": {"call_id": "c1"},
        "disposition": {"call_id": "c1", "disposition": "sale", "notes": "ok"},
        "dial": {"number": "+541100"},
        "web-call-prepare": {"target": "sales"},
        "web-call": {"target": "sales", "sdp": "v=0\r\n", "name": "Juan"},
        "web-call-hangup": {"call_id": "web-1"},
        "web-call-dtmf": {"call_id": "web-1", "digit": "5"},
        "supervisor-auth": {"token": "oml_" + "a" * 60},
        "supervisor-offer": {"sdp": "v=0\r\n"},
        "monitor": {"call_id": "c1", "mode": "whisper"},
        "monitor-stop": {},
    }
    assert set(examples) == set(CLIENT_MESSAGES)
    for kind, fields in examples.items():
        message = parse_message(json.dumps({"v": 1, "type": kind, "id": "x", **fields}))
        assert message.type == kind and dict(message.fields) == fields


async def test_commands_before_login_are_refused() -> None:
    world = World()
    conn = world.connect()
    reply = await world.send(conn, "answer", call_id="c1")
    assert reply == {
        "v": 1,
        "type": "error",
        "code": "not-authenticated",
        "reason": "log in first",
        "ref": 7,
    }
    assert world.control.calls == []


async def test_login_snapshot_channel_and_ready_pause() -> None:
    world = World()
    conn = await world.login()
    reply = conn.sent[0]
    assert (
        reply["agent"] == "agent1"
        and reply["display_name"] == "Ana"
        and reply["state"] == "logged-out"
    )
    assert world.control.calls == [("agent_logged_in", "agent1")]
    assert world.hub.channel("agent1") is world.channels[0]
    answer = await world.send(conn, "offer", sdp="v=0\r\noffer")
    channel = reply["channel"]
    assert answer == {
        "v": 1,
        "type": "answer",
        "sdp": "v=0\r\nanswer",
        "channel": channel,
        "ref": 7,
    }
    await world.send(conn, "state", state="ready")
    assert conn.types()[-2:] == ["state", "ack"] and conn.sent[-2]["state"] == "ready"
    await world.send(conn, "state", state="paused", reason="lunch")
    assert conn.sent[-2] == {
        "v": 1,
        "type": "state",
        "state": "paused",
        "reason": "lunch",
        "elapsed": 0.0,
    }
    assert world.control.calls[-1] == ("set_agent_state", "agent1", AgentState.PAUSED, "lunch")
    again = await world.send(conn, "login", username="agent1", password="pw1")
    assert again["code"] == "already-authenticated"


async def test_bad_offer_is_an_error_and_the_session_goes_on() -> None:
    world = World()
    conn = await world.login()
    reply = await world.send(conn, "offer", sdp="v=0 bad")
    assert reply["type"] == "error" and reply["code"] == "internal"
    assert (await world.send(conn, "ping"))["type"] == "pong"


async def test_wrong_password_and_lockout() -> None:
    world = World()
    conn = world.connect()
    for _ in range(3):
        reply = await world.send(conn, "login", username="agent1", password="no")
        assert reply["code"] == "bad-credentials"
    reply = await world.send(conn, "login", username="agent1", password="pw1")
    assert reply["code"] == "locked-out"
    assert world.hub.agents() == []


async def test_call_flow_sends_the_right_commands() -> None:
    world = World()
    conn = await world.login()
    assert world.hub.offer_call("agent1", CALL)
    incoming = conn.last()
    assert incoming["type"] == "call-incoming"
    assert incoming["call"] | {"elapsed": 0} == {
        "call_id": "c1",
        "caller_number": "+5491100",
        "caller_name": "Juan",
        "queue": "sales",
        "wait_seconds": 12,
        "direction": "inbound",
        "url": "",
        "dispositions": [],
        "consult_for": "",
        "video": False,
        "state": "ringing",
        "muted": False,
        "recording": "",
        "elapsed": 0,
        "reason": "",
        "disposition": None,
    }
    steps = [
        ("answer", {}, "call-answered"),
        ("mute", {"muted": True}, "call-muted"),
        ("dtmf", {"digit": "5"}, "ack"),
        ("hold", {}, "call-held"),
        ("resume", {}, "call-resumed"),
        ("hangup", {}, "call-ended"),
    ]
    for kind, fields, event in steps:
        reply = await world.send(conn, kind, call_id="c1", **fields)
        assert reply["type"] == event, (kind, reply)
    assert world.control.names()[1:] == ["answer", "mute", "send_dtmf", "hold", "resume", "hangup"]
    await world.send(conn, "disposition", call_id="c1", disposition="sale", notes="n")
    assert world.control.calls[-1] == ("set_disposition", "agent1", "c1", "sale", "n")


async def test_recording_pause_reaches_the_server_and_the_page_sees_it() -> None:
    world = World()
    world.control.hub = world.hub
    conn = await world.login()
    world.hub.offer_call("agent1", CALL)
    reply = await world.send(conn, "recording", call_id="c1", paused=True)
    assert (reply["type"], reply["code"]) == ("error", "bad-state")  # still ringing
    await world.send(conn, "answer", call_id="c1")
    world.hub.recording_changed("agent1", "c1", "on")
    assert conn.last()["type"] == "call-recording" and conn.last()["call"]["recording"] == "on"
    await world.send(conn, "recording", call_id="c1", paused=True)
    pushed = [m for m in conn.sent if m.get("type") == "call-recording"]
    assert pushed[-1]["call"]["recording"] == "paused"
    assert world.control.calls[-1] == ("set_recording", "agent1", "c1", True)
    world.hub.recording_changed("agent1", "c1", "paused")  # told again: nothing is pushed
    assert len([m for m in conn.sent if m.get("type") == "call-recording"]) == len(pushed)
    await world.send(conn, "recording", call_id="c1", paused=False)
    assert [m for m in conn.sent if m.get("type") == "call-recording"][-1]["call"][
        "recording"
    ] == "on"


async def test_out_of_order_commands_change_nothing() -> None:
    world = World()
    conn = await world.login()
    world.hub.offer_call("agent1", CALL)
    before = world.snapshot()
    for kind, fields, code in [
        ("hold", {"call_id": "c1"}, "bad-state"),
        ("resume", {"call_id": "c1"}, "bad-state"),
        ("dtmf", {"call_id": "c1", "digit": "1"}, "bad-state"),
        ("transfer-complete", {"call_id": "c1"}, "bad-state"),
        ("answer", {"call_id": "c9"}, "unknown-call"),
        ("disposition", {"call_id": "c9", "disposition": "x"}, "unknown-call"),
    ]:
        reply = await world.send(conn, kind, **fields)
        assert (reply["type"], reply["code"], reply["ref"]) == ("error", code, 7), kind
    await world.hub.handle_text(conn, "garbage")
    assert conn.last()["code"] == "malformed"
    assert world.snapshot() == before
    assert world.control.names() == ["agent_logged_in"]


async def test_an_agent_cannot_act_on_another_agents_call() -> None:
    world = World()
    await world.login("agent1")
    other = await world.login("agent2")
    world.hub.offer_call("agent1", CALL)
    reply = await world.send(other, "answer", call_id="c1")
    assert reply["code"] == "unknown-call"
    assert "answer" not in world.control.names()


async def test_refused_command_is_reported_and_changes_nothing() -> None:
    world = World()
    conn = await world.login()
    world.hub.offer_call("agent1", CALL)
    world.control.refuse = CommandError("gone", "the caller hung up")
    reply = await world.send(conn, "answer", call_id="c1")
    assert (reply["type"], reply["code"], reply["reason"]) == (
        "error",
        "gone",
        "the caller hung up",
    )
    assert world.snapshot()[1] == {"c1": (world.hub._agents["agent1"].calls["c1"].state, False)}
    assert world.hub._agents["agent1"].calls["c1"].state.value == "ringing"


async def test_transfers_and_dial() -> None:
    world = World()
    conn = await world.login()
    world.hub.offer_call("agent1", CALL)
    await world.send(conn, "answer", call_id="c1")
    reply = await world.send(conn, "transfer-consult", call_id="c1", to="2001")
    assert reply["type"] == "call-dialing" and reply["call"]["direction"] == "consult"
    consult_id = reply["call"]["call_id"]
    assert world.hub._agents["agent1"].calls["c1"].state.value == "held"
    assert (await world.send(conn, "transfer-consult", call_id="c1", to="3"))["code"] == "bad-state"
    world.hub.call_answered("agent1", consult_id)
    await world.send(conn, "transfer-cancel", call_id="c1")
    assert consult_id not in world.hub._agents["agent1"].calls
    await world.send(conn, "transfer-consult", call_id="c1", to="2002")
    await world.send(conn, "transfer-complete", call_id="c1")
    assert world.hub._agents["agent1"].calls == {}
    reply = await world.send(conn, "dial", number="+5411")
    assert reply["type"] == "call-dialing" and reply["call"]["direction"] == "outbound"
    assert (await world.send(conn, "dial", number="1"))["code"] == "bad-state"
    out_id = reply["call"]["call_id"]
    world.hub.call_answered("agent1", out_id)
    await world.send(conn, "transfer-blind", call_id=out_id, to="2001")
    assert conn.last()["type"] == "call-ended" and conn.last()["call"]["reason"] == "transferred"
    assert world.control.names()[1:] == [
        "answer",
        "transfer_attended_consult",
        "transfer_attended_cancel",
        "transfer_attended_consult",
        "transfer_attended_complete",
        "dial",
        "transfer_blind",
    ]


async def test_a_consultation_takes_the_targets_a_blind_transfer_takes() -> None:
    world = World()
    conn = await world.login()
    world.hub.offer_call("agent1", CALL)
    await world.send(conn, "answer", call_id="c1")
    for to in ("agent-agent2", "support", "2001"):
        reply = await world.send(conn, "transfer-consult", call_id="c1", to=to)
        assert reply["type"] == "call-dialing", (to, reply)
        await world.send(conn, "transfer-cancel", call_id="c1")
    for to in ("two words", "", "x" * 65, "<sip:x>"):
        reply = await world.send(conn, "transfer-consult", call_id="c1", to=to)
        assert reply["code"] == "malformed", to
        assert (await world.send(conn, "transfer-blind", call_id="c1", to=to))[
            "code"
        ] == "malformed"
    calls = [c for c in world.control.calls if c[0] == "transfer_attended_consult"]
    assert [c[3] for c in calls] == ["agent-agent2", "support", "2001"]


async def test_a_call_joined_to_the_agent_is_shown_answered_at_once() -> None:
    world = World()
    conn = await world.login("agent2")
    consulted = CallInfo("k1", "agent1", "Ana", direction="consult-in", consult_for="+5491100")
    assert world.hub.offer_call("agent2", consulted)
    assert conn.last()["call"]["consult_for"] == "+5491100"
    assert world.hub.display_name("agent1") == "agent1"  # no session: its name
    assert world.hub.display_name("agent2") == "Bea"
    world.hub.call_ended("agent2", "k1", "transferred")
    assert world.hub.call_joined("agent2", CALL)
    joined = conn.last()
    assert joined["type"] == "call-answered" and joined["call"]["state"] == "active"
    assert joined["call"]["caller_number"] == CALL.caller_number
    assert not world.hub.call_joined("agent2", CALL)  # known already
    assert not world.hub.call_joined("agent1", CALL)  # no session
    reply = await world.send(conn, "hold", call_id=CALL.call_id)
    assert reply["type"] == "call-held"


async def test_server_pushes_are_idempotent() -> None:
    world = World()
    conn = await world.login()
    world.hub.state_changed("agent1", AgentState.READY)
    world.hub.state_changed("agent1", AgentState.READY)
    assert conn.types().count("state") == 1
    world.hub.offer_call("agent1", CALL)
    assert not world.hub.offer_call("agent1", CALL)
    world.hub.call_answered("agent1", "c1")
    world.hub.call_answered("agent1", "c1")
    world.hub.dtmf_received("agent1", "c1", "7")
    assert conn.last() == {"v": 1, "type": "dtmf", "call_id": "c1", "digit": "7"}
    world.hub.call_ended("agent1", "c1", "caller-hangup")
    world.hub.call_ended("agent1", "c1", "caller-hangup")
    assert conn.types().count("call-answered") == 1 and conn.types().count("call-ended") == 1
    assert not world.hub.offer_call("nobody", CALL)


async def test_takeover_ends_the_first_page_and_keeps_the_call() -> None:
    world = World()
    first = await world.login()
    world.hub.offer_call("agent1", CALL)
    await world.send(first, "answer", call_id="c1")
    second = await world.login()
    assert first.sent[-1] == {"v": 1, "type": "session-ended", "reason": "taken-over"}
    assert first.closed
    assert second.sent[-1]["calls"][0]["state"] == "active"
    assert len(world.channels) == 1 and not world.channels[0].closed
    reply = await world.send(first, "hangup", call_id="c1")
    assert reply["code"] == "not-authenticated"
    world.hub.connection_closed(first)
    assert world.hub.connected("agent1")


async def test_reconnect_within_grace_keeps_session_and_call() -> None:
    world = World(grace=20)
    conn = await world.login()
    token = conn.sent[0]["token"]
    world.hub.offer_call("agent1", CALL)
    world.hub.connection_closed(conn)
    world.clock.now += 19
    await world.hub.expire()
    assert world.hub.agents() == ["agent1"] and not world.hub.connected("agent1")
    world.hub.call_held("agent1", "c1")  # no page: nothing to send, no error
    again = world.connect()
    reply = await world.send(again, "auth", token=token)
    assert reply["type"] == "auth-ok" and reply["calls"][0]["call_id"] == "c1"
    world.clock.now += 100
    await world.hub.expire()
    assert world.hub.agents() == ["agent1"]
    assert "agent_gone" not in world.control.names()


class MemorySessions:
    """`SharedSessions` as a dict (the Redis one is `omlmedia.cluster`'s, tested there)."""

    def __init__(self) -> None:
        self.sessions: dict[bytes, tuple[str, float, str]] = {}

    async def put(self, token_hash: bytes, agent: str, ttl: float) -> None:
        self.sessions[token_hash] = (agent, ttl, "logged-out")

    async def get(self, token_hash: bytes) -> tuple[str, float, str] | None:
        return self.sessions.get(token_hash)

    async def note_state(self, token_hash: bytes, state: str) -> None:
        agent, ttl, _ = self.sessions[token_hash]
        self.sessions[token_hash] = (agent, ttl, state)

    async def drop(self, token_hash: bytes) -> None:
        self.sessions.pop(token_hash, None)


async def test_the_channel_id_is_kept_on_a_reconnect_and_differs_on_another_node() -> None:
    shared = MemorySessions()
    node_a, node_b = World(), World()
    node_a.hub.accounts.shared = node_b.hub.accounts.shared = shared
    conn = await node_a.login()
    token, channel = conn.sent[0]["token"], conn.sent[0]["channel"]
    answer = await node_a.send(conn, "offer", sdp="v=0\r\noffer")
    assert answer["channel"] == channel
    # The same node: the page's peer connection still has its channel there.
    node_a.hub.connection_closed(conn)
    again = node_a.connect()
    reply = await node_a.send(again, "auth", token=token)
    assert reply["type"] == "auth-ok" and reply["channel"] == channel
    # Another node (the first one died): the session is adopted with a channel of its own,
    # which the page must negotiate afresh; its offer's answer names that one.
    elsewhere = node_b.connect()
    reply = await node_b.send(elsewhere, "auth", token=token)
    assert reply["type"] == "auth-ok" and reply["channel"] != channel
    answer = await node_b.send(elsewhere, "offer", sdp="v=0\r\noffer")
    assert answer["channel"] == reply["channel"]
    # A new login after the session ended gets a new channel on the same node too.
    await node_a.send(again, "logout")
    third = await node_a.login()
    assert third.sent[0]["channel"] not in (channel, reply["channel"])


async def test_closed_tab_ends_the_session_after_the_grace_period() -> None:
    world = World(grace=20)
    conn = await world.login()
    token = conn.sent[0]["token"]
    world.hub.connection_closed(conn)
    world.clock.now += 20
    await world.hub.expire()
    assert world.hub.agents() == []
    assert world.control.calls[-1] == ("agent_gone", "agent1", "closed")
    assert world.channels[0].closed
    late = world.connect()
    assert (await world.send(late, "auth", token=token))["code"] == "session-invalid"


async def test_logout_revokes_and_reports() -> None:
    world = World()
    conn = await world.login()
    token = conn.sent[0]["token"]
    await world.send(conn, "logout")
    assert conn.types()[-2:] == ["ack", "session-ended"] and conn.closed
    assert world.control.calls[-1] == ("agent_gone", "agent1", "logout")
    other = world.connect()
    assert (await world.send(other, "auth", token=token))["code"] == "session-invalid"


async def test_expired_session_is_ended() -> None:
    world = World()
    conn = await world.login()
    world.clock.now += 13 * 3600
    await world.send(conn, "ping")
    assert conn.last() == {"v": 1, "type": "session-ended", "reason": "expired"}
    assert world.control.calls[-1] == ("agent_gone", "agent1", "expired")


async def test_a_state_the_server_sets_while_obeying_ready_is_not_overwritten() -> None:
    """An ACD can go from Ready straight to Ringing inside the command: the page must end on
    Ringing, not on the Ready it asked for (the hub shows what it is told, nothing else)."""
    world = World()
    conn = await world.login()
    hub = world.hub

    async def ready_then_ring(agent: str, state: AgentState, reason: str | None) -> None:
        hub.state_changed(agent, AgentState.READY)
        hub.state_changed(agent, AgentState.RINGING)

    world.control.set_agent_state = ready_then_ring  # type: ignore[method-assign]
    await world.send(conn, "state", state="ready")
    states = [m["state"] for m in conn.sent if m.get("type") == "state"]
    assert states[-1] == "ringing", states


async def test_a_socket_that_does_not_log_in_in_time_is_closed_and_one_that_did_stays() -> None:
    world = World()
    idle = world.connect()
    agent = await world.login()
    world.clock.now += 9
    await world.hub.expire()
    assert not idle.closed and not agent.closed
    world.clock.now += 1
    await world.hub.expire()
    assert idle.closed and idle.last()["code"] == "login-timeout"
    assert not agent.closed and world.hub.connected("agent1")
    late = world.connect()
    world.clock.now += 100
    reply = await world.send(late, "login", username="agent2", password="pw1")
    assert reply["type"] == "login-ok"  # a login before the next expire() still counts
    await world.hub.expire()
    assert not late.closed


async def test_the_pause_reasons_come_from_the_server_and_a_page_pauses_with_one_of_them() -> None:
    world = World()
    reasons = ["break", "lunch"]
    world.hub.pause_reasons = lambda: reasons
    conn = await world.login()
    assert conn.sent[0]["pause_reasons"] == ["break", "lunch"]  # the menu, in login-ok
    refused = await world.send(conn, "state", state="paused", reason="nap")
    assert refused["type"] == "error" and refused["code"] == "invalid-reason", refused
    assert all(c[0] != "set_agent_state" for c in world.control.calls)
    await world.send(conn, "state", state="paused", reason="lunch")
    assert world.control.calls[-1] == ("set_agent_state", "agent1", AgentState.PAUSED, "lunch")
    reasons.append("coaching")  # an admin adds one: every page is told
    world.hub.pause_reasons_changed()
    assert conn.last() == {
        "v": 1,
        "type": "pause-reasons",
        "reasons": ["break", "lunch", "coaching"],
    }
    reasons.remove("lunch")  # removed while paused with it: still paused with it
    world.hub.pause_reasons_changed()
    assert world.hub.agent_state("agent1") is AgentState.PAUSED
    assert world.hub._agents["agent1"].reason == "lunch"
    reasons.remove("break")
    await world.send(conn, "state", state="paused")  # no reason: the first of the list
    assert world.control.calls[-1] == ("set_agent_state", "agent1", AgentState.PAUSED, "coaching")


async def test_a_disposition_outside_the_calls_campaign_set_is_refused() -> None:
    world = World()
    conn = await world.login()
    campaign_call = CallInfo("c9", caller_number="100", queue="sales", dispositions=("sold",))
    assert world.hub.offer_call("agent1", campaign_call)
    await world.send(conn, "answer", call_id="c9")
    refused = await world.send(conn, "disposition", call_id="c9", disposition="maybe")
    assert refused["type"] == "error" and refused["code"] == "invalid-disposition", refused
    assert all(c[0] != "set_disposition" for c in world.control.calls)
    await world.send(conn, "disposition", call_id="c9", disposition="sold")
    assert world.control.calls[-1] == ("set_disposition", "agent1", "c9", "sold", "")
