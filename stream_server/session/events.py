"""What a ``StreamingSession`` emits. Frozen dataclasses; the transport turns them into protocol v1 JSON."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from ..decode.types import DecodeJob, Word


class DecodePurpose(enum.Enum):
    PARTIAL = "partial"
    FINAL = "final"
    # a final decoded ahead of the end (see ``finals.py``): it becomes the final if the pause ends the utterance
    SPECULATIVE = "speculative"


@dataclass(frozen=True)
class DecodeRequested:
    """Ask the decoder for ``job``; hand this request back with its outcome (``receive_decode_result``)."""

    job: DecodeJob
    channel: int
    utterance_id: int
    purpose: DecodePurpose
    sequence: int = 0  # a partial's number within its utterance (newer partials have higher numbers)

    @property
    def is_final(self) -> bool:
        return self.purpose is DecodePurpose.FINAL

    @property
    def speculative(self) -> bool:
        return self.purpose is DecodePurpose.SPECULATIVE

    @property
    def awaits_final(self) -> bool:
        """A final or speculative final: someone waits for its text (final latency is timed from here)."""
        return self.purpose is not DecodePurpose.PARTIAL


@dataclass(frozen=True)
class SpeechStarted:
    channel: int
    utterance_id: int
    start: float  # stream seconds of the first voiced frame


# Why an utterance ended: trailing silence (``endpoint``), the client's finalize/commit (``finalize``), the end
# of the stream (``close``), or the length rule (``max_length``: cut at a quiet point, no silence waited for).
EndReason = Literal["endpoint", "finalize", "close", "max_length"]


@dataclass(frozen=True)
class SpeechEnded:
    """The utterance's audio is complete (its final is being decoded). ``end``: where the speaker stopped."""

    channel: int
    utterance_id: int
    end: float
    reason: EndReason


@dataclass(frozen=True)
class Partial:
    channel: int
    utterance_id: int
    start: float
    end: float
    text: str
    stable_text: str


@dataclass(frozen=True)
class Final:
    channel: int
    utterance_id: int
    start: float
    end: float
    text: str
    language: str
    words: tuple[Word, ...] | None  # stream-time words when word timestamps were asked for, else None
    reason: EndReason = "endpoint"


@dataclass(frozen=True)
class DecodeError:
    """A decode of this session failed; the session goes on (an empty final keeps finals in order)."""

    channel: int
    utterance_id: int
    message: str


SessionEvent = DecodeRequested | SpeechStarted | SpeechEnded | Partial | Final | DecodeError
