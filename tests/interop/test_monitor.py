"""A supervisor monitors a queue call from the supervisor page: listen, whisper, barge, stop.

Real peers only: a baresip caller (440 Hz, PCMU) into the `support` campaign, agent1 answering
in Chromium (660 Hz microphone), a supervisor account (scoped to `support`) logged in on
`/supervisor/` in a second Chromium (1000 Hz microphone), who picks the call on the wallboard and
drives the monitoring panel (the last button by keyboard). What each party hears is measured on
the audio itself: the pages' received audio through a WebAudio analyser, the caller's in
baresip's recording of what it received. Listen: the supervisor hears both tones and nobody
hears the supervisor; whisper: the agent hears the supervisor, the caller does not; barge: both
do; stop: neither does, and the supervisor hears nothing. The actions are in the audit log and
the call's record has the supervisor's leg.

With ``OMLMEDIA_MEASURE_MONITOR=1`` the test also measures the server's CPU (``/proc/<pid>/stat``)
over 4 s of the call unmonitored, listened to and whispered on, and prints it.
"""

from __future__ import annotations

import asyncio
import os
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.interop.baresip import dial
from tests.interop.browser import chromium
from tests.interop.harness import RunningServer
from tests.interop.pages import agent_logged_in, call, calls_over, log_in

pytestmark = pytest.mark.interop

CALLER_TONE = 440.0
AGENT_TONE = 660.0
SUPERVISOR_TONE = 1000.0
PASSWORD = "supervise-support-1"
CALL_SECONDS = 55
"""The caller's longest call: the agent hangs up once the test has heard what it needs."""
HEARD_DB = -50.0
"""A tone this loud (WebAudio analyser, dBFS per bin) is heard: ours arrive near -30."""
SILENT_DB = -65.0
"""A tone below this is not heard."""

LEVELS = """async ([id, freqs]) => {
    const stream = document.getElementById(id).srcObject;
    const ctx = new AudioContext();
    const an = ctx.createAnalyser(); an.fftSize = 8192;
    ctx.createMediaStreamSource(stream).connect(an);
    await new Promise((r) => setTimeout(r, 500));
    const bins = new Float32Array(an.frequencyBinCount); an.getFloatFrequencyData(bins);
    const step = ctx.sampleRate / an.fftSize;
    const out = {};
    for (const f of freqs) {
        let best = -200;
        for (let i = Math.floor((f - 20) / step); i <= Math.ceil((f + 20) / step); i++)
            if (Number.isFinite(bins[i])) best = Math.max(best, bins[i]);
        out[f] = best;
    }
    await ctx.close();
    return out;
}"""
"""The level (dBFS) of each of `freqs` in what element `id` plays."""


async def levels(page: Any, element: str) -> dict[float, float]:
    tones = [CALLER_TONE, AGENT_TONE, SUPERVISOR_TONE]
    found = await page.evaluate(LEVELS, [element, tones])
    return {tone: float(found[str(int(tone))]) for tone in tones}


async def hears(
    page: Any, element: str, heard: tuple[float, ...], silent: tuple[float, ...], what: str
) -> dict[float, float]:
    """Poll (deadline 10 s) until `element` on `page` plays the `heard` tones and not the
    `silent` ones; fails with the last levels."""
    deadline = time.monotonic() + 10.0
    while True:
        found = await levels(page, element)
        if all(found[t] > HEARD_DB for t in heard) and all(found[t] < SILENT_DB for t in silent):
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: heard {found} (want {heard} above {HEARD_DB}, {silent} silent)")


def tone_windows(path: Path, frequency: float) -> list[bool]:
    """Whether each 100 ms window of the recording carries `frequency` (amplitude > 0.05)."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    size = rate // 10
    window = np.hanning(size)
    band = slice(int((frequency - 30) * size / rate), int((frequency + 30) * size / rate) + 1)
    found = []
    for start in range(0, samples.size - size, size):
        spectrum = np.abs(np.fft.rfft(samples[start : start + size] * window))
        found.append(bool(2 * spectrum[band].max() / window.sum() / 32768 > 0.05))
    return found


def tone_seconds(path: Path, frequency: float) -> float:
    """How many seconds of the recording carry `frequency`."""
    return 0.1 * sum(tone_windows(path, frequency))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_share(pid: int, seconds: float = 4.0) -> float:
    """The server's CPU over `seconds` of wall time, in % of one core."""
    start, wall = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - start) / (time.monotonic() - wall)


async def test_a_supervisor_listens_whispers_barges_and_stops_on_a_queue_call(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    status, _ = call(
        server,
        "POST",
        "/accounts",
        {"name": "sue", "role": "supervisor", "password": PASSWORD, "scope": ["support"]},
    )
    assert status == 201
    measure = os.environ.get("OMLMEDIA_MEASURE_MONITOR") == "1"
    cpu: dict[str, float] = {}

    async with (
        chromium(tmp_path / "agent", AGENT_TONE) as agent_browser,
        chromium(tmp_path / "supervisor", SUPERVISOR_TONE) as supervisor_browser,
    ):
        await supervisor_browser.add_init_script(
            "localStorage.setItem('omlmedia.supervisor.settings', '{\"audioProcessing\": false}');"
        )
        agent = await agent_browser.new_page()
        await agent_logged_in(agent, server, "agent1")
        state = agent.locator("#state")
        await agent.get_by_role("button", name="Ready", exact=True).click()

        supervisor = await supervisor_browser.new_page()
        await supervisor.goto(f"https://127.0.0.1:{server.http_port}/supervisor/")
        await log_in(supervisor, "sue", PASSWORD)
        panel = supervisor.get_by_role("complementary", name="Monitoring")
        await expect(panel.locator("#monitor-channel")).to_have_text("connected", timeout=15000)
        await supervisor.evaluate("window.omlMonitor.pc.omlTag = 'the first one'")

        caller = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: dial(
                tmp_path / "caller",
                f"sip:support@127.0.0.1:{server.sip_port}",
                CALL_SECONDS,
                tone_hz=CALLER_TONE,
                codecs="PCMU",
            ),
        )
        await expect(state).to_have_text("Ringing", timeout=15000)
        await agent.get_by_role("button", name="Answer", exact=True).click()
        await expect(state).to_have_text("On call")
        await hears(agent, "remote-audio", (CALLER_TONE,), (SUPERVISOR_TONE,), "agent, unmonitored")
        call_id = await agent.evaluate("[...window.omlAgent.calls.keys()][0]")
        if measure:
            cpu["unmonitored"] = await cpu_share(server.pid)

        # The supervisor picks the call on the wallboard (which tells the panel: oml:select-call).
        call_row = supervisor.locator("#call-rows tr")
        await expect(call_row).to_have_count(1, timeout=10000)
        await call_row.get_by_role("button", name="Call from tester").click()
        await expect(panel.locator("#monitor-call")).to_contain_text("tester")

        await panel.get_by_role("button", name="Listen", exact=True).click()
        await expect(panel.locator("#monitor-mode")).to_contain_text("Listening")
        await expect(panel.get_by_role("button", name="Listen")).to_have_attribute(
            "aria-pressed", "true"
        )
        await hears(
            supervisor, "monitor-audio", (CALLER_TONE, AGENT_TONE), (), "supervisor, listen"
        )
        await hears(agent, "remote-audio", (CALLER_TONE,), (SUPERVISOR_TONE,), "agent, listen")
        if measure:
            cpu["listen"] = await cpu_share(server.pid)

        whisper_at = time.monotonic()
        await panel.get_by_role("button", name="Whisper", exact=True).click()
        await expect(panel.locator("#monitor-mode")).to_contain_text("Whispering")
        await hears(agent, "remote-audio", (CALLER_TONE, SUPERVISOR_TONE), (), "agent, whisper")
        await hears(
            supervisor, "monitor-audio", (CALLER_TONE, AGENT_TONE), (), "supervisor, whisper"
        )
        if measure:
            cpu["whisper"] = await cpu_share(server.pid)
        await asyncio.sleep(max(0.0, whisper_at + 4.0 - time.monotonic()))  # 4 s of whisper

        barge_at = time.monotonic()
        await panel.get_by_role("button", name="Barge", exact=True).click()
        await expect(panel.locator("#monitor-mode")).to_contain_text("barge")
        await hears(agent, "remote-audio", (CALLER_TONE, SUPERVISOR_TONE), (), "agent, barge")
        await asyncio.sleep(max(0.0, barge_at + 3.0 - time.monotonic()))  # 3 s of barge

        # One channel all along (no renegotiation), and the agent was not told (the default).
        tag = await supervisor.evaluate("window.omlMonitor.pc.omlTag")
        assert tag == "the first one"
        await expect(agent.locator("#status-line")).not_to_contain_text("supervisor")
        stop_at = time.monotonic()
        # Keyboard only: the panel's controls are plain buttons in the tab order.
        await panel.get_by_role("button", name="Stop", exact=True).focus()
        await supervisor.keyboard.press("Enter")
        await expect(panel.locator("#monitor-mode")).to_have_text("Not monitoring")
        await hears(agent, "remote-audio", (CALLER_TONE,), (SUPERVISOR_TONE,), "agent, stopped")
        await hears(
            supervisor, "monitor-audio", (), (CALLER_TONE, AGENT_TONE), "supervisor, stopped"
        )
        # The call went on, directly relayed again, until the agent hangs up.
        await agent.get_by_role("button", name="Hang up", exact=True).click()
        run = await caller
        await expect(agent.locator("#no-call")).to_be_visible(timeout=15000)

    assert run.established, run.output[-3000:]
    whispered, barged = barge_at - whisper_at, stop_at - barge_at
    heard = tone_seconds(run.decoded(), SUPERVISOR_TONE)
    # The caller heard the supervisor for the barge only, never during the whisper.
    assert barged - 1.5 <= heard <= barged + 1.0, (heard, whispered, barged)
    # And the agent all along: from its first word to the hang-up (at least through the
    # whisper and the barge), in nearly every 100 ms of what the caller received.
    agent_heard = tone_windows(run.decoded(), AGENT_TONE)
    since = agent_heard[agent_heard.index(True) :] if True in agent_heard else []
    assert sum(since) >= 0.8 * len(since) and len(since) / 10 > whispered + barged - 2, (
        "".join("a" if w else "." for w in agent_heard),
        whispered,
        barged,
    )

    status, audit = call(server, "GET", "/audit?action=call.monitor")
    assert status == 200, audit
    entries = audit["entries"] if isinstance(audit, dict) else audit
    modes = [e["after"]["mode"] for e in entries if e["target"] == call_id]
    assert modes == ["listen", "whisper", "barge"] and all(e["actor"] == "sue" for e in entries)
    status, stopped = call(server, "GET", "/audit?action=call.monitor-stop")
    assert [e["target"] for e in stopped["entries"]] == [call_id]

    # The record with its supervisor leg: the ACD writes the call's record, and the monitor
    # adds its legs to it in a later write (a turn of the loop after), which a batch of the
    # store can commit apart: the record alone may be read first.
    deadline = time.monotonic() + 10.0
    while True:
        status, records = call(server, "GET", "/calls/records?queue=support")
        found = [r for r in records["records"] if r["call_id"] == call_id]
        legs = [leg for r in found for leg in r["legs"] if leg.get("role") == "supervisor"]
        if legs or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert len(found) == 1 and legs and legs[0]["supervisor"] == "sue", found
    assert legs[0]["modes"] == ["listen", "whisper", "barge"]
    if measure:
        print(f"\nserver CPU, % of one core over 4 s: {cpu}")
    calls_over(server)


async def test_a_supervisor_moves_from_one_call_to_another_and_agents_are_told_when_configured(
    tmp_path: Path,
) -> None:
    """Two agents on two `support` calls; ``[webrtc] show_monitoring = true``. The supervisor
    listens to agent1's call, then whispers on agent2's (the first call goes back to its direct
    relay, the page's channel stays the same), then stops; each agent's page says so."""
    from playwright.async_api import expect

    from benchmarks.harness import ServerStartError
    from benchmarks.harness import start_server as start

    def show_monitoring(text: str) -> str:
        return text.replace("[webrtc]\n", "[webrtc]\nshow_monitoring = true\n", 1)

    try:
        server = start(tmp_path / "server", edit_config=show_monitoring)
    except ServerStartError as exc:
        pytest.fail(str(exc))
    try:
        status, _ = call(
            server,
            "POST",
            "/accounts",
            {"name": "sue", "role": "supervisor", "password": PASSWORD, "scope": ["support"]},
        )
        assert status == 201
        base = f"https://127.0.0.1:{server.http_port}"
        async with chromium(tmp_path / "browser", AGENT_TONE) as browser:
            agents = {}
            callers = []
            for name in ("agent1", "agent2"):
                page = await browser.new_page()
                await agent_logged_in(page, server, name)
                state = page.locator("#state")
                await page.get_by_role("button", name="Ready", exact=True).click()
                callers.append(
                    asyncio.get_running_loop().run_in_executor(
                        None,
                        lambda name=name: dial(
                            tmp_path / f"caller-{name}",
                            f"sip:support@127.0.0.1:{server.sip_port}",
                            40,
                            tone_hz=CALLER_TONE,
                        ),
                    )
                )
                await expect(state).to_have_text("Ringing", timeout=15000)
                await page.get_by_role("button", name="Answer", exact=True).click()
                await expect(state).to_have_text("On call")
                agents[name] = page

            supervisor = await browser.new_page()
            await supervisor.goto(f"{base}/supervisor/")
            await log_in(supervisor, "sue", PASSWORD)
            panel = supervisor.get_by_role("complementary", name="Monitoring")
            channel = panel.locator("#monitor-channel")
            await expect(channel).to_have_text("connected", timeout=15000)
            await supervisor.evaluate("window.omlMonitor.pc.omlTag = 'the first one'")
            rows = supervisor.locator("#call-rows tr")
            await expect(rows).to_have_count(2, timeout=10000)

            await rows.filter(has_text="agent1").get_by_role("button").click()
            await panel.get_by_role("button", name="Listen", exact=True).click()
            await expect(panel.locator("#monitor-mode")).to_contain_text("agent agent1")
            told = {name: page.locator("#status-line") for name, page in agents.items()}
            await expect(told["agent1"]).to_have_text("A supervisor is listening to this call")

            await rows.filter(has_text="agent2").get_by_role("button").click()
            await panel.get_by_role("button", name="Whisper", exact=True).click()
            await expect(panel.locator("#monitor-mode")).to_contain_text("agent agent2")
            await expect(told["agent1"]).to_have_text("The supervisor left the call")
            await expect(told["agent2"]).to_contain_text("A supervisor is coaching you")
            await hears(agents["agent2"], "remote-audio", (AGENT_TONE,), (), "agent2, whisper")
            await hears(
                agents["agent1"], "remote-audio", (CALLER_TONE,), (AGENT_TONE,), "agent1, left"
            )
            tag = await supervisor.evaluate("window.omlMonitor.pc.omlTag")
            assert tag == "the first one"  # the same peer connection: nothing renegotiated

            await panel.get_by_role("button", name="Stop", exact=True).click()
            await expect(told["agent2"]).to_have_text("The supervisor left the call")
            for page in agents.values():  # the calls end: each agent hangs up
                await page.get_by_role("button", name="Hang up", exact=True).click()
            for run in await asyncio.gather(*callers):
                assert run.established, run.output[-3000:]
        status, audit = call(server, "GET", "/audit?action=call.monitor")
        assert [(e["before"] or {}).get("call_id") is None for e in audit["entries"]] == [
            True,
            False,
        ]  # the second entry records the switch from the first call
        calls_over(server)
    finally:
        returncode = server.stop()
    assert returncode == 0, server.log()[-4000:]
    assert "Traceback" not in server.log(), server.log()[-6000:]
