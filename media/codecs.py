"""Audio codecs of SIP legs: PCMU, PCMA, G.722 and Opus behind one encoder and one decoder shape.

Theory of operation. `codec_for(encoding_name, clock_rate, channels, fmtp)` reads an SDP
`a=rtpmap` (and `a=fmtp`) and returns a `CodecSpec`, a frozen value that names the codec's
audio sample rate, its RTP clock rate and its samples per frame; `spec.encoder(ptime_ms)` and
`spec.decoder()` make the stateful halves. An `Encoder` takes one frame of mono int16 samples
at the codec's sample rate and returns one RTP payload; a `Decoder` takes one payload and
returns its samples. Everything is sans-IO and synchronous; one encoder and one decoder per leg
and direction, never shared.

| codec | audio rate | RTP clock | 20 ms frame | how |
|-------|-----------:|----------:|------------:|-----|
| PCMU, PCMA (RFC 3551 §4.5.14) | 8000 | 8000 | 160 | `g711.G711Codec` numpy tables |
| G722 (RFC 3551 §4.5.2) | 16000 | 8000 | 320 | PyAV `g722` (FFmpeg adpcm_g722) |
| opus (RFC 7587) | 48000 | 48000 | 960 | libopus through `opuslib` |
| opus `at_sample_rate(8000)` / `(16000)` | 8000 / 16000 | 48000 | 160 / 320 | the same |

G.722 is the RFC 3551 quirk: its RTP clock runs at 8000 Hz for audio sampled at 16000 Hz, so a
20 ms packet advances the timestamp by 160 while carrying 320 samples; `timestamps_for()` gives
the increment. FFmpeg's encoder would use one thread per CPU by default (aiortc issue #1310),
so both G.722 contexts are opened with `thread_count = 1`, and the encoder's frame size is set
to the leg's ptime so that one frame in is exactly one payload out.

Opus runs at 48 kHz mono by default. libopus also encodes from and decodes to 8, 12, 16 or
24 kHz natively (`OPUS_SAMPLE_RATES`), with the same packets on the wire and the RTP clock still
at 48 kHz (RFC 7587 §4.1: 960 timestamp units per 20 ms whatever the internal rate), so
`spec.at_sample_rate(8000)` gives an Opus spec whose encoder takes and whose decoder returns
8 kHz frames of 160 samples while `timestamps_for(160)` stays 960. The transcoder uses it
against G.711 (8 kHz) and G.722 (16 kHz) to skip resampling: the encoder then codes
narrowband or wideband only (the effective `max_bandwidth` is at most the rate: G.711 has
nothing above 4 kHz to spend bits on), and the decoder band-limits what it decodes, its PLC and
FEC included. A peer decoding at 48 kHz plays such a stream as any other. The encoder runs
application VOIP, DTX off, complexity 5 and 32 kbit/s by default
(`OpusSettings`), with in-band FEC (LBRR) on and tuned to an expected loss of 10 %. The peer's
fmtp (RFC 7587 §6.1) adjusts the encoder: `useinbandfec=0` turns FEC off, `maxaveragebitrate`
caps the bitrate, `maxplaybackrate` caps the coded bandwidth, `cbr=1` turns VBR off.
`stereo=1` is honoured by ignoring it: the media engine is mono, and a mono Opus stream is
valid for any receiver; the decoder downmixes a stereo stream it receives. The hot path calls
`opus_encode` and `opus_decode` directly through ctypes with preallocated numpy buffers:
opuslib's own `Decoder.decode` copies the samples through a Python list and costs ~110 µs
where this costs ~40 µs.

Packet loss. `Decoder.conceal(count)` returns `count` samples in place of a lost packet:
Opus runs libopus's packet-loss concealment (a decode with no data); G.711 and G.722 repeat the
last pitch period of the last good frame (found by normalised autocorrelation between 2.5 and
15 ms), at full level for 10 ms, then fading linearly to silence at 60 ms, the shape of ITU-T
G.711 Appendix I without its overlap-adds. `Decoder.decode_fec(next_payload, count)` rebuilds
the lost frame from the in-band FEC that Opus carries in the packet after it, and falls back to
concealment for codecs without FEC (or a next packet without it).

Bad input. An empty payload, one longer than `MAX_PAYLOAD_SIZE` or more than 120 ms of audio,
and a corrupt Opus packet raise `CodecError` (a `ValueError`) with a fixed message; so does a
frame of the wrong length given to an encoder. Any byte string is a valid G.711 or G.722
payload (it decodes to noise). An unknown encoding name, clock rate or channel count raises
`UnsupportedCodecError`.

Measured on the 2-core development machine while other jobs ran (load 1.6-2.4;
`sum(range(1000))` took 17-18 µs in the quietest runs), best of 5 x 1000 calls on one 20 ms
frame of a 1 kHz tone, the lowest of three runs of
`PYTHONPATH=. .venv/bin/python benchmarks/media_engine.py codecs`
(before: the same command on the previous version, load 3-4):

| codec | encode | decode | decode + conceal (PLC) |
|-------|-------:|-------:|--------------:|
| PCMU / PCMA | 2.0 µs | 2.0 µs (before 2.3) | ~52 µs |
| G722 | 34 µs | 16 µs | ~86 µs |
| opus 48 kHz, complexity 5, FEC on or off | 240-245 µs | 41-44 µs | ~80 µs |
| opus 48 kHz, complexity 10 | 431 µs | 41 µs | ~80 µs |
| opus 8 kHz, complexity 5 | 96 µs | 10 µs | ~19 µs |
| opus 16 kHz, complexity 5 | 195 µs | 17 µs | ~35 µs |

Concealment runs only on loss; the pitch search is most of its cost for G.711 and G.722.
(The G.711 decoder now keeps the last payload, not a copy of its samples, and decodes it again
only when a loss needs it.)

Opus complexity at the narrow rates, for SIP-leg transcoding. `benchmarks/media_engine.py
complexity` encodes 200 speech frames of the bundled prompts (G.711
round-tripped at 8 kHz, the 16 kHz originals at 16 kHz), 32 kbit/s VBR, FEC on, and prints the
cost per frame (best of 5 passes, lowest of two runs, load ~2.3), the SNR of a 1 kHz tone and
the segmental SNR of the speech after alignment. Segmental SNR barely moves with complexity
(9.15-9.22 dB at 8 kHz, 8.3-8.9 at 16 kHz), so the speech column is PESQ (ITU-T P.862, the
`pesq` package run by hand, not a dependency of the project) over the 11 prompts of at least
1 s: what a 48 kHz peer hears of G.711 -> Opus (narrowband MOS-LQO against the G.711 audio;
wideband against the 16 kHz original for G.722).

| complexity | 8 kHz encode | tone SNR | PESQ-NB | 16 kHz encode | tone SNR | PESQ-WB |
|-----------:|-------:|------:|-----:|-------:|------:|-----:|
| 0 | 57 µs | 18.8 dB | 3.95 | 108 µs | 33.0 dB | 2.14 |
| 1 | 63 µs | 24.9 dB | 4.03 | 119 µs | 35.2 dB | 2.24 |
| 2 | 106 µs | 21.6 dB | 4.00 | 198 µs | 36.3 dB | 2.17 |
| 3 | 116 µs | 29.3 dB | 4.09 | 207 µs | 37.8 dB | 2.24 |
| 4 | 146 µs | 32.5 dB | 4.22 | 272 µs | 36.7 dB | 2.61 |
| **5** | 147 µs | 32.5 dB | 4.22 | 272 µs | 36.7 dB | 2.61 |
| 6-7 | 210 µs | 35.9 dB | 4.29 | 375 µs | 38.4 dB | 2.68 |
| 8-10 | 259-289 µs | 36.3 dB | 4.30 | 549-568 µs | 39.0 dB | 2.74 |
| before (48 kHz behind resampling), 5 | ~390 µs * | | 3.51 | ~420 µs * | | 2.52 |
| before (48 kHz behind resampling), 10 | | | 4.02 | | | 2.62 |

(* the whole PCMU or G722 -> opus transcoding of welcome.wav per 20 ms packet, before this
change.) At these rates the encoder is SILK only, whose settings change at complexity 1, 2, 3, 4, 6
and 8 (4 and 5 code identically; 7 adds a signal analysis at 16 kHz only). The default stays 5
(`OpusSettings.complexity`): at 8 kHz it sounds better than complexity 10 did at 48 kHz and
costs ~40 % of what 5 did there; 3 would save another 20 % for -0.13 PESQ, 6 costs 40 % more
for +0.07. The decoder's quality does not depend on its rate: a browser's 48 kHz stream
decoded at 8 kHz scores what it scored decoded at 48 kHz and resampled (PESQ-NB 3.46 both; at
16 kHz 2.62 against 2.61).
"""

from __future__ import annotations

import ctypes
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt

from media import g711

__all__ = [
    "FRAME_MS",
    "MAX_FRAME_MS",
    "MAX_PAYLOAD_SIZE",
    "OPUS_SAMPLE_RATES",
    "SUPPORTED",
    "CodecError",
    "CodecSpec",
    "Decoder",
    "Encoder",
    "OpusSettings",
    "UnsupportedCodecError",
    "codec_for",
    "parse_fmtp",
]

Samples = npt.NDArray[np.int16]

FRAME_MS = 20
"""The default packet time (RFC 3551 §4.5: 20 ms for every codec here)."""

MAX_FRAME_MS = 120
"""The longest packet decoded: 120 ms, Opus's longest packet (RFC 6716 §3.2.5)."""

MAX_PAYLOAD_SIZE = 1500
"""The largest payload decoded, in bytes: no RTP packet on an Ethernet path carries more."""

SUPPORTED = ("PCMU", "PCMA", "G722", "opus")
"""The SDP encoding names `codec_for` accepts (case-insensitive)."""

OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
"""The audio rates libopus encodes from and decodes to natively (RFC 6716 §2): the RTP clock
stays 48000 whichever runs (RFC 7587 §4.1), see `CodecSpec.at_sample_rate`."""

_PLC_FULL_MS = 10
_PLC_FADE_MS = 60
_PITCH_MIN_MS = 2.5
_PITCH_MAX_MS = 15.0


class CodecError(ValueError):
    """A payload a decoder cannot decode, or a frame an encoder cannot encode."""


class UnsupportedCodecError(g711.UnsupportedCodecError):
    """An SDP encoding (name, clock rate, channels) that no codec here carries: answer 488."""


@dataclass(frozen=True, slots=True)
class OpusSettings:
    """How our Opus encoder runs (libopus CTLs); the peer's fmtp may lower them.

    `complexity` 0-10 (CPU against quality, the same knob at every rate; 5 costs ~240 µs per
    20 ms frame at 48 kHz and ~100-150 µs at 8 kHz, 10 ~430 and ~260-290 µs; the module
    docstring has the trade-off);
    `bitrate` in bit/s (RFC 7587 §3.1.1: 6000-510000); `fec` sends in-band FEC tuned for
    `packet_loss_percent` expected loss (0-100; libopus adds no FEC at 0); `vbr` variable
    bitrate; `max_bandwidth` the highest audio frequency coded, in Hz of audio rate (8000 is
    narrowband ... 48000 fullband).
    """

    complexity: int = 5
    bitrate: int = 32000
    fec: bool = True
    packet_loss_percent: int = 10
    vbr: bool = True
    max_bandwidth: int = 48000

    def __post_init__(self) -> None:
        if not 0 <= self.complexity <= 10:
            raise CodecError("Opus complexity is out of range")
        if not 6000 <= self.bitrate <= 510000:
            raise CodecError("Opus bitrate is out of range")
        if not 0 <= self.packet_loss_percent <= 100:
            raise CodecError("Opus packet loss percentage is out of range")


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """One negotiated audio codec: what `codec_for` returns and what makes encoders and decoders.

    `name` is the canonical SDP encoding name (`SUPPORTED`), `sample_rate` the rate of its
    audio in Hz, `clock_rate` its RTP timestamp clock (RFC 3551 §4.5), `channels` as in the
    rtpmap, `payload_type` the static RTP payload type (RFC 3551 §6) or None, `fmtp` the
    format parameters (RFC 4566 §6) as parsed, `opus` the effective encoder settings of an
    Opus stream after the fmtp.
    """

    name: str
    sample_rate: int
    clock_rate: int
    channels: int = 1
    payload_type: int | None = None
    fmtp: Mapping[str, str] = field(default_factory=dict)
    opus: OpusSettings | None = None

    @property
    def frame_samples(self) -> int:
        """Audio samples in one 20 ms frame: 160, 320 or 960."""
        return self.samples_for(FRAME_MS)

    def samples_for(self, ptime_ms: float) -> int:
        """Audio samples in a frame of `ptime_ms` milliseconds."""
        return round(self.sample_rate * ptime_ms / 1000)

    def timestamps_for(self, samples: int) -> int:
        """The RTP timestamp increment of `samples` audio samples (G.722: half of them)."""
        return samples * self.clock_rate // self.sample_rate

    def at_sample_rate(self, sample_rate: int) -> CodecSpec:
        """This codec with its audio at `sample_rate` Hz, its RTP clock unchanged.

        Only Opus runs at other rates (`OPUS_SAMPLE_RATES`): libopus encodes from and decodes
        to 8, 12, 16, 24 or 48 kHz natively, the stream on the wire stays the same (RFC 7587
        §4.1: the timestamp counts 48 kHz whatever the internal rate, so `timestamps_for(160)`
        at 8 kHz is 960), and a 48 kHz peer decodes it as usual. An encoder at 8 or 16 kHz
        codes narrowband or wideband (the effective `max_bandwidth` is at most the rate); a
        decoder at 8 or 16 kHz band-limits what it decodes, PLC and FEC included. A transcoder
        between Opus and G.711 or G.722 uses this to skip resampling. Any other codec at a rate
        not its own raises `CodecError`.
        """
        if sample_rate == self.sample_rate:
            return self
        if self.name != "opus" or sample_rate not in OPUS_SAMPLE_RATES:
            raise CodecError("the codec cannot run at that sample rate")
        return replace(self, sample_rate=sample_rate)

    def encoder(self, ptime_ms: float = FRAME_MS) -> Encoder:
        """A new encoder taking frames of `ptime_ms` milliseconds."""
        frame = self.samples_for(ptime_ms)
        if not 0 < frame <= self.samples_for(MAX_FRAME_MS):
            raise CodecError("packet time is out of range")
        if self.name == "opus":
            return _OpusEncoder(self, frame)
        if self.name == "G722":
            return _G722Encoder(self, frame)
        return _G711Encoder(self, frame)

    def decoder(self) -> Decoder:
        """A new decoder."""
        if self.name == "opus":
            return _OpusDecoder(self)
        if self.name == "G722":
            return _G722Decoder(self)
        return _G711Decoder(self)


class Encoder(ABC):
    """Encodes one frame of mono int16 samples at `spec.sample_rate` into one RTP payload."""

    __slots__ = ("frame_samples", "spec")

    def __init__(self, spec: CodecSpec, frame_samples: int) -> None:
        self.spec = spec
        self.frame_samples = frame_samples
        """The samples each `encode` takes (the packet time at the codec's audio rate)."""

    @abstractmethod
    def encode(self, samples: Samples) -> bytes:
        """The payload of one frame of exactly `frame_samples` samples (else `CodecError`)."""

    def _check(self, samples: Samples) -> None:
        if samples.shape != (self.frame_samples,):
            raise CodecError("frame has the wrong number of samples")


class Decoder(ABC):
    """Decodes RTP payloads into mono int16 samples at `spec.sample_rate`, and conceals losses."""

    __slots__ = ("spec",)

    def __init__(self, spec: CodecSpec) -> None:
        self.spec = spec

    @abstractmethod
    def decode(self, payload: bytes) -> Samples:
        """The samples of one payload (a new array), or `CodecError`."""

    @abstractmethod
    def conceal(self, samples_count: int) -> Samples:
        """`samples_count` samples to play in place of a lost packet (packet-loss concealment)."""

    def decode_fec(self, next_payload: bytes, frame_samples: int) -> Samples:
        """The lost frame before `next_payload`, rebuilt from the forward error correction that
        `next_payload` carries; concealment when the codec has none. Decode `next_payload`
        itself afterwards, as usual."""
        return self.conceal(frame_samples)

    def _check(self, payload: bytes, max_size: int) -> None:
        if not payload:
            raise CodecError("payload is empty")
        if len(payload) > max_size:
            raise CodecError("payload is too long")


def parse_fmtp(fmtp: Mapping[str, str] | str | None) -> dict[str, str]:
    """Format parameters (RFC 4566 §6 `a=fmtp`), `"a=1; b=2"` or a mapping, as a dict with
    lower-case keys. Items without `=` are kept with an empty value; nothing raises."""
    if fmtp is None:
        return {}
    if isinstance(fmtp, str):
        result: dict[str, str] = {}
        for item in fmtp.split(";"):
            key, _, value = item.partition("=")
            if key.strip():
                result[key.strip().lower()] = value.strip()
        return result
    return {str(key).strip().lower(): str(value).strip() for key, value in fmtp.items()}


def _int_parameter(fmtp: Mapping[str, str], key: str) -> int | None:
    try:
        return int(fmtp[key])
    except (KeyError, ValueError):
        return None


_STATIC = {
    "PCMU": CodecSpec("PCMU", 8000, 8000, 1, 0),
    "PCMA": CodecSpec("PCMA", 8000, 8000, 1, 8),
    "G722": CodecSpec("G722", 16000, 8000, 1, 9),
    "OPUS": CodecSpec("opus", 48000, 48000, 2, None),
}


def codec_for(
    encoding_name: str,
    clock_rate: int | None = None,
    channels: int | None = None,
    fmtp: Mapping[str, str] | str | None = None,
    *,
    opus: OpusSettings | None = None,
) -> CodecSpec:
    """The codec of an SDP rtpmap `encoding_name/clock_rate/channels` (RFC 4566 §6), chosen by
    name case-insensitively; None for the clock rate or channels takes the codec's own.

    Opus must be `opus/48000/2` (RFC 7587 §7; `/1` is accepted from lax peers) and its fmtp
    tunes `opus` (our `OpusSettings`, the defaults when None). Raises `UnsupportedCodecError`
    for any other name, clock rate or channel count.
    """
    spec = _STATIC.get(encoding_name.strip().upper())
    if spec is None:
        raise UnsupportedCodecError("codec is not supported")
    if clock_rate is not None and clock_rate != spec.clock_rate:
        raise UnsupportedCodecError("clock rate does not match the codec")
    allowed = (1, 2) if spec.name == "opus" else (1,)
    if channels is not None and channels not in allowed:
        raise UnsupportedCodecError("channel count does not match the codec")
    parameters = parse_fmtp(fmtp)
    if spec.name != "opus":
        return replace(spec, fmtp=parameters) if parameters else spec
    settings = opus or OpusSettings()
    if parameters.get("useinbandfec") == "0":
        settings = replace(settings, fec=False)
    if parameters.get("cbr") == "1":
        settings = replace(settings, vbr=False)
    bitrate = _int_parameter(parameters, "maxaveragebitrate")
    if bitrate is not None and 6000 <= bitrate < settings.bitrate:
        settings = replace(settings, bitrate=bitrate)
    playback = _int_parameter(parameters, "maxplaybackrate")
    if playback is not None and 0 < playback < settings.max_bandwidth:
        settings = replace(settings, max_bandwidth=playback)
    return replace(spec, fmtp=parameters, opus=settings)


# -- G.711 -------------------------------------------------------------------------------


class _Concealer:
    """Pitch-period repetition with a fade, for codecs without their own concealment.

    `good(samples)` keeps the last good frame (the caller gives an array nobody else writes);
    `good_payload(payload)` keeps its payload instead, decoded by `decode` only when a loss
    needs it, so that the per-packet path copies nothing.
    """

    __slots__ = ("_decode", "_last", "_payload", "_period", "_position", "_rate")

    def __init__(self, rate: int, decode: Callable[[bytes], Samples] | None = None) -> None:
        self._rate = rate
        self._decode = decode
        self._last: Samples | None = None
        self._payload: bytes | None = None
        self._period: Samples | None = None
        self._position = 0

    def good(self, samples: Samples) -> None:
        self._last = samples
        self._payload = None
        self._period = None
        self._position = 0

    def good_payload(self, payload: bytes) -> None:
        self._payload = payload
        self._last = None
        self._period = None
        self._position = 0

    def conceal(self, count: int) -> Samples:
        if count < 0 or count > self._rate * MAX_FRAME_MS // 1000:
            raise CodecError("concealment length is out of range")
        fade_end = self._rate * _PLC_FADE_MS // 1000
        if self._last is None and self._payload is not None and self._decode is not None:
            self._last = self._decode(self._payload)
            self._payload = None
        if self._last is None or self._position >= fade_end or not len(self._last):
            self._position += count
            return np.zeros(count, np.int16)
        if self._period is None:
            self._period = self._find_period(self._last)
        period = self._period
        index = self._position + np.arange(count)
        full = self._rate * _PLC_FULL_MS // 1000
        gain = np.clip((fade_end - index) / (fade_end - full), 0.0, 1.0)
        result = period[index % len(period)] * gain
        self._position += count
        return np.rint(result).astype(np.int16)

    def _find_period(self, last: Samples) -> Samples:
        shortest = max(round(self._rate * _PITCH_MIN_MS / 1000), 1)
        longest = min(round(self._rate * _PITCH_MAX_MS / 1000), len(last) // 2)
        if longest < shortest:
            return last.copy()
        signal = last.astype(np.float64)
        width = len(signal) - longest
        tail = signal[len(signal) - width :]
        count = longest - shortest + 1
        # Row i: the `width` samples that start `longest - i` samples before the tail.
        windows = np.ndarray((count, width), np.float64, signal, 0, (8, 8))
        squares = np.concatenate(((0.0,), np.cumsum(signal * signal)))
        energy = (squares[width : width + count] - squares[:count]) * float(tail @ tail)
        correlation = np.dot(windows, tail) / np.sqrt(np.maximum(energy, 1e-9))
        lag = longest - int(np.argmax(correlation))
        return last[len(last) - lag :].copy()


class _G711Encoder(Encoder):
    __slots__ = ("_codec",)

    def __init__(self, spec: CodecSpec, frame_samples: int) -> None:
        super().__init__(spec, frame_samples)
        self._codec = g711.codec_for_name(spec.name)

    def encode(self, samples: Samples) -> bytes:
        self._check(samples)
        return self._codec.encode(samples)


class _G711Decoder(Decoder):
    __slots__ = ("_codec", "_concealer", "_max_size")

    def __init__(self, spec: CodecSpec) -> None:
        super().__init__(spec)
        self._codec = g711.codec_for_name(spec.name)
        self._concealer = _Concealer(spec.sample_rate, self._codec.decode)
        self._max_size = spec.samples_for(MAX_FRAME_MS)

    def decode(self, payload: bytes) -> Samples:
        if not payload or len(payload) > self._max_size:
            self._check(payload, self._max_size)
        self._concealer.good_payload(payload)
        return self._codec.decode(payload)

    def conceal(self, samples_count: int) -> Samples:
        return self._concealer.conceal(samples_count)


# -- G.722 -------------------------------------------------------------------------------


class _G722Encoder(Encoder):
    __slots__ = ("_context", "_frame", "_input")

    def __init__(self, spec: CodecSpec, frame_samples: int) -> None:
        if frame_samples % 2:
            raise CodecError("packet time is out of range")
        super().__init__(spec, frame_samples)
        context: Any = av.CodecContext.create("g722", "w")
        context.sample_rate = spec.sample_rate
        context.layout = "mono"
        context.format = "s16"
        context.thread_count = 1
        context.options = {"frame_size": str(frame_samples)}
        context.open()
        self._context = context
        frame = av.AudioFrame(format="s16", layout="mono", samples=frame_samples)
        frame.sample_rate = spec.sample_rate
        self._frame = frame
        self._input: Samples = np.frombuffer(memoryview(frame.planes[0]), np.int16, frame_samples)

    def encode(self, samples: Samples) -> bytes:
        self._check(samples)
        self._input[:] = samples
        try:
            packets = self._context.encode(self._frame)
        except av.error.FFmpegError as error:  # pragma: no cover - FFmpeg's G.722 never fails
            raise CodecError("frame cannot be encoded") from error
        if len(packets) == 1:
            return bytes(packets[0])
        return b"".join(bytes(packet) for packet in packets)  # pragma: no cover - never seen


class _G722Decoder(Decoder):
    __slots__ = ("_concealer", "_context", "_max_size")

    def __init__(self, spec: CodecSpec) -> None:
        super().__init__(spec)
        context: Any = av.CodecContext.create("g722", "r")
        context.sample_rate = spec.sample_rate
        context.layout = "mono"
        context.thread_count = 1
        context.open()
        self._context = context
        self._concealer = _Concealer(spec.sample_rate)
        self._max_size = spec.samples_for(MAX_FRAME_MS) // 2

    def decode(self, payload: bytes) -> Samples:
        self._check(payload, self._max_size)
        try:
            frames = self._context.decode(av.Packet(payload))
        except av.error.FFmpegError as error:  # pragma: no cover - any bytes are valid G.722
            raise CodecError("G.722 payload cannot be decoded") from error
        if len(frames) == 1:
            frame = frames[0]
            # A view of FFmpeg's frame, which no one else holds: the concealer keeps it.
            last: Samples = np.frombuffer(frame.planes[0], np.int16, frame.samples)
        else:
            last = np.concatenate([np.frombuffer(f.planes[0], np.int16, f.samples) for f in frames])
        self._concealer.good(last)
        return last.copy()

    def conceal(self, samples_count: int) -> Samples:
        return self._concealer.conceal(samples_count)


# -- Opus --------------------------------------------------------------------------------

_opus: Any = None


def _libopus() -> Any:
    """opuslib's modules and our direct prototypes of the two hot libopus calls, loaded once."""
    global _opus
    if _opus is None:
        import opuslib
        import opuslib.api.ctl
        import opuslib.api.decoder
        import opuslib.api.encoder

        library = opuslib.api.libopus
        c_void_p, c_int, c_int32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int32
        encode = ctypes.CFUNCTYPE(c_int32, c_void_p, c_void_p, c_int, c_void_p, c_int32)
        decode = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_int32, c_void_p, c_int, c_int)
        _opus = (
            opuslib,
            encode(("opus_encode", library)),
            decode(("opus_decode", library)),
        )
    return _opus


_OPUS_BANDWIDTHS = ((8000, 1101), (12000, 1102), (16000, 1103), (24000, 1104))
_OPUS_FULLBAND = 1105
_OPUS_FRAME_MS = (2.5, 5, 10, 20, 40, 60, 80, 100, 120)
_INT16 = np.dtype(np.int16)


class _OpusEncoder(Encoder):
    __slots__ = ("_encode", "_opus", "_output", "_shape", "_state")

    def __init__(self, spec: CodecSpec, frame_samples: int) -> None:
        if frame_samples not in {spec.samples_for(ms) for ms in _OPUS_FRAME_MS}:
            raise CodecError("packet time is out of range")
        super().__init__(spec, frame_samples)
        opuslib, self._encode, _ = _libopus()
        settings = spec.opus or OpusSettings()
        self._opus = opuslib.Encoder(spec.sample_rate, 1, "voip")
        state = self._opus.encoder_state
        ctl, encoder_ctl = opuslib.api.ctl, opuslib.api.encoder.encoder_ctl
        encoder_ctl(state, ctl.set_complexity, settings.complexity)
        encoder_ctl(state, ctl.set_bitrate, settings.bitrate)
        encoder_ctl(state, ctl.set_vbr, int(settings.vbr))
        encoder_ctl(state, ctl.set_inband_fec, int(settings.fec))
        encoder_ctl(state, ctl.set_packet_loss_perc, settings.packet_loss_percent)
        # Nothing above the input's Nyquist frequency exists: at 8 kHz code narrowband only.
        highest = min(settings.max_bandwidth, spec.sample_rate)
        bandwidth = next(
            (code for rate, code in _OPUS_BANDWIDTHS if highest <= rate), _OPUS_FULLBAND
        )
        encoder_ctl(state, ctl.set_max_bandwidth, bandwidth)
        self._state = ctypes.cast(state, ctypes.c_void_p).value
        self._shape = (frame_samples,)
        self._output = ctypes.create_string_buffer(MAX_PAYLOAD_SIZE)

    def encode(self, samples: Samples) -> bytes:
        if samples.shape != self._shape:
            raise CodecError("frame has the wrong number of samples")
        if samples.dtype != _INT16:
            samples = samples.astype(np.int16)
        # `tobytes` (one small allocation, C order) is cheaper than copying into a
        # preallocated array and far cheaper than asking numpy for the array's address.
        size = self._encode(
            self._state, samples.tobytes(), self.frame_samples, self._output, MAX_PAYLOAD_SIZE
        )
        if size < 0:  # pragma: no cover - libopus fails only on bad arguments
            raise CodecError("frame cannot be encoded")
        return self._output.raw[:size]


class _OpusDecoder(Decoder):
    __slots__ = ("_decode", "_max_samples", "_opus", "_output", "_output_address", "_state")

    def __init__(self, spec: CodecSpec) -> None:
        super().__init__(spec)
        opuslib, _, self._decode = _libopus()
        self._opus = opuslib.Decoder(spec.sample_rate, 1)
        self._state = ctypes.cast(self._opus.decoder_state, ctypes.c_void_p).value
        self._max_samples = spec.samples_for(MAX_FRAME_MS)
        self._output: Samples = np.zeros(self._max_samples, np.int16)
        self._output_address = self._output.ctypes.data

    def decode(self, payload: bytes) -> Samples:
        if not payload or len(payload) > MAX_PAYLOAD_SIZE:
            self._check(payload, MAX_PAYLOAD_SIZE)
        count = self._decode(
            self._state, payload, len(payload), self._output_address, self._max_samples, 0
        )
        if count < 0:
            raise CodecError("Opus payload is corrupt")
        return self._output[:count].copy()

    def conceal(self, samples_count: int) -> Samples:
        return self._run(None, samples_count, 0)

    def decode_fec(self, next_payload: bytes, frame_samples: int) -> Samples:
        self._check(next_payload, MAX_PAYLOAD_SIZE)
        return self._run(next_payload, frame_samples, 1)

    def _run(self, payload: bytes | None, samples_count: int, fec: int) -> Samples:
        if not 0 <= samples_count <= self._max_samples:
            raise CodecError("concealment length is out of range")
        if samples_count == 0:
            return np.zeros(0, np.int16)
        # libopus conceals whole multiples of 2.5 ms: ask for enough, return what was asked.
        quantum = self.spec.sample_rate // 400
        asked = math.ceil(samples_count / quantum) * quantum
        size = 0 if payload is None else len(payload)
        count = self._decode(self._state, payload, size, self._output_address, asked, fec)
        if count < 0:
            raise CodecError("Opus payload is corrupt")
        return self._output[:samples_count].copy()
