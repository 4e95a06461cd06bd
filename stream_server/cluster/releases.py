"""Where ``RemoteDecoder`` tells the routers of its process that an owner is done (``release``).

A module of its own because Serve ships the router class to each ingress process pickled by value, module
globals included: state kept in ``router``'s globals would be a copy the router never shares with the rest of
the process, so a release written there would never reach it. This module is imported by name on both sides.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from typing import Protocol


class Mailbox(Protocol):
    """A router's inbox of released owners (a ``deque``: appended from any thread, drained by the router)."""

    released: deque[str]


_routers: weakref.WeakSet[Mailbox] = weakref.WeakSet()
_lock = threading.Lock()


def register(mailbox: Mailbox) -> None:
    """Called by each router when Serve creates it."""
    with _lock:
        _routers.add(mailbox)


def release(owner: str) -> None:
    """``owner`` (a closed session, a finished upload) is done: every router of this process drops its place on
    its next routing. Any thread."""
    with _lock:
        routers = list(_routers)
    for mailbox in routers:
        mailbox.released.append(owner)
