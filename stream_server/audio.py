"""Raw PCM bytes <-> float32 samples, channel split and resampling to 16 kHz.

``PcmDecoder`` accepts bytes in any chunking: a frame of the socket need not hold whole samples or whole
multi-channel frames; the remainder waits for the next call. ``Resampler`` wraps libswresample (PyAV) and
keeps its filter state across chunks, so a stream resampled piecewise equals the stream resampled at once.
"""

from __future__ import annotations

from typing import Literal

import av
import numpy as np

from .decode.types import SAMPLE_RATE
from .errors import AudioFormatError

Encoding = Literal["pcm_s16le", "pcm_f32le"]
ENCODINGS: dict[str, np.dtype] = {"pcm_s16le": np.dtype("<i2"), "pcm_f32le": np.dtype("<f4")}


class PcmDecoder:
    """Interleaved little-endian PCM bytes -> float32 array of shape ``(frames, channels)``."""

    def __init__(self, encoding: Encoding, channels: int) -> None:
        if encoding not in ENCODINGS:
            raise AudioFormatError(f"unsupported encoding {encoding!r}; use one of {sorted(ENCODINGS)}")
        self.dtype = ENCODINGS[encoding]
        self.channels = channels
        self.frame_bytes = self.dtype.itemsize * channels
        self._remainder = b""

    @property
    def pending_bytes(self) -> int:
        return len(self._remainder)

    def decode(self, data: bytes) -> np.ndarray:
        if self._remainder:
            data = self._remainder + data
        usable = len(data) - len(data) % self.frame_bytes
        self._remainder = data[usable:]
        samples = np.frombuffer(data, dtype=self.dtype, count=usable // self.dtype.itemsize)
        if self.dtype.kind == "i":
            out = samples.astype(np.float32) / 32768.0
        else:
            out = samples.astype(np.float32)
            if not np.all(np.isfinite(out)):
                raise AudioFormatError("pcm_f32le audio holds NaN or infinite samples")
            np.clip(out, -1.0, 1.0, out=out)
        return out.reshape(-1, self.channels)


class Resampler:
    """Mono float32 at ``rate`` Hz -> mono float32 at 16 kHz, stateful across chunks."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = (
            None if rate == SAMPLE_RATE else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        )
        self._pts = 0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self._resampler is None or len(samples) == 0:
            return np.ascontiguousarray(samples, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32)[None, :], "flt", "mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += len(samples)
        return _concat(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The samples libswresample still holds (call once at end of stream)."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return _concat(self._resampler.resample(None))


def _concat(frames: list[av.AudioFrame]) -> np.ndarray:
    if not frames:
        return np.zeros(0, np.float32)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    return bytes((np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes())
