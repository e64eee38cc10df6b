"""baresip, a real SIP user agent with real media, driven headless for the interop tests."""

from __future__ import annotations

import subprocess
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.interop.harness import free_port, require_tool


def write_tone(
    path: Path, frequency: float, seconds: float, rate: int = 8000, channels: int = 1
) -> None:
    """16-bit PCM WAV of a sine tone (what baresip's aufile needs: the codec's rate and
    channels)."""
    t = np.arange(int(rate * seconds)) / rate
    samples = (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    if channels > 1:
        samples = np.repeat(samples, channels)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


def dominant_frequency(path: Path) -> tuple[float, float]:
    """The strongest frequency of a WAV file and its share of the signal's energy."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        channels = w.getnchannels()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if samples.size < rate // 2:
        return 0.0, 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size))) ** 2
    spectrum[:5] = 0.0
    peak = int(np.argmax(spectrum))
    share = float(spectrum[max(0, peak - 5) : peak + 6].sum() / max(spectrum.sum(), 1e-9))
    return peak * rate / samples.size, share


@dataclass
class BaresipRun:
    """What a baresip call left behind."""

    output: str
    recordings: Path

    @property
    def established(self) -> bool:
        return "Call established" in self.output

    def decoded(self) -> Path:
        """The audio baresip received (the sndfile module's -dec.wav)."""
        files = sorted(self.recordings.glob("dump-*-dec.wav"))
        assert files, "baresip recorded nothing:\n" + self.output[-2000:]
        return files[-1]


CODEC_MODULES = {"pcmu": "g711.so", "pcma": "g711.so", "g722": "g722.so", "opus": "opus.so"}


def configure(
    workdir: Path,
    *,
    tone_hz: float,
    seconds: float,
    codecs: str,
    transport: str = "udp",
    sip_port: int | None = None,
    answer: bool = False,
    extra_modules: tuple[str, ...] = (),
    account_params: str = "",
    user: str = "tester",
    address: str = "127.0.0.1",
) -> Path:
    """Write a baresip configuration directory; returns where its recordings go.

    The tone file is written at the rate of the first codec (aufile does not resample). SIP and
    RTP use `address` (loopback unless the test gives a host's address in a network namespace).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    recordings = workdir / "rec"
    recordings.mkdir(exist_ok=True)
    tone = workdir / "tone.wav"
    first = codecs.split(",")[0].strip().lower()
    write_tone(
        tone,
        tone_hz,
        seconds + 3,
        rate={"opus": 48000, "g722": 16000}.get(first, 8000),
        channels=2 if first == "opus" else 1,
    )
    rtp = free_port(pair=True)
    modules = {CODEC_MODULES[c.strip().lower()] for c in codecs.split(",")}
    lines = "".join(f"module {m}\n" for m in sorted(modules) + list(extra_modules))
    (workdir / "config").write_text(
        f"""sip_listen {address}:{sip_port or free_port(pair=True)}
sip_verify_server no
net_interface {address}
audio_player alsa,null
audio_alert alsa,null
audio_source aufile,{tone}
module_path /usr/lib/baresip/modules
{lines}module aufile.so
module sndfile.so
module_tmp account.so
module_app menu.so
snd_path {recordings}
statmode_default off
rtp_ports {rtp}-{rtp + 40}
"""
    )
    host = f"{address}:{sip_port}" if sip_port else address
    mode = ";answermode=auto" if answer else ""
    codecs = ",".join(
        "opus/48000/2" if c.strip().lower() == "opus" else c.strip() for c in codecs.split(",")
    )
    (workdir / "accounts").write_text(
        f"<sip:{user}@{host};transport={transport}>;regint=0{mode};audio_codecs={codecs}"
        f"{account_params}\n"
    )
    return recordings


@contextmanager
def answerer(
    workdir: Path,
    sip_port: int,
    *,
    user: str,
    tone_hz: float,
    codecs: str,
    seconds: float = 30,
    extra_modules: tuple[str, ...] = (),
) -> Iterator[BaresipRun]:
    """A baresip that auto-answers calls to `user` on 127.0.0.1:`sip_port` (a PBX extension)
    for the duration of the block."""
    baresip = require_tool("baresip")
    recordings = configure(
        workdir,
        tone_hz=tone_hz,
        seconds=seconds,
        codecs=codecs,
        sip_port=sip_port,
        answer=True,
        user=user,
        extra_modules=extra_modules,
    )
    log = workdir / "baresip.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [baresip, "-f", str(workdir), "-t", str(int(seconds))],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    run = BaresipRun("", recordings)
    try:
        yield run
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        run.output = log.read_text(errors="replace")


CALL_ENDED = "terminated (duration"
"""What baresip prints when its call ends (the call freed), whoever hung up."""

SESSION_CLOSED = "session closed:"
"""What baresip's menu module prints when its SIP session ends (a BYE from the far end, a
refusal). The call is freed (`CALL_ENDED`) right after, but not always: after a BYE that came
0.6 s after the answer (the disposition test's agent hangs up at once), baresip 1.0 kept the call
until it exited, never printing `CALL_ENDED`, and idled until its -t time (30 s there)."""

CLOSED_GRACE = 1.0
"""How long `dial` waits for `CALL_ENDED` after `SESSION_CLOSED` before it stops baresip."""


def dial(
    workdir: Path,
    uri: str,
    seconds: int,
    tone_hz: float = 440.0,
    transport: str = "udp",
    codecs: str = "PCMU",
    extra_modules: tuple[str, ...] = (),
    account_params: str = "",
    address: str = "127.0.0.1",
    netns: str | None = None,
) -> BaresipRun:
    """One baresip dials `uri` with a tone as its microphone and hangs up after `seconds`;
    from `address`, inside network namespace `netns` when given (``ip netns exec``).

    It returns as soon as its call ends: when the far end hangs up (or refuses the call) first,
    baresip, which would idle until `seconds`, is stopped then (its recordings are complete by
    the time it prints the end of the call, or a second after its session closed when it never
    does), so a test ending the call itself waits no longer.
    """
    baresip = require_tool("baresip")
    recordings = configure(
        workdir,
        tone_hz=tone_hz,
        seconds=seconds,
        codecs=codecs,
        transport=transport,
        extra_modules=extra_modules,
        account_params=account_params,
        address=address,
    )
    inside = ["ip", "netns", "exec", netns] if netns else []
    log = workdir / "baresip.out"
    with log.open("wb") as out:  # baresip flushes each line: the log is live
        process = subprocess.Popen(
            [*inside, baresip, "-f", str(workdir), "-e", f"/dial {uri}", "-t", str(seconds)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + seconds + 30
    closed_at: float | None = None
    try:
        while process.poll() is None:
            text = log.read_text(errors="replace")
            if closed_at is None and SESSION_CLOSED in text:
                closed_at = time.monotonic()
            if CALL_ENDED in text or (
                closed_at is not None and time.monotonic() - closed_at > CLOSED_GRACE
            ):
                process.terminate()
                process.wait(timeout=10)
                break
            if time.monotonic() > deadline:
                pytest.fail(f"baresip still running {seconds + 30} s after dialling {uri}")
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return BaresipRun(log.read_text(errors="replace"), recordings)
