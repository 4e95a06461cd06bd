"""G.711 tables against the ITU-T values and against FFmpeg's decoders, code for code."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from stream_server.codecs import make_decoder
from stream_server.codecs.g711 import ALAW_TO_INT16, MULAW_TO_INT16, G711Decoder
from stream_server.errors import AudioFormatError


def test_mulaw_known_values() -> None:
    assert MULAW_TO_INT16[0xFF] == 0 and MULAW_TO_INT16[0x7F] == 0  # the two zeros
    assert MULAW_TO_INT16[0x80] == 32124 and MULAW_TO_INT16[0x00] == -32124  # the extremes
    assert MULAW_TO_INT16[0xFE] == 8 and MULAW_TO_INT16[0x7E] == -8  # smallest step
    assert MULAW_TO_INT16[0xEF] == 132  # segment 1 starts


def test_alaw_known_values() -> None:
    assert ALAW_TO_INT16[0xD5] == 8 and ALAW_TO_INT16[0x55] == -8
    assert ALAW_TO_INT16[0xAA] == 32256 and ALAW_TO_INT16[0x2A] == -32256
    assert ALAW_TO_INT16[0xC5] == 264  # segment 1 starts (0xC5 ^ 0x55 = 0x90)


def test_tables_are_monotonic_per_sign() -> None:
    for table in (MULAW_TO_INT16, ALAW_TO_INT16):
        assert len(set(table.tolist())) >= 255  # mu-law has two zeros, A-law none
        assert int(np.abs(table).max()) <= 32767


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
@pytest.mark.parametrize(("law", "table"), [("mulaw", MULAW_TO_INT16), ("alaw", ALAW_TO_INT16)])
def test_tables_match_ffmpeg(law: str, table: np.ndarray) -> None:
    codes = bytes(range(256))
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", law, "-ar", "8000", "-ac", "1", "-i", "pipe:0", "-f", "s16le", "pipe:1"],
        input=codes,
        capture_output=True,
        check=True,
    ).stdout
    np.testing.assert_array_equal(np.frombuffer(out, np.int16), table)


def test_decoder_keeps_partial_frames_across_chunks() -> None:
    decoder = G711Decoder("mulaw", channels=2, sample_rate=8000)
    first = decoder.decode(bytes([0x80, 0x00, 0xFF]))
    assert first.shape == (1, 2) and first.dtype == np.float32
    np.testing.assert_allclose(first[0], [32124 / 32768, -32124 / 32768])
    second = decoder.decode(bytes([0x80]))
    np.testing.assert_allclose(second, [[0.0, 32124 / 32768]])
    assert decoder.flush().shape == (0, 2)


def test_make_decoder_registers_both_laws_at_any_rate() -> None:
    mu = make_decoder("mulaw", 1, 8000)
    assert mu.sample_rate == 8000
    assert mu.decode(bytes([0xFF, 0x80])).shape == (2, 1)
    a = make_decoder("alaw", 1, 16000)
    assert a.sample_rate == 16000
    np.testing.assert_allclose(a.decode(bytes([0xD5]))[:, 0], [8 / 32768])
    with pytest.raises(AudioFormatError):
        make_decoder("g729", 1, 8000)
