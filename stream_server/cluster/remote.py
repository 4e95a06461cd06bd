"""``RemoteDecoder``: the ``Decoder`` an ingress replica uses: every job goes over a Serve handle to the decoder
replica that holds its owner (``router.SessionAffinityRouter``).

Failover: a call that fails because its replica died, was drained or is unreachable is sent again; the router
places the owner on a live replica, so the job is decoded there. The session above asked for it once and gets
one outcome, so every utterance still gets exactly one final, in order (the session keeps one final in flight per
channel); a client sees a latency spike. Queued jobs lost with the replica cost nothing else: partials are
re-asked by the session's cadence, speculative finals are superseded or re-asked at the real end.

Every call is its own Serve request, sent from a fresh context rather than the websocket's (or upload's) request
context: Serve gives a call made inside a request that request's internal id, and its router indexes requests
waiting for a replica by that id, so two calls of one session waiting at once (a redeploy or scale-down leaves
no routable replica for a moment) left one of them waiting forever and the session's later finals behind it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

from ..decode.engine import Superseded
from ..decode.types import BatchStats, DecodeJob, DecodeResult
from ..errors import DecodeFailed, Overloaded, ShuttingDown, StreamServerError
from . import releases
from .wire import DecoderInfo, DecoderLoad, WireJob, WireOutcome

log = logging.getLogger(__name__)

FAILOVER_ERRORS = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
ERRORS_BY_CODE: dict[str, type[StreamServerError]] = {
    Overloaded.code: Overloaded,
    ShuttingDown.code: ShuttingDown,
}


@dataclass
class HopStats:
    """What the Ray hop costs and how often failover happened (``/v1/status``, benchmarks)."""

    jobs: int = 0
    audio_bytes: int = 0
    failovers: int = 0
    hop_s: list[float] = field(default_factory=list)  # call time minus the replica's own wait and run, last 1000


class RemoteDecoder:
    """Implements ``decode.interface.Decoder`` over a Serve ``DeploymentHandle`` to ``DecoderReplica``."""

    def __init__(self, handle: Any, info: DecoderInfo, max_attempts: int = 4, retry_backoff_s: float = 0.25):
        self._handle = handle
        self._info = info
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self._tasks: dict[str, set[asyncio.Task[None]]] = defaultdict(set)
        self._releases: set[asyncio.Task[None]] = set()
        self._placed: set[str] = set()  # owners that sent a job and are not released yet
        self._stopping = False
        self.hop = HopStats()

    @classmethod
    async def connect(cls, handle: Any) -> RemoteDecoder:
        info: DecoderInfo = await handle.info.remote()
        return cls(handle, info)

    @property
    def model_id(self) -> str:
        return self._info.model_id

    @property
    def is_multilingual(self) -> bool:
        return self._info.is_multilingual

    @property
    def device(self) -> str:
        return self._info.device

    @property
    def alive(self) -> bool:
        return not self._stopping

    @property
    def busy(self) -> bool:
        return any(self._tasks.values())

    def submit(self, job: DecodeJob) -> asyncio.Future[DecodeResult]:
        if self._stopping:
            raise ShuttingDown("the server is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[DecodeResult] = loop.create_future()
        task = contextvars.Context().run(loop.create_task, self._run(job, future), name=f"remote-job-{job.job_id}")
        self._placed.add(job.owner)
        self._tasks[job.owner].add(task)
        task.add_done_callback(lambda t: self._forget(job.owner, t))
        return future

    def _forget(self, owner: str, task: asyncio.Task[None]) -> None:
        tasks = self._tasks.get(owner)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[owner]

    async def _run(self, job: DecodeJob, future: asyncio.Future[DecodeResult]) -> None:
        try:
            await self._call(job, future)
        finally:
            if not future.done():  # cancelled with its owner: nobody may wait on it forever
                future.cancel()

    async def _call(self, job: DecodeJob, future: asyncio.Future[DecodeResult]) -> None:
        wire = WireJob.pack(job)
        self.hop.jobs += 1
        self.hop.audio_bytes += wire.nbytes
        outcome: WireOutcome | None = None
        for attempt in range(1, self.max_attempts + 1):
            sent = time.monotonic()
            try:
                outcome = await self._handle.options(multiplexed_model_id=job.owner).decode.remote(wire)
                self._record_hop(time.monotonic() - sent - outcome.replica_s)
                break
            except (*FAILOVER_ERRORS, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and asyncio.current_task() not in self._tasks.get(
                    job.owner, ()
                ):
                    raise  # cancel_owner took the task: the owner is gone
                self.hop.failovers += 1  # (a CancelledError not ours: Serve dropped the call with its replica)
                log.warning("decoder lost for job %d of %s (%r); attempt %d", job.job_id, job.owner, exc, attempt)
                await asyncio.sleep(self.retry_backoff_s * attempt)
            except Exception as exc:  # a bug or an unexpected failure: fail the job, never the session
                log.exception("remote decode of job %d failed", job.job_id)
                outcome = WireOutcome(error_code=DecodeFailed.code, error_message=f"decoding failed: {exc}")
                break
        if future.done():
            return
        if outcome is None:
            future.set_exception(DecodeFailed(f"no decoder replica answered after {self.max_attempts} attempts"))
        elif outcome.result is not None:
            future.set_result(outcome.result)
        elif outcome.superseded:
            future.set_exception(Superseded(f"job {job.job_id} superseded"))
        else:
            error = ERRORS_BY_CODE.get(outcome.error_code, DecodeFailed)
            future.set_exception(error(outcome.error_message or "decoding failed"))
        if future.done() and not future.cancelled() and future.exception() is not None:
            future.exception()  # retrieved: a caller that went away must not log a warning

    def _record_hop(self, seconds: float) -> None:
        self.hop.hop_s.append(seconds)
        if len(self.hop.hop_s) > 1000:
            del self.hop.hop_s[:500]

    def cancel_owner(self, owner: str) -> int:
        """Cancel ``owner``'s jobs and release it (its session closed, its upload ended): its decoder replica
        drops its queued jobs and stops counting it, and so does the router. An owner that never sent a job
        holds no place: nothing is sent."""
        tasks = self._tasks.pop(owner, set())
        for task in tasks:
            task.cancel()
        if owner not in self._placed:
            return len(tasks)
        self._placed.discard(owner)
        # released only once the cancel is routed: it must reach the owner's replica, and must not place it anew
        response = contextvars.Context().run(self._handle.options(multiplexed_model_id=owner).cancel.remote, owner)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop: nothing to wait on
            releases.release(owner)
            return len(tasks)
        release = loop.create_task(self._release(owner, response), name=f"release-{owner}")
        self._releases.add(release)
        release.add_done_callback(self._releases.discard)
        return len(tasks)

    @staticmethod
    async def _release(owner: str, response: Any) -> None:
        try:
            await response
        except Exception as exc:  # its replica is gone: nothing is queued there any more
            log.info("cancel of %s not answered (%s)", owner, exc)
        finally:
            releases.release(owner)

    def hop_summary(self) -> dict[str, float]:
        """Jobs sent, mean audio bytes per job, failovers, and the hop's added time per job (p50/p95, ms)."""
        hops = sorted(self.hop.hop_s)

        def pick(q: float) -> float:
            return round(1000 * hops[min(len(hops) - 1, int(q * len(hops)))], 2) if hops else 0.0

        return {
            "jobs": self.hop.jobs,
            "bytes_per_job": round(self.hop.audio_bytes / self.hop.jobs) if self.hop.jobs else 0,
            "failovers": self.hop.failovers,
            "hop_ms_p50": pick(0.5),
            "hop_ms_p95": pick(0.95),
        }

    async def loads(self) -> list[DecoderLoad]:
        """Every decoder replica's load."""
        loads: list[DecoderLoad] = await self._handle.broadcast("load").results_async()
        return loads

    async def tier_status(self) -> dict[str, Any]:
        """What ``/v1/status`` adds for a decoder tier: each replica's load and the hop's cost per job."""
        return {"decoders": [asdict(load) for load in await self.loads()], "hop": self.hop_summary()}

    def stats(self) -> BatchStats:
        """What this ingress knows without asking the decoders: jobs in flight (the decoders' own figures come
        from ``loads``)."""
        in_flight = sum(len(t) for t in self._tasks.values())
        return BatchStats(
            batches=0,
            items=self.hop.jobs,
            max_batch_size_seen=0,
            max_owners_in_batch=0,
            queue_depth=in_flight,
            superseded_partials=0,
            batch_size_histogram={},
        )

    async def stop(self) -> None:
        self._stopping = True
        deadline = time.monotonic() + 30.0
        while any(self._tasks.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
