"""Batching policy: which queued jobs run next. Synchronous and clock-free, like vLLM's scheduler; the
asyncio driver in ``engine.py`` decides when to ask, the backend decides how to run a batch.

Rules, in order:
1. Finals first, oldest first: each ends somebody's wait for the text of an utterance that is over.
2. A batch with finals takes nothing else. A partial in the finals' model call (the backend makes one call per
   encoder window) makes that call longer; in a call before theirs, it makes them wait; after theirs, it gains
   nothing over the next batch (see docs/decisions.md#finals-alone).
3. Batches without finals share between offline (HTTP upload) chunks and streaming partials: while both are
   queued, the two kinds take turns filling a batch first, and offline chunks get at least ``offline_share``
   of each batch. A one-hour upload therefore never starves live streams, and live streams never stall an
   upload (without the turns, the audio budget of rule 6 would keep a 25 s upload chunk out of every batch
   that already had a partial).
4. One queued partial per utterance: a newer partial replaces the queued one in place (keeping its place in
   line), and a final drops its utterance's queued partial. A final still queued when a newer job of its
   utterance arrives was speculative (``session/machine.py``) and is moot: the speaker went on (a partial, or
   a speculation at a later pause) or the end came elsewhere (the real final); it is dropped. Under load this
   matters: about 40% of speculative finals are overtaken by speech, and a final costs the most of all jobs.
   Replaced jobs are returned to the caller, which resolves their futures as superseded. ``cancel(owner)``
   drops everything queued for a closed session or an abandoned request.
5. A final never waits behind more than one model call of partials or uploads: the engine runs a batch one call
   at a time and, once a final is queued, hands the calls not yet run back with ``put_back`` (at the front of
   their queues, their waiting time kept; a partial replaced meanwhile counts as superseded).
6. A batch's cost is bounded, not only its size: the encoder's work grows with the seconds of audio it sees, and
   a final that arrives while a batch runs waits for that batch. ``max_batch_audio_s`` caps the audio (plus the
   ``WindowPolicy``'s margin) of a batch of partials and uploads (its first item always runs), so a batch of many long
   partials cannot hold the next final back; the partials left out are superseded by fresher ones meanwhile,
   which is how partial cadence degrades gracefully under load. Finals are never held back by the cap.
7. Follow-up work of a job that already ran (``repair.py``: a retry, the rest of an early stop) goes to the front
   of its kind's queue (``add_first``): its caller has waited since the job was queued.
8. Within a kind, owners take turns (a job each, in order of their oldest job): a connection with many channels
   cannot fill a batch while other connections wait. With one job per owner this is queue order.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import zip_longest

from .batching import WindowPolicy
from .final_policy import QueueView
from .types import BatchStats, DecodeJob, JobKind

OFFLINE_SHARE = 0.25  # rule 3: the least share of a shared batch that upload chunks get


@dataclass(frozen=True)
class SchedulerConfig:
    """Built by ``Settings.scheduler_config(device)``; ``max_wait_s`` and ``max_queue`` are the engine's."""

    max_batch_size: int  # most items decoded in one model call
    max_batch_audio_s: float  # rule 6's cap on partials and uploads (0: no cap)
    max_wait_s: float  # extra wait to fill a batch when the model is idle
    max_queue: int  # queued jobs beyond which ``submit`` refuses new work
    window: WindowPolicy  # the backend's encoder windows: what an item costs
    offline_share: float = OFFLINE_SHARE


class BatchScheduler:
    def __init__(self, config: SchedulerConfig) -> None:
        if config.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.config = config
        self.max_batch_size = config.max_batch_size
        self.max_batch_audio_s = config.max_batch_audio_s
        self.offline_slots = max(1, int(config.max_batch_size * config.offline_share))
        self._finals: deque[DecodeJob] = deque()
        self._partials: OrderedDict[tuple[str, int, int], DecodeJob] = OrderedDict()
        self._offline: deque[DecodeJob] = deque()
        self._uploads_turn = False  # rule 3: whether uploads fill the next shared batch first
        self._batches = 0
        self._items = 0
        self._max_seen = 0
        self._max_owners = 0
        self._superseded = 0
        self._histogram: Counter[int] = Counter()

    @property
    def queue_depth(self) -> int:
        return len(self._finals) + len(self._partials) + len(self._offline)

    def add(self, job: DecodeJob) -> list[DecodeJob]:
        """Queue ``job``; returns the queued jobs it supersedes (already removed)."""
        superseded: list[DecodeJob] = []
        if job.stream_key is not None and job.kind is not JobKind.OFFLINE:
            moot = [f for f in self._finals if f.stream_key == job.stream_key]
            for final in moot:
                self._finals.remove(final)
            superseded.extend(moot)
        if job.kind is JobKind.FINAL:
            if job.stream_key is not None and job.stream_key in self._partials:
                superseded.append(self._partials.pop(job.stream_key))
            self._finals.append(job)
        elif job.kind is JobKind.PARTIAL:
            if job.stream_key is None:
                raise ValueError("a partial needs a stream_key")
            old = self._partials.get(job.stream_key)
            if old is not None:
                superseded.append(old)
            self._partials[job.stream_key] = job
        else:
            self._offline.append(job)
        self._superseded += len(superseded)
        return superseded

    @property
    def partials_waiting(self) -> int:
        """Utterances with a partial queued: about how many speakers the server is behind on."""
        return len(self._partials)

    @property
    def finals_waiting(self) -> bool:
        return bool(self._finals)

    def view(self, batch_size: int) -> QueueView:
        """The queue as the final policy sees it, for a batch of ``batch_size`` just taken."""
        return QueueView(batch_size, self.finals_waiting, self.partials_waiting, self.max_batch_size)

    def add_first(self, job: DecodeJob) -> None:
        """Queue ``job`` ahead of its kind's queue: follow-up work (``repair.py``) of a job that already ran."""
        if job.kind is JobKind.FINAL:
            self._finals.appendleft(job)
        elif job.kind is JobKind.OFFLINE:
            self._offline.appendleft(job)
        else:
            raise ValueError("partials are not repaired")

    def put_back(self, jobs: list[DecodeJob]) -> list[DecodeJob]:
        """Requeue jobs of a batch that were not run, ahead of what came in meanwhile (rule 5); returns the
        partials that a newer partial or the final of their utterance replaced while they were out (dropped)."""
        superseded: list[DecodeJob] = []
        finals_of = {f.stream_key for f in self._finals}
        for job in reversed(jobs):
            if job.kind is JobKind.FINAL:
                self._finals.appendleft(job)
            elif job.kind is JobKind.PARTIAL:
                assert job.stream_key is not None
                if job.stream_key in self._partials or job.stream_key in finals_of:
                    superseded.append(job)
                    continue
                self._partials[job.stream_key] = job
                self._partials.move_to_end(job.stream_key, last=False)
            else:
                self._offline.appendleft(job)
        self._items -= len(jobs)  # counted in the batch that runs them, if one does
        self._superseded += len(superseded)
        return superseded

    def cancel(self, owner: str) -> list[DecodeJob]:
        """Remove and return every queued job of ``owner``."""
        dropped = [j for j in self._finals if j.owner == owner]
        dropped += [j for j in self._partials.values() if j.owner == owner]
        dropped += [j for j in self._offline if j.owner == owner]
        if dropped:
            self._finals = deque(j for j in self._finals if j.owner != owner)
            self._partials = OrderedDict((k, j) for k, j in self._partials.items() if j.owner != owner)
            self._offline = deque(j for j in self._offline if j.owner != owner)
        return dropped

    def next_batch(self) -> list[DecodeJob]:
        """Remove and return the next batch (empty when nothing is queued)."""
        size = self.max_batch_size
        if self._finals:
            taken = {job.job_id for job in _round_robin(self._finals)[:size]}
            batch = [job for job in self._finals if job.job_id in taken]  # in queue order
            self._finals = deque(job for job in self._finals if job.job_id not in taken)
        else:
            batch = self._partials_and_uploads(size)
        if batch:
            self._record(batch)
        return batch

    def _partials_and_uploads(self, size: int) -> list[DecodeJob]:
        batch: list[DecodeJob] = []
        budget = _Budget(self.max_batch_audio_s, self.config.window)
        uploads_first = self._uploads_turn or not self._partials
        if self._partials and self._offline:
            self._uploads_turn = not self._uploads_turn
        share = min(self.offline_slots, len(self._offline))
        if uploads_first:
            self._take_uploads(batch, budget, share)
        partials_up_to = size if uploads_first else size - share  # the uploads' share comes after them
        for job in _round_robin(self._partials.values()):
            if len(batch) >= partials_up_to or not budget.admits(job):
                break
            assert job.stream_key is not None
            batch.append(self._partials.pop(job.stream_key))
        self._take_uploads(batch, budget, size - len(batch))
        return batch

    def _take_uploads(self, batch: list[DecodeJob], budget: _Budget, count: int) -> None:
        for _ in range(count):
            if not self._offline or not budget.admits(self._offline[0]):
                return
            batch.append(self._offline.popleft())

    def _record(self, batch: list[DecodeJob]) -> None:
        self._batches += 1
        self._items += len(batch)
        self._max_seen = max(self._max_seen, len(batch))
        self._max_owners = max(self._max_owners, len({j.owner for j in batch}))
        self._histogram[len(batch)] += 1

    def stats(self) -> BatchStats:
        return BatchStats(
            batches=self._batches,
            items=self._items,
            max_batch_size_seen=self._max_seen,
            max_owners_in_batch=self._max_owners,
            queue_depth=self.queue_depth,
            superseded_partials=self._superseded,
            batch_size_histogram=dict(sorted(self._histogram.items())),
        )


def _round_robin(jobs: Iterable[DecodeJob]) -> list[DecodeJob]:
    """``jobs`` one per owner in turn (owners in order of their first job, each owner's jobs in queue order), so
    that an owner with many channels takes no more than its share of a batch while others wait (rule 8)."""
    by_owner: dict[str, list[DecodeJob]] = {}
    for job in jobs:
        by_owner.setdefault(job.owner, []).append(job)
    if len(by_owner) < 2:
        return [job for owned in by_owner.values() for job in owned]
    turns = zip_longest(*by_owner.values())
    return [job for turn in turns for job in turn if job is not None]


class _Budget:
    """Audio seconds still allowed in a batch; the first item is always admitted so work always progresses."""

    def __init__(self, limit_s: float, window: WindowPolicy) -> None:
        self.limit_s = limit_s
        self.window = window
        self.used_s = 0.0
        self.empty = True

    def admits(self, job: DecodeJob) -> bool:
        cost = self.window.cost_s(job)
        if self.limit_s > 0 and not self.empty and self.used_s + cost > self.limit_s:
            return False
        self.used_s += cost
        self.empty = False
        return True
