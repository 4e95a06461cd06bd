"""The asyncio driver: wake -> ``scheduler.next_batch()`` -> the one model thread -> resolve futures.

The event loop never runs the model: batches run in a single named worker thread ("whisper-model"), so
websocket intake and HTTP keep flowing while a batch decodes, and new work queues up to form the next
batch. Everything shared with that thread is handed over as arguments and return values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from ..errors import DecodeFailed, Overloaded, ShuttingDown
from .backend import DecodeBackend
from .scheduler import BatchScheduler
from .types import BatchStats, DecodeJob, DecodeResult, JobKind

log = logging.getLogger(__name__)

FINAL_RATE_WINDOW_S = 10.0
EXTRAS_MAX_WAIT_S = 0.3  # a final that waited longer is decoded as its economy()


class Superseded(Exception):
    """A newer partial of the same utterance (or its final) replaced this queued job before it ran."""


@dataclass(frozen=True)
class BatchReport:
    """Passed to observers (metrics) after each batch."""

    jobs: tuple[DecodeJob, ...]
    queue_wait_s: tuple[float, ...]
    run_s: float
    failed: bool
    extras_kept: int = 0  # finals decoded with their context and idle beam
    extras_context_dropped: int = 0  # ... with the idle beam but without their context (the server was busy)
    extras_dropped: int = 0  # ... as their economy(), plain and greedy (they had waited)


BatchObserver = Callable[[BatchReport], None]


class DecodeEngine:
    def __init__(
        self,
        backend: DecodeBackend,
        scheduler: BatchScheduler,
        max_wait_ms: float = 0.0,
        max_queue: int = 2048,
        extras_max_load: float = 0.5,
    ) -> None:
        self.backend = backend
        self.scheduler = scheduler
        self.max_wait_s = max_wait_ms / 1000.0
        self.extras_max_load = extras_max_load
        self._final_arrivals: deque[float] = deque()  # submit times of finals in the last FINAL_RATE_WINDOW_S
        self._extras_call_s = 0.0  # running mean time of a model call of finals with extras (0: none yet)
        self.max_queue = max_queue
        self.observers: list[BatchObserver] = []
        self.last_batch_at = time.monotonic()
        self._futures: dict[int, asyncio.Future[DecodeResult]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper-model")
        self._stopping = False
        self.busy = False

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    @property
    def is_multilingual(self) -> bool:
        return self.backend.is_multilingual

    @property
    def alive(self) -> bool:
        """Started and not stopped: ready to take jobs (``/readyz``)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="decode-engine")

    async def stop(self) -> None:
        """Finish queued work, then stop the loop and the model thread."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def submit(self, job: DecodeJob) -> asyncio.Future[DecodeResult]:
        """Queue ``job``; the future resolves with its result, or raises ``Superseded``/``DecodeFailed``."""
        if self._stopping and self._task is not None and self._task.done():
            raise ShuttingDown("the decode engine has stopped")
        if self.scheduler.queue_depth >= self.max_queue:
            raise Overloaded(f"decode queue is full ({self.max_queue} jobs); retry later")
        job = replace(job, enqueued_at=time.monotonic()) if job.enqueued_at == 0.0 else job
        if job.kind is JobKind.FINAL:
            self._final_arrivals.append(job.enqueued_at)
        future: asyncio.Future[DecodeResult] = asyncio.get_running_loop().create_future()
        self._futures[job.job_id] = future
        self._supersede(self.scheduler.add(job))
        self._wake.set()
        return future

    def cancel_owner(self, owner: str) -> int:
        dropped = self.scheduler.cancel(owner)
        for job in dropped:
            future = self._futures.pop(job.job_id, None)
            if future is not None and not future.done():
                future.cancel()
        return len(dropped)

    def stats(self) -> BatchStats:
        return self.scheduler.stats()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.scheduler.queue_depth == 0:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                if self.max_wait_s > 0:
                    await asyncio.sleep(self.max_wait_s)
            batch = self.scheduler.next_batch()
            if not batch:
                continue
            started = time.monotonic()
            batch, outcomes = self._economize(batch, started)
            self.busy = True
            try:
                failed, ran = await self._decode(loop, batch)
            finally:
                self.busy = False
                self.last_batch_at = time.monotonic()
            waits = tuple(started - j.enqueued_at for j in ran)
            report = BatchReport(
                tuple(ran),
                waits,
                time.monotonic() - started,
                failed,
                outcomes["kept"],
                outcomes["context_dropped"],
                outcomes["dropped"],
            )
            for observer in self.observers:
                try:
                    observer(report)
                except Exception:
                    log.exception("batch observer failed")

    def _economize(self, batch: list[DecodeJob], now: float) -> tuple[list[DecodeJob], Counter[str]]:
        """Acoustic context and a wider beam (``DecodeJob.economy``) are for a server with time to spare.

        - Context makes a final's encoder hear about twice the audio, and its window no longer matches other
          finals' (finals that end together no longer share a call). A final keeps it only when it runs alone, no
          other final waits, no more speakers wait for a partial than half a batch holds, and finals with extras
          would take at most ``extras_max_load`` of the model's time (``extras_load``).
        - The idle beam keeps the final's window and costs little per call on its own (a 6 s final alone: 137-161
          ms with beam 5 against 160-174 ms greedy, 2 cores). It is dropped only for a final that has already
          waited ``EXTRAS_MAX_WAIT_S``: that one is decoded as its ``economy()``, plain and greedy.

        Measured on 2 cores (tiny.en int8, quick benchmark; p95 final latency, WER at 16 / 32 streams against
        7.1% / 7.7% offline): context for every final, 1.15-1.41 s at 16; both extras for lone finals under the
        load rule, 0.97-1.16 s at 16 with no better WER there (the rate estimate lags as streams start); with
        the partial-queue rule as well, 0.61-0.65 s and 0.73-0.80 s, WER 9.4% / 9.3%; with the beam kept as
        here, 0.69 s and 0.87 s, WER 8.6% / 8.7%. At 8 streams finals keep both (WER 6.6%, offline 7.4%)."""
        while self._final_arrivals and self._final_arrivals[0] < now - FINAL_RATE_WINDOW_S:
            self._final_arrivals.popleft()
        crowded = (
            len(batch) > 1
            or self.scheduler.finals_waiting
            or self.scheduler.partials_waiting > self.scheduler.max_batch_size // 2
            or self.extras_load > self.extras_max_load
        )
        outcomes: Counter[str] = Counter()
        out = []
        for job in batch:
            if not job.has_extras:
                out.append(job)
                continue
            if now - job.enqueued_at > EXTRAS_MAX_WAIT_S:
                job, outcome = job.economy(), "dropped"
            elif crowded and job.context_samples:
                job, outcome = job.without_context(), "context_dropped"
            else:
                outcome = "kept"
            outcomes[outcome] += 1
            out.append(job)
        return out, outcomes

    @property
    def extras_load(self) -> float:
        """The share of the model's time finals would take if every one kept its extras: finals per second over
        the last ``FINAL_RATE_WINDOW_S`` times the mean time of a call of finals with extras."""
        return len(self._final_arrivals) / FINAL_RATE_WINDOW_S * self._extras_call_s

    async def _decode(self, loop: asyncio.AbstractEventLoop, batch: list[DecodeJob]) -> tuple[bool, list[DecodeJob]]:
        """Run ``batch`` one model call at a time (``DecodeBackend.split``), delivering each call's results as
        soon as it returns: a final whose encoder window differs from its batch-mates' does not wait for
        theirs (measured at 16 streams on 2 cores: batches of finals with several windows took 0.38 s, with one
        0.16 s), and once a final is queued, the calls of partials and uploads not yet run go back to the queue.
        A call that raises fails its own jobs only, never the engine. Returns whether any call failed, and the
        jobs that ran."""
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
            try:
                results = await loop.run_in_executor(self._executor, self.backend.decode_batch, part)
                if any(job.has_extras for job in part):
                    took = time.monotonic() - call_started
                    self._extras_call_s = took if not self._extras_call_s else 0.8 * self._extras_call_s + 0.2 * took
                if len(results) != len(part):
                    raise RuntimeError(f"backend returned {len(results)} results for {len(part)} jobs")
            except Exception as exc:
                log.exception("decode of %d job(s) failed", len(part))
                failed = True
                for job in part:
                    self._fail(job, DecodeFailed(f"decoding failed: {exc}"))
                continue
            for job, result in zip(part, results):
                future = self._futures.pop(job.job_id, None)
                if future is not None and not future.done():
                    future.set_result(result)
        return failed, ran

    def _put_back(self, jobs: list[DecodeJob]) -> None:
        """Hand jobs not yet run back to the scheduler so a queued final goes first (scheduler rule 5). A job
        whose caller stopped waiting is dropped."""
        live = []
        for job in jobs:
            future = self._futures.get(job.job_id)
            if future is not None and not future.done():
                live.append(job)
            else:
                self._futures.pop(job.job_id, None)
        self._supersede(self.scheduler.put_back(live))
        self._wake.set()

    def _supersede(self, jobs: list[DecodeJob]) -> None:
        for job in jobs:
            self._fail(job, Superseded(f"job {job.job_id} superseded"))

    def _fail(self, job: DecodeJob, exc: Exception) -> None:
        future = self._futures.pop(job.job_id, None)
        if future is not None and not future.done():
            future.set_exception(exc)
            future.exception()  # mark retrieved: a caller that went away must not log a warning
