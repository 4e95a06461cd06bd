"""TEST ONLY: fault injection around a decode backend, so end-to-end tests can make a decode raise.

Enabled by the ``fail_decode_marker`` setting (empty, the default, means off). A batch raises when any of its
jobs carries the marker in its user prompt (a stream's ``prompt`` query parameter, an upload's ``prompt``
field): a test picks which requests fail without touching the others' audio. Never set it in production.
"""

from __future__ import annotations

from .decode.backend import AlignedWord, AlignRequest, DecodeBackend
from .decode.types import DecodeJob, DecodeResult


class InjectedFault(RuntimeError):
    pass


class FaultInjectingBackend:
    """Wraps a backend; ``decode_batch`` raises ``InjectedFault`` for batches holding a marked job."""

    def __init__(self, inner: DecodeBackend, marker: str) -> None:
        if not marker:
            raise ValueError("an empty marker would fail nothing")
        self.inner = inner
        self.marker = marker
        self.model_id = inner.model_id
        self.is_multilingual = inner.is_multilingual
        self.workers = inner.workers

    def split(self, jobs: list[DecodeJob]) -> list[list[DecodeJob]]:
        return self.inner.split(jobs)

    def decode_batch(self, jobs: list[DecodeJob]) -> list[DecodeResult]:
        if any(self.marker in (job.options.initial_prompt or "") for job in jobs):
            raise InjectedFault(f"injected fault (a job's prompt holds {self.marker!r})")
        return self.inner.decode_batch(jobs)

    def align(self, requests: list[AlignRequest]) -> list[list[AlignedWord]]:
        return self.inner.align(requests)

    def tokens_for(self, text: str) -> tuple[int, ...]:
        return self.inner.tokens_for(text)
