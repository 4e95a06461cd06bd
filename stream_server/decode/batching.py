"""Batching geometry: the encoder window an item gets, how its rolling prompt is cut, and which items share a
model call. Pure apart from the tokenizer the backend passes in; the scheduler budgets with the same window.

An item's window and prompt depend on its own audio and text only, never on its batch-mates, so the text of a
final does not depend on how busy the server is (see docs/decisions.md#trimmed-windows).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from .types import SAMPLE_RATE, DecodeJob

FULL_WINDOW_FRAMES = 3000  # Whisper's 30 s window, in 10 ms mel frames
FRAMES_PER_SECOND = 100

# CTranslate2 requires <|startoftranscript|> at the same position in every prompt of a generate() call, so the
# previous-text tokens of one call must have one length. Each item's rolling text is cut (oldest tokens first)
# to the largest of these lengths it reaches; left-padding instead ruins accuracy (docs/decisions.md#prompt-buckets).
# The user's own prompt is never cut (over Whisper's limit, its start goes, as in Whisper).
PROMPT_BUCKETS = (0, 8, 16, 32, 64, 128)
MAX_PREVIOUS_TOKENS = 223  # Whisper's n_text_ctx // 2 - 1


@dataclass(frozen=True)
class WindowPolicy:
    """How many mel frames the encoder sees for audio of a given length: the audio plus ``margin_s`` of
    silence (a window barely longer than the speech loses final words), at least ``min_window_s``, rounded up
    to ``step_s``; or always 30 s with ``full_window``. Built by ``Settings.window_policy()``."""

    min_window_s: float
    margin_s: float
    step_s: float
    full_window: bool

    def frames_for(self, n_samples: int) -> int:
        if self.full_window:
            return FULL_WINDOW_FRAMES
        seconds = max(self.min_window_s, n_samples / SAMPLE_RATE + self.margin_s)
        seconds = math.ceil(seconds / self.step_s) * self.step_s
        return min(FULL_WINDOW_FRAMES, int(round(seconds * FRAMES_PER_SECOND)))

    def cost_s(self, job: DecodeJob) -> float:
        """Seconds of audio the encoder works on for ``job`` (its audio and the margin): the scheduler's budget."""
        return job.duration_s + self.margin_s

    def fits(self, job: DecodeJob) -> bool:
        """Whether ``job``'s audio and margin fit one 30 s window (a context that does not is dropped)."""
        return job.duration_s + self.margin_s <= FULL_WINDOW_FRAMES / FRAMES_PER_SECOND


def cut_prompt(initial: list[int], previous: list[int]) -> list[int]:
    """The user's prompt tokens ``initial``, whole (over Whisper's limit, its last tokens: those nearest the
    audio, as Whisper keeps them), then the newest of the rolling ``previous`` tokens, cut to a ``PROMPT_BUCKETS``
    length."""
    initial = initial[-MAX_PREVIOUS_TOKENS:]
    room = min(len(previous), MAX_PREVIOUS_TOKENS - len(initial))
    length = max(b for b in PROMPT_BUCKETS if b <= room)
    return initial + previous[len(previous) - length :]


GroupKey = tuple[int, tuple[float, ...], bool, int, int]


def group(
    jobs: list[DecodeJob], window: WindowPolicy, previous_tokens: Callable[[DecodeJob], list[int]]
) -> list[list[tuple[DecodeJob, list[int]]]]:
    """Jobs that share one encode and one generate, in order of first arrival: same way of generating (beam,
    temperatures, word timestamps), prompt length and encoder window; each with its previous-text tokens.

    Task and language are not part of the key: they are tokens of each item's own prompt, of one length for
    all, so items of different languages and tasks share a call whenever their geometry matches."""
    groups: dict[GroupKey, list[tuple[DecodeJob, list[int]]]] = defaultdict(list)
    for job in jobs:
        o = job.options
        previous = previous_tokens(job)
        key = (o.beam_size, o.temperatures, o.word_timestamps, len(previous), window.frames_for(len(job.audio)))
        groups[key].append((job, previous))
    return list(groups.values())
