"""Micro-benchmarks of the media engine's per-frame pieces, one table each, as the docstrings of
media/ quote them: codecs (and the Opus complexity sweep), resampling, transcoding, SRTP, the
mixer and the recording writers.

Each measures CPU of the piece alone in this process (no sockets, no event loop): best of several
runs, so run it more than once on a shared machine and keep the lowest. ``sum(range(1000))`` is
printed first as the machine's speed of the moment. `--scale` multiplies every loop count (the
tests run it at 0.01 to prove it works; the figures then mean nothing).

    PYTHONPATH=. .venv/bin/python benchmarks/media_engine.py
        [codecs|complexity|resample|transcode|srtp|mixer|recording ...] [--scale 1.0]

With no name, all but ``complexity`` (the sweep takes minutes).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import timeit
import wave
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]
SCALE = 1.0


def count(n: int) -> int:
    """A loop count of the benchmark, scaled by `--scale` (at least 1)."""
    return max(1, round(n * SCALE))


def best_of(run: Callable[[], object], number: int, repeat: int = 5) -> float:
    """µs per call of `run`: the best of `repeat` runs of `number` calls (timeit's clock)."""
    number = count(number)
    return min(timeit.repeat(run, number=number, repeat=repeat)) / number * 1e6


def tone(rate: int, seconds: float, frequency: float = 1000.0, amplitude: float = 10362) -> Samples:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * math.pi * frequency * t)).astype(np.int16)


def machine_speed() -> None:
    print(f"sum(range(1000)): {best_of(lambda: sum(range(1000)), 1000):.1f} µs")


# -- codecs (media/codecs.py) --------------------------------------------------------------------


def codecs() -> None:
    """Encode, decode and decode + conceal of one 20 ms frame of a 1 kHz tone, per codec."""
    from media.codecs import CodecSpec, OpusSettings, codec_for

    opus = codec_for("opus")
    cases: list[tuple[str, CodecSpec]] = [
        ("PCMU", codec_for("PCMU")),
        ("PCMA", codec_for("PCMA")),
        ("G722", codec_for("G722")),
        ("opus c5 fec", opus),
        ("opus c5 nofec", codec_for("opus", fmtp="useinbandfec=0")),
        ("opus c10 fec", codec_for("opus", opus=OpusSettings(complexity=10))),
        ("opus@8k c5", opus.at_sample_rate(8000)),
        ("opus@16k c5", opus.at_sample_rate(16000)),
    ]
    for label, spec in cases:
        samples = tone(spec.sample_rate, 2)
        encoder, decoder = spec.encoder(), spec.decoder()
        frame = spec.frame_samples
        payloads = [encoder.encode(samples[i : i + frame]) for i in range(0, len(samples), frame)]
        chunk = samples[:frame]
        encode = best_of(lambda: encoder.encode(chunk), 1000)  # noqa: B023
        payload = payloads[10]
        decode = best_of(lambda: decoder.decode(payload), 1000)  # noqa: B023
        conceal = best_of(lambda: (decoder.decode(payload), decoder.conceal(frame)), 1000)  # noqa: B023
        print(
            f"{label:14} encode {encode:6.1f} µs  decode {decode:5.1f} µs  "
            f"decode+conceal {conceal:5.1f} µs"
        )


def segmental_snr(reference: Samples, decoded: Samples, rate: int) -> tuple[float, int]:
    """Mean segmental SNR in dB (20 ms segments, each clamped to -10..35 dB, silent ones
    skipped) of `decoded` against `reference` after the lag that best aligns them; and the lag.
    A waveform measure: a quality proxy to compare settings of one codec, not a MOS."""
    a = reference.astype(np.float64)
    b = decoded.astype(np.float64)
    n = min(len(a), len(b))
    spectrum = np.fft.rfft(b[:n], 2 * n) * np.conj(np.fft.rfft(a[:n], 2 * n))
    lag = int(np.argmax(np.fft.irfft(spectrum)[: rate // 20]))
    a, b = a[: n - lag], b[lag:n]
    segment = rate // 50
    values = []
    for start in range(0, len(a) - segment + 1, segment):
        signal = a[start : start + segment]
        power = float(signal @ signal)
        if power < segment * 100.0**2:
            continue
        error = signal - b[start : start + segment]
        ratio = power / max(float(error @ error), 1e-9)
        values.append(min(max(10 * math.log10(ratio), -10.0), 35.0))
    return float(np.mean(values)), lag


def complexity() -> None:
    """Opus encoder complexity 0-10 at 8 and 16 kHz: cost and quality on tone and speech."""
    from media import g711
    from media.codecs import OpusSettings, codec_for
    from media.player import SOUNDS
    from media.resample import Resampler, tone_snr

    parts = []
    for path in sorted((SOUNDS / "en").glob("*.wav"))[:8]:
        with wave.open(str(path)) as file:
            parts.append(np.frombuffer(file.readframes(file.getnframes()), np.int16))
    speech16 = np.concatenate(parts)
    speech16 = speech16[: max(16000, count(len(speech16))) // 320 * 320]
    pcmu = g711.codec_for_name("PCMU")
    speech8 = pcmu.decode(pcmu.encode(Resampler(16000, 8000).resample(speech16)))
    print("rate  complexity  encode µs/frame  1 kHz tone SNR dB  speech segSNR dB  kbit/s")
    for rate, speech in ((8000, speech8), (16000, speech16)):
        frame = rate // 50
        samples = tone(rate, 1)
        for level in range(11):
            spec = codec_for("opus", opus=OpusSettings(complexity=level)).at_sample_rate(rate)

            def stream(audio: Samples) -> tuple[list[bytes], Samples]:
                encoder, decoder = spec.encoder(), spec.decoder()  # noqa: B023
                payloads = [
                    encoder.encode(audio[i : i + frame])  # noqa: B023
                    for i in range(0, len(audio) - frame + 1, frame)  # noqa: B023
                ]
                return payloads, np.concatenate([decoder.decode(p) for p in payloads])

            frames = [speech[i : i + frame] for i in range(0, len(speech), frame)]
            frames = frames[100 : 100 + count(200)] or frames[: count(200)]
            best = math.inf
            for _ in range(5):
                encode = spec.encoder().encode
                start = timeit.default_timer()
                for chunk in frames:
                    encode(chunk)
                best = min(best, (timeit.default_timer() - start) / len(frames) * 1e6)
            _, decoded = stream(samples)
            snr = tone_snr(decoded[rate // 5 :], rate, 1000)
            payloads, decoded = stream(speech)
            segmental, _ = segmental_snr(speech, decoded, rate)
            kbits = sum(len(p) for p in payloads) * 8 * 50 / len(payloads) / 1000
            print(f"{rate:5} {level:6} {best:15.0f} {snr:18.1f} {segmental:17.2f} {kbits:9.1f}")


# -- resampling (media/resample.py) --------------------------------------------------------------


def resample() -> None:
    """One 20 ms frame through this module's resampler and through PyAV's, with the SNR."""
    import av

    from media.resample import Resampler, tone_snr

    def pyav(input_rate: int, output_rate: int) -> Callable[[Samples], Samples]:
        converter = av.AudioResampler(format="s16", layout="mono", rate=output_rate)

        def run(samples: Samples) -> Samples:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = input_rate
            frames = converter.resample(frame)
            if not frames:
                return np.zeros(0, np.int16)
            return np.concatenate([np.asarray(f.to_ndarray(), np.int16)[0] for f in frames])

        return run

    def numpy(input_rate: int, output_rate: int) -> Callable[[Samples], Samples]:
        return Resampler(input_rate, output_rate).resample

    conversions = ((8000, 48000), (48000, 8000), (8000, 16000), (16000, 8000))
    for input_rate, output_rate in (*conversions, (16000, 48000), (48000, 16000)):
        frame = input_rate // 50
        samples = tone(input_rate, 2)
        chunk = samples[:frame]
        for name, make in (("numpy", numpy), ("pyav", pyav)):
            run = make(input_rate, output_rate)
            out = np.concatenate(
                [run(samples[i : i + frame]) for i in range(0, len(samples), frame)]
            )
            snr = tone_snr(out[output_rate // 10 :], output_rate, 1000)
            run = make(input_rate, output_rate)
            cost = best_of(lambda: run(chunk), 2000)  # noqa: B023
            print(
                f"{input_rate:>5} -> {output_rate:>5} {name:5}: "
                f"{cost:5.1f} µs, 1 kHz SNR {snr:5.1f} dB"
            )


# -- transcoding (media/transcode.py) ------------------------------------------------------------


def transcode() -> None:
    """One packet of a tone between every pair of codecs; then a prompt as a stream."""
    from media.codecs import codec_for
    from media.player import sound_path
    from media.resample import Resampler
    from media.transcode import Transcoder

    names = ("PCMU", "PCMA", "G722", "opus")
    for native in (True, False):
        print("Opus at the other side's rate" if native else "Opus at 48 kHz, resampled")
        for source_name in names:
            source = codec_for(source_name)
            samples = tone(source.sample_rate, 1)
            encoder = source.encoder()
            frame = source.frame_samples
            payload = [encoder.encode(samples[i : i + frame]) for i in range(0, 11 * frame, frame)][
                10
            ]
            row = []
            for destination_name in names:
                if destination_name == source_name:
                    row.append("   —   ")
                    continue
                transcoder = Transcoder(source, codec_for(destination_name), native_rate=native)
                row.append(f"{best_of(lambda: transcoder.transcode(payload), 500):5.0f} µs")  # noqa: B023
            print(f"{source_name:5}", " | ".join(row))

    # A real prompt as a stream of packets: the mean cost per 20 ms packet, best of 5 passes.
    with wave.open(str(sound_path("welcome"))) as file:
        speech16 = np.frombuffer(file.readframes(file.getnframes()), np.int16)
    speech16 = speech16[: len(speech16) // 320 * 320]
    speech8 = Resampler(16000, 8000).resample(speech16)
    print("speech (welcome.wav), mean per 20 ms packet:")
    for native in (True, False):
        for narrow, audio in (("PCMU", speech8), ("G722", speech16)):
            spec, opus = codec_for(narrow), codec_for("opus")
            encoder = spec.encoder()
            frame = spec.frame_samples
            narrow_in = [encoder.encode(audio[i : i + frame]) for i in range(0, len(audio), frame)]
            # What a browser sends: the prompt coded by a 48 kHz encoder (default settings).
            wide = Resampler(spec.sample_rate, 48000).resample(audio)
            opus_encoder = opus.encoder()
            opus_in = [opus_encoder.encode(wide[i : i + 960]) for i in range(0, len(wide), 960)]
            totals = []
            mode = "native" if native else "48 kHz"
            directions = (
                (f"{narrow}->opus", spec, opus, narrow_in),
                (f"opus->{narrow}", opus, spec, opus_in),
            )
            for label, source, destination, stream in directions:
                best = math.inf
                for _ in range(5):
                    run = Transcoder(source, destination, native_rate=native).transcode
                    start = timeit.default_timer()
                    for packet in stream:
                        run(packet)
                    best = min(best, (timeit.default_timer() - start) / len(stream) * 1e6)
                totals.append(best)
                print(f"  {mode:6} {label:12} {best:6.1f} µs")
            calls = 20000 / (sum(totals) + 2 * 20)
            print(f"  {mode:6} {narrow}<->opus: {calls:.0f} calls per core (2 x 20 µs of I/O)")


# -- SRTP (media/srtp.py) ------------------------------------------------------------------------


def srtp() -> None:
    """Protect and unprotect of a 172-byte G.711 packet, a rejected packet, keying."""
    from media.rtp import rtp_header
    from media.srtp import (
        AEAD_AES_128_GCM,
        AES_CM_128_HMAC_SHA1_80,
        SrtpError,
        SrtpSession,
        answer_crypto,
        generate_crypto,
        offer_crypto,
    )

    def per_item(run: Callable[[], object], items: int) -> float:
        times = []
        for _ in range(7):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times) / items * 1e6

    packets_per_run = count(5000)
    plain = [rtp_header(0, False, n, 160 * n, 0x1234) + bytes(160) for n in range(packets_per_run)]
    for suite in (AES_CM_128_HMAC_SHA1_80, AEAD_AES_128_GCM):
        crypto = generate_crypto(1, suite)
        sessions = [SrtpSession(crypto, crypto) for _ in range(15)]
        packets = [sessions[0].protect_rtp(packet) for packet in plain]
        senders = iter(sessions[1:8])
        receivers = iter(sessions[8:])

        def protect(senders: Iterator[SrtpSession] = senders) -> object:
            return list(map(next(senders).protect_rtp, plain))

        def unprotect(
            receivers: Iterator[SrtpSession] = receivers, packets: list[bytes] = packets
        ) -> object:
            return list(map(next(receivers).unprotect_rtp, packets))

        print(
            f"{suite}: protect_rtp {per_item(protect, packets_per_run):.2f} µs, "
            f"unprotect_rtp {per_item(unprotect, packets_per_run):.2f} µs"
        )
        bad = packets[-1][:-1] + bytes([packets[-1][-1] ^ 1])
        receiver = SrtpSession(crypto, crypto)

        def reject(receiver: SrtpSession = receiver, bad: bytes = bad) -> None:
            for _ in range(packets_per_run):
                try:
                    receiver.unprotect_rtp(bad)
                except SrtpError:
                    pass

        print(f"{suite}: rejected packet {per_item(reject, packets_per_run):.2f} µs")
    offered = offer_crypto()
    print(f"answer_crypto (4 lines): {per_item(lambda: answer_crypto(offered), 1):.2f} µs")
    print(f"SrtpSession(): {per_item(lambda: SrtpSession(offered[0], offered[0]), 1):.2f} µs")


# -- the mixer (media/mixer.py) ------------------------------------------------------------------


def mixer() -> None:
    """One 20 ms conference mix by parties and rate (brackets: one listens, one whispers)."""
    from media.mixer import AudioMixer, Role

    def per_tick(mix: AudioMixer, frames: Mapping[Hashable, Samples | None]) -> float:
        mix.mix(frames)
        ticks = count(2000)
        best = float("inf")
        for _ in range(7):
            start = time.process_time()
            for _ in range(ticks):
                mix.mix(frames)
            best = min(best, (time.process_time() - start) / ticks)
        return best * 1e6

    rng = np.random.default_rng(1)
    print("| parties | 8 kHz | 16 kHz | 48 kHz |")
    for parties in (3, 10, 50):
        cells = []
        for rate in (8000, 16000, 48000):
            size = rate // 50
            frames: dict[Hashable, Samples | None] = {
                n: rng.integers(-8000, 8000, size, dtype=np.int16) for n in range(parties)
            }
            plain = AudioMixer(rate)
            roles = AudioMixer(rate)
            for n in range(parties):
                plain.add(n)
                roles.add(n)
            roles.set_role(parties - 1, Role.LISTEN)
            roles.set_role(parties - 2, Role.WHISPER, target=0)
            cells.append(f"{per_tick(plain, frames):.0f} µs ({per_tick(roles, frames):.0f})")
        print(f"| {parties} | " + " | ".join(cells) + " |")


# -- recording writers (media/oggopus.py) --------------------------------------------------------


def recording() -> None:
    """CPU per second of stereo audio written in 20 ms chunks, and the bit rate, per format."""
    from media.oggopus import RECORDING_FORMATS, open_writer

    seconds = max(1, round(10 * SCALE))
    with tempfile.TemporaryDirectory() as directory:
        for format, rate in (("opus", 8000), ("opus", 16000), ("wav", 8000)):
            t = np.arange(seconds * rate) / rate
            audio = np.stack(
                [4000 * np.sin(2 * np.pi * 440 * t), 4000 * np.sin(2 * np.pi * 1000 * t)], axis=1
            ).astype(np.int16)
            chunks = np.split(audio, 50 * seconds)
            best = float("inf")
            path = Path(directory)
            for run in range(5):
                path = Path(directory) / f"{run}{RECORDING_FORMATS[format]}"
                start = time.process_time()
                writer = open_writer(path, format, rate)
                for chunk in chunks:
                    writer.write(chunk)
                writer.close()
                best = min(best, (time.process_time() - start) / seconds)
            size = path.stat().st_size
            print(
                f"{format} {rate} Hz stereo: {best * 1e3:.2f} ms CPU per second of audio, "
                f"{size * 8 / seconds / 1000:.1f} kbit/s"
            )


BENCHMARKS: dict[str, Callable[[], Any]] = {
    "codecs": codecs,
    "complexity": complexity,
    "resample": resample,
    "transcode": transcode,
    "srtp": srtp,
    "mixer": mixer,
    "recording": recording,
}


def main(argv: list[str] | None = None) -> int:
    global SCALE
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], metavar="NAME")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every loop count")
    args = parser.parse_args(argv)
    SCALE = args.scale
    names = args.names or [name for name in BENCHMARKS if name != "complexity"]
    machine_speed()
    for name in names:
        print(f"== {name}: {(BENCHMARKS[name].__doc__ or '').splitlines()[0]}", flush=True)
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
