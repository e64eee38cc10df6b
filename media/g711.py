"""G.711 µ-law (PCMU) and A-law (PCMA), ITU-T G.711, with numpy lookup tables.

Decoding indexes a 256-entry int16 table with the payload bytes; encoding indexes a 65536-entry
uint8 table with the int16 samples seen as uint16. Both tables are built once, at import, from
the ITU-T G.191 reference algorithm (STL `g711.c`: `ulaw_compress`, `alaw_compress`,
`ulaw_expand`, `alaw_expand`), vectorised; the tests compare them with a per-sample transcription
of that reference. Samples are 16-bit linear PCM: µ-law uses the 14 most significant bits, A-law
the 13 most significant, and negative values are folded by one's complement as G.191 does.

Measured with `timeit` (best of 7) on the 2-core development machine while other jobs ran
(`sum(range(1000))` took 17 µs there), for one 20 ms frame (160 samples): encode 1.9 µs, decode
1.9 µs, both mostly numpy call overhead.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "PCMA",
    "PCMU",
    "G711Codec",
    "UnsupportedCodecError",
    "codec_for_name",
]

Samples = npt.NDArray[np.int16]


class UnsupportedCodecError(ValueError):
    """A codec name that is neither PCMU nor PCMA."""


def _bit_length(values: npt.NDArray[np.int32], bits: int) -> npt.NDArray[np.int32]:
    length = np.zeros_like(values)
    for shift in range(bits):
        length += (values >> shift) > 0
    return length


def _linear() -> npt.NDArray[np.int32]:
    return np.arange(-32768, 32768, dtype=np.int32)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    """G.191 `ulaw_compress` for every int16, in uint16 order (ITU-T G.711 Table 2a)."""
    linear = _linear()
    magnitude = np.where(linear < 0, ~linear, linear) >> 2
    absno = np.minimum(magnitude + 33, 0x1FFF)
    segno = 1 + _bit_length(absno >> 6, 7)
    code = ((8 - segno) << 4) | (15 - ((absno >> segno) & 0x0F))
    code = np.where(linear >= 0, code | 0x80, code)
    return np.roll(code.astype(np.uint8), -32768)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    """G.191 `alaw_compress` for every int16, in uint16 order (ITU-T G.711 Table 1a)."""
    linear = _linear()
    ix = np.where(linear < 0, ~linear, linear) >> 4
    exponent = np.maximum(_bit_length(ix, 12) - 4, 0)
    code = np.where(
        ix > 15,
        ((ix >> np.maximum(exponent - 1, 0)) - 16) + (exponent << 4),
        ix,
    )
    code = np.where(linear >= 0, code | 0x80, code) ^ 0x55
    return np.roll(code.astype(np.uint8), -32768)


def _ulaw_decode_table() -> Samples:
    """G.191 `ulaw_expand` for every code (ITU-T G.711 Table 2a)."""
    code = np.arange(256, dtype=np.int32)
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x07
    step = 4 << (exponent + 1)
    value = (0x80 << exponent) + step * (inverted & 0x0F) + step // 2 - 4 * 33
    return np.where(code < 0x80, -value, value).astype(np.int16)


def _alaw_decode_table() -> Samples:
    """G.191 `alaw_expand` for every code (ITU-T G.711 Table 1a)."""
    code = np.arange(256, dtype=np.int32)
    ix = (code ^ 0x55) & 0x7F
    exponent = ix >> 4
    mantissa = np.where(exponent > 0, (ix & 0x0F) + 16, ix & 0x0F)
    value = ((mantissa << 4) + 8) << np.maximum(exponent - 1, 0)
    table: Samples = np.where(code > 0x7F, value, -value).astype(np.int16)
    return table


class G711Codec:
    """One G.711 law: encode int16 PCM to payload bytes and back (RFC 3551 §4.5.14).

    `payload_type` is the static RTP payload type (RFC 3551 §6) and `silence` the code of a
    zero sample, to fill a frame of silence.
    """

    __slots__ = ("_decode", "_encode", "name", "payload_type", "silence")

    def __init__(
        self,
        name: str,
        payload_type: int,
        encode_table: npt.NDArray[np.uint8],
        decode_table: Samples,
    ) -> None:
        self.name = name
        self.payload_type = payload_type
        self._encode = encode_table
        self._decode = decode_table
        self.silence = int(encode_table[0])

    def encode(self, samples: npt.ArrayLike) -> bytes:
        """Encode 16-bit linear samples (a 1-D int16 array) to one byte per sample."""
        pcm = np.asarray(samples, dtype=np.int16)
        result: bytes = self._encode.take(pcm.view(np.uint16)).tobytes()
        return result

    def decode(self, payload: bytes) -> Samples:
        """Decode payload bytes to 16-bit linear samples (a new int16 array)."""
        samples: Samples = self._decode.take(np.frombuffer(payload, dtype=np.uint8))
        return samples

    @property
    def encode_table(self) -> npt.NDArray[np.uint8]:
        """The 65536-entry table: code of each int16 sample, indexed by the sample as uint16."""
        return self._encode

    @property
    def decode_table(self) -> Samples:
        """The 256-entry table: linear value of each code."""
        return self._decode

    def __repr__(self) -> str:
        return f"G711Codec({self.name!r})"


PCMU = G711Codec("PCMU", 0, _ulaw_encode_table(), _ulaw_decode_table())
"""µ-law (ITU-T G.711 §2, RFC 3551 PCMU), payload type 0."""

PCMA = G711Codec("PCMA", 8, _alaw_encode_table(), _alaw_decode_table())
"""A-law (ITU-T G.711 §1, RFC 3551 PCMA), payload type 8."""

_BY_NAME = {"PCMU": PCMU, "PCMA": PCMA}


def codec_for_name(name: str) -> G711Codec:
    """The G.711 law for an SDP encoding name (case-insensitive, RFC 3551 §4.5.14)."""
    codec = _BY_NAME.get(name.upper())
    if codec is None:
        raise UnsupportedCodecError("codec is not G.711")
    return codec
