"""Cross-node calls (`omlmedia.crossnode`): a caller on node a rings an agent whose page is on
node b, over an internal SIP leg signed with the cluster's secret.

Real peers: two `omlmedia serve` nodes on loopback sharing a throwaway Redis, a baresip caller
(440 Hz, PCMU) on node a dialling agent1's direct route, agent1's Chromium page (660 Hz
microphone) logged in on node b. The agent hears the caller and the caller hears the agent (the
tones, measured on the audio); a decline reaches the caller as 486; a hang-up on either side
ends both nodes' calls; an INVITE to node b without a valid signature gets 403, even from
loopback; a call to an agent on no node gets 480; hold and resume on node b work as for a
local call. The signing, the gate and the configuration are tested without sockets first.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness
from benchmarks.crossnode import sip_port
from omlmedia.cluster import AgentLocator
from omlmedia.config import ConfigError, load_config
from omlmedia.crossnode import (
    HEADER,
    MAX_SKEW,
    InternalGate,
    OfferHeader,
    Outcome,
    outcome_of,
    sign_offer,
    verify_offer,
)
from sip.endpoint import Endpoint
from sip.message import URI, Request
from tests.cluster import redis
from tests.cluster.test_shared_database import api
from tests.interop.baresip import dial
from tests.interop.browser import chromium
from tests.interop.harness import SCENARIOS, run_sipp, start_sipp
from tests.interop.pages import agent_ready
from tests.interop.test_monitor import hears, tone_seconds

SECRET = b"0123456789abcdef0123456789abcdef"
CALLER_TONE = 440.0
AGENT_TONE = 660.0
ONE_CALL = ("-s", "agent-agent1", "-m", "1", "-timeout", "30")
OFFER = OfferHeader(call_id="abc@host", queue="support", caller="+34 600;1", node="a")


# -- the signature, the gate, the outcome: no sockets ----------------------------------------


def test_a_signed_offer_verifies_with_its_fields_and_only_for_its_agent_and_secret() -> None:
    value = sign_offer(SECRET, "agent1", OFFER, 1000.0, nonce="n1")
    assert verify_offer(SECRET, "agent1", value, 1000.0) == (OFFER, "n1")
    assert verify_offer(SECRET, "agent2", value, 1000.0) is None
    assert verify_offer(b"another secret of 32 bytes......", "agent1", value, 1000.0) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v.replace("queue=support", "queue=sales"),
        lambda v: v.replace("node=a", "node=b"),
        lambda v: v.replace("nonce=n1", "nonce=n2"),
        lambda v: v.replace("ts=1000", "ts=1001"),
        lambda v: v.rsplit(";sig=", 1)[0],
        lambda v: v + ";extra=1",
        lambda v: "",
    ],
)
def test_a_tampered_offer_does_not_verify(tamper: Any) -> None:
    value = sign_offer(SECRET, "agent1", OFFER, 1000.0, nonce="n1")
    assert verify_offer(SECRET, "agent1", tamper(value), 1000.0) is None


def test_an_offer_is_valid_only_within_the_clock_skew() -> None:
    value = sign_offer(SECRET, "agent1", OFFER, 1000.0)
    assert verify_offer(SECRET, "agent1", value, 1000.0 + MAX_SKEW) is not None
    assert verify_offer(SECRET, "agent1", value, 1000.0 + MAX_SKEW + 1) is None
    assert verify_offer(SECRET, "agent1", value, 1000.0 - MAX_SKEW - 1) is None


def _invite(agent: str, header: str | None) -> Request:
    request = Request("INVITE", URI.parse(f"sip:{agent}@127.0.0.1:5080"))
    request.headers.add("Call-ID", "x@y")
    if header is not None:
        request.headers.add(HEADER, header)
    return request


def test_the_gate_admits_a_node_only_from_its_exact_address_with_a_fresh_unseen_signature() -> None:
    now = [1000.0]
    nodes = {"a": Endpoint("udp", "127.0.0.1", 5070), "b": Endpoint("udp", "127.0.0.1", 5080)}
    gate = InternalGate(SECRET, nodes, "b", clock=lambda: now[0])
    from_a = Endpoint("udp", "127.0.0.1", 5070)
    signed = sign_offer(SECRET, "agent1", OFFER, now[0])
    assert gate(_invite("agent1", signed), Endpoint("udp", "127.0.0.1", 5071)) is None
    assert gate(_invite("agent1", None), from_a) is None
    assert gate(_invite("agent2", signed), from_a) is None  # signed for another agent
    assert gate(_invite("agent1", signed), from_a) == "node:a"
    assert gate(_invite("agent1", signed), from_a) is None  # replayed
    claims_b = OfferHeader(OFFER.call_id, OFFER.queue, OFFER.caller, "b")
    assert gate(_invite("agent1", sign_offer(SECRET, "agent1", claims_b, now[0])), from_a) is None
    now[0] += MAX_SKEW + 5
    assert gate(_invite("agent1", signed), from_a) is None  # stale
    assert gate(_invite("agent1", sign_offer(SECRET, "agent1", OFFER, now[0])), from_a)
    assert (gate.admitted, gate.refused) == (2, 5)


def test_the_final_status_of_the_internal_leg_maps_to_the_offer_outcome() -> None:
    assert outcome_of(200) is Outcome.ANSWERED
    assert {outcome_of(s) for s in (486, 603, 600)} == {Outcome.REJECTED}
    assert {outcome_of(s) for s in (480, 408)} == {Outcome.TIMEOUT}
    assert outcome_of(487) is Outcome.CANCELLED
    assert {outcome_of(s) for s in (403, 500, 503)} == {Outcome.FAILED}


# -- the configuration --------------------------------------------------------------------------

BASE = f"""
[api]
token_sha256 = "{hashlib.sha256(b"token").hexdigest()}"
"""


def _cluster(tmp_path: Path, text: str) -> Path:
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "short").write_bytes(b"short")
    path = tmp_path / "c.toml"
    path.write_text(BASE + text, encoding="utf-8")
    return path


GOOD = """
[cluster]
redis_url = "redis://127.0.0.1:6390/0"
node = "a"
secret_file = "secret"
[cluster.nodes.a]
sip = "127.0.0.1:5070"
[cluster.nodes.b]
sip = "10.0.0.2"
"""


def test_the_cluster_nodes_are_read_with_their_addresses_and_the_secret(tmp_path: Path) -> None:
    cluster = load_config(_cluster(tmp_path, GOOD)).cluster
    assert cluster.node == "a" and cluster.secret == SECRET
    assert [(n.name, n.host, n.port) for n in cluster.nodes] == [
        ("a", "127.0.0.1", 5070),
        ("b", "10.0.0.2", 5060),
    ]


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda t: t.replace('node = "a"', 'node = "c"'), "cluster.node: 'c' is not one of"),
        (lambda t: t.replace('node = "a"\n', ""), "cluster.node: required for cross-node"),
        (lambda t: t.replace('secret_file = "secret"\n', ""), "cluster.secret_file: required"),
        (lambda t: t.replace('"secret"', '"short"'), "cluster.secret_file: the secret must be"),
        (lambda t: t.replace('"secret"', '"missing"'), "cluster.secret_file: cannot read"),
        (lambda t: t.replace('redis_url = "redis://127.0.0.1:6390/0"\n', ""), "cluster.redis_url"),
        (
            lambda t: t.replace('"10.0.0.2"', '"nodeb.example"'),
            "cluster.nodes.b.sip: must be an IP",
        ),
        (lambda t: t.replace('"10.0.0.2"', '"10.0.0.2:99999"'), "cluster.nodes.b.sip: port"),
        (lambda t: t.replace('sip = "10.0.0.2"', 'sipp = "x"'), "cluster.nodes.b.sipp: unknown"),
    ],
)
def test_a_bad_cluster_nodes_section_is_refused_naming_the_key(
    tmp_path: Path, edit: Any, error: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_cluster(tmp_path, edit(GOOD)))
    assert any(error in e for e in info.value.errors), info.value.errors


# -- Redis: where each agent's page is ----------------------------------------------------------


async def test_an_agent_is_located_on_the_node_that_published_it_until_that_node_forgets_it(
    shared: redis.Redis,
) -> None:
    # b's key lives 1.5 s: it must outlive the three round trips after b's publish below (with
    # 0.3 s a loaded machine could let it lapse before a read it: None instead of "b").
    a, b = AgentLocator(shared.url, "a"), AgentLocator(shared.url, "b", ttl=1.5)
    try:
        await a.publish(["loc1", "loc2"])
        assert await b.node_of("loc1") == "a"
        await b.publish(["loc2"])  # the page moved to b
        await a.forget("loc2")  # a's late goodbye does not undo it
        assert (await a.node_of("loc1"), await a.node_of("loc2")) == ("a", "b")
        await a.forget("loc1")
        assert await b.node_of("loc1") is None
        deadline = time.monotonic() + 15  # b stops refreshing (it died): the key lapses
        while await a.node_of("loc2") is not None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await a.close()
        await b.close()


# -- two real nodes -------------------------------------------------------------------------------


def _edit(name: str, ports: dict[str, int], redis_url: str, secret: Path) -> Any:
    cluster = (
        f'\n[cluster]\nredis_url = "{redis_url}"\nnode = "{name}"\nsecret_file = "{secret}"\n'
        + "".join(f'[cluster.nodes.{n}]\nsip = "127.0.0.1:{p}"\n' for n, p in ports.items())
    )

    def edit(text: str) -> str:
        text = re.sub(r"(?m)^sip_port = \d+$", f"sip_port = {ports[name]}", text, count=1)
        if name == "b":
            # Node b trusts no loopback trunk and has no digest users: a stranger gets 403.
            text = text.replace('trusted_sources = ["127.0.0.1/32"]', "trusted_sources = []")
            text = re.sub(r"(?s)\[\[users\]\].*?(?=\[\[routes\]\])", "", text, count=1)
        return text + cluster

    return edit


def _expect(tmp_path: Path, status: int) -> Path:
    """uac_expect_486.xml expecting `status` instead."""
    path = tmp_path / f"uac_expect_{status}.xml"
    path.write_text(
        (SCENARIOS / "uac_expect_486.xml")
        .read_text()
        .replace('response="486"', f'response="{status}"')
    )
    return path


def sip_calls(server: harness.RunningServer) -> tuple[int, int, int]:
    """The node's live SIP calls, dialogs and bridged media."""
    status, view = api(server, "GET", "/api/v1/status")
    assert status == 200, view
    return view["sip"]["calls"], view["sip"]["dialogs"], view["media"]["active"]


async def both_clean(nodes: list[harness.RunningServer], what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        found = [await asyncio.to_thread(sip_calls, node) for node in nodes]
        if all(f == (0, 0, 0) for f in found):
            return
        assert time.monotonic() < deadline, f"{what}: calls left (calls, dialogs, media) {found}"
        await asyncio.sleep(0.1)


@pytest.fixture
def nodes(shared: redis.Redis, tmp_path: Path) -> Iterator[list[harness.RunningServer]]:
    secret = tmp_path / "cluster.secret"
    secret.write_bytes(SECRET)
    ports = {"a": sip_port(), "b": sip_port()}
    started: list[harness.RunningServer] = []
    try:
        for name in ("a", "b"):
            started.append(
                harness.start_server(
                    tmp_path / name, edit_config=_edit(name, ports, shared.url, secret)
                )
            )
            started[-1].ports["sip"] = ports[name]
        yield started
    finally:
        for node in started:
            assert node.stop() == 0, node.log()[-3000:]


async def test_a_caller_on_node_a_talks_to_an_agent_on_node_b_over_a_signed_internal_leg(
    nodes: list[harness.RunningServer], tmp_path: Path
) -> None:
    from playwright.async_api import expect

    a, b = nodes
    async with chromium(tmp_path / "browser", AGENT_TONE) as browser:
        page = await browser.new_page()
        await agent_ready(page, f"https://127.0.0.1:{b.http_port}")
        state = page.locator("#state")
        target = f"sip:agent-agent1@127.0.0.1:{a.sip_port}"

        # 1. Audio both ways; the caller hangs up: both nodes end the call.
        caller = asyncio.get_running_loop().run_in_executor(
            None,
            # 10 s: the steps below take 2 s at load average 2, the caller must hear 3 s of agent
            lambda: dial(tmp_path / "caller", target, 10, tone_hz=CALLER_TONE, codecs="PCMU"),
        )
        await expect(state).to_have_text("Ringing", timeout=15000)
        await expect(page.locator("#call-panel")).to_contain_text("tester")
        await page.get_by_role("button", name="Answer", exact=True).click()
        await expect(state).to_have_text("On call")
        await hears(page, "remote-audio", (CALLER_TONE,), (), "agent on node b")
        # Hold and resume on node b, as for a local call: the agent stops hearing the caller.
        await page.get_by_role("button", name="Hold", exact=True).click()
        await hears(page, "remote-audio", (), (CALLER_TONE,), "agent, caller held")
        await page.get_by_role("button", name="Resume", exact=True).click()
        await hears(page, "remote-audio", (CALLER_TONE,), (), "agent, caller resumed")
        _, view = await asyncio.to_thread(api, a, "GET", "/api/v1/status")
        assert view["cluster"]["crossnode"]["offered"] == 1, view["cluster"]
        _, view = await asyncio.to_thread(api, b, "GET", "/api/v1/status")
        assert view["cluster"]["crossnode"]["received"] == 1, view["cluster"]
        assert view["cluster"]["internal_admitted"] == 1, view["cluster"]
        run = await caller
        assert run.established, run.output[-3000:]
        assert tone_seconds(run.decoded(), AGENT_TONE) > 3, "the caller did not hear the agent"
        await expect(page.locator("#no-call")).to_be_visible(timeout=15000)
        await both_clean(nodes, "after the caller hung up")

        # 2. The agent declines: the caller gets 486 (busy), relayed by node a.
        await expect(state).to_have_text("Ready", timeout=15000)  # after its wrap-up
        sipp = start_sipp(
            ["-sf", str(SCENARIOS / "uac_expect_486.xml"), f"127.0.0.1:{a.sip_port}", *ONE_CALL],
            tmp_path,
            "declined",
        )
        await expect(state).to_have_text("Ringing", timeout=15000)
        await page.get_by_role("button", name="Hang up", exact=True).click()
        assert await asyncio.to_thread(sipp.wait, 30) == 0, (tmp_path / "declined.out").read_text()
        await both_clean(nodes, "after the decline")

        # 3. The agent hangs up an answered call: node a sends the caller a BYE.
        await expect(state).to_have_text("Ready", timeout=15000)  # after its wrap-up
        sipp = start_sipp(
            ["-sf", str(SCENARIOS / "uac_wait_for_bye.xml"), f"127.0.0.1:{a.sip_port}", *ONE_CALL],
            tmp_path,
            "agent-hangs-up",
        )
        await expect(state).to_have_text("Ringing", timeout=15000)
        await page.get_by_role("button", name="Answer", exact=True).click()
        await expect(state).to_have_text("On call")
        await page.get_by_role("button", name="Hang up", exact=True).click()
        assert await asyncio.to_thread(sipp.wait, 30) == 0, (
            tmp_path / "agent-hangs-up.out"
        ).read_text()
        await both_clean(nodes, "after the agent hung up")

    # 4. An INVITE for agent1 straight to node b, unsigned, from another loopback port: 403.
    refused = await asyncio.to_thread(
        run_sipp,
        ["-sf", str(_expect(tmp_path, 403)), f"127.0.0.1:{b.sip_port}", "-s", "agent1", "-m", "1"],
        tmp_path,
        name="unsigned",
    )
    assert refused.returncode == 0, refused.output + refused.errors
    # 5. An agent logged in on no node (agent2): node a answers 480, as for an absent agent.
    absent = await asyncio.to_thread(
        run_sipp,
        [
            "-sf",
            str(_expect(tmp_path, 480)),
            f"127.0.0.1:{a.sip_port}",
            "-s",
            "agent-agent2",
            "-m",
            "1",
        ],
        tmp_path,
        name="absent",
    )
    assert absent.returncode == 0, absent.output + absent.errors
    await both_clean(nodes, "after the refusal")


# -- the desk's hooks (no sockets) -----------------------------------------------------------------


async def test_the_desk_sends_a_direct_call_elsewhere_only_for_an_agent_not_logged_in_here() -> (
    None
):
    from omlmedia.config import Route, RouteAction
    from omlmedia.targets import Refusal
    from queueing.events import AgentState
    from tests.omlmedia.deskfakes import inbound_call
    from tests.omlmedia.test_desk import World

    world = World()
    try:
        elsewhere: list[str] = []
        presence: list[tuple[str, bool]] = []

        def remote(call: Any, agent: str) -> Refusal | None:
            elsewhere.append(agent)
            return None

        world.desk.remote = remote
        world.desk.on_presence.append(lambda agent, here: presence.append((agent, here)))
        await world.ready("agent3")
        route = Route(RouteAction.AGENT, pattern=re.compile("^agent-(.+)$"), strip=6)
        assert world.desk.take_route(inbound_call("agent-agent3"), route, "agent3") is None
        assert elsewhere == [] and world.hub.shown("agent3") is AgentState.RINGING  # rung here
        assert world.desk.take_route(inbound_call("agent-agent2"), route, "agent2") is None
        assert elsewhere == ["agent2"]  # not here: handed to the cross-node side
        world.desk.hangup_all()
        await world.hub.logout("agent3", "logout")
        assert presence == [("agent3", True), ("agent3", False)]
    finally:
        world.close()
