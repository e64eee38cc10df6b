"""The supervisor page's recordings player in Chromium against a real `omlmedia serve`: Play
asks for a playback ticket and streams the recording through the <audio> element at once (no
bearer token in the URL, no whole download first); a seek far ahead issues an HTTP Range request
with that ticket; the listen is audited once; and the recording's PCI pause shows as a mark on
the player's timeline and in words ("Recording paused 00:42", an en dash, "01:10")."""

from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from omlmedia.storage import CallRecord, Store
from tests.interop.browser import chromium
from tests.interop.harness import RunningServer
from tests.interop.pages import call, log_in, make_account
from tests.interop.test_reports_page import page_error

if TYPE_CHECKING:
    from playwright.async_api import Locator, Page

pytestmark = pytest.mark.interop

PASSWORD = "recordings-page-1"
DAY = "2026-12-02"
T0 = 1_796_205_600.0  # 2026-12-02 10:00 UTC (the test server's site is UTC)
SECONDS = 600
GAP = {"start": 42.0, "end": 70.0}
PAUSED = "Recording paused 00:42\u201301:10"


def long_wav(path: Path, seconds: int = SECONDS, rate: int = 8000) -> Path:
    """A stereo WAV of `seconds` (19 MB at 8 kHz): far more than the player buffers ahead, so
    a seek near its end must fetch a range."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(rate) / rate
    second = np.stack(
        ((6000 * np.sin(2 * np.pi * 440 * t)), (6000 * np.sin(2 * np.pi * 660 * t))), axis=1
    ).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.tile(second, (seconds, 1)).tobytes())
    return path


async def search_recordings(
    page: Page, server: RunningServer, user: str, call_id: str
) -> tuple[Locator, Locator, list[str]]:
    """`user` logs in on the supervisor page and searches the recordings of DAY: the recordings
    panel, the row of `call_id`, and the page's errors (console and uncaught) as they come."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if page_error(m) else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(f"https://127.0.0.1:{server.http_port}/supervisor/")
    await log_in(page, user, PASSWORD)
    await page.get_by_role("button", name="Recordings", exact=True).click()
    recordings = page.locator("#recordings")
    await recordings.get_by_label("Day", exact=True).fill(DAY)
    await recordings.get_by_role("button", name="Search", exact=True).click()
    return recordings, recordings.locator(f'#recording-rows tr[data-call="{call_id}"]'), problems


async def wait_playing(page: Page, condition: str = "") -> None:
    """Until the player plays past 0.2 s (and `condition`, a JavaScript test of `p`, holds)."""
    await page.wait_for_function(
        "() => { const p = document.getElementById('recording-player');"
        f" return !p.paused && p.currentTime > 0.2{condition}; }}",
        timeout=15000,
    )


def listened(server: RunningServer, call_id: str) -> list[dict[str, Any]]:
    """The audit's entries of listens to `call_id`'s recordings."""
    status, body = call(server, "GET", f"/audit?action=recording.listen&target={call_id}")
    assert status == 200, body
    entries: list[dict[str, Any]] = body["entries"]
    return entries


def store_a_paused_recording(server: RunningServer) -> None:
    data = server.workdir / "data"
    recording = long_wav(data / "recordings" / "2026" / "12" / "02" / "support-pci1.wav")
    legs = (
        {"role": "caller", "codec": "PCMU", "mos": 4.2},
        {"role": "recording", "gaps": [GAP]},
    )
    store = Store(data / "omlmedia.db")
    store.call_ended(
        CallRecord("pci1", T0, T0 + 5 + SECONDS, T0 + 5, caller="+5491155550042",
                   campaign="support", queue="support", agent="agent1", disposition="solved",
                   recording=str(recording), legs=legs)
    )  # fmt: skip
    store.flush()
    store.close()


async def test_a_recording_streams_with_a_ticket_seeks_by_range_and_shows_its_pause(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    make_account(server, "rosa", "supervisor", PASSWORD)
    store_a_paused_recording(server)
    async with chromium(tmp_path / "browser", 440.0) as browser:
        page = await browser.new_page()
        audio: list[tuple[str, str]] = []

        def seen(request: Any) -> None:
            if "/api/v1/recordings/pci1/audio" in request.url:
                audio.append((request.url, request.headers.get("range", "")))

        page.on("request", seen)
        recordings, row, problems = await search_recordings(page, server, "rosa", "pci1")
        await expect(row.locator("td.gaps")).to_have_text(PAUSED)

        clicked = time.monotonic()
        await recordings.get_by_role("button", name="Play the recording of pci1").click()
        await wait_playing(page)
        started = time.monotonic() - clicked
        # Streamed: playing long before 19 MB could have come down whole, with a ticket only.
        size = (server.workdir / "data/recordings/2026/12/02/support-pci1.wav").stat().st_size
        buffered = await page.evaluate(
            "() => { const b = document.getElementById('recording-player').buffered;"
            " return b.length ? b.end(b.length - 1) : 0; }"
        )
        assert buffered < SECONDS * 0.5, (buffered, size)
        assert audio and all("?ticket=" in url for url, _ in audio), audio
        assert all("Bearer" not in url and "token" not in url for url, _ in audio)

        # The pause, on the timeline (where 42 s of 600 falls) and in words.
        player = recordings.locator("#player-timeline")
        await expect(player.locator("rect.gap")).to_have_count(1)
        await page.wait_for_function(
            "() => Math.abs(document.getElementById('recording-player').duration - 600) < 1"
        )
        x = float(await player.locator("rect.gap").get_attribute("x") or "nan")
        width = float(await player.locator("rect.gap").get_attribute("width") or "nan")
        assert abs(x - 1000 * 42 / SECONDS) < 1 and abs(width - 1000 * 28 / SECONDS) < 1
        await expect(recordings.locator("#player-gaps li")).to_have_text([PAUSED])
        label = await player.get_attribute("aria-label")
        assert label is not None and PAUSED in label

        # A seek far ahead: a Range request from there, answered, and playback goes on.
        before = len(audio)
        await page.evaluate("document.getElementById('recording-player').currentTime = 540")
        await page.wait_for_function(
            "() => { const p = document.getElementById('recording-player');"
            " return p.currentTime > 540.2 && !p.paused; }",
            timeout=15000,
        )
        seeks = [
            r for _, r in audio[before:] if r and not r.replace(" ", "").startswith("bytes=0-")
        ]
        assert seeks, audio
        assert not problems, problems

    assert [e["actor"] for e in listened(server, "pci1")] == ["rosa"]
    print(f"recording playing {started:.2f} s after Play; requests: {audio}")


def store_a_requeued_call(server: RunningServer) -> list[Path]:
    """A call answered by agent1, requeued (agent1's page went away) and answered by agent2: one
    recording per segment, the second paused for a moment."""
    day = server.workdir / "data" / "recordings" / "2026" / "12" / "02"
    files = [long_wav(day / "support-req1.wav", 3), long_wav(day / "support-req1-2.wav", 4)]
    legs = (
        {"role": "caller", "codec": "PCMU", "mos": 4.2},
        {"role": "recording", "gaps": [{"start": 1.0, "end": 2.0}], "file": str(files[1])},
        {"role": "segment", "file": str(files[0]), "agent": "agent1"},
        {"role": "segment", "file": str(files[1]), "agent": "agent2"},
    )
    store = Store(server.workdir / "data" / "omlmedia.db")
    store.call_ended(
        CallRecord("req1", T0 + 60, T0 + 80, T0 + 62, caller="+5491155550043",
                   campaign="support", queue="support", agent="agent2",
                   recording=str(files[0]), legs=legs)
    )  # fmt: skip
    store.flush()
    store.close()
    return files


async def test_a_requeued_calls_row_plays_each_agents_recording_with_its_own_ticket(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    make_account(server, "rui", "supervisor", PASSWORD)
    files = store_a_requeued_call(server)
    async with chromium(tmp_path / "browser", 440.0) as browser:
        page = await browser.new_page()
        audio: list[str] = []
        page.on("request", lambda r: audio.append(r.url) if "/recordings/req1/" in r.url else None)
        recordings, row, problems = await search_recordings(page, server, "rui", "req1")
        for name in ("segment 1 (agent1) of the call req1", "segment 2 (agent2) of the call req1"):
            await expect(row.get_by_role("button", name=f"Play {name}")).to_be_visible()
            await expect(row.get_by_role("button", name=f"Download {name}")).to_be_visible()
        await row.get_by_role("button", name="Play segment 2 (agent2) of the call req1").click()
        await wait_playing(page, " && Math.abs(p.duration - 4) < 0.1")
        # Its own pause on the timeline, its ticket on the audio requests.
        await expect(recordings.locator("#player-gaps li")).to_have_text(
            ["Recording paused 00:01\u201300:02"]
        )
        assert any("segment=2" in url and "ticket=" in url for url in audio), audio
        assert not problems, problems

    entries = listened(server, "req1")
    assert [e["after"]["file"] for e in entries] == [files[1].name], entries
