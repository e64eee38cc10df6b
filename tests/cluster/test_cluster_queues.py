"""One ACD across the cluster's nodes, in the server (``[cluster] acd = "shared"``).

Real peers: two `omlmedia serve` nodes on loopback sharing a throwaway Redis (the ACD's stream)
and a throwaway PostgreSQL (records),
agent1's Chromium page (660 Hz microphone) logged in on node b, baresip and sipp callers dialling
the ``support`` queue on node a or node b. Proved here:

- a caller who entered the queue on node a is offered to the agent on node b, and they talk
  (both tones heard) over the internal leg, relayed without transcoding; the page has the
  campaign's dispositions and the one chosen on node b lands in node a's record; after the call
  the agent's wrap-up ends and it is Ready again (the owner's timer ticks reach node b's page);
  node b's API shows the call under the caller's Call-ID (node a's record's), not the internal
  leg's; the campaign records (``recording = true``): node b records the call into the
  recordings directory both nodes share and node a's record names the file, which the
  recordings API of either node finds and plays; the agent pauses and resumes the recording
  (PCI) on node b: node a's record lists the pause for that file, as for a local recording;
- the agent logs out on node b while node a's caller rings it: node b declines the offer at once
  (node a's queue log: ``no-answer``, ``rejected``, not a ring timeout);
- the agent's page on node b goes away mid-call (the tab closed): node a puts its caller back
  in the queue instead of hanging up, and the agent, logged in again, is offered it and talks;
- both nodes see the same queue: node b's figures count node a's caller while it waits;
- a callback asked for on node a keeps its place and is taken by the agent on node b: node a
  dials the number through its trunk (a baresip answers) and joins it to the agent's leg;
- the owner of the ACD is killed (``kill -9``) while a caller waits on the other node: the caller
  keeps its place, and when the agent becomes Ready it is offered and answered there.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness
from benchmarks.crossnode import sip_port
from benchmarks.harness import DEMO_PASSWORD
from omlmedia.config import ConfigError, load_config
from tests.cluster import postgres, redis
from tests.cluster.test_crossnode import SECRET, _cluster, both_clean
from tests.cluster.test_shared_database import _TLS, api
from tests.interop.baresip import answerer, dial
from tests.interop.browser import chromium, remote_tone
from tests.interop.harness import SCENARIOS, start_sipp
from tests.interop.test_monitor import hears, tone_seconds
from tests.interop.test_queue import KeyingCaller

CALLER_TONE = 440.0
AGENT_TONE = 660.0

SHARED = """
[cluster]
redis_url = "redis://127.0.0.1:6390/0"
node = "a"
secret_file = "secret"
acd = "shared"
[cluster.nodes.a]
sip = "127.0.0.1:5070"
"""


def test_a_shared_acd_is_read_from_the_cluster_section(tmp_path: Path) -> None:
    assert load_config(_cluster(tmp_path, SHARED)).cluster.acd == "shared"
    assert load_config(_cluster(tmp_path, SHARED.replace('acd = "shared"\n', ""))).cluster.acd == (
        "local"
    )


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda t: t.replace('"shared"', '"everywhere"'), 'cluster.acd: must be "local" or'),
        (
            lambda t: re.sub(r'(?s)node = "a"\n.*?acd', "acd", t).split("[cluster.nodes.a]")[0],
            "cluster.acd: a shared ACD needs the cross-node keys",
        ),
    ],
)
def test_a_bad_shared_acd_setting_is_refused_naming_the_key(
    tmp_path: Path, edit: Any, error: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_cluster(tmp_path, edit(SHARED)))
    assert any(error in e for e in info.value.errors), info.value.errors


# -- two real nodes ------------------------------------------------------------------------------


def _edit(name: str, ports: dict[str, int], redis_url: str, secret: Path, dsn: str) -> Any:
    cluster = (
        f'\n[storage]\ndsn = "{dsn}"\nnode = "{name}"\n'
        f'\n[cluster]\nredis_url = "{redis_url}"\nnode = "{name}"\nsecret_file = "{secret}"\n'
        'acd = "shared"\n'
        + "".join(f'[cluster.nodes.{n}]\nsip = "127.0.0.1:{p}"\n' for n, p in ports.items())
    )

    def edit(text: str) -> str:
        text = re.sub(r"(?m)^sip_port = \d+$", f"sip_port = {ports[name]}", text, count=1)
        return text + cluster

    return edit


@pytest.fixture(scope="module")
def nodes(
    shared: redis.Redis, pg: postgres.Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[harness.RunningServer]]:
    dsn = postgres.fresh_database(pg)
    tmp_path = tmp_path_factory.mktemp("shared-acd")
    secret = tmp_path / "cluster.secret"
    secret.write_bytes(SECRET)
    ports = {"a": sip_port(), "b": sip_port()}
    shared_recordings = tmp_path / "recordings"  # the directory every node mounts
    shared_recordings.mkdir()
    for name in ports:
        (tmp_path / name / "data").mkdir(parents=True)
        (tmp_path / name / "data" / "recordings").symlink_to(shared_recordings)
    started: list[harness.RunningServer] = []
    try:
        for name in ("a", "b"):  # a first: it takes the ACD's lease
            started.append(
                harness.start_server(
                    tmp_path / name, edit_config=_edit(name, ports, shared.url, secret, dsn)
                )
            )
            started[-1].ports["sip"] = ports[name]
        yield started
    finally:
        for node in started:
            if node.process.poll() is None:
                assert node.stop() == 0, node.log()[-3000:]


def acd_status(node: harness.RunningServer) -> dict[str, Any]:
    status, view = api(node, "GET", "/api/v1/status")
    assert status == 200, view
    result: dict[str, Any] = view["cluster"]["acd"]
    return result


def queue_figures(node: harness.RunningServer, queue: str) -> dict[str, Any]:
    status, view = api(node, "GET", "/api/v1/status")
    assert status == 200, view
    figures: dict[str, Any] = view["queues"][queue]
    return figures


def waiting(node: harness.RunningServer, queue: str) -> int:
    return int(queue_figures(node, queue)["waiting"])


def queue_records(node: harness.RunningServer, disposition: str) -> list[dict[str, Any]]:
    status, view = api(node, "GET", "/api/v1/calls/records?queue=support")
    assert status == 200, view
    return [r for r in view["records"] if r["disposition"] == disposition]


def segment_legs(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's ``segment`` legs (each answered segment's recording), in order."""
    return [leg for leg in record["legs"] if leg.get("role") == "segment"]


def requeued_records(node: harness.RunningServer) -> list[dict[str, Any]]:
    """The queue's records with two answered segments (a requeued caller answered again)."""
    return [r for r in queue_records(node, "") if len(segment_legs(r)) == 2]


def declined(node: harness.RunningServer, since: float) -> list[dict[str, Any]]:
    """agent1's offers declined since `since` (the queue log's ``no-answer``, ``rejected``)."""
    status, view = api(node, "GET", f"/api/v1/queue-log?since={since}&agent=agent1")
    assert status == 200, view
    return [
        e
        for e in view["entries"]
        if e["event"] == "no-answer" and (e.get("data") or {}).get("reason") == "rejected"
    ]


def recording_ticket(node: harness.RunningServer, call_id: str) -> tuple[int, Any]:
    return api(node, "POST", f"/api/v1/recordings/{call_id}/ticket", {})


def fetch_audio(node: harness.RunningServer, path: str) -> tuple[str, bytes]:
    """GET `path` (a ticket's ``audio`` URL, no token): its Content-Type and body."""
    url = f"https://127.0.0.1:{node.http_port}{path}"
    with urllib.request.urlopen(url, context=_TLS, timeout=10) as response:
        return response.headers.get("Content-Type", ""), response.read()


def callback_records(node: harness.RunningServer, since: float) -> list[dict[str, Any]]:
    status, view = api(node, "GET", f"/api/v1/calls/records?since={since}&queue=support")
    assert status == 200, view
    return [r for r in view["records"] if r["cause"].startswith("callback-")]


async def until(what: str, check: Any, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def _log_in(browser: Any, node: harness.RunningServer) -> Any:
    from playwright.async_api import expect

    page = await browser.new_page()
    await page.goto(f"https://127.0.0.1:{node.http_port}/agent/")
    await page.get_by_label("Username").fill("agent1")
    await page.get_by_label("Password").fill(DEMO_PASSWORD)
    await page.get_by_role("button", name="Log in", exact=True).click()
    await expect(page.locator("#state")).to_contain_text("Paused", timeout=15000)
    await expect(page.locator("#ice-state")).to_have_text("connected", timeout=15000)
    return page


async def _answer_and_hang_up(page: Any, sipp: subprocess.Popen[bytes], out: Path) -> None:
    """The agent becomes Ready, answers the sipp caller offered, hangs up: sipp ends well (its
    output in `out` otherwise) and the agent is Ready again after wrap-up."""
    from playwright.async_api import expect

    state = page.locator("#state")
    await page.get_by_role("button", name="Ready", exact=True).click()
    await expect(state).to_have_text("Ringing", timeout=15000)
    await page.get_by_role("button", name="Answer", exact=True).click()
    await expect(state).to_have_text("On call", timeout=10000)
    await page.get_by_role("button", name="Hang up", exact=True).click()
    code = await asyncio.to_thread(sipp.wait, 30)
    assert code == 0, await asyncio.to_thread(out.read_text)
    await expect(state).to_have_text("Ready", timeout=15000)


async def test_a_queue_caller_on_node_a_is_answered_by_an_agent_on_node_b_and_the_owner_may_die(
    nodes: list[harness.RunningServer], tmp_path: Path
) -> None:
    from playwright.async_api import expect

    a, b = nodes
    assert acd_status(a)["owner"] and not acd_status(b)["owner"]
    async with chromium(tmp_path / "browser", AGENT_TONE) as browser:
        page = await _log_in(browser, b)
        state = page.locator("#state")

        # 1. A caller enters the queue on node a while the agent (on b) is paused: both nodes
        # count it waiting; the agent becomes Ready and is offered the call; they talk.
        target = f"sip:support@127.0.0.1:{a.sip_port}"
        caller = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: dial(tmp_path / "caller", target, 25, tone_hz=CALLER_TONE, codecs="PCMU"),
        )
        # Each node counts it once its own replica applied the caller's input from the stream:
        # node b's count says nothing of node a's, which is polled too.
        await until("node b counts node a's caller", lambda: waiting(b, "support") == 1)
        await until("node a counts its caller", lambda: waiting(a, "support") == 1)
        await page.get_by_role("button", name="Ready", exact=True).click()
        await expect(state).to_have_text("Ringing", timeout=15000)
        await expect(page.locator("#call-panel")).to_contain_text("support")
        await page.get_by_role("button", name="Answer", exact=True).click()
        await expect(state).to_have_text("On call", timeout=10000)
        await hears(page, "remote-audio", (CALLER_TONE,), (), "agent on node b")
        assert (await asyncio.to_thread(acd_status, a))["remote_offers"] == 1
        # The agent pauses the recording (PCI) and resumes it: node b tells node a the pause.
        await page.get_by_role("button", name="Pause recording", exact=True).click()
        resume = page.get_by_role("button", name="Resume recording", exact=True)
        await expect(resume).to_be_visible(timeout=5000)
        await resume.click()
        await expect(page.get_by_role("button", name="Pause recording", exact=True)).to_be_visible(
            timeout=5000
        )
        # Node b's API shows the call under the caller's Call-ID, recorded (its campaign's).
        _, live = await asyncio.to_thread(api, b, "GET", "/api/v1/calls")
        (on_b,) = live["calls"]
        assert on_b["recording"] == "on" and on_b["campaign"] == "support", on_b
        _, view = await asyncio.to_thread(api, b, "GET", "/api/v1/status")
        assert view["cluster"]["crossnode"]["received"] == 1, view["cluster"]
        run = await caller
        assert run.established, run.output[-3000:]
        assert tone_seconds(run.decoded(), AGENT_TONE) > 3, "the caller did not hear the agent"
        # The page had the campaign's dispositions: the agent's choice on node b goes to the
        # record node a wrote (one PostgreSQL). After its 1 s wrap-up the agent is Ready
        # again, on node b's page, from the ticks of the owner's timer (on node a).
        await page.get_by_label("Disposition").select_option("solved")
        await page.get_by_role("button", name="Save disposition").click()
        await expect(state).to_have_text("Ready", timeout=15000)
        await until("the disposition on a's record", lambda: queue_records(a, "solved"))
        # Node a's record is the caller's, under the Call-ID node b showed, and names the
        # recording node b made, as written (node b named its file in its 200 OK, node a's
        # caller held it from the answer on: no later update of the row); either node's
        # recordings API finds and plays it.
        (record,) = queue_records(a, "solved")
        assert record["call_id"] == on_b["call_id"] and record["agent"] == "agent1", record
        (segment,) = segment_legs(record)
        assert segment["agent"] == "agent1" and segment["file"].endswith(".opus"), record
        assert record["recording"] == segment["file"], record
        # The pause made on node b is in node a's record, for that file, as a local one's.
        (paused,) = [leg for leg in record["legs"] if leg.get("role") == "recording"]
        assert paused["file"] == segment["file"] and len(paused["gaps"]) == 1, record
        assert 0 < paused["gaps"][0]["start"] <= paused["gaps"][0]["end"], record
        status, found = await asyncio.to_thread(api, a, "GET", "/api/v1/recordings?agent=agent1")
        assert status == 200, found
        (listed,) = [r for r in found["recordings"] if r["call_id"] == record["call_id"]]
        assert listed["gaps"] == paused["gaps"], listed  # the recordings API gives the pause
        for node in (a, b):  # a ticket plays on the node that issued it
            status, ticket = await asyncio.to_thread(recording_ticket, node, record["call_id"])
            assert status == 201, ticket
            kind, audio = await asyncio.to_thread(fetch_audio, node, ticket["audio"])
            assert kind == "audio/ogg" and audio.startswith(b"OggS") and len(audio) > 1000, kind
        await both_clean(nodes, "after the caller hung up")
        assert waiting(a, "support") == waiting(b, "support") == 0

        # 1b. The agent's page on node b goes away mid-call (the tab closed, past the 5 s
        # grace): node a's caller goes back to the queue, as for a local agent, and is
        # answered when the agent is back.
        sipp = start_sipp(
            [
                "-sf",
                str(SCENARIOS / "uac_wait_for_bye.xml"),
                f"127.0.0.1:{a.sip_port}",
                "-s",
                "support",
                "-m",
                "1",
                "-timeout",
                "60",
            ],
            tmp_path,
            "requeued-on-a",
        )
        await expect(state).to_have_text("Ringing", timeout=15000)
        # The agent logs out while it rings: node b declines the offer at once, as a local
        # agent's page gone (not a ring timeout 15 s later); the caller waits on node a.
        since = time.time() - 1
        await page.get_by_role("button", name="Log out", exact=True).click()
        await until("node a's offer declined", lambda: declined(a, since), within=10)
        assert sipp.poll() is None and waiting(a, "support") == 1
        await page.close()
        page = await _log_in(browser, b)
        state = page.locator("#state")
        await page.get_by_role("button", name="Ready", exact=True).click()
        await expect(state).to_have_text("Ringing", timeout=15000)
        await page.get_by_role("button", name="Answer", exact=True).click()
        await expect(state).to_have_text("On call", timeout=10000)
        await until("node a's caller talks", lambda: waiting(a, "support") == 0)
        await page.close()
        await until("node a's caller back in the queue", lambda: waiting(a, "support") == 1)
        assert sipp.poll() is None, "node a hung up on its caller"
        page = await _log_in(browser, b)
        state = page.locator("#state")
        await _answer_and_hang_up(page, sipp, tmp_path / "requeued-on-a.out")
        await both_clean(nodes, "after the requeued caller")
        # Node a's record of the requeued caller names both of node b's segments, in order
        # (the second answer's file is the first's ``-2``: reserve_segment never reuses one),
        # and the second plays through the recordings API too.
        await until("a's record of the requeued caller", lambda: requeued_records(a))
        (record,) = requeued_records(a)
        first, second = segment_legs(record)
        assert first["agent"] == second["agent"] == "agent1", record
        assert second["file"] == first["file"].removesuffix(".opus") + "-2.opus", record
        assert record["recording"] == first["file"], record
        status, ticket = await asyncio.to_thread(
            api, a, "POST", f"/api/v1/recordings/{record['call_id']}/ticket?segment=2", {}
        )
        assert status == 201 and ticket["audio"].endswith("&segment=2"), ticket
        kind, audio = await asyncio.to_thread(fetch_audio, a, ticket["audio"])
        assert kind == "audio/ogg" and audio.startswith(b"OggS"), kind

        # 2. A callback asked for on node a is taken by the agent on node b: node a dials the
        # number through its trunk and joins it to the agent; node a writes its record.
        await page.get_by_role("button", name="Pause", exact=True).click()
        await expect(state).to_contain_text("Paused", timeout=10000)
        number, far_tone, since = "5551234", 550.0, time.time()
        keying = KeyingCaller(tmp_path / "keying", target, 30)
        try:
            await until("the caller waits", lambda: waiting(a, "support") == 1)
            await until("the answer", lambda: "Call established" in keying.output())
            await asyncio.sleep(1.0)  # music on hold
            keying.keys("1")
            await asyncio.sleep(1.0)  # "enter your phone number"
            keying.keys(f"{number}#")
            await until("the server's hang-up", lambda: "terminated" in keying.output())
        finally:
            keying.stop()
        assert queue_figures(b, "support")["callbacks"] == 1  # node b sees a's callback
        with answerer(
            tmp_path / "pbx", a.pbx_port, user=number, tone_hz=far_tone, codecs="PCMU"
        ) as far:
            await page.get_by_role("button", name="Ready", exact=True).click()
            await expect(page.locator("#caller-number")).to_have_text(number, timeout=15000)
            await page.get_by_role("button", name="Answer", exact=True).click()
            await expect(state).to_have_text("On call", timeout=10000)
            heard = await remote_tone(page, far_tone)  # the number answers after the agent
            assert abs(heard["hz"] - far_tone) < 10, heard
            await page.get_by_role("button", name="Hang up", exact=True).click()
            await expect(page.locator("#no-call")).to_be_visible(timeout=10000)
        assert "Call established" in far.output, far.output[-2000:]
        await until("a's callback record", lambda: callback_records(a, since))
        record = callback_records(a, since)[0]
        assert record["agent"] == "agent1" and record["cause"].startswith("callback-"), record
        assert queue_figures(a, "support")["callbacks"] == 0
        await both_clean(nodes, "after the callback")

        # 3. The agent pauses; a caller waits on node b; node a, the ACD's owner, is killed.
        await expect(state).to_have_text("Ready", timeout=15000)
        await page.get_by_role("button", name="Pause", exact=True).click()
        await expect(state).to_contain_text("Paused", timeout=10000)
        sipp = start_sipp(
            [
                "-sf",
                str(SCENARIOS / "uac_wait_for_bye.xml"),
                f"127.0.0.1:{b.sip_port}",
                "-s",
                "support",
                "-m",
                "1",
                "-timeout",
                "60",
            ],
            tmp_path,
            "waits-on-b",
        )
        await until("the caller waits on node b", lambda: waiting(b, "support") == 1)
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait(10)
        killed = time.monotonic()
        await until("node b owns the ACD", lambda: acd_status(b)["owner"], within=15)
        took_over = time.monotonic() - killed
        # When the lease (3 s) lapsed, not the node timeout (10 s); the margin is for b's loop
        # and the status polls (HTTPS, a handshake each) on a loaded machine.
        assert took_over < 7, f"takeover after {took_over:.2f} s"
        assert waiting(b, "support") == 1  # it kept its place
        await _answer_and_hang_up(page, sipp, tmp_path / "waits-on-b.out")
