"""Live call control and click-to-call through the API, and the agent page's PCI recording
pause, with real peers: baresip callers (a 440 Hz tone) dial `support` (a recorded campaign), a
Chromium agent (a 660 Hz tone) answers, and a baresip on trunk `pbx` answers only the number it
is asked for (a 550 Hz tone).

- The agent pauses the recording from its page ("Pause recording"), an integration resumes it
  through the API: the file holds silence on both channels for that span and both tones before
  and after it; the call record and the call detail report list the gap, the audit log has both
  actions. Another campaign's token neither sees nor touches the call, a reporting token lacks
  the permission; the integration holds, unholds and hangs up the call (the page follows each).
- Click-to-call: refusals name the field (unknown agent or campaign 404, bad number 400), an
  agent not Ready is 409; the page rings with the number, the agent answers, the trunk's
  baresip gets the call and its tone reaches the page; a declined one fails; the event log has
  each stage.
- A blind transfer to a number through the API: 409 while ringing; answered, the caller ends up
  hearing the trunk's baresip.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from tests.interop.baresip import dial
from tests.interop.browser import chromium, remote_tone
from tests.interop.harness import API_TOKEN, RunningServer
from tests.interop.pages import agent_logged_in, call, calls_over, until

pytestmark = pytest.mark.interop

CALLER_TONE = 440.0
AGENT_TONE = 660.0


def live_call(server: RunningServer) -> dict[str, Any] | None:
    status, body = call(server, "GET", "/calls")
    assert status == 200, body
    calls = [c for c in body["calls"] if c["state"] != "ringing"]
    return calls[0] if calls else None


def decode(path: Path) -> tuple[npt.NDArray[np.float64], int]:
    """The recording as float samples, shape (2, n), and its rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = []
        for frame in container.decode(stream):
            samples = frame.to_ndarray()
            if not frame.format.is_planar:
                samples = samples.reshape(-1, len(frame.layout.channels)).T
            if samples.dtype == np.int16:
                samples = samples / 32768
            frames.append(samples.astype(np.float64))
        return np.concatenate(frames, axis=1), stream.codec_context.sample_rate


def tone_level(samples: npt.NDArray[np.float64], rate: int, frequency: float) -> float:
    """The amplitude of `frequency` (relative to full scale) over `samples`."""
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(samples * window))
    band = slice(
        int((frequency - 30) * samples.size / rate), int((frequency + 30) * samples.size / rate) + 1
    )
    return float(2 * spectrum[band].max() / window.sum())


async def test_a_recording_paused_on_the_page_and_resumed_by_the_api_holds_silence_for_the_gap(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    loop = asyncio.get_running_loop()
    status, body = call(server, "POST", "/calls/nope/hangup", {})
    assert status == 404 and "nope" in body["detail"], body
    async with chromium(tmp_path / "agent", AGENT_TONE) as browser:
        page = await browser.new_page()
        await agent_logged_in(page, server, "agent1")
        state = page.locator("#state")
        await page.get_by_role("button", name="Ready", exact=True).click()
        await expect(state).to_have_text("Ready", timeout=5000)

        caller = loop.run_in_executor(
            None,
            lambda: dial(
                tmp_path / "caller",
                f"sip:support@127.0.0.1:{server.sip_port}",
                30,
                tone_hz=CALLER_TONE,
            ),
        )
        await page.get_by_role("button", name="Answer", exact=True).click(timeout=15000)
        await expect(state).to_have_text("On call", timeout=5000)
        pause = page.get_by_role("button", name="Pause recording", exact=True)
        await expect(pause).to_be_visible(timeout=5000)
        live = await until(lambda: live_call(server), what="the live call")
        call_id = live["call_id"]
        assert (live["agent"], live["queue"], live["recording"]) == ("agent1", "support", "on")

        def offset_past(seconds: float) -> float | None:
            """The recording's offset (seconds into its file) once past `seconds`."""
            offset = float((live_call(server) or {}).get("offset") or 0)
            return offset if offset >= seconds else None

        def offset_paused() -> float | None:
            """The recording's offset once the call says its recording is paused."""
            live = live_call(server) or {}
            return float(live["offset"]) if live.get("recording") == "paused" else None

        # Talk for 3 s of recording, then the agent pauses from its page.
        talked = await until(lambda: offset_past(3.0), what="3 s")
        await pause.click()
        resume = page.get_by_role("button", name="Resume recording", exact=True)
        await expect(resume).to_be_visible(timeout=5000)
        await expect(page.locator("#recording-state")).to_have_text("Recording paused")
        paused_by = await until(offset_paused, what="the recording paused")
        # 3 s later an integration resumes it through the API; the page follows.
        held = await until(lambda: offset_past(paused_by + 3.0), what="the paused span")
        status, resumed = call(server, "POST", f"/calls/{call_id}/recording/resume", {})
        resumed_by = offset_past(0.0)
        assert status == 200, resumed
        assert resumed["recording"] == "on" and len(resumed["gaps"]) == 1, resumed
        gap = resumed["gaps"][0]
        # The gap begins with the click (the page and the server in between, however slow the
        # machine) and ends with the resume: each within the offsets read before and after it.
        assert talked <= gap["start"] <= paused_by, (gap, talked, paused_by)
        assert held <= gap["end"] <= (resumed_by or 0), (gap, held, resumed_by)
        await expect(pause).to_be_visible(timeout=5000)
        status, again = call(server, "POST", f"/calls/{call_id}/recording/resume", {})
        assert status == 200 and again["gaps"] == resumed["gaps"]  # not paused: no new gap
        await until(lambda: (live_call(server) or {}).get("offset", 0) >= gap["end"] + 3.0)

        # Scopes and roles: another campaign's integration neither sees nor touches the call, a
        # reporting token may not act on it, the campaign's own integration may.
        tokens = {}
        for name, role, scope in [
            ("sales-crm", "supervisor", ["sales"]),
            ("support-crm", "supervisor", ["support"]),
            ("reports", "reporting", None),
        ]:
            order = {"integration": name, "role": role, "scope": scope}
            status, made = call(server, "POST", "/tokens", order)
            assert status == 201, made
            tokens[name] = made["token"]
        status, seen = call(server, "GET", "/calls", token=tokens["sales-crm"])
        assert status == 200 and seen["calls"] == [], seen
        status, body = call(server, "POST", f"/calls/{call_id}/hold", {}, token=tokens["sales-crm"])
        assert status == 403, body
        status, body = call(server, "POST", f"/calls/{call_id}/hold", {}, token=tokens["reports"])
        assert status == 403 and body["missing_permission"] == "calls:control", body
        status, seen = call(server, "GET", f"/calls/{call_id}", token=tokens["support-crm"])
        assert status == 200 and seen["recording"] == "on", seen

        # Hold and unhold through the API: the page shows each.
        status, held = call(server, "POST", f"/calls/{call_id}/hold", {})
        assert status == 200 and held["state"] == "held", held
        await expect(page.get_by_role("button", name="Resume", exact=True)).to_be_enabled()
        status, body = call(server, "POST", f"/calls/{call_id}/transfer", {"to": "no spaces"})
        assert status == 400 and [e["field"] for e in body["errors"]] == ["to"], body
        status, unheld = call(server, "POST", f"/calls/{call_id}/unhold", {})
        assert status == 200 and unheld["state"] == "active", unheld
        await expect(page.get_by_role("button", name="Hold", exact=True)).to_be_enabled()
        # The integration hangs up: the caller gets a BYE, the agent goes to wrap-up.
        status, ended = call(server, "POST", f"/calls/{call_id}/hangup", {})
        assert status == 200 and ended["state"] == "ended", ended
        await expect(state).to_have_text("Wrap-up", timeout=5000)
        status, body = call(server, "POST", f"/calls/{call_id}/recording/pause", {})
        assert status == 404, body
        await page.get_by_role("button", name="Log out", exact=True).click()
        await expect(page.get_by_role("button", name="Log in")).to_be_visible()
        run = await caller
    assert run.established

    calls_over(server)
    record = await until(
        lambda: next(
            (
                r
                for r in call(server, "GET", "/calls/records?queue=support")[1]["records"]
                if r["call_id"] == call_id and any(leg["role"] == "recording" for leg in r["legs"])
            ),
            None,
        ),
        what="the call record with its gaps",
    )
    marked = next(leg for leg in record["legs"] if leg["role"] == "recording")
    assert marked["gaps"] == resumed["gaps"], marked
    status, audit = call(server, "GET", f"/audit?target={call_id}")
    assert status == 200, audit
    actions = [(e["actor"], e["action"]) for e in audit["entries"]]
    assert ("agent1", "call.recording-pause") in actions, actions
    assert ("bootstrap", "call.recording-resume") in actions, actions
    assert ("bootstrap", "call.hold") in actions and ("bootstrap", "call.hangup") in actions

    status, detail = call(server, "GET", "/reports/calls?queue=support")
    assert status == 200, detail
    row = next(r for r in detail["rows"] if r["call_id"] == call_id)
    assert row["recording_gaps"] == f"{gap['start']:.1f}-{gap['end']:.1f}", row

    samples, rate = decode(Path(record["recording"]))

    def level(start: float, end: float, channel: int, frequency: float) -> float:
        return tone_level(samples[channel, int(start * rate) : int(end * rate)], rate, frequency)

    start, end = gap["start"], gap["end"]
    assert level(0.5, start - 0.3, 0, CALLER_TONE) > 0.05  # the caller before the pause
    assert level(0.5, start - 0.3, 1, AGENT_TONE) > 0.05  # and the agent
    for channel in (0, 1):  # silence on both sides while paused
        part = samples[channel, int((start + 0.2) * rate) : int((end - 0.2) * rate)]
        assert part.size > rate and float(np.abs(part).max()) < 0.01, channel
    assert level(end + 0.3, end + 2.5, 0, CALLER_TONE) > 0.05  # back after the resume
    assert level(end + 0.3, end + 2.5, 1, AGENT_TONE) > 0.05


def stream_events(server: RunningServer, types: str, count: int, within: float = 10.0) -> list[Any]:
    """The first `count` events of `types` in the event log (SSE from the start, ``since_id=0``)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://127.0.0.1:{server.http_port}/api/v1/events?since_id=0&type={types}",
        headers={"Authorization": f"Bearer {API_TOKEN}", "Accept": "text/event-stream"},
    )
    found: list[Any] = []
    deadline = time.monotonic() + within
    with urllib.request.urlopen(request, context=context, timeout=within) as response:
        while len(found) < count and time.monotonic() < deadline:
            line = response.readline().decode()
            if line.startswith("data:"):
                found.append(json.loads(line[5:]))
    return found


async def test_click_to_call_rings_the_agent_then_dials_the_number_through_the_trunk(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    from tests.interop.baresip import answerer

    number, far_tone = "5557777", 550.0
    order = {"agent": "agent2", "number": number, "campaign": "support"}
    status, body = call(server, "POST", "/calls", {**order, "agent": "nobody"})
    assert status == 404 and [e["field"] for e in body["errors"]] == ["agent"], body
    status, body = call(server, "POST", "/calls", {**order, "campaign": "nope"})
    assert status == 404 and [e["field"] for e in body["errors"]] == ["campaign"], body
    status, body = call(server, "POST", "/calls", {"agent": "agent2", "number": "12a"})
    assert status == 400 and [e["field"] for e in body["errors"]] == ["number"], body
    status, body = call(server, "POST", "/calls", order)
    assert status == 409, body  # not logged in
    async with chromium(tmp_path / "agent", AGENT_TONE) as browser:
        page = await browser.new_page()
        await agent_logged_in(page, server, "agent2")
        state = page.locator("#state")
        status, body = call(server, "POST", "/calls", order)
        assert status == 409 and "Ready" in body["detail"], body  # paused
        await page.get_by_role("button", name="Ready", exact=True).click()
        await expect(state).to_have_text("Ready", timeout=5000)

        # The agent declines one: it fails, and the agent is Ready again.
        status, declined = call(server, "POST", "/calls", order)
        assert status == 202, declined
        await expect(page.locator("#caller-number")).to_have_text(number, timeout=10000)
        await page.get_by_role("button", name="Hang up", exact=True).click()
        await expect(state).to_have_text("Ready", timeout=5000)

        with answerer(
            tmp_path / "pbx", server.pbx_port, user=number, tone_hz=far_tone, codecs="PCMU"
        ) as far:
            status, placed = call(server, "POST", "/calls", order)
            assert status == 202 and placed["state"] == "ringing", placed
            call_id = placed["call_id"]
            status, live = call(server, "GET", f"/calls/{call_id}")
            assert status == 200 and live["state"] == "ringing" and live["agent"] == "agent2"
            await expect(page.locator("#caller-number")).to_have_text(number, timeout=10000)
            await expect(state).to_have_text("Ringing")
            await page.get_by_role("button", name="Answer", exact=True).click()
            await expect(state).to_have_text("On call", timeout=10000)
            # The number is dialled once the agent answered: its audio comes after 'On call'.
            heard = await remote_tone(page, far_tone)
            assert abs(heard["hz"] - far_tone) < 10, heard  # media from the far end
            await page.get_by_role("button", name="Hang up", exact=True).click()
            await expect(page.locator("#no-call")).to_be_visible(timeout=10000)
        assert "Call established" in far.output, far.output[-2000:]
        await page.get_by_role("button", name="Log out", exact=True).click()
        await expect(page.get_by_role("button", name="Log in")).to_be_visible()

    events = await asyncio.get_running_loop().run_in_executor(
        None, lambda: stream_events(server, "call.click_to_call", 6)
    )
    stages = [(e["call_id"], e["data"]["stage"]) for e in events]
    assert stages == [
        (declined["call_id"], "ringing-agent"),
        (declined["call_id"], "failed"),
        (call_id, "ringing-agent"),
        (call_id, "dialing"),
        (call_id, "answered"),
        (call_id, "ended"),
    ], stages
    assert events[1]["data"]["reason"] == "agent-hangup"
    assert all(e["agent"] == "agent2" and e["data"]["number"] == number for e in events)


def tail_frequency(path: Path, seconds: float) -> float:
    """The dominant frequency of the last `seconds` of a WAV file."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    part = samples[-int(rate * seconds) :]
    spectrum = np.abs(np.fft.rfft(part * np.hanning(part.size)))
    spectrum[:5] = 0
    return float(np.argmax(spectrum) * rate / part.size)


async def test_an_integration_transfers_a_call_blind_to_a_number_through_the_trunk(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    from tests.interop.baresip import answerer

    number, far_tone = "5558888", 550.0
    loop = asyncio.get_running_loop()
    async with chromium(tmp_path / "agent", AGENT_TONE) as browser:
        page = await browser.new_page()
        await agent_logged_in(page, server, "agent1")
        state = page.locator("#state")
        await page.get_by_role("button", name="Ready", exact=True).click()
        await expect(state).to_have_text("Ready", timeout=5000)
        with answerer(
            tmp_path / "pbx", server.pbx_port, user=number, tone_hz=far_tone, codecs="PCMU"
        ) as far:
            caller = loop.run_in_executor(
                None,
                lambda: dial(
                    tmp_path / "caller",
                    f"sip:support@127.0.0.1:{server.sip_port}",
                    12,  # the transfer comes within 2-5 s: the rest with the number, 3 s checked
                    tone_hz=CALLER_TONE,
                ),
            )
            offered = await until(
                lambda: call(server, "GET", "/calls")[1]["calls"], what="the offer"
            )
            call_id = offered[0]["call_id"]
            status, early = call(server, "POST", f"/calls/{call_id}/transfer", {"to": number})
            assert status == 409, early  # ringing: not answered yet
            await page.get_by_role("button", name="Answer", exact=True).click(timeout=15000)
            await expect(state).to_have_text("On call", timeout=5000)
            status, moved = call(server, "POST", f"/calls/{call_id}/transfer", {"to": number})
            assert status == 200 and moved["state"] == "ended", moved
            await expect(page.locator("#no-call")).to_be_visible(timeout=10000)
            await expect(state).to_have_text("Wrap-up", timeout=5000)
            run = await caller
        assert "Call established" in far.output, far.output[-2000:]
        await page.get_by_role("button", name="Log out", exact=True).click()
        await expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert run.established
    assert abs(tail_frequency(run.decoded(), 3.0) - far_tone) < 5  # the caller got the number
    status, audit = call(server, "GET", f"/audit?target={call_id}&action=call.transfer")
    assert status == 200 and len(audit["entries"]) == 1, audit
    assert audit["entries"][0]["after"]["state"] == "ended"
