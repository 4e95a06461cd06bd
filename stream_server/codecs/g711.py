"""G.711 telephony audio (ITU-T G.711 mu-law and A-law): one byte per sample, decoded with a 256-entry table.

Python's ``audioop`` is gone in 3.13, so the tables are built here from the standard's segment formulas (they
match FFmpeg's ``pcm_mulaw``/``pcm_alaw`` decoders code for code). Any sample rate the handshake declares is
kept (telephony is 8 kHz); the resampler downstream brings it to 16 kHz.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Law = Literal["mulaw", "alaw"]

_MULAW_BIAS = 0x84


def _mulaw_table() -> np.ndarray:
    """int16 linear value of each mu-law code (codes are stored inverted; bit 7 set means negative)."""
    table = np.empty(256, np.int16)
    for code in range(256):
        u = ~code & 0xFF
        exponent = (u >> 4) & 0x07
        mantissa = u & 0x0F
        magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
        table[code] = -magnitude if u & 0x80 else magnitude
    return table


def _alaw_table() -> np.ndarray:
    """int16 linear value of each A-law code (even bits inverted; bit 7 set means positive)."""
    table = np.empty(256, np.int16)
    for code in range(256):
        a = code ^ 0x55
        exponent = (a >> 4) & 0x07
        mantissa = a & 0x0F
        # segment 0 is linear; the others add the implicit leading bit (0x100) and shift
        magnitude = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
        table[code] = magnitude if a & 0x80 else -magnitude
    return table


MULAW_TO_INT16 = _mulaw_table()
ALAW_TO_INT16 = _alaw_table()
_FLOAT_TABLES = {
    "mulaw": MULAW_TO_INT16.astype(np.float32) / 32768.0,
    "alaw": ALAW_TO_INT16.astype(np.float32) / 32768.0,
}


class G711Decoder:
    """Interleaved G.711 bytes -> float32 frames ``(n, channels)``; keeps a partial frame until the next call.
    One instance per stream, used from one thread (the connection's loop)."""

    def __init__(self, law: Law, channels: int, sample_rate: int) -> None:
        self._table = _FLOAT_TABLES[law]
        self._channels = channels
        self._rate = sample_rate
        self._remainder = b""

    @property
    def sample_rate(self) -> int | None:
        return self._rate

    def decode(self, data: bytes) -> np.ndarray:
        if self._remainder:
            data = self._remainder + data
        usable = len(data) - len(data) % self._channels
        self._remainder = data[usable:]
        codes = np.frombuffer(data, dtype=np.uint8, count=usable)
        return self._table[codes].reshape(-1, self._channels)

    def flush(self) -> np.ndarray:
        self._remainder = b""  # a trailing partial frame cannot be placed on every channel: dropped
        return np.zeros((0, self._channels), np.float32)

    def close(self) -> None:
        pass
