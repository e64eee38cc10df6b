"""Transcoding one RTP audio stream: decode, resample, re-packetise, encode (sans-IO).

Theory of operation. A `Transcoder` owns a decoder of the source codec, a `Resampler` from the
source's audio rate to the destination's, an encoder of the destination codec, and a FIFO of
samples between the last two. `transcode(payload)` decodes one packet, resamples it, appends it
to the FIFO and encodes every whole destination frame the FIFO then holds, returning their
payloads (usually one; none or two when the packet times differ, e.g. 30 ms in and 20 ms out
gives one, two, one, two...). Equal frame durations never touch the FIFO, so 20 ms in is
20 ms out with no added delay beyond the resampler's 1.5 ms. The bridge decides passthrough
(same codec on both legs) itself and never builds a transcoder for it.

Losses. When the jitter buffer reports a missing slot the caller calls `lost()`, which makes
the decoder conceal the frame (libopus PLC for Opus, pitch repetition with a fade for G.711 and
G.722) and feeds the result through the same path, so the destination keeps its steady stream
of packets. When the packet after the gap is already there, `lost(next_payload=...)` rebuilds
the last lost frame from the Opus in-band FEC that packet carries (then decode that packet as
usual with `transcode`). Concealment lasts at most `MAX_CONCEALED_FRAMES` frames per call: a
longer gap is a discontinuity for the caller, not audio to invent.

A bad payload raises `CodecError` from `transcode` and leaves the transcoder as it was: the
caller counts it and may call `lost()` in its place.

Measured on the 2-core development machine while other jobs ran (load 3-4; `sum(range(1000))`
took 17-18 µs in the quietest runs), best of 5 x 500 calls on one 20 ms packet of a 1 kHz tone,
the lowest of four runs of `.venv/bin/python -m omlmedia.media.transcode` (decode + resample
+ encode):

| from \\ to | PCMU | PCMA | G722 | opus |
|-----------|-----:|-----:|-----:|-----:|
| PCMU      |  —   | 5 µs | 82 µs | 293 µs |
| PCMA      | 5 µs |  —   | 83 µs | 359 µs |
| G722      | 47 µs | 44 µs | — | 450 µs |
| opus      | 69 µs | 68 µs | 139 µs | — |

Opus's encoder is the cost of every pair into Opus (~230 µs at complexity 5); the Python
around the codecs costs ~5 µs per packet.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from omlmedia.media.codecs import FRAME_MS, CodecError, CodecSpec
from omlmedia.media.resample import Resampler

__all__ = ["MAX_CONCEALED_FRAMES", "Transcoder"]

Samples = npt.NDArray[np.int16]

MAX_CONCEALED_FRAMES = 10
"""The most frames one `lost()` call conceals (200 ms of 20 ms frames)."""

_EMPTY: Samples = np.zeros(0, np.int16)


class Transcoder:
    """Converts payloads of `source` into payloads of `destination` of `ptime_ms` each.

    `decoded`, `concealed` and `recovered` count the packets decoded, the frames concealed by
    PLC and the frames rebuilt from FEC. `timestamp_step` is the RTP timestamp increment of
    each output payload (RFC 3550 §5.1), in the destination's clock.
    """

    __slots__ = (
        "_frame",
        "_last_samples",
        "_pending",
        "concealed",
        "decoded",
        "decoder",
        "destination",
        "encoder",
        "recovered",
        "resampler",
        "source",
        "timestamp_step",
    )

    def __init__(
        self, source: CodecSpec, destination: CodecSpec, ptime_ms: float = FRAME_MS
    ) -> None:
        self.source = source
        self.destination = destination
        self.decoder = source.decoder()
        self.encoder = destination.encoder(ptime_ms)
        self.resampler = Resampler(source.sample_rate, destination.sample_rate)
        self._frame = self.encoder.frame_samples
        self._pending: Samples = _EMPTY
        self._last_samples = source.frame_samples
        self.timestamp_step = destination.timestamps_for(self._frame)
        self.decoded = 0
        self.concealed = 0
        self.recovered = 0

    def transcode(self, payload: bytes) -> list[bytes]:
        """The destination payloads completed by one source payload (zero, one or more).

        Raises `CodecError` for a payload the source decoder rejects.
        """
        samples = self.decoder.decode(payload)
        self.decoded += 1
        if len(samples):
            self._last_samples = len(samples)
        return self._push(samples)

    def lost(self, count: int = 1, next_payload: bytes | None = None) -> list[bytes]:
        """The destination payloads completed after concealing `count` lost source packets.

        Each lost packet is taken to be as long as the last one decoded. With `next_payload`
        (the packet that arrived after the gap) the last lost frame comes from its in-band FEC
        when the codec has it; a `next_payload` the decoder rejects is ignored.
        """
        count = min(max(count, 0), MAX_CONCEALED_FRAMES)
        frame = self._last_samples
        payloads: list[bytes] = []
        for index in range(count):
            samples: Samples | None = None
            if next_payload is not None and index == count - 1:
                try:
                    samples = self.decoder.decode_fec(next_payload, frame)
                    self.recovered += 1
                except CodecError:
                    samples = None
            if samples is None:
                samples = self.decoder.conceal(frame)
                self.concealed += 1
            payloads += self._push(samples)
        return payloads

    conceal = lost

    @property
    def pending_samples(self) -> int:
        """Samples waiting in the FIFO for the next destination frame."""
        return len(self._pending)

    def _push(self, samples: Samples) -> list[bytes]:
        resampled = self.resampler.resample(samples)
        frame = self._frame
        if not len(self._pending) and len(resampled) == frame:
            return [self.encoder.encode(resampled)]
        buffer = np.concatenate((self._pending, resampled)) if len(self._pending) else resampled
        whole = len(buffer) // frame
        encode = self.encoder.encode
        payloads = [encode(buffer[i * frame : (i + 1) * frame]) for i in range(whole)]
        self._pending = buffer[whole * frame :].copy()
        return payloads

    def __repr__(self) -> str:
        return f"Transcoder({self.source.name} -> {self.destination.name})"


def _benchmark() -> None:  # pragma: no cover - a measurement, run by hand
    import math
    import timeit

    from omlmedia.media.codecs import codec_for

    def cost(run: object, number: int = 500) -> float:
        return min(timeit.repeat(run, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]

    print(f"sum(range(1000)): {cost(lambda: sum(range(1000))):.1f} µs")
    names = ("PCMU", "PCMA", "G722", "opus")
    for source_name in names:
        source = codec_for(source_name)
        t = np.arange(source.sample_rate) / source.sample_rate
        tone = np.round(10362 * np.sin(2 * math.pi * 1000 * t)).astype(np.int16)
        encoder = source.encoder()
        frame = source.frame_samples
        payloads = [encoder.encode(tone[i : i + frame]) for i in range(0, len(tone), frame)]
        payload = payloads[10]
        row = []
        for destination_name in names:
            if destination_name == source_name:
                row.append("   —   ")
                continue
            transcoder = Transcoder(source, codec_for(destination_name))
            row.append(f"{cost(lambda: transcoder.transcode(payload)):5.0f} µs")  # noqa: B023
        print(f"{source_name:5}", " | ".join(row))


if __name__ == "__main__":  # pragma: no cover
    _benchmark()
