"""Messages waiting for one client's socket.

A newer partial replaces the unsent older one of its utterance (``coalesce_key``), so a slow reader gets the
latest text instead of a growing queue; finals and every other message are never dropped. Single event loop,
one producer side (the connection) and one consumer (its send loop).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

Message = dict[str, Any]


class Outbox:
    def __init__(self, on_coalesced: Callable[[], None] | None = None) -> None:
        self._queue: deque[tuple[Hashable | None, Message]] = deque()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._in_flight = 0  # taken by ``get`` and not yet confirmed by ``sent``
        self._on_coalesced = on_coalesced
        self.coalesced = 0

    def put(self, message: Message, coalesce_key: Hashable | None = None) -> None:
        """Queue ``message``; with a key, it replaces a queued message of the same key in place."""
        if coalesce_key is not None:
            for i, (key, _) in enumerate(self._queue):
                if key == coalesce_key:
                    self._queue[i] = (coalesce_key, message)
                    self.coalesced += 1
                    if self._on_coalesced is not None:
                        self._on_coalesced()
                    return
        self._queue.append((coalesce_key, message))
        self._drained.clear()
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def get(self) -> Message:
        """The next message; call ``sent`` once it is written."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        self._in_flight += 1
        return self._queue.popleft()[1]

    def sent(self) -> None:
        self._in_flight -= 1
        self._check_drained()

    def _check_drained(self) -> None:
        if not self._queue and not self._in_flight:
            self._drained.set()

    async def wait_drained(self) -> None:
        """Until every queued message has been written."""
        await self._drained.wait()
