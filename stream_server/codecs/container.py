"""Containerized audio streamed in arbitrary chunks (a browser's ``MediaRecorder`` WebM/Opus, Ogg/Opus, WAV,
FLAC) decoded incrementally with PyAV.

A container cannot be decoded chunk by chunk: only the first chunk of a ``MediaRecorder`` stream holds the
header, and a demuxer that reads end-of-file stops for good. So each stream gets one demuxer reading a blocking,
non-seekable pipe in its own thread ("container-<n>"); ``decode`` hands the chunk to the pipe and returns the
frames decoded so far, without waiting. The event loop therefore never blocks, and decoded audio trails the
bytes by about the chunk being demuxed (Ogg: a page or two). Output is resampled in the thread to 16 kHz
float32 with the session's channel count, so the session sees a fixed rate from the first call.

Bounded memory: at most ``max_pending_bytes`` of undecoded input and ``max_pending_s`` of decoded frames wait
between the thread and the caller; past either, ``decode`` raises ``AudioFormatError`` (the client sends faster
than audio can be decoded, or the stream decodes to absurd lengths). A stream that is not audio (no known
container magic, a demuxer error, no audio track) raises ``AudioFormatError`` with the reason, on the call after
the thread found it.
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Any

import av
import numpy as np

from ..errors import AudioFormatError

OUTPUT_RATE = 16000
# Container magic -> PyAV demuxer name (the same whitelist discipline as ``media.py``: never let ffmpeg guess).
MAGIC = {b"\x1a\x45\xdf\xa3": "matroska", b"OggS": "ogg", b"RIFF": "wav", b"fLaC": "flac"}
ENCODING_FORMATS = {"webm": ("matroska",), "ogg": ("ogg",), "auto": tuple(MAGIC.values())}
_threads = itertools.count(1)


class _Pipe:
    """A blocking, non-seekable file object fed from the event loop: ``read`` waits for the next chunk."""

    def __init__(self) -> None:
        self._chunks: queue.Queue[bytes | None] = queue.Queue()
        self._buffer = b""
        self._eof = False
        self.pending = 0  # bytes put but not yet read (written by the feeder, read by both: an int is atomic)

    def put(self, data: bytes) -> None:
        self.pending += len(data)
        self._chunks.put(data)

    def close(self) -> None:
        self._chunks.put(None)

    def read(self, size: int = -1) -> bytes:
        while not self._buffer and not self._eof:
            chunk = self._chunks.get()
            if chunk is None:
                self._eof = True
            else:
                self._buffer += chunk
        if size < 0 or size >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        self.pending -= len(out)
        return out


class ContainerDecoder:
    """Implements ``codecs.AudioDecoder`` for ``encoding`` ``webm``, ``ogg`` or ``auto`` (sniffed from the
    first bytes: WebM/Matroska, Ogg, WAV or FLAC). Frames are 16 kHz float32 ``(n, channels)``."""

    def __init__(
        self,
        encoding: str,
        channels: int,
        max_pending_bytes: int = 8 << 20,
        max_pending_s: float = 120.0,
        flush_timeout_s: float = 5.0,
    ) -> None:
        if encoding not in ENCODING_FORMATS:
            raise AudioFormatError(f"unsupported container encoding {encoding!r}")
        self.encoding = encoding
        self.channels = channels
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_frames = int(max_pending_s * OUTPUT_RATE)
        self.flush_timeout_s = flush_timeout_s
        self._pipe: _Pipe | None = None
        self._thread: threading.Thread | None = None
        self._frames: queue.Queue[np.ndarray] = queue.Queue()
        self._pending_frames = 0  # decoded frames not yet taken (updated under ``_lock``)
        self._lock = threading.Lock()
        self._error: str | None = None

    @property
    def sample_rate(self) -> int | None:
        return OUTPUT_RATE

    def decode(self, data: bytes) -> np.ndarray:
        self._raise_if_failed()
        if data:
            if self._pipe is not None and data[:4] == b"\x1a\x45\xdf\xa3":
                # a recorder restarted mid-stream sends a new header: its stream is a new one
                restart = self._finish()
                self._start(data)
                self._raise_if_failed()
                return np.concatenate([restart, self._take()]) if len(restart) else self._take()
            if self._pipe is None:
                self._start(data)
            else:
                self._pipe.put(data)
            if self._pipe is not None and self._pipe.pending > self.max_pending_bytes:
                raise AudioFormatError(
                    f"more than {self.max_pending_bytes} bytes of compressed audio are waiting to be decoded"
                )
        return self._take()

    def flush(self) -> np.ndarray:
        """End of stream: let the demuxer read to the end and return everything left."""
        frames = self._finish()
        self._raise_if_failed()
        return frames

    def close(self) -> None:
        """Stop the thread without waiting (the session ended abruptly); idempotent."""
        if self._pipe is not None:
            self._pipe.close()
        self._pipe, self._thread = None, None

    def __del__(self) -> None:  # a session dropped without close must not leave its thread blocked on the pipe
        pipe = getattr(self, "_pipe", None)
        if pipe is not None:
            pipe.close()

    # --- internals

    def _start(self, first: bytes) -> None:
        fmt = MAGIC.get(first[:4])
        if fmt is None or fmt not in ENCODING_FORMATS[self.encoding]:
            expected = {"webm": "WebM", "ogg": "Ogg", "auto": "WebM, Ogg, WAV or FLAC"}[self.encoding]
            raise AudioFormatError(f"the stream does not start like {expected} audio (first bytes {first[:4]!r})")
        self._pipe = _Pipe()
        self._pipe.put(first)
        self._thread = threading.Thread(
            target=self._run, args=(self._pipe, fmt), name=f"container-{next(_threads)}", daemon=True
        )
        self._thread.start()

    def _finish(self) -> np.ndarray:
        if self._pipe is not None and self._thread is not None:
            self._pipe.close()
            self._thread.join(self.flush_timeout_s)
            if self._thread.is_alive():
                self._error = self._error or "the container stream did not end within the flush timeout"
        self._pipe, self._thread = None, None
        return self._take()

    def _take(self) -> np.ndarray:
        parts = []
        while True:
            try:
                parts.append(self._frames.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            self._pending_frames -= sum(len(p) for p in parts)
        if not parts:
            return np.zeros((0, self.channels), np.float32)
        return np.concatenate(parts)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise AudioFormatError(self._error)

    def _run(self, pipe: _Pipe, fmt: str) -> None:
        """The demux/decode thread: everything it shares goes through ``_frames`` (a queue) and ``_error``."""
        layout = "mono" if self.channels == 1 else "stereo"
        try:
            container: Any = av.open(pipe, mode="r", format=fmt)
        except (av.FFmpegError, ValueError, OSError) as exc:
            self._error = f"not a decodable {fmt} audio stream: {exc}"
            return
        try:
            if not container.streams.audio:
                self._error = "the stream holds no audio track"
                return
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout=layout, rate=OUTPUT_RATE)
            for frame in container.decode(stream):
                frame.pts = None  # a live stream's timestamps may jump; the resampler needs none
                for out in resampler.resample(frame):
                    self._emit(out.to_ndarray())
                if self._error is not None:
                    return
            for out in resampler.resample(None):
                self._emit(out.to_ndarray())
        except (av.FFmpegError, ValueError, OSError) as exc:
            self._error = f"the {fmt} audio stream could not be decoded: {exc}"
        finally:
            container.close()

    def _emit(self, planes: np.ndarray) -> None:
        # packed float: shape (1, n * channels), interleaved
        frames = np.ascontiguousarray(planes, dtype=np.float32).reshape(-1, 1 if self.channels == 1 else 2)
        if frames.shape[1] != self.channels:
            frames = _match_channels(frames, self.channels)
        with self._lock:
            self._pending_frames += len(frames)
            over = self._pending_frames > self.max_pending_frames
        if over:
            self._error = "the stream decodes to more audio than the session can hold"
            return
        self._frames.put(frames)


def _match_channels(frames: np.ndarray, channels: int) -> np.ndarray:
    """Frames with ``channels`` columns: the mean for mono, the first columns (or repeated) otherwise."""
    if channels == 1:
        mono: np.ndarray = frames.mean(axis=1, keepdims=True, dtype=np.float32)
        return mono
    if frames.shape[1] >= channels:
        return np.ascontiguousarray(frames[:, :channels])
    return np.repeat(frames[:, :1], channels, axis=1)
