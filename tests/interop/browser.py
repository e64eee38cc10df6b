"""Headless Debian Chromium driven by Playwright, for end-to-end tests against `omlmedia serve`.

Recipe from ../shared/docs/TESTING.md: the Debian binary, fake media devices (a tone file as the
microphone), a fresh profile per test. A missing chromium or playwright fails the test (make test
installs both): a green run must mean the browser really ran.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

EXPECT_TIMEOUT_MS = 15_000
"""How long Playwright's expect() polls a page's condition in these tests."""

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
]

ANALYSE_REMOTE_AUDIO = """async () => {
    const ctx = new AudioContext();
    const stream = document.getElementById('remote-audio').srcObject;
    const src = ctx.createMediaStreamSource(stream);
    const an = ctx.createAnalyser(); an.fftSize = 8192; src.connect(an);
    await new Promise((r) => setTimeout(r, 700));
    const bins = new Float32Array(an.frequencyBinCount); an.getFloatFrequencyData(bins);
    let best = 1; for (let i = 2; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    return {hz: best * ctx.sampleRate / an.fftSize, db: bins[best]};
}"""
"""The dominant frequency the agent page hears, and its level (dBFS)."""


async def remote_tone(page: Any, hz: float, seconds: float = 10.0) -> dict[str, float]:
    """`ANALYSE_REMOTE_AUDIO` again until the page hears `hz` (within 10 Hz) or `seconds` pass;
    the last analysis. For audio that starts after the page's state says so (a callback's
    number answers after the agent did)."""
    deadline = time.monotonic() + seconds
    while True:
        heard: dict[str, float] = await page.evaluate(ANALYSE_REMOTE_AUDIO)
        if abs(heard["hz"] - hz) < 10 or time.monotonic() > deadline:
            return heard


def chromium_path() -> str:
    """The Debian chromium binary; fails the test when it is missing."""
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    pytest.fail("chromium is not installed: run `make test`, which installs it")


def write_capture_tone(path: Path, frequency: float, rate: int = 48000) -> None:
    """One second of a tone (a whole number of cycles, so the fake capture loops cleanly)."""
    t = np.arange(rate) / rate
    samples = (0.5 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())


def _prepare(workdir: Path, tone_hz: float) -> tuple[Path, str]:
    """The capture tone file and a fresh profile directory under `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    tone = workdir / f"capture-{int(tone_hz)}.wav"
    write_capture_tone(tone, tone_hz)
    return tone, tempfile.mkdtemp(prefix="chromium-", dir=workdir)


@asynccontextmanager
async def chromium(workdir: Path, tone_hz: float) -> AsyncIterator[Any]:
    """A browser context whose microphone plays `tone_hz`, with audio processing off."""
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        pytest.fail("playwright is not installed: run `make test`, which installs it")
    # expect()'s checks poll their condition up to 15 s, not Playwright's 5 s: a page's state
    # behind a process start, a TLS handshake or ICE on a loaded 2-core machine may take longer,
    # and a longer wait costs nothing when the condition comes early.
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    binary = chromium_path()
    tone, profile = _prepare(workdir, tone_hz)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            profile,
            executable_path=binary,
            headless=True,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={tone}"],
            ignore_https_errors=True,
            viewport={"width": 1280, "height": 720},
        )
        # The tones must arrive unprocessed: the pages' audio processing setting goes off.
        await context.add_init_script(
            "localStorage.setItem('omlmedia.agent.settings', '{\"audioProcessing\": false}');"
            "localStorage.setItem('omlmedia.call.settings', '{\"audioProcessing\": false}');"
        )
        try:
            yield context
        finally:
            await context.close()
