"""An agent's DTMF, transfers and reconnects, end to end: baresip callers, a baresip PBX
extension behind the `pbx` trunk, a Chromium agent on the page `omlmedia serve` serves.

The caller is a baresip driven over its ctrl_tcp socket (it sends DTMF on command and prints
the RFC 4733 events it receives); the extension `200` is a baresip that auto-answers on the
trunk's port (the agent dials it as `9200`, the test configuration's trunk route).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.interop.baresip import CALL_ENDED, SESSION_CLOSED, BaresipRun, answerer, configure
from tests.interop.browser import chromium, remote_tone
from tests.interop.harness import RunningServer, free_port, require_tool
from tests.interop.pages import agent_logged_in, calls_over, committed, until

pytestmark = pytest.mark.interop

CALLER_TONE = 440.0
AGENT_TONE = 660.0
CONSULTING_AGENT_TONE = 550.0
EXTENSION_TONE = 880.0


def tail_frequency(path: Path, seconds: float) -> float:
    """The dominant frequency of the last `seconds` of a WAV file."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    part = samples[-int(rate * seconds) :]
    if part.size < rate // 4:
        return 0.0
    spectrum = np.abs(np.fft.rfft(part * np.hanning(part.size)))
    spectrum[:5] = 0
    return float(np.argmax(spectrum) * rate / part.size)


@dataclass
class Caller:
    """A baresip in a call, controlled over ctrl_tcp (netstring-framed JSON commands)."""

    process: subprocess.Popen[bytes]
    ctrl_port: int
    log: Path
    run: BaresipRun

    def command(self, command: str, params: str = "") -> None:
        message = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=5) as conn:
            conn.sendall(b"%d:%s," % (len(message), message))
            conn.settimeout(2)
            try:
                conn.recv(4096)  # the response; events may follow, unread
            except TimeoutError:
                pass

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_output(self, text: str, within: float = 5.0) -> str:
        """The output once `text` is in it; fails after `within` seconds."""
        for _ in range(int(within * 10)):
            output = self.output()
            if text in output:
                return output
            await asyncio.sleep(0.1)
        raise AssertionError(f"baresip never printed {text!r}:\n{self.output()[-3000:]}")

    async def ended(self, within: float) -> BaresipRun:
        """Wait (at most `within` seconds) for the call to end, whoever hangs up (baresip at the
        end of its -t time, or the far end), then for baresip to quit (stopped if it idles)."""
        deadline = time.monotonic() + within
        while self.process.poll() is None and time.monotonic() < deadline:
            if CALL_ENDED in self.output():
                self.process.terminate()
                await asyncio.get_running_loop().run_in_executor(None, self.process.wait, 10)
                break
            await asyncio.sleep(0.1)
        self.run.output = self.output()
        return self.run


@contextmanager
def caller(workdir: Path, uri: str, seconds: int, tone_hz: float = CALLER_TONE) -> Iterator[Caller]:
    """A baresip that dials `uri` with a tone and quits after `seconds`; its ctrl_tcp socket
    takes commands meanwhile."""
    baresip = require_tool("baresip")
    recordings = configure(
        workdir, tone_hz=tone_hz, seconds=seconds, codecs="PCMU", extra_modules=("ctrl_tcp.so",)
    )
    ctrl_port = free_port()
    with (workdir / "config").open("a") as config:
        config.write(f"ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n")
    log = workdir / "baresip.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [baresip, "-f", str(workdir), "-e", f"/dial {uri}", "-t", str(seconds)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Caller(process, ctrl_port, log, BaresipRun("", recordings))
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@asynccontextmanager
async def agent_page(
    server: RunningServer, workdir: Path, agent: str = "agent1", tone_hz: float = AGENT_TONE
) -> AsyncIterator[Any]:
    """A Chromium page logged in as `agent`, Ready, its channel connected, its microphone a
    tone of `tone_hz`; logged out after."""
    from playwright.async_api import expect

    async with chromium(workdir, tone_hz) as browser:
        page = await browser.new_page()
        await agent_logged_in(page, server, agent)
        await page.get_by_role("button", name="Ready", exact=True).click()
        await expect(page.locator("#state")).to_have_text("Ready")
        yield page
        await page.get_by_role("button", name="Log out", exact=True).click()
        await expect(page.get_by_role("button", name="Log in")).to_be_visible()


async def answer_call(page: Any) -> None:
    """Answer the ringing call and check the caller's tone reaches the page."""
    from playwright.async_api import expect

    await expect(page.locator("#caller-number")).to_have_text("tester", timeout=10000)
    await page.get_by_role("button", name="Answer", exact=True).click()
    await expect(page.locator("#call-kind")).to_have_text("Connected")
    await assert_hears(page, CALLER_TONE)


async def assert_hears(page: Any, hz: float) -> None:
    """The page's remote audio is a tone of `hz` (listened to until it is, for 10 s: the audio
    of a call the page shows connected may reach it a moment later)."""
    heard = await remote_tone(page, hz)
    assert abs(heard["hz"] - hz) < 10, heard


async def test_dtmf_goes_both_ways_between_the_page_and_a_sip_caller(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    async with agent_page(server, tmp_path / "agent") as page:
        with caller(  # the page hangs up: the caller's 30 s only bound the steps before it
            tmp_path / "caller", f"sip:agent-agent1@127.0.0.1:{server.sip_port}", 30
        ) as sip:
            await answer_call(page)
            await page.get_by_role("button", name="5", exact=True).click()
            output = await sip.wait_output("received event: '5' (end=1)")  # RFC 4733, ended
            assert "received event: '5' (end=0)" in output, output[-2000:]

            await asyncio.get_running_loop().run_in_executor(None, sip.command, "sndcode", "7")
            await expect(page.locator("#dtmf-in")).to_have_text("Caller pressed 7", timeout=5000)
            await page.get_by_role("button", name="Hang up", exact=True).click()
            await expect(page.locator("#no-call")).to_be_visible(timeout=5000)
            run = await sip.ended(5)
    assert run.established, run.output[-3000:]
    calls_over(server)


async def test_a_blind_transfer_to_a_pbx_extension_frees_the_agent(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    with answerer(
        tmp_path / "extension", server.pbx_port, user="200", tone_hz=EXTENSION_TONE, codecs="PCMU"
    ) as extension:
        async with agent_page(server, tmp_path / "agent") as page:
            with caller(
                tmp_path / "caller", f"sip:agent-agent1@127.0.0.1:{server.sip_port}", 10
            ) as sip:
                await answer_call(page)
                await page.get_by_label("Transfer to (number, queue or agent)").fill("9200")
                await page.get_by_role("button", name="Transfer", exact=True).click()
                await expect(page.locator("#no-call")).to_be_visible(timeout=5000)
                await expect(page.locator("#state")).to_have_text("Wrap-up", timeout=5000)
                await expect(page.locator("#history li").first).to_contain_text("transferred")
                await expect(page.locator("#state")).to_have_text("Ready", timeout=10000)
                run = await sip.ended(20)
    assert run.established, run.output[-3000:]
    assert abs(tail_frequency(run.decoded(), 3.0) - EXTENSION_TONE) < 5
    assert "Call established" in extension.output, extension.output[-3000:]
    assert abs(tail_frequency(extension.decoded(), 3.0) - CALLER_TONE) < 5
    log = server.log()
    assert "event=agent-transfer" in log and "kind=blind" in log and "to=9200" in log
    assert "event=transfer-joined" in log
    calls_over(server)


async def test_an_attended_transfer_consults_cancels_consults_again_and_joins_the_parties(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    with answerer(
        tmp_path / "extension", server.pbx_port, user="200", tone_hz=EXTENSION_TONE, codecs="PCMU"
    ) as extension:
        async with agent_page(server, tmp_path / "agent") as page:
            with caller(
                tmp_path / "caller", f"sip:agent-agent1@127.0.0.1:{server.sip_port}", 11
            ) as sip:
                await answer_call(page)
                await page.get_by_label("Transfer to (number, queue or agent)").fill("9200")
                await page.get_by_role("button", name="Consult", exact=True).click()
                await expect(page.locator("#call-kind")).to_have_text("Connected", timeout=5000)
                await page.get_by_role("button", name="Cancel consult", exact=True).click()
                await expect(page.locator("#call-kind")).to_have_text("On hold")  # the caller
                await expect(page.locator("#caller-number")).to_have_text("tester")

                await page.get_by_role("button", name="Consult", exact=True).click()
                await expect(page.locator("#caller-number")).to_have_text("9200", timeout=5000)
                await expect(page.locator("#call-kind")).to_have_text("Connected", timeout=5000)
                await assert_hears(page, EXTENSION_TONE)  # the agent hears the extension
                await asyncio.sleep(1.0)  # the extension hears the agent
                extension_log = tmp_path / "extension" / "baresip.out"
                closed = extension_log.read_text(errors="replace").count(SESSION_CLOSED)
                await page.get_by_role("button", name="Complete", exact=True).click()
                await expect(page.locator("#no-call")).to_be_visible(timeout=5000)
                await expect(page.locator("#state")).to_have_text("Wrap-up", timeout=5000)
                run = await sip.ended(20)
                await until(  # the caller's BYE, relayed, ends the extension's call too
                    lambda: (
                        extension_log.read_text(errors="replace").count(SESSION_CLOSED) > closed
                    ),
                    what="the extension's call to end",
                )
    assert run.established, run.output[-3000:]
    assert abs(tail_frequency(run.decoded(), 3.0) - EXTENSION_TONE) < 5
    assert abs(tail_frequency(extension.decoded(), 3.0) - CALLER_TONE) < 5
    log = server.log()
    assert "kind=consult" in log and "kind=attended" in log
    assert "event=agent-transfer-cancelled" in log
    calls_over(server)


async def test_a_call_survives_the_page_losing_its_websocket(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    async with agent_page(server, tmp_path / "agent") as page:
        with caller(
            tmp_path / "caller", f"sip:agent-agent1@127.0.0.1:{server.sip_port}", 12
        ) as sip:
            await answer_call(page)
            await page.evaluate("window.omlAgent.signaling.drop()")
            await expect(page.locator("#banner")).to_contain_text("reconnecting", timeout=3000)
            await expect(page.locator("#banner")).to_be_hidden(timeout=10000)
            await expect(page.locator("#call-kind")).to_have_text("Connected")
            await assert_hears(page, CALLER_TONE)
            await page.get_by_role("button", name="Hold", exact=True).click()  # commands work
            await expect(page.locator("#call-kind")).to_have_text("On hold")
            await page.get_by_role("button", name="Resume", exact=True).click()
            await expect(page.locator("#call-kind")).to_have_text("Connected")
            run = await sip.ended(15)
            await expect(page.locator("#no-call")).to_be_visible(timeout=5000)
    assert run.established, run.output[-3000:]
    assert abs(tail_frequency(run.decoded(), 2.0) - AGENT_TONE) < 5
    calls_over(server)


async def test_a_blind_transfer_moves_the_caller_to_another_agent_then_to_a_queue(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    async with (
        agent_page(server, tmp_path / "agent1", "agent1") as first,
        agent_page(server, tmp_path / "agent2", "agent2") as second,
    ):
        with caller(
            tmp_path / "caller", f"sip:agent-agent1@127.0.0.1:{server.sip_port}", 15
        ) as sip:
            await answer_call(first)
            await first.get_by_label("Transfer to (number, queue or agent)").fill("agent-agent2")
            await first.get_by_role("button", name="Transfer", exact=True).click()
            await expect(first.locator("#state")).to_have_text("Wrap-up", timeout=5000)
            await expect(second.locator("#call-queue")).to_contain_text("transfer", timeout=5000)
            await answer_call(second)  # the same leg, now on agent2's channel

            await expect(first.locator("#state")).to_have_text("Ready", timeout=10000)
            await second.get_by_label("Transfer to (number, queue or agent)").fill("support")
            await second.get_by_role("button", name="Transfer", exact=True).click()
            await expect(first.locator("#call-queue")).to_have_text("support", timeout=10000)
            await answer_call(first)  # the queue offered it to the agent who was ready
            run = await sip.ended(20)
            await expect(first.locator("#no-call")).to_be_visible(timeout=5000)
    assert run.established, run.output[-3000:]
    assert abs(tail_frequency(run.decoded(), 2.0) - AGENT_TONE) < 5
    log = server.log()
    assert "to=agent-agent2 kind=blind" in log and "to=support kind=blind" in log
    assert "event=queue-enter" in log
    calls_over(server)


async def test_a_queued_caller_transferred_to_the_extension_leaves_the_queue_books(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    with answerer(
        tmp_path / "extension", server.pbx_port, user="200", tone_hz=EXTENSION_TONE, codecs="PCMU"
    ) as extension:
        async with agent_page(server, tmp_path / "agent") as page:
            with caller(tmp_path / "caller", f"sip:support@127.0.0.1:{server.sip_port}", 10) as sip:
                await answer_call(page)
                await expect(page.locator("#call-queue")).to_have_text("support")
                await page.get_by_label("Transfer to (number, queue or agent)").fill("9200")
                await page.get_by_role("button", name="Transfer", exact=True).click()
                await expect(page.locator("#no-call")).to_be_visible(timeout=5000)
                await expect(page.locator("#history li").first).to_contain_text("transferred")
                run = await sip.ended(15)
                await expect(page.locator("#state")).to_have_text("Ready", timeout=10000)
    assert run.established, run.output[-3000:]
    assert abs(tail_frequency(run.decoded(), 3.0) - EXTENSION_TONE) < 5
    assert abs(tail_frequency(extension.decoded(), 3.0) - CALLER_TONE) < 5
    calls_over(server)
    committed(server)
    db = server.workdir / "data" / "omlmedia.db"
    with sqlite3.connect(db) as conn:
        call_id = conn.execute(
            "SELECT call_id FROM queue_log WHERE event = 'transfer' ORDER BY id DESC"
        ).fetchone()[0]
        record = conn.execute(
            "SELECT queue, agent, hangup_by, cause FROM cdr WHERE call_id = ?", (call_id,)
        ).fetchone()
        assert conn.execute("SELECT count(*) FROM open_calls").fetchone() == (0,)
    assert record == ("support", "agent1", "transfer", "transferred"), record


async def test_an_attended_transfer_to_another_agent_lets_them_talk_then_hands_the_caller_over(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    async with (
        agent_page(server, tmp_path / "agent1", "agent1", CONSULTING_AGENT_TONE) as first,
        agent_page(server, tmp_path / "agent2", "agent2") as second,
    ):
        with caller(
            tmp_path / "caller", f"sip:agent-agent1@127.0.0.1:{server.sip_port}", 14
        ) as sip:
            await answer_call(first)
            await first.get_by_label("Transfer to (number, queue or agent)").fill("agent-agent2")
            await first.get_by_role("button", name="Consult", exact=True).click()
            await expect(first.locator("#call-kind")).to_have_text("Consulting…", timeout=5000)
            await expect(second.locator("#call-kind")).to_have_text("Incoming consultation")
            await expect(second.locator("#caller-number")).to_have_text("agent1")
            await expect(second.locator("#consult-for")).to_have_text("tester")
            await second.get_by_role("button", name="Answer", exact=True).click()
            await expect(first.locator("#call-kind")).to_have_text("Connected", timeout=5000)
            await assert_hears(second, CONSULTING_AGENT_TONE)  # browser to browser
            await assert_hears(first, AGENT_TONE)

            await first.get_by_role("button", name="Complete", exact=True).click()
            await expect(first.locator("#no-call")).to_be_visible(timeout=5000)
            await expect(first.locator("#state")).to_have_text("Wrap-up")
            await expect(second.locator("#caller-number")).to_have_text("tester")
            await expect(second.locator("#call-kind")).to_have_text("Connected")
            await assert_hears(second, CALLER_TONE)  # the caller is agent2's call now
            run = await sip.ended(20)
            await expect(second.locator("#no-call")).to_be_visible(timeout=5000)
    assert run.established, run.output[-3000:]
    assert abs(tail_frequency(run.decoded(), 2.0) - AGENT_TONE) < 5
    log = server.log()
    assert "to=agent-agent2 kind=consult" in log and "to=agent2 kind=attended" in log
    assert "event=agent-consult-answered" in log
    calls_over(server)
