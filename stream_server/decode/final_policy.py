"""What effort a stream final gets: its acoustic context and the final beam while the server has time to spare,
less once it is busy or the final has waited. Synchronous and clock-free; the engine passes ``now``.

Tiers, most effort first (see docs/decisions.md#final-context):

- ``FULL``: context and the final beam (``job.options``), as the session built the job.
- ``NO_CONTEXT``: the final beam on the final's own audio. Context makes the encoder hear about twice the audio
  and gives the final a window of its own (finals that end together no longer share a call), so it is kept only
  when the final runs alone, no other final waits, no more speakers wait for a partial than half a batch holds,
  and finals with context would take at most ``context_max_load`` of the model's time.
- ``LATE``: ``job.late_options`` (the late beam, greedy by default) on its own audio, for a final that waited
  longer than ``late_after_s``.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, replace

from .types import DecodeJob

RATE_WINDOW_S = 10.0  # finals per second are counted over this many seconds


class FinalTier(enum.Enum):
    FULL = "full"
    NO_CONTEXT = "no_context"
    LATE = "late"


@dataclass(frozen=True)
class FinalPolicyConfig:
    """Built by ``Settings.final_policy()``."""

    context_max_load: float  # share of the model's time finals with context may take
    late_after_s: float  # a final that waited longer than this is decoded LATE


@dataclass(frozen=True)
class QueueView:
    """What the policy needs of the scheduler's state when a batch is formed."""

    batch_size: int  # jobs in the batch being decided
    finals_waiting: bool  # finals still queued behind it
    partials_waiting: int  # utterances with a partial queued
    max_batch_size: int


class LoadEstimate:
    """The share of the model's time finals would take if every one kept its context: finals per second over
    the last ``RATE_WINDOW_S`` times the mean time of a model call of finals that offered a tier. Fed by the
    engine (``final_arrived``, ``call_took``); read with ``load(now)``."""

    def __init__(self) -> None:
        self._arrivals: deque[float] = deque()  # submit times of finals
        self.call_s = 0.0  # running mean time of a call of finals with a choice of tier (0: none yet)

    def final_arrived(self, at: float) -> None:
        self._arrivals.append(at)

    def call_took(self, seconds: float) -> None:
        self.call_s = seconds if not self.call_s else 0.8 * self.call_s + 0.2 * seconds

    def load(self, now: float) -> float:
        while self._arrivals and self._arrivals[0] < now - RATE_WINDOW_S:
            self._arrivals.popleft()
        return len(self._arrivals) / RATE_WINDOW_S * self.call_s


def offers_choice(job: DecodeJob) -> bool:
    """Whether a lower tier would decode ``job`` differently (it has context, or late options of its own)."""
    return bool(job.context_samples) or (job.late_options is not None and job.late_options != job.options)


class FinalPolicy:
    """``choose`` a tier for each job of a batch, ``apply`` it. Holds the config and the load estimate."""

    def __init__(self, config: FinalPolicyConfig) -> None:
        self.config = config
        self.load = LoadEstimate()

    def choose(self, job: DecodeJob, now: float, queue: QueueView) -> FinalTier:
        """The tier for ``job`` (``FULL`` for a job that offers no choice) at time ``now``."""
        if not offers_choice(job):
            return FinalTier.FULL
        if now - job.enqueued_at > self.config.late_after_s:
            return FinalTier.LATE
        crowded = (
            queue.batch_size > 1
            or queue.finals_waiting
            or queue.partials_waiting > queue.max_batch_size // 2
            or self.load.load(now) > self.config.context_max_load
        )
        return FinalTier.NO_CONTEXT if crowded and job.context_samples else FinalTier.FULL


def apply(job: DecodeJob, tier: FinalTier) -> DecodeJob:
    """``job`` as ``tier`` decodes it; the same ``job_id``."""
    if tier is FinalTier.FULL:
        return job
    job = job.without_context()
    if tier is FinalTier.LATE and job.late_options is not None:
        job = replace(job, options=job.late_options, late_options=None)
    return job
