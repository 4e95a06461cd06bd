"""Session affinity on Ray Serve's own request routing: a custom ``RequestRouter`` for the decoder tier.

Every job carries its owner (a session or an upload) as the request's ``multiplexed_model_id``. The first job of
an owner goes to the replica with the fewest owners placed on it (ties: the shortest queue), and every later job
of that owner goes to the same replica while it lives, so the scheduler's rules (one queued partial per utterance,
finals first, superseded speculation) hold exactly as in one process. A replica that dies or is drained (scale-down,
redeploy) drops out of the candidates: its owners are forgotten at once and placed again, by the same rule, on
their next job.

Every answer asks Serve to back off before it retries: a replica chosen here may not answer Serve's queue-length
probe in time (a new replica on a loaded host), and without backoff the retries spin the handle's routing loop,
starving the probes and stalling the sessions of that ingress (seen when a redeploy scaled the decoders down).

Why a router rather than Serve's model multiplexing: multiplexing prefers the replica holding an id but falls
back to others when that replica is busy or before its ids propagate, which would split a session's jobs.

The router runs in the process that owns the deployment handle (an ingress replica), beside ``RemoteDecoder``,
which calls ``releases.release`` when an owner is done (a closed session, a finished upload) so its place stops counting
as load. Accounting: an owner counts on exactly one replica, the one it is placed on, until it is released, its
replica leaves, or it is forgotten; a request of a released owner that Serve routes late (a call cancelled
with its session while it waited for a replica) is sent to the least loaded replica without placing the owner
again. Each router counts the owners of its own ingress replica; the decoders' own count of unreleased owners
(``routing_stats["owners"]``, which covers every ingress replica but lags) breaks ties before queue depth.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from . import releases

# Owners not seen for this long are forgotten even if never released; bounds the table.
FORGET_AFTER_S = 3600.0
# Released owners remembered so that a late request does not place them again; bounds that memory.
RELEASED_KEPT = 65536


class SessionAffinityRouter(RequestRouter):
    def initialize_state(self, **kwargs: object) -> None:
        self._placed: OrderedDict[str, ReplicaID] = OrderedDict()  # oldest use first
        self._seen: dict[str, float] = {}
        self._counts: Counter[ReplicaID] = Counter()
        self._live: frozenset[ReplicaID] = frozenset()
        self.released: deque[str] = deque()  # appended by ``releases.release`` (ingress loop), drained here
        self._gone: OrderedDict[str, None] = OrderedDict()  # owners released, newest last
        releases.register(self)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True
        if not candidate_replicas:
            return []
        owner = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        now = time.monotonic()
        self._forget(now)
        self._follow(candidate_replicas)
        if owner in self._placed:
            for replica in candidate_replicas:
                if replica.replica_id == self._placed[owner]:
                    self._touch(owner, now)
                    return [[replica]]
            self._unplace(owner)  # its replica is gone: place it again
        chosen = min(candidate_replicas, key=self._load)
        if owner and owner not in self._gone:
            self._placed[owner] = chosen.replica_id
            self._counts[chosen.replica_id] += 1
            self._touch(owner, now)
        return [[chosen]]

    def _load(self, replica: RunningReplica) -> tuple[int, int, int]:
        stats = replica.routing_stats or {}
        return self._counts[replica.replica_id], int(stats.get("owners", 0)), int(stats.get("queue_depth", 0))

    def _touch(self, owner: str, now: float) -> None:
        self._seen[owner] = now
        self._placed.move_to_end(owner)

    def _unplace(self, owner: str) -> None:
        replica_id = self._placed.pop(owner, None)
        self._seen.pop(owner, None)
        if replica_id is not None:
            self._counts[replica_id] -= 1
            if self._counts[replica_id] <= 0:
                del self._counts[replica_id]

    def _follow(self, candidates: list[RunningReplica]) -> None:
        """Forget the placements on replicas that left the candidates (died, drained, replaced)."""
        live = frozenset(replica.replica_id for replica in candidates)
        if live == self._live:
            return
        self._live = live
        for owner in [o for o, replica_id in self._placed.items() if replica_id not in live]:
            self._unplace(owner)

    def _drain_released(self) -> None:
        while self.released:
            owner = self.released.popleft()
            self._unplace(owner)
            self._gone[owner] = None
            if len(self._gone) > RELEASED_KEPT:
                self._gone.popitem(last=False)

    def _forget(self, now: float) -> None:
        self._drain_released()
        while self._placed:
            owner = next(iter(self._placed))
            if now - self._seen.get(owner, 0.0) < FORGET_AFTER_S:
                return
            self._unplace(owner)
