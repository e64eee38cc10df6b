"""Callers wait in an ACD queue and reach browser agents; the queue log and the call records
tell what happened (SQLite in the data dir).

baresip callers dial `support` (a campaign of queue `support`, recorded); a Chromium agent logs
in paused, goes Ready, is offered the waiting caller, answers, and each hears the other; a second
caller gives up while the agent is busy (an abandon); `sales` has a 4 s maximum wait and
overflows to a goodbye prompt.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import wave
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tests.interop.baresip import dial
from tests.interop.browser import ANALYSE_REMOTE_AUDIO, chromium
from tests.interop.harness import DEMO_PASSWORD, RunningServer

pytestmark = pytest.mark.interop

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


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


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
        await page.goto(f"https://127.0.0.1:{server.http_port}/agent/")
        await page.get_by_label("Username").fill("agent1")
        await page.get_by_label("Password").fill(DEMO_PASSWORD)
        await page.get_by_role("button", name="Log in", exact=True).click()
        state = page.locator("#state")
        await expect(state).to_contain_text("Paused", timeout=10000)
        await expect(page.locator("#ice-state")).to_have_text("connected", timeout=10000)

        first = loop.run_in_executor(
            None,
            lambda: dial(
                tmp_path / "first",
                f"sip:support@127.0.0.1:{server.sip_port}",
                12,
                tone_hz=CALLER_TONE,
            ),
        )
        await asyncio.sleep(2.5)  # the caller waits with music: nobody is ready
        assert server.status()["queues"]["support"]["waiting"] == 1
        await page.get_by_role("button", name="Ready", exact=True).click()
        await expect(page.locator("#caller-number")).to_have_text("tester", timeout=10000)
        await expect(page.locator("#call-queue")).to_have_text("support")
        await expect(page.locator("#call-url")).to_have_attribute(
            "href", "https://crm.example/customer?phone=tester"
        )
        await expect(state).to_have_text("Ringing")
        await page.get_by_role("button", name="Answer", exact=True).click()
        await expect(state).to_have_text("On call", timeout=5000)
        heard = await page.evaluate(ANALYSE_REMOTE_AUDIO)
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
    server.wait_idle()
    await asyncio.sleep(0.5)  # the queue log is committed every 0.2 s
    check_books(server.workdir / "data" / "omlmedia.db")


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
    server.wait_idle()


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
