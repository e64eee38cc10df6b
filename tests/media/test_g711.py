"""Tests of media.g711 against ITU-T G.711 and the G.191 reference, sample by sample."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from media.g711 import PCMA, PCMU, G711Codec, UnsupportedCodecError, codec_for_name

# -- a per-sample transcription of the ITU-T G.191 STL reference (g711.c) ----------------------


def ref_ulaw_compress(sample: int) -> int:
    absno = ((~sample) >> 2) + 33 if sample < 0 else (sample >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x0008 - segno
    low_nibble = 0x000F - ((absno >> segno) & 0x000F)
    code = (high_nibble << 4) | low_nibble
    if sample >= 0:
        code |= 0x0080
    return code


def ref_alaw_compress(sample: int) -> int:
    ix = (~sample) >> 4 if sample < 0 else sample >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if sample >= 0:
        ix |= 0x0080
    return ix ^ 0x0055


def ref_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x0080 else 1
    mant = ~code
    exp = (mant >> 4) & 0x0007
    segment = exp + 1
    mant &= 0x000F
    step = 4 << segment
    return sign * ((0x0080 << exp) + step * mant + step // 2 - 4 * 33)


def ref_alaw_expand(code: int) -> int:
    ix = (code ^ 0x0055) & 0x007F
    iexp = ix >> 4
    mant = ix & 0x000F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x0008
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
ALL_CODES = bytes(range(256))


@pytest.mark.parametrize(
    ("codec", "compress"), [(PCMU, ref_ulaw_compress), (PCMA, ref_alaw_compress)]
)
def test_encode_table_equals_the_g191_reference_for_every_int16(
    codec: G711Codec, compress: Callable[[int], int]
) -> None:
    expected = bytes(compress(int(sample)) for sample in ALL_SAMPLES)
    assert codec.encode(ALL_SAMPLES) == expected


@pytest.mark.parametrize(("codec", "expand"), [(PCMU, ref_ulaw_expand), (PCMA, ref_alaw_expand)])
def test_decode_table_equals_the_g191_reference_for_every_code(
    codec: G711Codec, expand: Callable[[int], int]
) -> None:
    assert codec.decode(ALL_CODES).tolist() == [expand(code) for code in ALL_CODES]
    assert codec.decode(ALL_CODES).dtype == np.int16


def test_known_ulaw_values() -> None:
    assert PCMU.decode(bytes([0xFF, 0x7F, 0x00, 0x80, 0xF0])).tolist() == [0, 0, -32124, 32124, 120]
    assert PCMU.encode(np.array([0, 32767, -32768, 120, -1], dtype=np.int16)) == bytes(
        [0xFF, 0x80, 0x00, 0xF0, 0x7F]
    )
    assert PCMU.silence == 0xFF
    assert PCMU.payload_type == 0


def test_known_alaw_values() -> None:
    assert PCMA.decode(bytes([0xD5, 0x55, 0xAA, 0x2A, 0x80, 0x00])).tolist() == [
        8,
        -8,
        32256,
        -32256,
        5504,
        -5504,
    ]
    assert PCMA.encode(np.array([0, 32767, -32768, -1], dtype=np.int16)) == bytes(
        [0xD5, 0xAA, 0x2A, 0x55]
    )
    assert PCMA.silence == 0xD5
    assert PCMA.payload_type == 8


@pytest.mark.parametrize(
    ("codec", "sequence"),
    [
        (PCMU, bytes([0x1E, 0x0B, 0x0B, 0x1E, 0x9E, 0x8B, 0x8B, 0x9E])),
        (PCMA, bytes([0x34, 0x21, 0x21, 0x34, 0xB4, 0xA1, 0xA1, 0xB4])),
    ],
)
def test_digital_milliwatt_decodes_to_a_0_dbm0_sine_and_encodes_back(
    codec: G711Codec, sequence: bytes
) -> None:
    """ITU-T G.711 Tables 5 and 6: 1 kHz at 0 dBm0, a peak 3.17 dB below the µ-law overload."""
    samples = codec.decode(sequence)
    peak = math.sqrt(2 * np.mean(samples.astype(float) ** 2))
    assert peak == pytest.approx(32636 * 10 ** (-3.17 / 20), rel=0.02)
    assert samples[4:].tolist() == (-samples[:4]).tolist()
    assert codec.encode(samples) == sequence


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_every_code_survives_decode_then_encode(codec: G711Codec) -> None:
    again = codec.encode(codec.decode(ALL_CODES))
    differing = [code for code in range(256) if again[code] != code]
    assert differing == ([0x7F] if codec is PCMU else [])  # µ-law has a negative zero


@pytest.mark.parametrize(("codec", "max_input"), [(PCMU, 32124 + 512), (PCMA, 32256 + 512)])
def test_round_trip_error_is_within_half_a_quantisation_step(
    codec: G711Codec, max_input: int
) -> None:
    decoded = codec.decode(codec.encode(ALL_SAMPLES)).astype(np.int32)
    levels = np.unique(codec.decode(ALL_CODES).astype(np.int32))
    steps = np.diff(levels)
    index = np.clip(np.searchsorted(levels, decoded), 0, len(steps) - 1)
    step_here = np.maximum(steps[index], steps[np.maximum(index - 1, 0)])
    error = np.abs(decoded - ALL_SAMPLES.astype(np.int32))
    inside = np.abs(ALL_SAMPLES.astype(np.int32)) < max_input
    assert np.all(error[inside] <= step_here[inside] // 2 + 1)
    assert error.max() <= 1024


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_encode_and_decode_preserve_length_and_accept_empty_frames(codec: G711Codec) -> None:
    frame = (np.sin(np.arange(160) / 5) * 10000).astype(np.int16)
    payload = codec.encode(frame)
    assert len(payload) == 160
    assert len(codec.decode(payload)) == 160
    assert codec.encode(np.zeros(0, dtype=np.int16)) == b""
    assert len(codec.decode(b"")) == 0


def test_codec_for_name_is_case_insensitive_and_rejects_others() -> None:
    assert codec_for_name("pcmu") is PCMU
    assert codec_for_name("PCMA") is PCMA
    with pytest.raises(UnsupportedCodecError) as info:
        codec_for_name("opus")
    assert str(info.value) == "codec is not G.711"
    assert isinstance(info.value, ValueError)


def test_tables_have_the_documented_shapes() -> None:
    for codec in (PCMU, PCMA):
        assert codec.encode_table.shape == (65536,)
        assert codec.encode_table.dtype == np.uint8
        assert codec.decode_table.shape == (256,)
        assert codec.decode_table.dtype == np.int16
