"""Draining the ingress tier: on the cluster command's SIGTERM (one small named Ray actor that ``stream-server
cluster`` sets) and on Serve's own removal of a replica (``stopping.py``).

Serve stops a replica by waiting ``graceful_shutdown_timeout_s`` for its open requests and only then runs the
app's lifespan shutdown; an open websocket is an open request, so a session would never be drained that way.
So every ingress replica waits from start-up on both: the actor, which ``stream-server cluster`` sets on SIGTERM,
and its own replica's state in the Serve controller, which turns ``STOPPING`` when the autoscaler or a redeploy
removes it. Either way the replica drains its sessions (their last finals, ``session.closed``, close 1001:
``SessionRegistry.drain``), refuses new ones, and says so to the actor; the command stops Serve once every
replica that waited has drained or the grace has passed. Without the actor (an application deployed by
``serve run``) only Serve's removal is heard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from . import stopping

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


def _signal() -> Any:
    """The cluster command's signal, or None (deployed without the command)."""
    try:
        return ray.get_actor(NAME, namespace=NAMESPACE)
    except ValueError:
        return None


async def wait_for_drain() -> None:
    """On an ingress replica: returns when the cluster command asks for a drain or Serve begins stopping this
    replica, whichever comes first."""
    signal = _signal()

    async def asked() -> None:
        if signal is None:  # deployed without the cluster command: nobody will ask
            await asyncio.Event().wait()
        else:
            await signal.wait.remote()

    waits = [asyncio.ensure_future(asked()), asyncio.ensure_future(stopping.wait_for_serve_stopping())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


async def report_drained() -> None:
    """Counted by the command's signal whichever way the drain began: every replica that waited reports once."""
    signal = _signal()
    if signal is not None:
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
