"""The recent audio of one channel, kept for acoustic context (``context.py``): a fixed ring of 16-bit samples
addressed by absolute stream sample index. 16-bit because the audio arrived as 16-bit PCM in the common case
(``pcm_s16le``: the round trip is exact) and the ring is then half the size. Pure: no I/O."""

from __future__ import annotations

import numpy as np

from ..decode.types import SAMPLE_RATE

SCALE = 32768.0  # audio.PcmDecoder's int16 -> float32 scale


class AudioHistory:
    def __init__(self, seconds: float) -> None:
        self._ring = np.zeros(max(1, int(seconds * SAMPLE_RATE)), dtype=np.int16)
        self.end = 0  # absolute index of the next sample to arrive

    @property
    def start(self) -> int:
        """The oldest sample still held."""
        return max(0, self.end - len(self._ring))

    def push(self, samples: np.ndarray) -> None:
        pcm = np.clip(np.rint(samples * SCALE), -32768, 32767).astype(np.int16)
        size = len(self._ring)
        if len(pcm) > size:
            self.end += len(pcm) - size
            pcm = pcm[-size:]
        at = self.end % size
        first = min(len(pcm), size - at)
        self._ring[at : at + first] = pcm[:first]
        self._ring[: len(pcm) - first] = pcm[first:]
        self.end += len(pcm)

    def audio(self, start: int, end: int) -> np.ndarray:
        """float32 copy of samples ``[start, end)``; they must still be held."""
        if not self.start <= start <= end <= self.end:
            raise ValueError(f"samples [{start}, {end}) are not held (holding [{self.start}, {self.end}))")
        size = len(self._ring)
        idx = np.arange(start, end) % size
        return self._ring[idx].astype(np.float32) / SCALE
