"""Noticing that Serve is removing this ingress replica (autoscaler scale-down, a redeploy with fewer or new
replicas), so that it drains its sessions instead of having their websockets cut.

Serve stops a replica by marking it ``STOPPING`` in its controller in the same step that asks the replica to shut
down; the replica then waits up to ``graceful_shutdown_timeout_s`` for its open requests and only then runs the
app's lifespan shutdown. An open websocket is an open request, so its session would be cut at that deadline
without its last finals. Serve gives the user callable no start-of-shutdown hook, so each ingress replica reads
its own state from the controller every ``POLL_S``: the ``ServeInstanceDetails`` (``ray.serve.schema``) that
``serve status`` and Serve's REST API (``GET /api/serve/applications/``) show, here asked of the controller actor
directly because a replica knows neither the dashboard's address nor whether one runs. On ``STOPPING`` the wait
returns and the app drains exactly as on the cluster command's signal (``drain.py``).

Timing contract: the drain starts within ``POLL_S`` (plus one controller call) of Serve's decision, and Serve
re-checks the open requests every ``graceful_shutdown_wait_loop_s`` (2 s by default); the ingress deployment's
``graceful_shutdown_timeout_s`` (``drain_s`` + ``shutdown_grace_s``) must cover both and the drain itself
(at most ``shutdown_grace_s``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import ray
from ray import serve
from ray.serve.exceptions import RayServeException

log = logging.getLogger(f"ray.serve.{__name__}")  # Serve writes the "ray.serve" loggers to the replica's log

POLL_S = 1.0
STOPPING = "STOPPING"  # ReplicaDetails.state (ray.serve.schema) of a replica Serve is shutting down
# the Serve controller's actor (ray.serve._private.constants; test_stopping.py checks them against the installed Ray)
CONTROLLER_NAME = "SERVE_CONTROLLER_ACTOR"
CONTROLLER_NAMESPACE = "serve"

InstanceDetails = Mapping[str, Any]  # a ``ServeInstanceDetails`` as the controller answers it (JSON-shaped)


@dataclass(frozen=True)
class ReplicaRef:
    """Which replica to watch: its application, deployment and ``replica_id`` (``ReplicaDetails.replica_id``)."""

    app: str
    deployment: str
    replica_id: str


def replica_state(details: InstanceDetails, replica: ReplicaRef) -> str | None:
    """The state ``details`` lists for ``replica`` (``"RUNNING"``, ``"STOPPING"``, ...), or None when it is not
    listed. The controller's answer holds ``ReplicaState`` members, its JSON form their values: both read the same."""
    app = details.get("applications", {}).get(replica.app) or {}
    deployment = app.get("deployments", {}).get(replica.deployment) or {}
    for entry in deployment.get("replicas", []):
        if entry.get("replica_id") == replica.replica_id:
            state = entry["state"]
            return str(state.value if isinstance(state, Enum) else state)
    return None


async def wait_until_stopping(
    fetch: Callable[[], Awaitable[InstanceDetails]], replica: ReplicaRef, poll_s: float = POLL_S
) -> None:
    """Return once ``fetch`` lists ``replica`` as ``STOPPING``. A failed fetch (the controller restarting) is
    retried at the next poll; a replica not listed (yet, or while the controller recovers) is not stopping."""
    failing = False
    while True:
        try:
            details = await fetch()
        except Exception as exc:  # noqa: BLE001 (any failure of the controller call: try again)
            if not failing:  # said once per outage: until it answers, a removal cuts this replica's sessions
                log.warning("cannot read replica %s's state from the Serve controller (%s)", replica.replica_id, exc)
            failing = True
        else:
            failing = False
            if replica_state(details, replica) == STOPPING:
                return
        await asyncio.sleep(poll_s)


class ControllerDetails:
    """``fetch`` for ``wait_until_stopping``: the controller's instance details, its handle looked up once and
    again after a failure. Used on one event loop."""

    def __init__(self) -> None:
        self._controller: Any = None

    async def __call__(self) -> InstanceDetails:
        if self._controller is None:
            self._controller = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
        try:
            details: InstanceDetails = await self._controller.get_serve_instance_details.remote()
        except Exception:
            self._controller = None
            raise
        return details


async def wait_for_serve_stopping() -> None:
    """On a Serve replica: return when Serve begins stopping it. Anywhere else: never return."""
    try:
        context = serve.get_replica_context()
    except RayServeException:  # not in a replica: Serve will never stop us
        await asyncio.Event().wait()
        return
    replica = ReplicaRef(context.app_name, context.deployment, context.replica_tag)
    await wait_until_stopping(ControllerDetails(), replica)
    log.info("serve is stopping replica %s: draining its sessions", replica.replica_id)
