"""The asyncio driver: wake -> ``scheduler.next_batch()`` -> a model thread -> resolve futures.

The event loop never runs the model: model calls run in named worker threads ("whisper-model"), so websocket
intake and HTTP keep flowing while a batch decodes, and new work queues up to form the next batch. Everything
shared with those threads is handed over as arguments and return values. The engine sees every model call: a
batch's parts (``DecodeBackend.split``) and each repair step (``repair.py``) run as calls of their own.

With a backend holding several model replicas (``DecodeBackend.workers``, ``--model-workers``) as many batches
run at once, each driven by a loop of its own on the one event loop; the scheduler, the futures and the repairs stay
on that event loop, so nothing but the backend sees more than one thread (see docs/decisions.md#model-workers).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from ..errors import DecodeFailed, Overloaded, ShuttingDown
from .backend import AlignRequest, DecodeBackend
from .final_policy import FinalPolicy, FinalTier, apply, offers_choice
from .repair import Redecode, Repair
from .scheduler import BatchScheduler
from .types import BatchStats, DecodeJob, DecodeResult, DecodeTiming, JobKind

log = logging.getLogger(__name__)

# alignment calls run for the repairs of the batch a loop is running (each loop is a task: a context of its own)
_repair_calls: contextvars.ContextVar[list[int]] = contextvars.ContextVar("repair_calls")


class Superseded(Exception):
    """A newer partial of the same utterance (or its final) replaced this queued job before it ran."""


@dataclass(frozen=True)
class BatchReport:
    """Passed to observers (metrics) after each batch."""

    jobs: tuple[DecodeJob, ...]
    queue_wait_s: tuple[float, ...]
    run_s: float
    failed: bool
    tiers: Counter[FinalTier] = field(default_factory=Counter)  # finals that offered a choice, by tier chosen
    repair_calls: int = 0  # alignment calls run for repairs (their re-decodes are jobs of a batch)


BatchObserver = Callable[[BatchReport], None]


class DecodeEngine:
    """Implements ``interface.Decoder`` in one process. ``start``/``stop`` on the event loop that submits."""

    def __init__(self, backend: DecodeBackend, scheduler: BatchScheduler, final_policy: FinalPolicy) -> None:
        if backend.workers < 1:
            raise ValueError("a backend needs at least one model worker")
        self.backend = backend
        self.workers = backend.workers
        self.scheduler = scheduler
        self.final_policy = final_policy
        self.max_wait_s = scheduler.config.max_wait_s
        self.max_queue = scheduler.config.max_queue
        self.observers: list[BatchObserver] = []
        self.last_batch_at = time.monotonic()
        self._futures: dict[int, asyncio.Future[DecodeResult]] = {}
        self._parents: dict[int, Repair] = {}  # a repair's re-decode job id -> the repair waiting for it
        self._call_started: dict[int, float] = {}  # job id -> when its first model call started
        self._aligns: deque[list[tuple[Repair, AlignRequest]]] = deque()  # alignments a waiting final put off
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="whisper-model")
        self._stopping = False
        self._running = 0  # batches being decoded

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    @property
    def is_multilingual(self) -> bool:
        return self.backend.is_multilingual

    @property
    def alive(self) -> bool:
        """Started and not stopped: ready to take jobs (``/readyz``)."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    @property
    def busy(self) -> bool:
        """A batch is being decoded."""
        return self._running > 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name=f"decode-engine-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        """Finish queued work, then stop the loops and the model threads."""
        self._stopping = True
        self._wake.set()
        await asyncio.gather(*self._tasks)
        self._executor.shutdown(wait=True)

    def submit(self, job: DecodeJob) -> asyncio.Future[DecodeResult]:
        """Queue ``job``; the future resolves with its result, or raises ``Superseded``/``DecodeFailed``."""
        if self._stopping and self._tasks and all(task.done() for task in self._tasks):
            raise ShuttingDown("the decode engine has stopped")
        if self.scheduler.queue_depth >= self.max_queue:
            raise Overloaded(f"decode queue is full ({self.max_queue} jobs); retry later")
        job = replace(job, enqueued_at=time.monotonic()) if job.enqueued_at == 0.0 else job
        if job.kind is JobKind.FINAL:
            self.final_policy.load.final_arrived(job.enqueued_at)
        future: asyncio.Future[DecodeResult] = asyncio.get_running_loop().create_future()
        self._futures[job.job_id] = future
        self._supersede(self.scheduler.add(job))
        self._wake.set()
        return future

    def cancel_owner(self, owner: str) -> int:
        dropped = self.scheduler.cancel(owner)
        for job in dropped:
            self._cancel(job)
        for repair in [r for r in self._parents.values() if r.job.owner == owner]:
            self._cancel(repair.job)  # its re-decode is running or queued; its result will find nobody
        self._aligns = deque([(r, a) for r, a in call if r.job.owner != owner] for call in self._aligns)
        return len(dropped)

    def stats(self) -> BatchStats:
        return self.scheduler.stats()

    async def _run(self) -> None:
        while True:
            if self._aligns and not self.scheduler.finals_waiting:
                await self._align(self._aligns.popleft())
                continue
            if self.scheduler.queue_depth == 0:
                if self._stopping and not self._running:
                    self._wake.set()  # the other loops stop too
                    return
                self._wake.clear()
                await self._wake.wait()
                if self.max_wait_s > 0:
                    await asyncio.sleep(self.max_wait_s)
                continue
            batch = self.scheduler.next_batch()
            if not batch:
                continue
            try:
                await self._run_batch(batch)
            except Exception as exc:  # a fault in one batch's handling fails its jobs, never the loop itself
                log.exception("a batch of %d job(s) failed outside the model", len(batch))
                for job in batch:
                    self._fail(job, DecodeFailed(f"decoding failed: {exc}"))

    async def _run_batch(self, batch: list[DecodeJob]) -> None:
        """Choose each final's tier, run ``batch`` (``_decode``) and report it to the observers."""
        started = time.monotonic()
        view = self.scheduler.view(len(batch))
        tiers: Counter[FinalTier] = Counter()
        for index, job in enumerate(batch):
            if offers_choice(job):
                tier = self.final_policy.choose(job, started, view)
                tiers[tier] += 1
                batch[index] = apply(job, tier)
        self._running += 1
        repair_calls = [0]
        _repair_calls.set(repair_calls)
        try:
            failed, ran = await self._decode(batch)
        finally:
            self._running -= 1
            self.last_batch_at = time.monotonic()
            if self._stopping:
                self._wake.set()  # a loop that found nothing queued but this batch running may stop now
        waits = tuple(started - j.enqueued_at for j in ran)
        report = BatchReport(tuple(ran), waits, time.monotonic() - started, failed, tiers, repair_calls[0])
        for observer in self.observers:
            try:
                observer(report)
            except Exception:
                log.exception("batch observer failed")

    async def _decode(self, batch: list[DecodeJob]) -> tuple[bool, list[DecodeJob]]:
        """Run ``batch`` one model call at a time (``DecodeBackend.split``), delivering each call's results as
        soon as it returns, so a final whose encoder window differs from its batch-mates' does not wait for
        theirs; once a final is queued, the calls of partials and uploads not yet run go back to the queue
        (scheduler rule 5). A call that raises fails its own jobs only. Returns whether any call failed, and the
        jobs that ran."""
        loop = asyncio.get_running_loop()
        failed = False
        ran: list[DecodeJob] = []
        try:  # on the model thread too: splitting tokenizes prompts, which the event loop need not do
            parts = await loop.run_in_executor(self._executor, self.backend.split, batch)
        except Exception:  # a backend that cannot split runs the batch as one call
            log.exception("splitting a batch of %d failed", len(batch))
            parts = [batch]
        for index, part in enumerate(parts):
            if index and self.scheduler.finals_waiting and not any(j.kind is JobKind.FINAL for j in part):
                self._put_back([job for rest in parts[index:] for job in rest])
                break
            ran.extend(part)
            call_started = time.monotonic()
            for job in part:
                self._call_started.setdefault(job.job_id, call_started)
            try:
                results = await loop.run_in_executor(self._executor, self.backend.decode_batch, part)
                if any(offers_choice(job) for job in part):
                    self.final_policy.load.call_took(time.monotonic() - call_started)
                if len(results) != len(part):
                    raise RuntimeError(f"backend returned {len(results)} results for {len(part)} jobs")
            except Exception as exc:
                log.exception("decode of %d job(s) failed", len(part))
                failed = True
                for job in part:
                    self._fail(job, DecodeFailed(f"decoding failed: {exc}"))
                continue
            await self._advance([Repair(job, result) for job, result in zip(part, results)])
        return failed, ran

    async def _advance(self, repairs: list[Repair]) -> None:
        """Take each repair to its next step: deliver what is done, queue re-decodes (at the front: their
        callers have waited since their jobs were queued), and run the alignments as one model call, now, or
        once no final waits unless one of them is for a final."""
        aligns: list[tuple[Repair, AlignRequest]] = []
        for repair in repairs:
            try:
                step = repair.plan()
                if step is None:
                    await self._deliver(repair.job, repair.result)
                elif isinstance(step, Redecode):
                    self._parents[step.job.job_id] = repair
                    self.scheduler.add_first(replace(step.job, enqueued_at=time.monotonic()))
                    self._wake.set()
                else:
                    aligns.append((repair, step))
            except Exception as exc:  # one job's repair going wrong must not end the loop every session needs
                log.exception("repairing the result of job %d failed", repair.job.job_id)
                self._fail(repair.job, DecodeFailed(f"decoding failed: {exc}"))
        if not aligns:
            return
        if self.scheduler.finals_waiting and not any(r.job.kind is JobKind.FINAL for r, _ in aligns):
            self._aligns.append(aligns)
            self._wake.set()
        else:
            await self._align(aligns)

    async def _align(self, aligns: list[tuple[Repair, AlignRequest]]) -> None:
        aligns = [(r, a) for r, a in aligns if self._waited_for(r.job)]
        if not aligns:
            return
        counter = _repair_calls.get(None)
        if counter is not None:
            counter[0] += 1
        try:
            loop = asyncio.get_running_loop()
            outcomes = await loop.run_in_executor(self._executor, self.backend.align, [a for _, a in aligns])
            if len(outcomes) != len(aligns):
                raise RuntimeError(f"backend returned {len(outcomes)} alignments for {len(aligns)} requests")
        except Exception as exc:
            log.exception("alignment of %d result(s) failed", len(aligns))
            for repair, _ in aligns:
                self._fail(repair.job, DecodeFailed(f"word alignment failed: {exc}"))
            return
        merged = []
        for (repair, _), words in zip(aligns, outcomes):
            try:
                repair.merge(words, self.backend)
            except Exception as exc:
                log.exception("merging the word alignment of job %d failed", repair.job.job_id)
                self._fail(repair.job, DecodeFailed(f"word alignment failed: {exc}"))
            else:
                merged.append(repair)
        await self._advance(merged)

    async def _deliver(self, job: DecodeJob, result: DecodeResult) -> None:
        now = time.monotonic()
        started = self._call_started.pop(job.job_id, now)
        parent = self._parents.pop(job.job_id, None)
        if parent is not None:  # a repair's re-decode: its parent goes on
            try:
                parent.merge(result, self.backend)
            except Exception as exc:
                log.exception("merging the re-decode of job %d failed", parent.job.job_id)
                self._fail(parent.job, DecodeFailed(f"decoding failed: {exc}"))
                return
            await self._advance([parent])
            return
        future = self._futures.pop(job.job_id, None)
        if future is not None and not future.done():
            future.set_result(replace(result, timing=DecodeTiming(job.enqueued_at or started, started, now)))

    def _waited_for(self, job: DecodeJob) -> bool:
        """Whether somebody still waits for ``job``'s result (its caller, or the repair it is a step of)."""
        parent = self._parents.get(job.job_id)
        if parent is not None:
            return self._waited_for(parent.job)
        future = self._futures.get(job.job_id)
        return future is not None and not future.done()

    def _put_back(self, jobs: list[DecodeJob]) -> None:
        """Hand jobs not yet run back to the scheduler so a queued final goes first (scheduler rule 5). A job
        whose caller stopped waiting is dropped."""
        live = []
        for job in jobs:
            if self._waited_for(job):
                live.append(job)
            else:
                self._futures.pop(job.job_id, None)
                self._parents.pop(job.job_id, None)
        self._supersede(self.scheduler.put_back(live))
        self._wake.set()

    def _supersede(self, jobs: list[DecodeJob]) -> None:
        for job in jobs:
            self._fail(job, Superseded(f"job {job.job_id} superseded"))

    def _cancel(self, job: DecodeJob) -> None:
        self._call_started.pop(job.job_id, None)
        parent = self._parents.pop(job.job_id, None)
        if parent is not None:
            self._cancel(parent.job)
        future = self._futures.pop(job.job_id, None)
        if future is not None and not future.done():
            future.cancel()

    def _fail(self, job: DecodeJob, exc: Exception) -> None:
        """Fail ``job``'s caller (for a repair's re-decode: the caller of the job it repairs)."""
        self._call_started.pop(job.job_id, None)
        parent = self._parents.pop(job.job_id, None)
        if parent is not None:
            self._fail(parent.job, exc)
        future = self._futures.pop(job.job_id, None)
        if future is not None and not future.done():
            future.set_exception(exc)
            future.exception()  # mark retrieved: a caller that went away must not log a warning
