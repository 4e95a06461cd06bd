"""Repair: the follow-up work a decoded final or upload chunk may still need, as steps the engine runs as model
calls of their own (timed, pre-emptible by a waiting final, in its metrics), never hidden inside a batch.

A ``Repair`` walks one job through these stages; ``plan()`` returns the next step (or None: done) and
``merge(outcome)`` joins the step's outcome into ``result``:

0. Language (any kind of job): a job whose rolling prompt or context is text of another language than the one
   detected is decoded again on its own audio in the detected language (``language.py``); that result, repaired
   like any other, is the job's.
1. Retry without the rolling prompt: a final or upload chunk that decoded to no text, though Whisper did not
   call it silence, while it carried a rolling prompt, is decoded once more without it (a loop in the prompt
   can silence the next finals; see docs/decisions.md#retry-without-prompt). ``Redecode``; kept if it has text.
2. Early stop: without timestamp tokens Whisper cannot say where its text ended, and it sometimes ends long
   before the audio does. A text short for its audio is aligned to it (``Align``); when the last word ends well
   before the audio, the rest is decoded as its own job (``Redecode``, the text so far as its prompt) and joined
   on unless it looks like a bad decode (see docs/decisions.md#early-stops). Partials are left alone.
3. Word timestamps, where the options ask for them (``Align``).

A ``Redecode`` job is an ordinary job of its parent's kind and owner, decoded and repaired like any other; its
parent resolves only when it is done. ``decode_repaired`` runs the same steps synchronously (tests, tools).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, replace

import numpy as np

from .backend import AlignedWord, AlignRequest, DecodeBackend
from .language import carries_other_language, on_its_own
from .repeats import word_key
from .types import SAMPLE_RATE, DecodeJob, DecodeResult, JobKind, Word

log = logging.getLogger(__name__)

# A final or upload chunk of at least EARLY_STOP_MIN_AUDIO_S whose text runs under EARLY_STOP_CHARS_PER_S of
# audio (read speech runs 12-16 characters a second) is aligned; when more than EARLY_STOP_MIN_REST_S of audio
# follows its last word, the rest is decoded on its own.
EARLY_STOP_MIN_AUDIO_S = 4.0
EARLY_STOP_CHARS_PER_S = 10.0
EARLY_STOP_MIN_REST_S = 1.5


@dataclass(frozen=True)
class Redecode:
    """Decode ``job`` (and repair it) and hand its result to ``Repair.merge``."""

    job: DecodeJob


Step = Redecode | AlignRequest


class _Stage(enum.Enum):
    LANGUAGE = enum.auto()
    RETRY = enum.auto()
    CONTINUE = enum.auto()
    REST = enum.auto()
    WORDS = enum.auto()
    DONE = enum.auto()


class Repair:
    """The repair of one job's ``result``; ``job`` as it was decoded (as ``split`` returned it)."""

    def __init__(self, job: DecodeJob, result: DecodeResult) -> None:
        self.job = job
        self.result = result
        # partials are never repaired (the scheduler refuses their re-decodes; the next partial or the final will
        # be): they only get the words they asked for
        self._stage = _Stage.LANGUAGE if job.kind is not JobKind.PARTIAL else _Stage.WORDS
        self._waiting: Step | None = None  # the step whose outcome ``merge`` expects
        self._rest: DecodeJob | None = None  # the audio after an early stop, to decode next

    def plan(self) -> Step | None:
        """The next step, or None when ``result`` is final."""
        assert self._waiting is None, "merge the outcome of the last step first"
        job, result = self.job, self.result
        step: Step | None = None
        while step is None and self._stage is not _Stage.DONE:
            if self._stage is _Stage.LANGUAGE:
                self._stage = _Stage.RETRY
                if carries_other_language(job, result.language):
                    step = Redecode(on_its_own(job, result.language))
                    self._stage = _Stage.DONE  # the redecode is repaired as a job of its own
            elif self._stage is _Stage.RETRY:
                self._stage = _Stage.CONTINUE
                if not result.text and job.prompt_text.strip() and not result.looks_silent(job.options):
                    step = Redecode(_derived_job(job, job.own_audio, "", result.language))
            elif self._stage is _Stage.CONTINUE:
                self._stage = _Stage.WORDS
                if _short_for_its_audio(job, self.result):
                    step = AlignRequest(job, self.result, for_words=False)
            elif self._stage is _Stage.REST:
                self._stage = _Stage.WORDS
                assert self._rest is not None
                step = Redecode(self._rest)
            elif self._stage is _Stage.WORDS:
                self._stage = _Stage.DONE
                if job.options.word_timestamps and self.result.tokens:
                    step = AlignRequest(job, self.result, for_words=True)
        self._waiting = step
        return step

    def merge(self, outcome: DecodeResult | list[AlignedWord], backend: DecodeBackend) -> None:
        """Join the outcome of the step ``plan`` returned (a ``Redecode``'s result, an ``Align``'s words)."""
        step, self._waiting = self._waiting, None
        if isinstance(step, Redecode) and isinstance(outcome, DecodeResult):
            if self._stage is _Stage.DONE:  # in the language detected, on its own
                probability = self.result.language_probability
                self.result = replace(outcome, job_id=self.job.job_id, language_probability=probability)
            elif self._stage is _Stage.CONTINUE:  # the retry
                if outcome.text:
                    log.debug("empty decode retried without the rolling prompt: %r", outcome.text)
                    self.result = replace(outcome, job_id=self.job.job_id, window_s=self.result.window_s)
            elif outcome.text and outcome.avg_logprob >= self.job.options.log_prob_threshold:  # the rest
                log.debug("early stop continued: %r + %r", self.result.text, outcome.text)
                text = _join_continuation(self.result.text, outcome.text)
                self.result = replace(self.result, text=text, tokens=backend.tokens_for(text))
        elif isinstance(step, AlignRequest) and isinstance(outcome, list):
            if step.for_words:
                self.result = replace(self.result, words=_words(outcome))
            else:
                self._plan_rest(outcome)
        else:
            raise TypeError(f"{type(outcome).__name__} is not the outcome of {step!r}")

    def _plan_rest(self, alignment: list[AlignedWord]) -> None:
        job = self.job
        # punctuation is aligned on its own and soaks up the silence after it: the last word decides
        last_end = max((float(a["end"]) for a in alignment if any(c.isalnum() for c in a["word"])), default=0.0)
        # at least 1 s must be covered, so every continuation is shorter than the job it continues
        if last_end < 1.0 or job.own_s - last_end < EARLY_STOP_MIN_REST_S:
            return
        prompt = f"{job.prompt_text} {job.context_text} {self.result.text}"
        rest = _derived_job(job, job.own_audio[int(last_end * SAMPLE_RATE) :], prompt, self.result.language)
        self._stage = _Stage.REST
        self._rest = rest


def decode_repaired(backend: DecodeBackend, jobs: list[DecodeJob]) -> list[DecodeResult]:
    """Decode ``jobs`` and run their repairs at once, synchronously, in the engine's order of calls: each part
    of ``split``, then its retries, alignments and rests. For tests and tools; the server's engine runs the
    same steps between other work."""
    results: dict[int, DecodeResult] = {}
    for part in backend.split(jobs):
        repairs = [Repair(job, result) for job, result in zip(part, backend.decode_batch(part))]
        while repairs:
            steps = [(repair, repair.plan()) for repair in repairs]
            for repair, step in steps:
                if step is None:
                    results[repair.job.job_id] = repair.result
            redecodes = [(r, s) for r, s in steps if isinstance(s, Redecode)]
            if redecodes:
                for (repair, _), outcome in zip(redecodes, decode_repaired(backend, [s.job for _, s in redecodes])):
                    repair.merge(outcome, backend)
            aligns = [(r, s) for r, s in steps if isinstance(s, AlignRequest)]
            if aligns:
                for (repair, _), words in zip(aligns, backend.align([s for _, s in aligns])):
                    repair.merge(words, backend)
            repairs = [r for r, s in steps if s is not None]
    return [results[job.job_id] for job in jobs]


def _short_for_its_audio(job: DecodeJob, result: DecodeResult) -> bool:
    return (
        job.kind is not JobKind.PARTIAL
        and bool(result.tokens)
        and job.own_s >= EARLY_STOP_MIN_AUDIO_S
        and len(result.text) < EARLY_STOP_CHARS_PER_S * job.own_s
    )


def _words(alignment: list[AlignedWord]) -> tuple[Word, ...]:
    return tuple(
        Word(a["word"], round(float(a["start"]), 3), round(float(a["end"]), 3), round(float(a["probability"]), 4))
        for a in alignment
        if a["word"].strip()
    )


def _derived_job(job: DecodeJob, audio: np.ndarray, prompt_text: str, language: str) -> DecodeJob:
    """A second decode on behalf of ``job`` (its kind, owner and options, in the language it was decoded in;
    words are aligned afterwards)."""
    return DecodeJob(
        owner=job.owner,
        kind=job.kind,
        audio=audio,
        options=replace(job.options, word_timestamps=False, language=language),
        prompt_text=prompt_text,
    )


def _join_continuation(text: str, rest: str) -> str:
    """``text`` then ``rest``, without a word said at the cut twice ("fair. Fair. Nay, nay")."""
    head, tail = text.split(), rest.split()
    if head and tail and word_key(head[-1]) and word_key(head[-1]) == word_key(tail[0]):
        tail = tail[1:]
    return " ".join(head + tail)
