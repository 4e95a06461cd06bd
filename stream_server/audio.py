"""Raw PCM bytes <-> float32 samples, channel split and resampling to 16 kHz.

``PcmDecoder`` accepts bytes in any chunking: a frame of the socket need not hold whole samples or whole
multi-channel frames; the remainder waits for the next call. ``Resampler`` wraps libswresample (PyAV) and
keeps its filter state across chunks, so a stream resampled piecewise equals the stream resampled at once.
"""

from __future__ import annotations

from fractions import Fraction
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
    """Mono float32 at ``rate`` Hz -> mono float32 at 16 kHz, stateful across chunks.

    Its own one-thread libavfilter graph (what ``av.AudioResampler`` builds, less the threads): a graph left to
    its defaults starts a thread per core, so every channel of every session held that many threads until the
    session was collected (see docs/decisions.md#memory-plateau)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._graph: av.filter.Graph | None = None
        if rate != SAMPLE_RATE:
            graph = av.filter.Graph()
            graph.threads = 1
            source = graph.add_abuffer(format="flt", sample_rate=rate, layout="mono", time_base=Fraction(1, rate))
            convert = graph.add("aresample", str(SAMPLE_RATE))
            shape = graph.add("aformat", f"sample_fmts=flt:sample_rates={SAMPLE_RATE}:channel_layouts=mono")
            sink = graph.add("abuffersink")
            source.link_to(convert)
            convert.link_to(shape)
            shape.link_to(sink)
            graph.configure()
            self._graph = graph
        self._pts = 0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self._graph is None or len(samples) == 0:
            return np.ascontiguousarray(samples, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32)[None, :], "flt", "mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += len(samples)
        self._graph.push(frame)
        return self._pull(self._graph)

    def flush(self) -> np.ndarray:
        """The samples libswresample still holds (call once at end of stream)."""
        if self._graph is None:
            return np.zeros(0, np.float32)
        self._graph.push(None)
        return self._pull(self._graph)

    @staticmethod
    def _pull(graph: av.filter.Graph) -> np.ndarray:
        parts = []
        while True:
            try:
                frame = graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            parts.append(frame.to_ndarray().reshape(-1))
        if not parts:
            return np.zeros(0, np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)
