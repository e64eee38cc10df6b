"""baresip, a real SIP user agent with real media, driven headless for the interop tests."""

from __future__ import annotations

import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.interop.harness import free_port, require_tool


def write_tone(path: Path, frequency: float, seconds: float, rate: int = 8000) -> None:
    """16-bit mono PCM WAV of a sine tone (what baresip's aufile needs)."""
    t = np.arange(int(rate * seconds)) / rate
    samples = (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


def dominant_frequency(path: Path) -> tuple[float, float]:
    """The strongest frequency of a WAV file and its share of the signal's energy."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
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


def dial(
    workdir: Path,
    uri: str,
    seconds: int,
    tone_hz: float = 440.0,
    transport: str = "udp",
    codecs: str = "PCMU",
) -> BaresipRun:
    """One baresip dials `uri` with a tone as its microphone and hangs up after `seconds`."""
    baresip = require_tool("baresip")
    workdir.mkdir(parents=True, exist_ok=True)
    recordings = workdir / "rec"
    recordings.mkdir(exist_ok=True)
    tone = workdir / "tone.wav"
    write_tone(tone, tone_hz, seconds + 3)
    rtp = free_port(pair=True)
    (workdir / "config").write_text(
        f"""sip_listen 127.0.0.1:{free_port()}
sip_verify_server no
net_interface 127.0.0.1
audio_player alsa,null
audio_alert alsa,null
audio_source aufile,{tone}
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module sndfile.so
module_tmp account.so
module_app menu.so
snd_path {recordings}
statmode_default off
rtp_ports {rtp}-{rtp + 40}
"""
    )
    (workdir / "accounts").write_text(
        f"<sip:tester@127.0.0.1;transport={transport}>;regint=0;audio_codecs={codecs}\n"
    )
    completed = subprocess.run(
        [baresip, "-f", str(workdir), "-e", f"/dial {uri}", "-t", str(seconds)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=seconds + 30,
        check=False,
    )
    output = completed.stdout.decode(errors="replace") + completed.stderr.decode(errors="replace")
    return BaresipRun(output, recordings)
