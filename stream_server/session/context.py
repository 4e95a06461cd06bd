"""Acoustic context for finals: which earlier speech of the channel a final's decode also hears.

A final's decode may hear up to ``final_context_s`` of the stream before its utterance, from the start of an
earlier final on, with that final text forced as the start of its transcript (``DecodeJob.context_*``): Whisper
then hears a fragment the way it was trained, in the middle of a window whose start it has transcribed. The
finals that form the context leave the rolling prompt for that decode (their text is in the prefix instead).
See docs/decisions.md#final-context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..decode.types import SAMPLE_RATE
from .history import AudioHistory
from .policy import SessionPolicy
from .prompt import RollingPrompt

# The ring also holds the longest utterance, and time for the finals before it to come back.
HISTORY_SLACK_S = 5.0


@dataclass(frozen=True)
class FinalContext:
    """What a final is decoded with besides its own audio: the rolling prompt, and the acoustic context."""

    prompt: str
    context_start: int  # first sample of the context audio (the utterance's own start: none)
    context_text: str


class ContextSelector:
    """Chooses a final's prompt and context from one channel's rolling prompt and recent audio. Pure."""

    def __init__(self, policy: SessionPolicy, prompt: RollingPrompt) -> None:
        self.policy = policy
        self.prompt = prompt
        seconds = policy.final_context_s + policy.max_utterance_s + HISTORY_SLACK_S
        self.history = AudioHistory(seconds) if policy.final_context_s > 0 else None
        self.floor = 0  # no context reaches before this sample (audio discarded by ``clear``)

    def push(self, samples: np.ndarray) -> None:
        if self.history is not None:
            self.history.push(samples)

    def reset(self, at_sample: int) -> None:
        """No later final hears audio before ``at_sample``."""
        self.floor = at_sample

    def select(self, start: int, end: int) -> FinalContext:
        """The prompt and context for a final over samples ``[start, end)``: the context starts where the
        earliest remembered final started that lies within ``final_context_s`` before ``start``, keeps the whole
        window within ``context_window_s`` and is still held; its finals leave the prompt."""
        now_s = start / SAMPLE_RATE
        if self.history is None:
            return FinalContext(self.prompt.text(now_s), start, "")
        earliest = max(
            start - int(self.policy.final_context_s * SAMPLE_RATE),
            end - int(self.policy.context_window_s * SAMPLE_RATE),
            self.history.start,
            self.floor,
        )
        since = next((s for s in self.prompt.starts(now_s) if earliest <= round(s * SAMPLE_RATE) < start), None)
        if since is None:
            return FinalContext(self.prompt.text(now_s), start, "")
        prompt, context_text = self.prompt.split(since, now_s)
        return FinalContext(prompt, round(since * SAMPLE_RATE), context_text)

    def audio(self, context: FinalContext, start: int, audio: np.ndarray) -> np.ndarray:
        """``audio`` (samples from ``start``) with the context's audio in front of it."""
        if context.context_start >= start:
            return audio
        if self.history is None:
            raise RuntimeError("a context was selected without an audio history")
        return np.concatenate([self.history.audio(context.context_start, start), audio])
