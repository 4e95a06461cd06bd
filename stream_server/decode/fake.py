"""``FakeBackend``: a deterministic ``DecodeBackend`` without a model, for fast tests of the engine and the transports.

The text of a job is its user prompt when it has one (a test picks each request's text the way the fault marker
picks failures), else a phrase derived from the length of its own audio; a test may pass its own ``text`` function.
A call can be held (``hold``/``release``), slowed (``latency_s``) or made to raise (``fail_if``). Calls run on the
engine's model thread; ``calls`` and ``entered`` are read from the event loop after the fact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .backend import AlignedWord, AlignRequest
from .types import DecodeJob, DecodeResult

TextOf = Callable[[DecodeJob], str]


class FakeDecodeError(RuntimeError):
    """Raised by a call that ``fail_if`` selects."""


def length_text(job: DecodeJob) -> str:
    """The user's prompt, or "<n> tenths" with n the tenths of a second of the job's own audio."""
    if job.options.initial_prompt:
        return job.options.initial_prompt
    return f"{round(job.own_s * 10)} tenths"


class FakeBackend:
    """Implements ``DecodeBackend``: one call per batch (or per job with ``one_call_per_job``), text from ``text``."""

    def __init__(
        self,
        *,
        model_id: str = "fake",
        is_multilingual: bool = False,
        text: TextOf = length_text,
        latency_s: float = 0.0,
        one_call_per_job: bool = False,
        fail_if: Callable[[DecodeJob], bool] | None = None,
        workers: int = 1,
    ) -> None:
        self.model_id = model_id
        self.is_multilingual = is_multilingual
        self.workers = workers
        self.device = "cpu"
        self.text = text
        self.latency_s = latency_s  # seconds each model call takes
        self.one_call_per_job = one_call_per_job
        self.fail_if = fail_if  # a call holding a job it selects raises ``FakeDecodeError``
        self.calls: list[list[DecodeJob]] = []  # the jobs of each call, in the order they ran
        self._gate = threading.Event()
        self._gate.set()
        self._entered = 0
        self._changed = threading.Condition()

    # --- DecodeBackend

    def split(self, jobs: list[DecodeJob]) -> list[list[DecodeJob]]:
        return [[job] for job in jobs] if self.one_call_per_job else [list(jobs)]

    def decode_batch(self, jobs: list[DecodeJob]) -> list[DecodeResult]:
        self._enter()
        self.calls.append(list(jobs))
        if self.fail_if is not None and any(self.fail_if(job) for job in jobs):
            raise FakeDecodeError("the fake backend was told to fail this call")
        return [self.result(job) for job in jobs]

    def align(self, requests: list[AlignRequest]) -> list[list[AlignedWord]]:
        """The words of each result spread evenly over its job's own audio."""
        self._enter()
        self.calls.append([request.job for request in requests])
        out = []
        for request in requests:
            words = request.result.text.split()
            step = request.job.own_s / max(1, len(words))
            out.append(
                [
                    AlignedWord(word=f" {w}", start=i * step, end=(i + 1) * step, probability=0.9, tokens=[i])
                    for i, w in enumerate(words)
                ]
            )
        return out

    def tokens_for(self, text: str) -> tuple[int, ...]:
        return tuple(range(len(text.split())))

    # --- test controls

    def result(self, job: DecodeJob) -> DecodeResult:
        """What ``decode_batch`` returns for ``job``."""
        text = self.text(job)
        language = job.options.language or (job.options.languages[0] if job.options.languages else "en")
        return DecodeResult(
            job_id=job.job_id,
            text=text,
            tokens=self.tokens_for(text),
            language=language,
            avg_logprob=-0.1,
            compression_ratio=1.0,
            no_speech_prob=0.0,
            temperature=job.options.temperatures[0],
            window_s=max(4.0, job.duration_s + 1.0),
        )

    def _enter(self) -> None:
        """Count the call, wait while held, then take ``latency_s``."""
        with self._changed:
            self._entered += 1
            self._changed.notify_all()
        if not self._gate.wait(30):
            raise FakeDecodeError("held for 30 s: a test forgot to release the fake backend")
        if self.latency_s:
            time.sleep(self.latency_s)

    def hold(self) -> None:
        """Calls that start from now on wait until ``release``."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    @property
    def entered(self) -> int:
        """Calls started so far, held ones included."""
        return self._entered

    def wait_entered(self, count: int, timeout_s: float = 10.0) -> None:
        """Block until ``count`` calls have started (from a test thread; ``asyncio.to_thread`` from a loop)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._entered >= count, timeout_s):
                raise TimeoutError(f"{self._entered} of {count} model calls started within {timeout_s} s")
