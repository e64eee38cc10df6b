"""The directory's changes applied to the running ACD and desk (the desk's test world: fake SIP,
real engine, runtime and desk): offers follow memberships at once, a disabled agent finishes its
call before it is logged out, a deleted queue's caller is not put back in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from omlmedia.accounts import AccountBook
from omlmedia.authz import Identity, Role
from omlmedia.directory import AgentPages, Directory
from omlmedia.problems import ApiError
from queueing.config import build_config
from queueing.events import AgentState
from sip.ua import CallState
from webrtc.accounts import AccountStore, hash_password
from webrtc.config import AgentConfig

from .deskfakes import until
from .test_desk import ACD, World

ADMIN = Identity("boss", Role.ADMIN, None, "t1", "boss")
HASH = hash_password("password-1")


class Setup:
    def __init__(self, world: World, directory: Directory, logins: AccountStore) -> None:
        self.world = world
        self.directory = directory
        self.logins = logins


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    world = World()
    book = AccountBook(tmp_path / "omlmedia.db")
    directory = Directory(book)
    agents = [AgentConfig(name, name.title(), HASH) for name in ACD["agents"]]
    directory.seed(agents, build_config(ACD).queues)
    assert directory.acd_config().queues == world.engine.config.queues
    logins = AccountStore(directory.agent_accounts(), clock=world.clock)
    desk = world.desk
    directory.bind(
        world.acd,
        logins,
        AgentPages(lambda a: any(c.agent == a for c in desk.calls.values()), desk.log_out),
    )
    yield Setup(world, directory, logins)
    await directory.close()
    world.close()
    book.close()


async def test_a_new_agent_added_to_a_queue_is_offered_its_waiting_caller(setup: Setup) -> None:
    world, directory = setup.world, setup.directory
    call = await world.queue_call("sales")  # nobody is logged in: the caller waits
    await directory.create_agent(ADMIN, "agent3", "password-3", display_name="Three")
    assert "agent3" in setup.logins.accounts  # the agent page's login knows it at once
    await world.ready("agent3")
    assert world.hub.call_state("agent3", call.call_id) is None
    await directory.set_member(ADMIN, "sales", "agent3", 0)
    assert world.hub.call_state("agent3", call.call_id) == "ringing"


async def test_a_member_removed_while_ringing_is_withdrawn_and_the_next_is_rung(
    setup: Setup,
) -> None:
    world, directory = setup.world, setup.directory
    await world.ready("agent1", "agent2")
    call = await world.queue_call("sales")  # linear: agent1 first
    assert world.hub.call_state("agent1", call.call_id) == "ringing"
    await directory.remove_member(ADMIN, "sales", "agent1")
    assert world.hub.call_state("agent1", call.call_id) is None
    assert world.hub.call_state("agent2", call.call_id) == "ringing"
    assert world.engine_state("agent1") is AgentState.READY


async def test_a_disabled_agent_finishes_its_call_then_is_logged_out(setup: Setup) -> None:
    world, directory = setup.world, setup.directory
    await world.ready("agent1")
    call = await world.queue_call("sales")
    await world.desk.answer("agent1", call.call_id)
    view = await directory.update_agent(ADMIN, "agent1", disabled=True)
    assert view["disabled"] and "agent1" not in setup.logins.accounts
    assert world.engine_state("agent1") is AgentState.ON_CALL  # not cut
    assert call.state is not CallState.ENDED
    assert ("session-ended", "agent1", "account-disabled") not in world.hub.pushes
    second = await world.queue_call("support")
    assert world.hub.call_state("agent1", second.call_id) is None  # no new offer meanwhile
    world.caller_hangs_up(call)
    await until(lambda: ("session-ended", "agent1", "account-disabled") in world.hub.pushes)
    assert world.engine_state("agent1") is AgentState.LOGGED_OUT
    assert "agent1" not in world.desk.logged_in


async def test_a_disabled_agent_without_a_call_is_logged_out_at_once(setup: Setup) -> None:
    world, directory = setup.world, setup.directory
    await world.ready("agent2")
    await directory.update_agent(ADMIN, "agent2", disabled=True)
    assert ("session-ended", "agent2", "account-disabled") in world.hub.pushes
    assert world.engine_state("agent2") is AgentState.LOGGED_OUT
    await directory.update_agent(ADMIN, "agent2", disabled=False)
    assert "agent2" in setup.logins.accounts


async def test_an_agent_on_a_call_cannot_be_deleted(setup: Setup) -> None:
    world, directory = setup.world, setup.directory
    await world.ready("agent1")
    call = await world.queue_call("sales")
    await world.desk.answer("agent1", call.call_id)
    with pytest.raises(ApiError) as caught:
        await directory.delete_agent(ADMIN, "agent1")
    assert caught.value.status == 409
    world.caller_hangs_up(call)
    await world.desk.set_agent_state("agent1", AgentState.READY, None)
    await directory.delete_agent(ADMIN, "agent1")  # logged out, then gone
    assert "agent1" not in world.engine.config.agents
    assert ("session-ended", "agent1", "account-disabled") in world.hub.pushes


async def test_a_queue_with_a_waiting_caller_cannot_be_deleted(setup: Setup) -> None:
    world, directory = setup.world, setup.directory
    await directory.create_queue(ADMIN, "vip", {"members": ["agent1"]})
    call = await world.queue_call("vip")
    with pytest.raises(ApiError) as caught:
        await directory.delete_queue(ADMIN, "vip")
    assert caught.value.status == 409 and "wait" in caught.value.reason
    world.caller_hangs_up(call)
    await directory.delete_queue(ADMIN, "vip")
    assert "vip" not in world.engine.config.queues


async def test_the_caller_of_a_deleted_queue_is_hung_up_when_its_agent_goes(
    setup: Setup,
) -> None:
    world, directory = setup.world, setup.directory
    await directory.create_queue(ADMIN, "vip", {"members": ["agent1"]})
    await world.ready("agent1")
    call = await world.queue_call("vip")
    await world.desk.answer("agent1", call.call_id)
    await directory.delete_queue(ADMIN, "vip")  # answered: it waits in it no more
    await world.hub.logout("agent1", "closed")  # the page goes: no queue to go back to
    assert call.call_id not in world.acd.callers
    assert any(action[0] == "hangup" for action in world.ua.of(call))
