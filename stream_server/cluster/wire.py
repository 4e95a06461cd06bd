"""What crosses the Ray hop between an ingress replica and a decoder replica: jobs with 16-bit audio, outcomes.

Audio travels as int16 (half of float32; exact for audio that arrived as 16-bit PCM, which the session's
history also keeps as int16). Ray serializes numpy arrays out of band and moves large ones through its object
store. Job ids are per ingress process, so a decoder replica gives each job a local id and hands results back
under the caller's id. Pure: no Ray import, tested without a cluster.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from ..decode.types import DecodeJob, DecodeResult, JobKind

_NO_AUDIO = np.zeros(0, np.float32)
PCM_SCALE = 32768.0


@dataclass(frozen=True)
class WireJob:
    job: DecodeJob  # everything but the audio (``audio`` is empty)
    pcm: np.ndarray  # int16 mono 16 kHz

    @classmethod
    def pack(cls, job: DecodeJob) -> WireJob:
        pcm = np.clip(np.rint(job.audio * PCM_SCALE), -32768, 32767).astype(np.int16)
        # the ingress clock means nothing to the decoder: it stamps the job when it queues it
        return cls(replace(job, audio=_NO_AUDIO, enqueued_at=0.0), pcm)

    def unpack(self, local_job_id: int) -> DecodeJob:
        audio = self.pcm.astype(np.float32) / PCM_SCALE
        return replace(self.job, audio=audio, job_id=local_job_id)

    @property
    def nbytes(self) -> int:
        return int(self.pcm.nbytes)


class ArrivalOrder:
    """Which jobs reach a decoder replica after a newer job of their utterance (by the caller's job ids, which
    follow the session's order): those are superseded on arrival, as one process would have superseded them
    in its queue, instead of making the newer job look moot (scheduler rule 4). Remembers the newest job of the
    ``kept`` utterances seen last."""

    def __init__(self, kept: int = 65536) -> None:
        self.kept = kept
        self._newest: OrderedDict[tuple[str, int, int], int] = OrderedDict()  # stream_key -> newest caller job id

    def overtaken(self, job: DecodeJob) -> bool:
        key = job.stream_key
        if key is None or job.kind is JobKind.OFFLINE:
            return False
        if job.job_id < self._newest.get(key, 0):
            return True
        self._newest[key] = job.job_id
        self._newest.move_to_end(key)
        if len(self._newest) > self.kept:
            self._newest.popitem(last=False)
        return False


class OwnerTable:
    """The owners (sessions, uploads) placed on a decoder replica: from their first job until ``release`` (the
    ingress sends it when the owner is done), or ``forget_after_s`` without a job (an ingress that died never
    releases). A job of an owner released here is refused: it was sent before the release and nobody waits for
    it. Remembers the last ``kept`` released owners."""

    def __init__(self, forget_after_s: float = 3600.0, kept: int = 65536) -> None:
        self.forget_after_s = forget_after_s
        self.kept = kept
        self._seen: OrderedDict[str, float] = OrderedDict()  # owner -> its last job (monotonic s), oldest first
        self._released: OrderedDict[str, None] = OrderedDict()

    def arrived(self, owner: str, now: float) -> bool:
        """A job of ``owner`` arrived at ``now``; False when the owner was already released."""
        if owner in self._released:
            return False
        self._seen[owner] = now
        self._seen.move_to_end(owner)
        while self._seen and now - next(iter(self._seen.values())) > self.forget_after_s:
            self._seen.popitem(last=False)
        return True

    def release(self, owner: str) -> None:
        self._seen.pop(owner, None)
        self._released[owner] = None
        if len(self._released) > self.kept:
            self._released.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True)
class WireOutcome:
    """One of: a result (under the caller's job id), superseded (a newer job of the utterance replaced it), or
    an error with its stable code."""

    result: DecodeResult | None = None
    superseded: bool = False
    error_code: str = ""
    error_message: str = ""
    replica_s: float = 0.0  # time the job spent in the decoder replica (queue and model): the rest is the hop

    @classmethod
    def of(cls, caller_job_id: int, result: DecodeResult, replica_s: float) -> WireOutcome:
        return cls(result=replace(result, job_id=caller_job_id), replica_s=replica_s)


@dataclass(frozen=True)
class DecoderInfo:
    model_id: str
    is_multilingual: bool
    device: str


@dataclass(frozen=True)
class DecoderLoad:
    """One decoder replica's load, for routing and ``/v1/status``."""

    replica: str
    queue_depth: int
    owners: int  # sessions and uploads placed on it (sent it work) and not released (``OwnerTable``)
    busy: bool
    batches: int
    items: int
