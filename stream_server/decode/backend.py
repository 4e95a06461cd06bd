"""The contract between the engine and whatever runs the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypedDict

from .types import DecodeJob, DecodeResult


class AlignedWord(TypedDict):
    """One word of a cross-attention alignment, times in seconds from the start of the job's own audio."""

    word: str
    start: float
    end: float
    probability: float
    tokens: list[int]


@dataclass(frozen=True)
class AlignRequest:
    """Align ``result.tokens`` to ``job``'s own audio (``job`` as decoded: as ``split`` returned it)."""

    job: DecodeJob
    result: DecodeResult
    for_words: bool  # punctuation joined to its neighbouring word, as word timestamps show it


class DecodeBackend(Protocol):
    """Runs model calls. Every method but ``split`` is a model call; all are called from the model threads
    only, never from the event loop.

    ``split`` says which model calls a batch will take, in the order they run (jobs that cannot share one call,
    such as different encoder windows, run one after another anyway), each job as it will be decoded (a context
    that does not fit is dropped): the engine hands over one part at a time and delivers each part's results as
    soon as it is done. ``decode_batch`` returns one result per job, in order; ``align`` one alignment per
    request. Either may raise; the engine then fails the jobs of that call. What a result still needs (a retry,
    the rest of an early stop, word times) is planned by ``repair.py`` and run by the engine as calls of their
    own. ``tokens_for`` is not a model call: the tokens of a text, for a result whose text was edited.
    ``workers``: the model replicas, so the model calls that may run at once (from as many threads)."""

    model_id: str
    is_multilingual: bool
    workers: int

    def split(self, jobs: list[DecodeJob]) -> list[list[DecodeJob]]: ...

    def decode_batch(self, jobs: list[DecodeJob]) -> list[DecodeResult]: ...

    def align(self, requests: list[AlignRequest]) -> list[list[AlignedWord]]: ...

    def tokens_for(self, text: str) -> tuple[int, ...]: ...
