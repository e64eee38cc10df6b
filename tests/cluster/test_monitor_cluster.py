"""A supervisor monitors a call another node of the cluster carries (``[cluster] acd = "shared"``).

Real peers: two `omlmedia serve` nodes sharing a throwaway Redis (the ACD) and PostgreSQL (the
nodes fixture of `tests.cluster.test_cluster_queues`), a baresip caller (440 Hz, PCMU) dialling
``support`` on node a, agent1 answering in Chromium on node b (660 Hz microphone): a call across
nodes, whose audio node b's desk carries. The supervisor's page is on node a (1000 Hz
microphone), the node that does NOT carry the call's audio: its monitoring goes over a signed
internal leg from node a to node b (`omlmedia.monitor_remote`). What each party hears is measured
on the audio itself, as on one node (`tests.interop.test_monitor`). Proved here:

- listen: the supervisor hears the caller and the agent, nobody hears the supervisor; whisper:
  the agent hears the supervisor, the caller does not; barge: both do; stop: neither does and the
  supervisor hears nothing; all on one channel (no renegotiation);
- the audit entries and the ``call.monitored`` events are written on the supervisor's node, the
  audit naming the call's node;
- the call's end (hung up through node b's call-control API once listening again is heard:
  node b BYEs the monitor leg and node a, which BYEs the caller) ends the monitoring (the page
  says the call ended) and every leg and port is released on both nodes;
- while agent1 still rings, node b does not carry the call: its leg is refused (404) and the
  page says node b carries no such call;
- node b frozen (SIGSTOP): the page says node b did not answer within the leg's answer
  timeout (``node-unreachable``, naming the node), not a hang; once b goes on, monitoring works;
- a forged, replayed, stale or foreign monitor leg is refused by the gate (a unit test).

With ``OMLMEDIA_MEASURE_MONITOR=1`` the test also measures both nodes' CPU (``/proc/<pid>/stat``)
over 4 s of the call unmonitored and listened to from node a, and prints it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from omlmedia.monitor_remote import (
    ANSWER_WITHIN,
    HEADER,
    MonitorGate,
    MonitorRequest,
    sign_monitor,
    verify_monitor,
)
from sip.endpoint import Endpoint
from sip.message import URI, Request
from tests.cluster.test_cluster_queues import _log_in, nodes  # noqa: F401 (fixture)
from tests.cluster.test_crossnode import both_clean
from tests.cluster.test_shared_database import api
from tests.cluster.test_wallboard_cluster import SUPERVISOR_PASSWORD, calls_on, supervisor_token
from tests.interop.baresip import dial
from tests.interop.browser import chromium
from tests.interop.pages import log_in
from tests.interop.test_call_control import stream_events
from tests.interop.test_monitor import cpu_share, hears, tone_seconds, tone_windows

CALLER_TONE = 440.0
AGENT_TONE = 660.0
SUPERVISOR_TONE = 1000.0
MEASURE = os.environ.get("OMLMEDIA_MEASURE_MONITOR") == "1"
"""Also measure both nodes' CPU unmonitored and listened to across nodes, and print it."""
CALL_SECONDS = 120
"""The caller's ceiling only: the test hangs the call up when it has what it needs. (A caller
hanging up by itself after 24 s was a deadline a loaded machine could miss: listening again came
16 s after the dial at load average 6, 17 s at 10.)"""
SECRET = b"s" * 32
REQUEST = """async (id) => {
    try {
        await window.omlMonitor.signaling.request("monitor", {call_id: id, mode: "listen"});
        return {code: null, message: ""};
    } catch (error) {
        return {code: error.code, message: error.message};
    }
}"""
"""The supervisor's page asks to listen to a call by id over its own socket: the refusal."""


# -- the signed header and the gate ---------------------------------------------------------------


def _invite(value: str | None) -> Request:
    request = Request("INVITE", URI.parse("sip:monitor@127.0.0.1:5080"))
    request.headers.add("Call-ID", "leg-1")
    if value is not None:
        request.headers.add(HEADER, value)
    return request


def test_a_monitor_header_verifies_only_fresh_unaltered_and_with_the_secret() -> None:
    req = MonitorRequest("call;1@a", "whisper", "sue o'hara", "a")
    value = sign_monitor(SECRET, req, 1000.0, "n1")
    assert verify_monitor(SECRET, value, 1010.0) == (req, "n1")
    assert verify_monitor(b"t" * 32, value, 1010.0) is None  # another secret
    assert verify_monitor(SECRET, value, 1000.0 + 31) is None  # stale
    assert verify_monitor(SECRET, value.replace("whisper", "barge"), 1010.0) is None
    assert verify_monitor(SECRET, value.replace(";node=a", ";node=b"), 1010.0) is None
    assert verify_monitor(SECRET, value + ";extra=1", 1010.0) is None
    bad_mode = sign_monitor(SECRET, MonitorRequest("c", "shout", "sue", "a"), 1000.0)
    assert verify_monitor(SECRET, bad_mode, 1000.0) is None


def test_a_monitor_headers_signing_time_is_read_back_for_ordering_a_supervisors_legs() -> None:
    from omlmedia.monitor_remote import _signed_at

    value = sign_monitor(SECRET, MonitorRequest("c1", "listen", "sue", "a"), 1234.7)
    assert _signed_at(value) == 1234
    assert _signed_at("c1;mode=listen") == 0 and _signed_at("ts=9") == 0  # none, or not a param


def test_the_gate_admits_a_monitor_leg_once_from_its_node_and_passes_other_invites_on() -> None:
    addresses = {
        "a": Endpoint("udp", "127.0.0.1", 5070),
        "b": Endpoint("udp", "127.0.0.1", 5080),
    }
    passed: list[Request] = []

    def fallback(request: Request, source: Endpoint) -> str | None:
        passed.append(request)
        return "node:offer"

    gate = MonitorGate(SECRET, addresses, "b", fallback, clock=lambda: 1000.0)
    from_a = Endpoint("udp", "127.0.0.1", 5070)
    value = sign_monitor(SECRET, MonitorRequest("c1", "listen", "sue", "a"), 1000.0)
    assert gate(_invite(value), from_a) == "node:a"
    assert gate(_invite(value), from_a) is None  # replayed nonce
    elsewhere = sign_monitor(SECRET, MonitorRequest("c1", "listen", "sue", "a"), 1000.0)
    assert gate(_invite(elsewhere), Endpoint("udp", "127.0.0.1", 5999)) is None  # not a node
    as_c = sign_monitor(SECRET, MonitorRequest("c1", "listen", "sue", "c"), 1000.0)
    assert gate(_invite(as_c), from_a) is None  # signed as another node
    forged = sign_monitor(b"x" * 32, MonitorRequest("c1", "listen", "sue", "a"), 1000.0)
    assert gate(_invite(forged), from_a) is None
    assert (gate.admitted, gate.refused) == (1, 3)
    assert gate(_invite(None), from_a) == "node:offer" and len(passed) == 1  # an offer


# -- two real nodes -------------------------------------------------------------------------------


def audit(node: harness.RunningServer, action: str) -> list[dict[str, Any]]:
    status, view = api(node, "GET", f"/api/v1/audit?action={action}")
    assert status == 200, view
    entries: list[dict[str, Any]] = view["entries"] if isinstance(view, dict) else view
    return entries


async def _both_cpu(a: harness.RunningServer, b: harness.RunningServer) -> tuple[float, float]:
    """Both nodes' CPU over the same 4 s, in % of one core."""
    first, second = await asyncio.gather(cpu_share(a.pid), cpu_share(b.pid))
    return round(first, 1), round(second, 1)


async def test_a_supervisor_on_node_a_listens_whispers_barges_and_stops_on_a_call_node_b_carries(
    nodes: list[harness.RunningServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    a, b = nodes
    await asyncio.to_thread(supervisor_token, a)  # the account "sue" on node a
    async with (
        chromium(tmp_path / "agent", AGENT_TONE) as agent_browser,
        chromium(tmp_path / "supervisor", SUPERVISOR_TONE) as supervisor_browser,
    ):
        await supervisor_browser.add_init_script(
            "localStorage.setItem('omlmedia.supervisor.settings', '{\"audioProcessing\": false}');"
        )
        agent = await _log_in(agent_browser, b)
        state = agent.locator("#state")
        await agent.get_by_role("button", name="Ready", exact=True).click()
        await expect(state).to_have_text("Ready", timeout=10000)

        supervisor = await supervisor_browser.new_page()
        errors: list[str] = []
        supervisor.on("pageerror", lambda e: errors.append(str(e)))
        await supervisor.goto(f"https://127.0.0.1:{a.http_port}/supervisor/")
        await log_in(supervisor, "sue", SUPERVISOR_PASSWORD)
        panel = supervisor.get_by_role("complementary", name="Monitoring")
        await expect(panel.locator("#monitor-channel")).to_have_text("connected", timeout=15000)
        await supervisor.evaluate("window.omlMonitor.pc.omlTag = 'the first one'")
        mode = panel.locator("#monitor-mode")

        target = f"sip:support@127.0.0.1:{a.sip_port}"
        caller = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: dial(
                tmp_path / "caller", target, CALL_SECONDS, tone_hz=CALLER_TONE, codecs="PCMU"
            ),
        )
        await expect(state).to_have_text("Ringing", timeout=15000)
        # While agent1 rings, the ACD has the call on node b, whose desk does not carry it yet:
        # the leg is refused there (404) and the page says so, naming node b.
        ringing = await asyncio.to_thread(calls_on, a)
        assert len(ringing) == 1, ringing
        refused = await supervisor.evaluate(REQUEST, ringing[0]["call_id"])
        assert refused["code"] == "unknown-call", refused
        assert "node b carries no such call" in refused["message"], refused
        await agent.get_by_role("button", name="Answer", exact=True).click()
        await expect(state).to_have_text("On call", timeout=10000)
        await hears(agent, "remote-audio", (CALLER_TONE,), (SUPERVISOR_TONE,), "agent, alone")
        cpu: dict[str, tuple[float, float]] = {}
        if MEASURE:
            cpu["unmonitored"] = await _both_cpu(a, b)

        # The supervisor (node a) picks the call on its wallboard: agent1's, carried by node b.
        row = supervisor.locator("#call-rows tr").filter(has_text="agent1")
        await expect(row).to_have_count(1, timeout=10000)
        await row.get_by_role("button").click()
        await panel.get_by_role("button", name="Listen", exact=True).click()
        await expect(mode).to_contain_text("Listening", timeout=10000)
        await hears(
            supervisor, "monitor-audio", (CALLER_TONE, AGENT_TONE), (), "supervisor, listen"
        )
        await hears(agent, "remote-audio", (CALLER_TONE,), (SUPERVISOR_TONE,), "agent, listen")
        if MEASURE:
            cpu["listened to from node a"] = await _both_cpu(a, b)
            print(f"\nCPU of node a, node b (% of one core over 4 s): {cpu}")

        whisper_at = time.monotonic()
        await panel.get_by_role("button", name="Whisper", exact=True).click()
        await expect(mode).to_contain_text("Whispering")
        await hears(agent, "remote-audio", (CALLER_TONE, SUPERVISOR_TONE), (), "agent, whisper")
        await hears(
            supervisor, "monitor-audio", (CALLER_TONE, AGENT_TONE), (), "supervisor, whisper"
        )
        await asyncio.sleep(max(0.0, whisper_at + 4.0 - time.monotonic()))  # 4 s of whisper

        barge_at = time.monotonic()
        await panel.get_by_role("button", name="Barge", exact=True).click()
        await expect(mode).to_contain_text("barge")
        await hears(agent, "remote-audio", (CALLER_TONE, SUPERVISOR_TONE), (), "agent, barge")
        await asyncio.sleep(max(0.0, barge_at + 3.0 - time.monotonic()))  # 3 s of barge

        stop_at = time.monotonic()
        await panel.get_by_role("button", name="Stop", exact=True).click()
        await expect(mode).to_have_text("Not monitoring")
        await hears(agent, "remote-audio", (CALLER_TONE,), (SUPERVISOR_TONE,), "agent, stopped")
        stop_heard = time.monotonic()
        await hears(
            supervisor, "monitor-audio", (), (CALLER_TONE, AGENT_TONE), "supervisor, stopped"
        )

        # Node b frozen (SIGSTOP): the leg is not answered and the page says so, naming node b,
        # within the answer timeout; not a hang. Then b goes on.
        os.kill(b.process.pid, signal.SIGSTOP)
        try:
            await panel.get_by_role("button", name="Listen", exact=True).click()
            await expect(panel.locator("#monitor-status")).to_contain_text(
                "node b, which carries the call, did not answer",
                timeout=ANSWER_WITHIN * 1000 + 5000,
            )
            await expect(mode).to_have_text("Not monitoring")
            # Listening again, asked while b is still frozen: b, once it goes on, finds the leg
            # node a gave up and this one; the new one is the supervisor's (not a 486 "another
            # supervisor" from the old one, answered before a's CANCEL reached b: the load-only
            # failure of this step).
            placed = a.log().count("event=monitor-leg-placed")
            await panel.get_by_role("button", name="Listen", exact=True).click()
            deadline = time.monotonic() + 10
            while a.log().count("event=monitor-leg-placed") == placed:
                assert time.monotonic() < deadline, "node a placed no second leg"
                await asyncio.sleep(0.02)
        finally:
            os.kill(b.process.pid, signal.SIGCONT)

        # Listening again, until the call is hung up: the monitoring ends with the call.
        await expect(mode).to_contain_text("Listening", timeout=10000)
        await hears(supervisor, "monitor-audio", (CALLER_TONE,), (), "supervisor, listen again")
        assert await supervisor.evaluate("window.omlMonitor.pc.omlTag") == "the first one"
        # The call hung up where the agent's desk has it (node b's call-control API).
        status, live = await asyncio.to_thread(api, b, "GET", "/api/v1/calls")
        assert status == 200, live
        (on_b,) = [c["call_id"] for c in live["calls"] if c["agent"] == "agent1"]
        status, ended = await asyncio.to_thread(api, b, "POST", f"/api/v1/calls/{on_b}/hangup", {})
        assert status == 200 and ended["state"] == "ended", ended
        run = await caller
        await expect(mode).to_have_text("Not monitoring", timeout=15000)
        await expect(panel.locator("#monitor-status")).to_contain_text("The call ended")
        assert errors == []

    assert run.established, run.output[-3000:]
    whispered, barged = barge_at - whisper_at, stop_at - barge_at
    heard = tone_seconds(run.decoded(), SUPERVISOR_TONE)
    # The caller heard the supervisor for the barge only, never during the whisper: at most
    # from the barge's click until the agent no longer heard the supervisor after the stop (that
    # latency measured in this run: a loaded machine can take over a second), 0.5 s for the
    # 100 ms windows and the buffers.
    most = stop_heard - barge_at + 0.5
    assert barged - 1.5 <= heard <= most, (heard, most, whispered, barged)
    agent_heard = tone_windows(run.decoded(), AGENT_TONE)
    since = agent_heard[agent_heard.index(True) :] if True in agent_heard else []
    assert sum(since) >= 0.8 * len(since), "".join("a" if w else "." for w in agent_heard)

    # Audited on the supervisor's node, naming the node that carries the call.
    entries = await asyncio.to_thread(audit, a, "call.monitor")
    modes = [(e["after"]["mode"], e["after"]["node"]) for e in entries]
    assert modes == [("listen", "b"), ("whisper", "b"), ("barge", "b"), ("listen", "b")], entries
    assert all(e["actor"] == "sue" for e in entries)
    assert len(await asyncio.to_thread(audit, a, "call.monitor-stop")) == 1
    # And published there as call.monitored events, the call's queue and agent in them.
    events = await asyncio.to_thread(stream_events, a, "call.monitored", 6)
    assert [(e["data"]["mode"], e["data"]["reason"]) for e in events] == [
        ("listen", "started"),
        ("whisper", "changed"),
        ("barge", "changed"),
        (None, "stopped"),
        ("listen", "started"),
        (None, "call-ended"),
    ], events
    assert {(e["agent"], e["queue"], e["data"]["supervisor"]) for e in events} == {
        ("agent1", "support", "sue")
    }
    await both_clean(nodes, "after the monitored call was hung up")
    for node in nodes:  # the monitor legs' ports are back in the pools
        status, view = await asyncio.to_thread(api, node, "GET", "/api/v1/status")
        assert status == 200 and view["media"]["rtp_ports_in_use"] == 0, view["media"]
