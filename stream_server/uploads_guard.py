"""Admission for HTTP upload decoding: how many decode at once, how much decoded audio all uploads hold.

Why: a small file can declare a tiny sample rate or hours of silence and decode to far more PCM than its size
suggests; per-request caps (``max_upload_duration_s``) do not stop a few such requests together from
exhausting memory. The guard counts decoded samples as they are produced (``Reservation.take``), refuses
past the process-wide bound with ``Overloaded`` (503), and gives the samples back when the decoded array is
garbage-collected (``Reservation.hold``), that is when the last request still using it is done.
On shutdown (``close``) decodes under way stop with ``ShuttingDown`` (503) instead of a dropped connection.

Thread-safe: decoding runs in worker threads, ``close`` on the event loop.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator

import numpy as np

from .errors import Overloaded, ShuttingDown

SAMPLE_RATE = 16000


class Reservation:
    """The samples one decode has taken from the guard so far."""

    def __init__(self, guard: UploadGuard) -> None:
        self._guard = guard
        self.samples = 0
        self._held = False

    def take(self, samples: int) -> None:
        """Count ``samples`` more decoded samples; raises ``Overloaded`` past the bound, ``ShuttingDown``
        once the server stops."""
        self._guard._take(samples)
        self.samples += samples

    def hold(self, audio: np.ndarray) -> None:
        """Keep the samples taken until ``audio`` (and every view of it) is garbage-collected."""
        self._held = True
        weakref.finalize(audio, self._guard._give_back, self.samples)

    def _release_unless_held(self) -> None:
        if not self._held:
            self._guard._give_back(self.samples)


class UploadGuard:
    def __init__(self, max_decodes: int = 4, max_audio_s: float = 8 * 3600.0) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._decoding = 0
        self._held_samples = 0
        self.configure(max_decodes=max_decodes, max_audio_s=max_audio_s)

    def configure(self, *, max_decodes: int, max_audio_s: float) -> None:
        with self._lock:
            self.max_decodes = max(1, max_decodes)
            self.max_samples = int(max_audio_s * SAMPLE_RATE)

    @property
    def held_s(self) -> float:
        """Decoded audio all uploads hold now (seconds at 16 kHz)."""
        return self._held_samples / SAMPLE_RATE

    @property
    def decoding(self) -> int:
        return self._decoding

    def close(self) -> None:
        """The server is stopping: decodes under way and new ones raise ``ShuttingDown``."""
        with self._lock:
            self._closed = True

    @contextlib.contextmanager
    def admit(self) -> Iterator[Reservation]:
        """One decode slot for the ``with`` block; raises ``Overloaded`` when all are taken. Samples taken
        and not ``hold``-ed are given back when the block ends (an error, a refused file)."""
        with self._lock:
            if self._closed:
                raise ShuttingDown("The server is shutting down; retry on another instance.")
            if self._decoding >= self.max_decodes:
                raise Overloaded(
                    f"The server is decoding {self._decoding} uploads already; retry shortly.", param="file"
                )
            self._decoding += 1
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            reservation._release_unless_held()
            with self._lock:
                self._decoding -= 1

    def _take(self, samples: int) -> None:
        with self._lock:
            if self._closed:
                raise ShuttingDown("The server is shutting down; retry on another instance.")
            if self._held_samples + samples > self.max_samples:
                raise Overloaded(
                    f"Uploads being transcribed hold {self._held_samples / SAMPLE_RATE:.0f} s of audio, "
                    f"the server's bound is {self.max_samples / SAMPLE_RATE:.0f} s; retry shortly.",
                    param="file",
                )
            self._held_samples += samples

    def _give_back(self, samples: int) -> None:
        with self._lock:
            self._held_samples -= samples


_PROCESS_GUARD = UploadGuard()


def process_upload_guard() -> UploadGuard:
    """The guard of this process (the memory it bounds is the process's); ``serve`` configures it from
    ``Settings`` at start-up."""
    return _PROCESS_GUARD
