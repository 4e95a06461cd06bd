"""One utterance of one channel and the states it goes through; a move its rules forbid raises
``IllegalTransition`` (a bug in the session, never a client's fault)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..decode.types import DecodeResult
from .agreement import StablePrefix
from .context import FinalContext
from .events import EndReason
from .segmenter import UtteranceEnded


class UtteranceState(enum.Enum):
    OPEN = "open"  # audio still arriving; partials
    ENDED = "ended"  # audio complete; its final waits for the finals before it
    FINALIZING = "finalizing"  # its final decode is out (or a speculative one was adopted)
    DONE = "done"  # its final was delivered
    DISCARDED = "discarded"  # dropped unended by ``clear``


_ALLOWED = {
    UtteranceState.OPEN: {UtteranceState.ENDED, UtteranceState.DISCARDED},
    UtteranceState.ENDED: {UtteranceState.FINALIZING},
    UtteranceState.FINALIZING: {UtteranceState.DONE},
    UtteranceState.DONE: set(),
    UtteranceState.DISCARDED: set(),
}


class IllegalTransition(RuntimeError):
    """An utterance was asked to move to a state its rules forbid."""


@dataclass
class Speculation:
    """A final decode asked for during a pause, for audio ``[start_sample, end_sample)``."""

    job_id: int
    start_sample: int
    end_sample: int
    context: FinalContext
    result: DecodeResult | None = None


@dataclass
class Utterance:
    utterance_id: int
    start_sample: int  # first sample of its audio (pre-roll included)
    speech_sample: int  # first voiced sample: the ``start`` clients see
    state: UtteranceState = UtteranceState.OPEN
    partial_requests: int = 0
    partial_shown: int = 0  # sequence number of the newest partial delivered
    samples_at_last_partial: int = 0
    end_sample: int = 0  # where the speaker stopped (set when it ends)
    decided_sample: int = 0  # samples of the channel seen when its end was decided
    end_reason: EndReason = "endpoint"
    ended: UtteranceEnded | None = None  # its complete audio, held until its final is asked for
    agreement: StablePrefix = field(default_factory=StablePrefix)
    speculation: Speculation | None = None

    def move(self, to: UtteranceState) -> None:
        if to not in _ALLOWED[self.state]:
            raise IllegalTransition(f"utterance {self.utterance_id}: {self.state.value} -> {to.value}")
        self.state = to
