"""The decoder tier: one model, its batching scheduler and engine per replica (one GPU, or a set of CPU cores).

Jobs arrive from every ingress replica through ``decode`` and meet in this replica's batches, so the batching that
makes one process efficient holds across the cluster. Each call waits for its job's result on the replica's event
loop (the engine runs the model in its own thread), so Serve's count of ongoing requests on a replica is its queue
depth plus the batch running: that is what decoder autoscaling targets.

Calls of one session can arrive out of order (several wait for a replica during a redeploy or a scale-down, and
Serve routes them in no set order; a failover re-sends one later). The scheduler's rules assume the session's
order, in which a newer job of an utterance replaces or makes moot an older one still queued; so a job that
arrives after a newer job of its utterance is answered superseded at once, as it would have been in one
process, instead of making the newer one (perhaps the utterance's adopted final) look moot.

Scale-down and redeploys drain: Serve stops routing to a leaving replica, waits (``graceful_shutdown_timeout_s``)
for its ongoing calls, which are its queued and running jobs, then calls ``__del__``, which lets the engine
finish anything left.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import replace
from typing import Any

import ray
from ray import serve

from ..config import Settings
from ..decode.engine import DecodeEngine, Superseded
from ..decode.loader import BackendConfig
from ..errors import StreamServerError
from .wire import ArrivalOrder, DecoderInfo, DecoderLoad, OwnerTable, WireJob, WireOutcome

log = logging.getLogger(__name__)


def replica_backend_config(settings: Settings) -> BackendConfig:
    """The model of this replica, its default workers and threads sized to the CPUs Ray reserved for it
    (``ClusterPlan.decoder_cpus``), not to every core of its node, which other replicas share."""
    config = settings.backend_config()
    reserved = ray.get_runtime_context().get_assigned_resources().get("CPU")  # type: ignore[no-untyped-call]
    return replace(config, cores=max(1, int(reserved))) if reserved else config


class DecoderReplica:
    """The Serve deployment class of the decoder tier (wrapped by ``serve.deployment`` in ``app.py``)."""

    def __init__(self, settings_json: str) -> None:
        from threadpoolctl import threadpool_limits

        from ..decode.loader import load_backend

        self.settings = Settings.model_validate_json(settings_json)
        self._blas = threadpool_limits(1, user_api="blas")  # as in the single process: see docs/decisions.md
        self.backend = load_backend(replica_backend_config(self.settings))
        self.engine: DecodeEngine | None = None
        self._local_ids = itertools.count(1)
        self._owners = OwnerTable()  # owners placed here and not yet released (their load, for routing)
        self._order = ArrivalOrder()
        self.replica = serve.get_replica_context().replica_id.unique_id

    def _running_engine(self) -> DecodeEngine:
        if self.engine is None:  # the engine's loop task needs the replica's running event loop
            from ..app import build_engine

            self.engine = build_engine(self.settings, self.backend)
            self.engine.start()
        return self.engine

    async def info(self) -> DecoderInfo:
        return DecoderInfo(self.backend.model_id, bool(self.backend.is_multilingual), str(self.backend.device))

    async def decode(self, wire: WireJob) -> WireOutcome:
        received = time.monotonic()
        if not self._owners.arrived(wire.job.owner, received):  # a late call of a released owner: nobody waits
            return WireOutcome(error_code="cancelled", error_message="the owner was released")
        if self._order.overtaken(wire.job):
            return WireOutcome(superseded=True)
        engine = self._running_engine()
        job = wire.unpack(next(self._local_ids))
        try:
            future = engine.submit(job)
        except StreamServerError as exc:
            return WireOutcome(error_code=exc.code, error_message=exc.message)
        try:
            result = await future
            return WireOutcome.of(wire.job.job_id, result, time.monotonic() - received)
        except Superseded:
            return WireOutcome(superseded=True)
        except asyncio.CancelledError:  # the owner was cancelled here, or the caller went away
            return WireOutcome(error_code="cancelled", error_message="decode cancelled")
        except StreamServerError as exc:
            return WireOutcome(error_code=exc.code, error_message=exc.message)

    async def cancel(self, owner: str) -> int:
        """Release ``owner`` (its session closed, its upload ended): drop its queued jobs and its place here."""
        self._owners.release(owner)
        return self._running_engine().cancel_owner(owner)

    async def load(self) -> DecoderLoad:
        engine = self._running_engine()
        stats = engine.stats()
        return DecoderLoad(self.replica, stats.queue_depth, len(self._owners), engine.busy, stats.batches, stats.items)

    def record_routing_stats(self) -> dict[str, Any]:
        """Read by ``SessionAffinityRouter`` to place new sessions on the least loaded replica."""
        depth = self.engine.scheduler.queue_depth if self.engine is not None else 0
        return {"queue_depth": depth, "owners": len(self._owners)}

    def check_health(self) -> None:
        if self.engine is not None and not self.engine.alive:
            raise RuntimeError("the decode engine stopped")

    async def __del__(self) -> None:
        if self.engine is not None:
            await self.engine.stop()
