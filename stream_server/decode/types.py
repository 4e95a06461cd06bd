"""Types that cross the boundary between sessions/HTTP and the decoding core.

A ``DecodeJob`` is immutable: the scheduler orders jobs and the backend decodes them; neither mutates one.
Audio is 16 kHz mono float32 in [-1, 1]; the job owns its array (callers must not write to it afterwards).
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

SAMPLE_RATE = 16000

Task = Literal["transcribe", "translate"]

_job_ids = itertools.count(1)


class JobKind(enum.IntEnum):
    """Priority classes, lowest value first: a final ends someone's wait, a partial only refreshes text,
    an offline (HTTP upload) chunk has nobody watching it word by word."""

    FINAL = 0
    PARTIAL = 1
    OFFLINE = 2


# faster-whisper's (and OpenAI's) temperature fallback schedule: 0 first, hotter only when a decode fails its checks.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode one item. Partials use greedy search and no fallback; finals and uploads use
    faster-whisper's temperature fallback."""

    task: Task = "transcribe"
    language: str | None = None  # None: the model's only language, or detected on multilingual models
    languages: tuple[str, ...] = ()  # where ``language`` is None: detection picks among these codes (empty: any)
    beam_size: int = 1
    temperatures: tuple[float, ...] = (0.0,)
    word_timestamps: bool = False
    initial_prompt: str | None = None  # fixed user context (names, jargon), prepended to the rolling prompt
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6


@dataclass(frozen=True)
class DecodeJob:
    """One utterance (or upload chunk) to decode.

    ``owner`` groups jobs for cancellation (a session id or an HTTP request id). ``stream_key`` names the
    utterance a partial belongs to, so a newer partial replaces a queued older one.

    Acoustic context: the first ``context_samples`` of ``audio`` may be earlier speech of the same stream whose
    final text, ``context_text``, is already settled. The backend forces that text as the start of the
    transcript and returns only what follows it: Whisper then hears the utterance the way it was trained, in
    the middle of a window whose beginning it has already transcribed.

    Context, and ``options`` where ``late_options`` is set, are what a server with time to spare spends on a
    final; ``final_policy.py`` decides what it keeps.
    """

    owner: str
    kind: JobKind
    audio: np.ndarray
    options: DecodeOptions
    prompt_text: str = ""  # previous text of this stream (rolling prompt)
    prompt_language: str | None = None  # the language of ``prompt_text`` and ``context_text`` (None: unknown)
    stream_key: tuple[str, int, int] | None = None  # (owner, channel, utterance_id)
    enqueued_at: float = 0.0  # time.monotonic() when submitted
    job_id: int = field(default_factory=lambda: next(_job_ids))
    context_samples: int = 0  # leading samples of ``audio`` that are already transcribed context
    context_text: str = ""  # their final text
    late_options: DecodeOptions | None = None  # how to decode a final that waited (None: ``options``)

    @property
    def duration_s(self) -> float:
        """Seconds the encoder hears, context included (what a decode costs)."""
        return len(self.audio) / SAMPLE_RATE

    @property
    def own_audio(self) -> np.ndarray:
        """The audio this job transcribes: ``audio`` after its context."""
        return self.audio[self.context_samples :]

    @property
    def own_s(self) -> float:
        """Seconds of audio this job transcribes (its result's text and word times cover this)."""
        return (len(self.audio) - self.context_samples) / SAMPLE_RATE

    def without_context(self) -> DecodeJob:
        """The same job on its own audio alone, with its context's text moved back into the prompt."""
        if not self.context_samples:
            return self
        prompt = f"{self.prompt_text} {self.context_text}".strip()
        return replace(self, audio=self.own_audio, prompt_text=prompt, context_samples=0, context_text="")


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from the start of the job's audio
    end: float
    probability: float


@dataclass(frozen=True)
class DecodeTiming:
    """When a job went through the engine: queued, its first model call started, its result was ready.
    ``time.monotonic()`` seconds of the engine's process (compare durations only across processes)."""

    queued_at: float
    started_at: float
    ended_at: float

    @property
    def queue_s(self) -> float:
        return max(0.0, self.started_at - self.queued_at)

    @property
    def decode_s(self) -> float:
        """From its first model call to its result (repairs included)."""
        return max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True)
class DecodeResult:
    job_id: int
    text: str
    tokens: tuple[int, ...]
    language: str
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float
    words: tuple[Word, ...] = ()
    window_s: float = 30.0  # seconds of features the encoder saw
    language_probability: float = 1.0  # the detector's probability for ``language`` (1.0: given, or the only one)
    timing: DecodeTiming | None = None  # set by the engine as it hands the result over

    def looks_hallucinated(self, options: DecodeOptions) -> bool:
        """Whisper's own tests for a bad decode, with ``options``' thresholds."""
        return (
            self.compression_ratio > options.compression_ratio_threshold
            or self.avg_logprob < options.log_prob_threshold
        )

    def looks_silent(self, options: DecodeOptions) -> bool:
        """Whisper's no-speech rule: the model thinks nothing was said and is not confident in its text."""
        return self.no_speech_prob > options.no_speech_threshold and self.avg_logprob < options.log_prob_threshold


@dataclass(frozen=True)
class BatchStats:
    """Statistics the scheduler exposes (issue 2: read by tests, /metrics and benchmarks)."""

    batches: int
    items: int
    max_batch_size_seen: int
    max_owners_in_batch: int
    queue_depth: int
    superseded_partials: int  # partials replaced by newer ones, and speculative finals overtaken by speech
    batch_size_histogram: dict[int, int]
