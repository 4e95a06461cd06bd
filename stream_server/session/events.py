"""What a ``StreamingSession`` emits. Frozen dataclasses; the transport turns them into protocol v1 JSON."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from ..decode.types import DecodeJob, DecodeTiming, Word


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
    """The utterance's audio is complete (its final is being decoded). ``end``: where the speaker stopped;
    ``decided``: how much of the stream had arrived when the end was decided (both stream seconds)."""

    channel: int
    utterance_id: int
    end: float
    reason: EndReason
    decided: float = 0.0


@dataclass(frozen=True)
class Partial:
    channel: int
    utterance_id: int
    start: float
    end: float
    text: str
    stable_text: str
    language: str = ""  # as detected on this partial's audio (or locked)
    language_probability: float = 1.0


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
    probability: float = 1.0  # of ``language``: the detector's (1.0 when locked or the model's only language)
    endpointing_s: float = 0.0  # stream seconds from ``end`` to the end being decided (the wait for silence)
    decode: DecodeTiming | None = None  # its decode's way through the engine (None: failed, or not reported)


@dataclass(frozen=True)
class DecodeError:
    """A decode of this session failed; the session goes on (an empty final keeps finals in order)."""

    channel: int
    utterance_id: int
    message: str


SessionEvent = DecodeRequested | SpeechStarted | SpeechEnded | Partial | Final | DecodeError
