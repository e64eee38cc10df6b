"""Callers wait in an ACD queue and reach browser agents; the queue log and the call records
tell what happened (SQLite in the data dir), and the API reports the same.

baresip callers dial `support` (a campaign of queue `support`, recorded, rrmemory); a Chromium
agent logs in paused, goes Ready, is offered the waiting caller, answers, and each hears the
other; a second caller gives up while the agent is busy (an abandon); `sales` has a 4 s maximum
wait and overflows to a goodbye prompt; `billing` has a 2 s one and overflows to `support`. With
two agents Ready, callers in a row go round-robin; a supervisor pauses and logs out agents
through the API. A caller presses 1, keys a number and # and hangs up: the next Ready agent gets
the callback, and the server dials the number through trunk `pbx` (a baresip answers). Last, the
statistics rebuilt from the stored queue log equal what the API reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import subprocess
import time
import wave
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from omlmedia.acd import agent_figures, engine_log, queue_figures
from omlmedia.storage import Store
from queueing import Statistics
from tests.interop.baresip import answerer, configure, dial
from tests.interop.browser import chromium, remote_tone
from tests.interop.harness import RunningServer, free_port, require_tool
from tests.interop.pages import agent_logged_in, calls_over, committed, fetch, until, waiting

pytestmark = pytest.mark.interop

STARTED = time.time()
"""Before any call of this module: queue and agent figures are asked for since then (the
current statistics period alone would miss what happened before a 15-minute boundary)."""
CALLER_TONE = 440.0
AGENT_TONE = 660.0


def tail_frequency(path: Path, seconds: float) -> float:
    """The dominant frequency of the last `seconds` of a WAV file."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    part = samples[-int(rate * seconds) :]
    spectrum = np.abs(np.fft.rfft(part * np.hanning(part.size)))
    spectrum[:5] = 0
    return float(np.argmax(spectrum) * rate / part.size)


def head_level(path: Path, seconds: float) -> float:
    """The RMS level of the first `seconds` of a WAV file (after the first 0.3 s)."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    part = samples[int(rate * 0.3) : int(rate * seconds)]
    return float(np.sqrt(np.mean(part**2))) if part.size else 0.0


def rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql, args))


def db_path(server: RunningServer) -> Path:
    return server.workdir / "data" / "omlmedia.db"


def check_books(db: Path) -> None:
    """The queue log has every step; one call record per caller, the answered one with its
    agent, disposition and recording; nothing left open."""
    events = [r[0] for r in rows(db, "SELECT event FROM queue_log ORDER BY id")]
    for expected in (
        "login",
        "pause",
        "unpause",
        "enter",
        "offer",
        "answer",
        "abandon",
        "complete",
        "logout",
    ):
        assert expected in events, events
    records = rows(
        db,
        "SELECT queue, agent, answer IS NOT NULL, hangup_by, campaign, disposition, recording "
        "FROM cdr ORDER BY start",
    )
    assert len(records) == 2, records
    answered, abandoned = records
    assert answered[:3] == ("support", "agent1", 1) and answered[4] == "support"
    assert answered[5] == "solved", answered
    recording = Path(str(answered[6]))
    assert recording.suffix == ".opus" and os.path.getsize(recording) > 1000
    assert abandoned[:3] == ("support", "", 0) and abandoned[3] == "caller"
    assert rows(db, "SELECT count(*) FROM open_calls") == [(0,)]


async def test_a_waiting_caller_reaches_the_agent_who_gets_ready_and_an_abandon_is_logged(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    loop = asyncio.get_running_loop()
    async with chromium(tmp_path / "agent", AGENT_TONE) as browser:
        page = await browser.new_page()
        await agent_logged_in(page, server, "agent1")
        state = page.locator("#state")

        first = loop.run_in_executor(
            None,
            lambda: dial(
                tmp_path / "first",
                f"sip:support@127.0.0.1:{server.sip_port}",
                12,
                tone_hz=CALLER_TONE,
            ),
        )
        # The caller waits with music while nobody is ready (its first 2 s are checked below).
        await until(lambda: waiting(server, "support") == 1, what="the caller in the queue")
        await asyncio.sleep(2.0)
        await page.get_by_role("button", name="Ready", exact=True).click()
        await expect(page.locator("#caller-number")).to_have_text("tester", timeout=10000)
        await expect(page.locator("#call-queue")).to_have_text("support")
        await expect(page.locator("#call-url")).to_have_attribute(
            "href", "https://crm.example/customer?phone=tester"
        )
        await expect(state).to_have_text("Ringing")
        await page.get_by_role("button", name="Answer", exact=True).click()
        await expect(state).to_have_text("On call", timeout=5000)
        heard = await remote_tone(page, CALLER_TONE)
        assert abs(heard["hz"] - CALLER_TONE) < 10, heard

        second = loop.run_in_executor(
            None,
            lambda: dial(
                tmp_path / "second",
                f"sip:support@127.0.0.1:{server.sip_port}",
                3,
                tone_hz=500.0,
            ),
        )
        gave_up = await second  # hangs up after 3 s of music: an abandon
        run = await first
        await expect(page.locator("#no-call")).to_be_visible(timeout=10000)
        await expect(state).to_have_text("Wrap-up", timeout=5000)
        await page.get_by_label("Disposition").select_option("solved")
        await page.get_by_role("button", name="Save disposition").click()
        await expect(state).to_have_text("Ready", timeout=10000)
        await page.get_by_role("button", name="Log out", exact=True).click()
        await expect(page.get_by_role("button", name="Log in")).to_be_visible()

    assert run.established and gave_up.established
    assert abs(tail_frequency(run.decoded(), 3.0) - AGENT_TONE) < 5
    assert head_level(run.decoded(), 2.0) > 300  # music on hold while nobody was ready
    calls_over(server)
    committed(server)
    check_books(db_path(server))
    support = fetch(server, f"/queues/support?since={STARTED}")
    assert (support["waiting"], support["ringing"]) == (0, 0)
    stats = support["stats"]
    assert (stats["offered"], stats["answered"], stats["abandoned"]) == (2, 1, 1), stats
    assert stats["completed"] == 1 and stats["average_handle_time"] > 5
    assert stats["service_level"] == 1.0  # answered within 20 s; the abandon, within it too
    records = fetch(server, "/calls/records?queue=support")
    assert [r["agent"] for r in records["records"]] == ["agent1", ""]
    assert records["records"][0]["disposition"] == "solved"


def test_a_caller_past_the_maximum_wait_overflows_to_a_goodbye(
    server: RunningServer, tmp_path: Path
) -> None:
    run = dial(tmp_path / "caller", f"sip:sales@127.0.0.1:{server.sip_port}", 8, tone_hz=440.0)
    assert run.established, run.output[-2000:]
    log = server.log()
    entered = re.search(r"ts=(\S+) .*event=queue-enter call_id=(\S+) queue=sales", log)
    assert entered is not None, log[-3000:]
    call_id = entered.group(2)
    overflow = re.search(rf"ts=(\S+) .*event=queue-overflow call_id={call_id} kind=hangup", log)
    ended = re.search(rf"ts=(\S+) .*event=call-ended call_id={call_id} cause=hangup", log)
    assert overflow is not None and ended is not None, log[-3000:]
    waited = _seconds(overflow.group(1)) - _seconds(entered.group(1))
    assert 3.5 < waited < 5.5, waited  # max_wait = 4
    assert 0 < _seconds(ended.group(1)) - _seconds(overflow.group(1)) < 3  # goodbye, then BYE
    calls_over(server)


def test_a_caller_past_billings_maximum_wait_overflows_into_support(
    server: RunningServer, tmp_path: Path
) -> None:
    run = dial(tmp_path / "caller", f"sip:billing@127.0.0.1:{server.sip_port}", 5, tone_hz=440.0)
    assert run.established, run.output[-2000:]
    calls_over(server)
    committed(server)
    entered = rows(
        db_path(server), "SELECT call_id FROM queue_log WHERE event = 'enter' AND queue = 'billing'"
    )
    assert len(entered) == 1
    steps = rows(
        db_path(server),
        "SELECT queue, event, data FROM queue_log WHERE call_id = ? ORDER BY id",
        entered[0][0],
    )
    assert [(q, e) for q, e, _ in steps] == [
        ("billing", "enter"),
        ("billing", "exit-timeout"),
        ("billing", "overflow"),
        ("support", "enter"),
        ("support", "abandon"),
    ], steps
    assert json.loads(str(steps[2][2]))["reason"] == "timeout"
    assert fetch(server, f"/queues/billing?since={STARTED}")["stats"]["overflowed"] == 1


async def test_callers_in_a_row_go_round_robin_and_a_supervisor_pauses_and_logs_out(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    loop = asyncio.get_running_loop()
    async with chromium(tmp_path / "agents", AGENT_TONE) as browser:
        pages = {name: await browser.new_page() for name in ("agent1", "agent2")}
        for name, page in pages.items():
            await agent_logged_in(page, server, name)
            await page.get_by_role("button", name="Ready", exact=True).click()
            await expect(page.locator("#state")).to_have_text("Ready", timeout=5000)
        support = fetch(server, "/queues/support")
        assert support["members_by_state"]["ready"] == 2, support

        async def ringing() -> str:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                for name, page in pages.items():
                    if await page.locator("#state").text_content() == "Ringing":
                        return name
                await asyncio.sleep(0.1)
            raise AssertionError("no agent was offered the caller")

        answered_by = []
        for n in range(3):
            caller = loop.run_in_executor(
                None,
                lambda n=n: dial(
                    tmp_path / f"caller{n}",
                    f"sip:support@127.0.0.1:{server.sip_port}",
                    20,
                    tone_hz=CALLER_TONE,
                ),
            )
            name = await ringing()
            page = pages[name]
            await page.get_by_role("button", name="Answer", exact=True).click()
            await expect(page.locator("#state")).to_have_text("On call", timeout=5000)
            agent = fetch(server, f"/agents/{name}")
            assert agent["state"] == "on-call" and agent["call"]["queue"] == "support", agent
            assert agent["call"]["caller"] == "tester"
            # The agent hangs up (the caller would after its 20 s): the next caller comes now.
            await page.get_by_role("button", name="Hang up", exact=True).click()
            assert (await caller).established
            await expect(page.locator("#state")).to_have_text("Ready", timeout=10000)
            answered_by.append(name)
        # rrmemory: each caller goes to the member after the one offered last.
        assert answered_by[0] != answered_by[1] and answered_by[2] == answered_by[0], answered_by

        first, second = answered_by[0], answered_by[1]
        # The supervisor is who the token says: the configured token is "bootstrap".
        paused = fetch(server, f"/agents/{first}/pause", {"reason": "training"})
        assert (paused["state"], paused["reason"]) == ("paused", "training")
        await expect(pages[first].locator("#state")).to_have_text("Paused (training)", timeout=5000)
        assert fetch(server, f"/agents/{first}/unpause", {})["state"] == "ready"
        await expect(pages[first].locator("#state")).to_have_text("Ready", timeout=5000)
        gone = fetch(server, f"/agents/{second}/logout", {})
        assert gone["state"] == "logged-out" and gone["connected"] is False
        await expect(pages[second].get_by_role("button", name="Log in")).to_be_visible(timeout=5000)
        await expect(pages[second].locator("#login-message")).to_have_text(
            "A supervisor logged you out."
        )
        await pages[first].get_by_role("button", name="Log out", exact=True).click()
        await expect(pages[first].get_by_role("button", name="Log in")).to_be_visible()

    calls_over(server)
    committed(server)
    log = fetch(server, f"/queue-log?agent={second}&since={time.time() - 60}")["entries"]
    assert log[-1]["event"] == "logout" and log[-1]["data"] == {"reason": "forced by bootstrap"}
    log = fetch(server, f"/queue-log?agent={first}&since={time.time() - 60}")["entries"]
    assert {"reason": "training", "by": "bootstrap"} in [e["data"] for e in log]
    assert all(a["state"] == "logged-out" for a in fetch(server, "/agents")["agents"])


class KeyingCaller:
    """A baresip caller whose keys are pressed (RFC 4733) through its ctrl_tcp module."""

    def __init__(self, workdir: Path, uri: str, seconds: int) -> None:
        baresip = require_tool("baresip")
        configure(
            workdir,
            tone_hz=CALLER_TONE,
            seconds=seconds,
            codecs="PCMU",
            extra_modules=("ctrl_tcp.so",),
        )
        self.port = free_port()
        config = workdir / "config"
        config.write_text(config.read_text() + f"ctrl_tcp_listen 127.0.0.1:{self.port}\n")
        self.log = workdir / "baresip.out"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [baresip, "-f", str(workdir), "-e", f"/dial {uri}", "-t", str(seconds)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def keys(self, keys: str) -> None:
        """Send `keys` as DTMF (baresip's ``sndcode`` command, a JSON netstring)."""
        body = json.dumps({"command": "sndcode", "params": keys, "token": "t"}).encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(str(len(body)).encode() + b":" + body + b",")
            conn.recv(4096)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def test_a_callback_keeps_the_callers_place_and_is_dialled_through_the_trunk(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    number = "5551234"
    far_tone = 550.0
    async with chromium(tmp_path / "agent", AGENT_TONE) as browser:
        page = await browser.new_page()
        await agent_logged_in(page, server, "agent1")  # paused: the caller waits
        since = time.time()
        caller = KeyingCaller(tmp_path / "caller", f"sip:support@127.0.0.1:{server.sip_port}", 30)
        try:
            await until(lambda: fetch(server, "/queues/support")["waiting"] == 1, what="the caller")
            await until(lambda: "Call established" in caller.output(), what="the answer")
            await asyncio.sleep(1.0)  # music on hold
            caller.keys("1")
            await asyncio.sleep(1.0)  # "enter your phone number"
            caller.keys(f"{number}#")

            def callback() -> dict[str, Any] | None:
                log = fetch(server, f"/queue-log?queue=support&since={since}")["entries"]
                return next((e for e in log if e["event"] == "callback"), None)

            entry = await until(callback, what="the callback request")
            assert entry["data"]["number"] == number
            call_id = entry["call_id"]
            # Confirmed, then the server hangs up; the caller keeps its place.
            await until(lambda: "terminated" in caller.output(), what="the server's hang-up")
        finally:
            caller.stop()
        support = fetch(server, "/queues/support")
        assert (support["waiting"], support["callbacks"]) == (1, 1), support

        with answerer(
            tmp_path / "pbx", server.pbx_port, user=number, tone_hz=far_tone, codecs="PCMU"
        ) as far:
            await page.get_by_role("button", name="Ready", exact=True).click()
            await expect(page.locator("#caller-number")).to_have_text(number, timeout=10000)
            await page.get_by_role("button", name="Answer", exact=True).click()
            await expect(page.locator("#state")).to_have_text("On call", timeout=10000)
            agent = fetch(server, "/agents/agent1")
            assert agent["call"]["call_id"] == call_id and agent["call"]["callback"] == number
            heard = await remote_tone(page, far_tone)  # the number answers after the agent
            assert abs(heard["hz"] - far_tone) < 10, heard
            await page.get_by_role("button", name="Hang up", exact=True).click()
            await expect(page.locator("#no-call")).to_be_visible(timeout=10000)
            await page.get_by_role("button", name="Log out", exact=True).click()
            await expect(page.get_by_role("button", name="Log in")).to_be_visible()
        assert "Call established" in far.output, far.output[-2000:]

    calls_over(server)
    committed(server)
    db = db_path(server)
    events = [
        r[0] for r in rows(db, "SELECT event FROM queue_log WHERE call_id = ? ORDER BY id", call_id)
    ]
    assert events == ["enter", "callback", "offer", "answer", "complete"], events
    offer = rows(db, "SELECT data FROM queue_log WHERE call_id = ? AND event = 'offer'", call_id)
    assert json.loads(str(offer[0][0]))["callback"] == number
    record = fetch(server, f"/calls/records?since={since}&queue=support")["records"]
    assert [r["call_id"] for r in record] == [call_id], record
    assert record[0]["agent"] == "agent1" and record[0]["cause"].startswith("callback-")
    assert fetch(server, "/queues/support")["callbacks"] == 0


def test_statistics_rebuilt_from_the_stored_queue_log_equal_the_api(
    server: RunningServer,
) -> None:
    """The engine's live statistics (what the API reports) and the ones rebuilt from the
    stored queue log agree, queue by queue and agent by agent."""
    calls_over(server)
    committed(server)
    store = Store(db_path(server))
    try:
        entries = store.queue_log()
    finally:
        store.close()
    queues = fetch(server, f"/queues?since={STARTED}")["queues"]
    levels = {q["queue"]: q["stats"]["service_level_seconds"] for q in queues}
    rebuilt = Statistics.from_log(engine_log(entries), levels)
    assert sum(q["stats"]["offered"] for q in queues) > 0  # the tests above ran
    for queue in queues:
        stats = queue["stats"]
        expected = queue_figures(
            rebuilt.queue(queue["queue"], stats["start"], stats["end"]), levels[queue["queue"]]
        )
        assert {k: stats[k] for k in expected} == expected, queue["queue"]
    for agent in fetch(server, f"/agents?since={STARTED}")["agents"]:
        stats = agent["stats"]
        expected = agent_figures(rebuilt.agent(agent["agent"], stats["start"], stats["end"]))
        assert {k: stats[k] for k in expected} == expected, agent["agent"]


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
