"""Draining the ingress tier on shutdown: one small named Ray actor that ``stream-server cluster`` sets on SIGTERM.

Serve stops a replica by waiting ``graceful_shutdown_timeout_s`` for its open requests and only then runs the
app's lifespan shutdown; an open websocket is an open request, so a session would never be drained that way.
So every ingress replica waits on this actor from start-up; ``stream-server cluster`` sets it on SIGTERM, each
replica drains its sessions (their last finals, ``session.closed``, close 1001: ``SessionRegistry.drain``) and
says so, and the command stops Serve once every replica that waited has drained or the grace has passed. Without
the actor (an application deployed by ``serve run``) replicas simply never hear it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

log = logging.getLogger(__name__)

NAME = "stream-server-drain"
NAMESPACE = "stream-server"


@ray.remote(num_cpus=0)
class DrainSignal:
    """``wait`` returns once ``set`` was called; ``progress`` gives (waiters, waiters that reported drained)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.waiting = 0
        self.done = 0

    async def wait(self) -> None:
        self.waiting += 1
        await self._event.wait()

    async def set(self) -> None:
        self._event.set()

    async def report_drained(self) -> None:
        self.done += 1

    async def progress(self) -> tuple[int, int]:
        return self.waiting, self.done


def create() -> Any:
    """The signal for this cluster command (an actor handle), made before the ingress application is deployed."""
    return DrainSignal.options(name=NAME, namespace=NAMESPACE, get_if_exists=True).remote()  # type: ignore[attr-defined]


async def wait_for_drain() -> None:
    """On an ingress replica: returns when the cluster command asks for a drain; never without its actor."""
    try:
        signal = ray.get_actor(NAME, namespace=NAMESPACE)
    except ValueError:  # deployed without the cluster command: nobody will ask
        await asyncio.Event().wait()
        return
    await signal.wait.remote()


async def report_drained() -> None:
    signal = ray.get_actor(NAME, namespace=NAMESPACE)
    await signal.report_drained.remote()


def drain(signal: Any, grace_s: float) -> None:
    """Ask every ingress replica to drain and wait until all that listen have, at most ``grace_s`` (+ 5 s)."""
    ray.get(signal.set.remote())
    deadline = time.monotonic() + grace_s + 5.0
    while time.monotonic() < deadline:
        waiting, done = ray.get(signal.progress.remote())
        if done >= waiting:
            return
        time.sleep(0.2)
    log.warning("ingress drain: not every replica reported within %.0f s", grace_s + 5.0)
