#!/usr/bin/env python3
"""Generate omlmedia's default sound set under media/sounds/ (checked in; run again to refresh).

Prompts are spoken by espeak-ng (Debian package `espeak-ng`) in English (`en-us` voice) and Latin
American Spanish (`es-419`), decoded and resampled to 16 kHz by `media.player.load`
(PyAV), trimmed of leading and trailing silence, normalised to a -6 dBFS peak and written as
16 kHz mono 16-bit WAV. The beep and the music on hold are synthesised by
`media.tones`: the music is the 24 s loop in C (C Am F G C Em F G) followed by the
first half of the same loop rendered for 12 kHz and played at 16 kHz (a perfect fourth up:
F Dm Bb C, 9 s, whose C leads back to the start), joined with 0.5 s raised-cosine cross-fades
so that the 32 s file loops without a seam.

    .venv/bin/python scripts/make-sounds.py [--out media/sounds]
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from media.player import load  # noqa: E402
from media.tones import Cadence, cadence, music_on_hold  # noqa: E402

RATE = 16000
PEAK = 32767 * 10 ** (-6 / 20)
SPEED = 170  # words per minute
PAUSE = 0.2  # seconds: the longest pause kept inside a prompt

VOICES = {"en": "en-us", "es": "es-419"}

DIGITS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
}

PROMPTS: dict[str, dict[str, str]] = {
    "en": {
        "welcome": "Thank you for calling.",
        "all-agents-busy": "All our agents are busy. Please hold.",
        "call-recorded": "This call may be recorded for quality purposes.",
        "you-are-caller": "You are caller number",
        "queue-position": "Your position in the queue is",
        "estimated-wait": "The estimated wait time is",
        "minutes": "minutes",
        "less-than-a-minute": "less than one minute",
        "callback-offer": "Press 1 to be called back, keeping your place in the queue.",
        "enter-phone-number": "Please enter your phone number, followed by the pound key.",
        "callback-confirmed": "Thank you. We will call you back.",
        "invalid-option": "Invalid option.",
        "goodbye": "Goodbye.",
    },
    "es": {
        "welcome": "Bienvenido, gracias por llamar.",
        "all-agents-busy": "Todos nuestros agentes están ocupados. Por favor, aguarde.",
        "call-recorded": "Esta llamada puede ser grabada por razones de calidad.",
        "you-are-caller": "Su llamada es la número",
        "queue-position": "Su posición en la fila es",
        "estimated-wait": "El tiempo de espera estimado es de",
        "minutes": "minutos",
        "less-than-a-minute": "menos de un minuto",
        "callback-offer": "Presione 1 para que lo llamemos, sin perder su lugar en la fila.",
        "enter-phone-number": "Ingrese su número de teléfono, seguido de la tecla numeral.",
        "callback-confirmed": "Gracias. Lo llamaremos.",
        "invalid-option": "Opción inválida.",
        "goodbye": "Hasta luego.",
    },
}

Samples = npt.NDArray[np.int16]


def write_wav(path: Path, samples: Samples) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(samples.astype("<i2").tobytes())


def shorten_pauses(samples: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Cut every pause (10 ms blocks below 2 % of the peak) to at most `PAUSE` seconds."""
    block = RATE // 100
    count = len(samples) // block
    blocks = samples[: count * block].reshape(count, block)
    quiet = np.max(np.abs(blocks), axis=1) < 0.02 * np.max(np.abs(samples))
    keep = round(PAUSE * 100)
    # The length of the run of quiet blocks each block ends: drop blocks deep inside a run.
    starts = np.flatnonzero(np.diff(np.concatenate(((0,), quiet.astype(np.int8)))) == 1)
    run_id = np.cumsum(np.diff(np.concatenate(((0,), quiet.astype(np.int8)))) == 1)
    runs = np.where(quiet, np.arange(count) - starts[np.maximum(run_id - 1, 0)], 0)
    kept = blocks[~quiet | (runs < keep)].reshape(-1)
    return np.concatenate((kept, samples[count * block :]))


def finish(samples: npt.NDArray[np.float64]) -> Samples:
    """Trim silence (keeping 30 ms), shorten pauses, fade 5 ms in and out, normalise the peak
    to -6 dBFS."""
    samples = shorten_pauses(samples)
    loud = np.flatnonzero(np.abs(samples) > 0.02 * np.max(np.abs(samples)))
    margin = RATE * 30 // 1000
    start, end = max(loud[0] - margin, 0), min(loud[-1] + margin, len(samples))
    signal = samples[start:end] * (PEAK / np.max(np.abs(samples)))
    fade = RATE * 5 // 1000
    ramp = np.linspace(0.0, 1.0, fade)
    signal[:fade] *= ramp
    signal[-fade:] *= ramp[::-1]
    result: Samples = np.round(signal).astype(np.int16)
    return result


def speak(text: str, voice: str, workdir: Path) -> Samples:
    raw = workdir / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(SPEED), "-w", str(raw), text],
        check=True,
    )
    samples = load(raw, RATE).astype(np.float64)
    raw.unlink()
    return finish(samples)


def crossfade_loop(parts: list[Samples], seconds: float) -> Samples:
    """Join `parts` end to start, and the last to the first, with raised-cosine cross-fades."""
    overlap = round(seconds * RATE)
    fade_in = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, overlap))
    fade_out = 1.0 - fade_in
    pieces = [p.astype(np.float64) for p in parts]
    result = pieces[0][overlap:]
    for piece in [*pieces[1:], pieces[0]]:
        joint = result[-overlap:] * fade_out + piece[:overlap] * fade_in
        result = np.concatenate((result[:-overlap], joint, piece[overlap:]))
    # The last piece appended is the first one again: cut it where the loop starts.
    result = result[: len(result) - (len(pieces[0]) - overlap)]
    return np.round(result).astype(np.int16)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "media" / "sounds")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is missing: apt-get install -y espeak-ng", file=sys.stderr)
        return 1
    out: Path = args.out
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for language, voice in VOICES.items():
            prompts = dict(PROMPTS[language])
            prompts.update({f"digit-{d}": word for d, word in enumerate(DIGITS[language])})
            for name, text in prompts.items():
                write_wav(out / language / f"{name}.wav", speak(text, voice, workdir))
    write_wav(out / "beep.wav", cadence(Cadence((1000.0,), (0.25,), -10.0), RATE))
    higher = music_on_hold(12000)
    music = crossfade_loop([music_on_hold(RATE), higher[: len(higher) // 2]], 0.5)
    write_wav(out / "moh.wav", music)
    total = sum(p.stat().st_size for p in out.rglob("*.wav"))
    print(f"{len(list(out.rglob('*.wav')))} files, {total / 1e6:.2f} MB in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
