"""Transcoding one RTP audio stream: decode, resample, re-packetise, encode (sans-IO).

Theory of operation. A `Transcoder` owns a decoder of the source codec, a `Resampler` from the
source's audio rate to the destination's, an encoder of the destination codec, and a FIFO of
samples between the last two. `transcode(payload)` decodes one packet, resamples it, appends it
to the FIFO and encodes every whole destination frame the FIFO then holds, returning their
payloads (usually one; none or two when the packet times differ, e.g. 30 ms in and 20 ms out
gives one, two, one, two...). Equal frame durations never touch the FIFO, so 20 ms in is
20 ms out with no added delay beyond the resampler's 1.5 ms. The bridge decides passthrough
(same codec on both legs) itself and never builds a transcoder for it.

Opus at the other side's rate. libopus encodes from and decodes to 8, 12, 16, 24 or 48 kHz
natively, so between Opus and G.711 the Opus encoder or decoder runs at 8 kHz, and against
G.722 at 16 kHz (`CodecSpec.at_sample_rate`): nothing is resampled (no 1.5 ms filter delay
either), the encoder codes narrowband or wideband only, and the decoder's PLC and FEC work at
that rate. The stream on the wire is ordinary Opus that a 48 kHz peer decodes as usual, and
`timestamp_step` stays on the 48 kHz clock (960 per 20 ms, RFC 7587 §4.1). `source` and
`destination` stay the specs given; `decoder.spec` and `encoder.spec` show the rates in use.
`native_rate=False` restores Opus at 48 kHz behind the resampler, for comparison.

The per-packet path is lean: the usual 20 ms in, 20 ms out at one rate is decode, one length
test, encode; the FIFO is one preallocated array (no concatenation); the Opus encoder hands
libopus `samples.tobytes()` (cheaper than copying into a buffer or asking numpy for an
address) and the G.711 decoder keeps the last payload for concealment instead of copying its
samples.

Losses. When the jitter buffer reports a missing slot the caller calls `lost()`, which makes
the decoder conceal the frame (libopus PLC for Opus, pitch repetition with a fade for G.711 and
G.722) and feeds the result through the same path, so the destination keeps its steady stream
of packets. When the packet after the gap is already there, `lost(next_payload=...)` rebuilds
the last lost frame from the Opus in-band FEC that packet carries (then decode that packet as
usual with `transcode`). Concealment lasts at most `MAX_CONCEALED_FRAMES` frames per call: a
longer gap is a discontinuity for the caller, not audio to invent.

A bad payload raises `CodecError` from `transcode` and leaves the transcoder as it was: the
caller counts it and may call `lost()` in its place.

Measured on the 2-core development machine while other jobs ran (load 1.6-2.4;
`sum(range(1000))` took 17-18 µs in the quietest runs), the lowest of three runs of
`PYTHONPATH=. .venv/bin/python benchmarks/media_engine.py transcode`. First, best of 5 x 500
calls on one 20 ms packet of a 1 kHz tone (decode + resample + encode; an Opus source packet
comes from a 48 kHz encoder); "before" is the previous version (load 3-4; `native_rate=False`
now gives the same within 5 %):

| from \\ to | PCMU | PCMA | G722 | opus (before) |
|-----------|-----:|-----:|-----:|-----:|
| PCMU      |  —   | 5 µs | 74 µs | 96 µs (293) |
| PCMA      | 5 µs |  —   | 73 µs | 104 µs (359) |
| G722      | 41 µs | 40 µs | — | 306 µs (450) |
| opus (before) | 37 µs (69) | 37 µs (68) | 67 µs (139) | — |

Then a real prompt (`welcome.wav`, 58 packets, silences included) as a stream, the mean cost
per 20 ms packet, best of 5 passes; Opus into G.711/G.722 is what a browser sends (a 48 kHz
encoder, default settings). The same numbers come from the previous version's `Transcoder`
(run on a copy of the committed tree, three runs interleaved with these, same load):

| direction | before (48 kHz + resampling) | now (Opus at 8 / 16 kHz) |
|-----------|------:|------:|
| PCMU -> opus | 390-397 µs | 149-151 µs |
| opus -> PCMU | 80-81 µs | 48-50 µs |
| G722 -> opus | 418-432 µs | 292-296 µs |
| opus -> G722 | 145-188 µs | 90-94 µs |

Transcoded calls per core = 20 ms / (both directions + 2 x 20 µs of socket I/O): G.711 <-> Opus
39 before, 83-85 now (issue 3 asks for 60); G.722 <-> Opus 31-33 before, 47 now. Opus's
encoder is still most of the cost (SILK at complexity 5, see `media.codecs` for the
complexity trade-off); the Transcoder's own Python per packet is under 2 µs (lost in the noise
when timed against bare decode + encode).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from media.codecs import FRAME_MS, MAX_FRAME_MS, OPUS_SAMPLE_RATES, CodecError, CodecSpec
from media.resample import Resampler

__all__ = ["MAX_CONCEALED_FRAMES", "Transcoder"]

Samples = npt.NDArray[np.int16]

MAX_CONCEALED_FRAMES = 10
"""The most frames one `lost()` call conceals (200 ms of 20 ms frames)."""


def _native_rates(source: CodecSpec, destination: CodecSpec) -> tuple[CodecSpec, CodecSpec]:
    """The specs to run: Opus moved to the other side's audio rate when libopus has it."""
    if destination.name == "opus" and source.name != "opus":
        if source.sample_rate in OPUS_SAMPLE_RATES:
            destination = destination.at_sample_rate(source.sample_rate)
    elif source.name == "opus" and destination.name != "opus":
        if destination.sample_rate in OPUS_SAMPLE_RATES:
            source = source.at_sample_rate(destination.sample_rate)
    return source, destination


class Transcoder:
    """Converts payloads of `source` into payloads of `destination` of `ptime_ms` each.

    `decoded`, `concealed` and `recovered` count the packets decoded, the frames concealed by
    PLC and the frames rebuilt from FEC. `timestamp_step` is the RTP timestamp increment of
    each output payload (RFC 3550 §5.1), in the destination's clock (960 per 20 ms for Opus,
    whatever rate its encoder runs at).

    With `native_rate` (the default) an Opus side runs at the other side's audio rate (8 kHz
    against G.711, 16 kHz against G.722), so nothing is resampled; `decoder.spec` and
    `encoder.spec` tell the rates in use. `native_rate=False` keeps Opus at 48 kHz and
    resamples, as before (kept for comparison).
    """

    __slots__ = (
        "_encode",
        "_fifo",
        "_frame",
        "_last_samples",
        "_pending",
        "_resample",
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
        self,
        source: CodecSpec,
        destination: CodecSpec,
        ptime_ms: float = FRAME_MS,
        *,
        native_rate: bool = True,
    ) -> None:
        self.source = source
        self.destination = destination
        running_source, running_destination = (
            _native_rates(source, destination) if native_rate else (source, destination)
        )
        self.decoder = running_source.decoder()
        self.encoder = running_destination.encoder(ptime_ms)
        self.resampler = Resampler(running_source.sample_rate, running_destination.sample_rate)
        self._resample: Callable[[Samples], Samples] | None = (
            self.resampler.resample if self.resampler.ratio != 1 else None
        )
        self._encode = self.encoder.encode
        frame = self._frame = self.encoder.frame_samples
        # The FIFO between re-framed packet times: room for one frame left over plus the
        # longest packet a decoder returns (grown if a longer one ever comes).
        longest = running_destination.samples_for(MAX_FRAME_MS)
        self._fifo: Samples = np.zeros(frame + longest, np.int16)
        self._pending = 0
        self._last_samples = running_source.frame_samples
        self.timestamp_step = running_destination.timestamps_for(frame)
        self.decoded = 0
        self.concealed = 0
        self.recovered = 0

    def transcode(self, payload: bytes) -> list[bytes]:
        """The destination payloads completed by one source payload (zero, one or more).

        Raises `CodecError` for a payload the source decoder rejects.
        """
        samples = self.decoder.decode(payload)
        self.decoded += 1
        count = len(samples)
        if count:
            self._last_samples = count
        if count == self._frame and self._resample is None and not self._pending:
            return [self._encode(samples)]  # the usual case: 20 ms in, 20 ms out, one rate
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
        return self._pending

    def _push(self, samples: Samples) -> list[bytes]:
        if self._resample is not None:
            samples = self._resample(samples)
        frame = self._frame
        pending = self._pending
        if not pending and len(samples) == frame:
            return [self._encode(samples)]
        total = pending + len(samples)
        fifo = self._fifo
        if total > len(fifo):  # pragma: no cover - longer than any packet a decoder returns
            grown: Samples = np.zeros(total, np.int16)
            grown[:pending] = fifo[:pending]
            fifo = self._fifo = grown
        fifo[pending:total] = samples
        whole = total // frame
        encode = self._encode
        # The encoders copy what they are given, so views of the FIFO are safe to pass.
        payloads = [encode(fifo[i * frame : (i + 1) * frame]) for i in range(whole)]
        rest = total - whole * frame
        if whole and rest:
            fifo[:rest] = fifo[whole * frame : total]  # never overlapping: rest < frame
        self._pending = rest
        return payloads

    def __repr__(self) -> str:
        return f"Transcoder({self.source.name} -> {self.destination.name})"
