"""What bounds websocket sessions, apart from the connection logic in ``ws.py``: the per-session limits, the
outbox that holds events for a slow reader, and the registry of live sessions (admission, totals, drain).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ShuttingDown, TooManySessions

if TYPE_CHECKING:
    from .ws import StreamConnection


@dataclass(frozen=True)
class StreamLimits:
    max_message_bytes: int = 1 << 20
    max_session_s: float = 4 * 3600.0
    idle_timeout_s: float = 60.0
    max_backlog_s: float = 30.0
    max_queued_events: int = 2000

    @classmethod
    def from_settings(cls, settings: Any) -> StreamLimits:
        return cls(
            settings.max_message_bytes,
            settings.max_session_s,
            settings.idle_timeout_s,
            settings.max_backlog_s,
            settings.max_queued_events,
        )


class Outbox:
    """Messages waiting for the socket. A partial replaces the queued partial of its utterance."""

    def __init__(self, on_coalesced: Callable[[], None] | None = None) -> None:
        self._queue: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()
        self._on_coalesced = on_coalesced
        self.coalesced = 0

    def put(self, message: dict[str, Any]) -> None:
        if message["type"] == "partial":
            key = (message["channel"], message["utterance_id"])
            for i, queued in enumerate(self._queue):
                if queued["type"] == "partial" and (queued["channel"], queued["utterance_id"]) == key:
                    self._queue[i] = message
                    self.coalesced += 1
                    if self._on_coalesced is not None:
                        self._on_coalesced()
                    return
        self._queue.append(message)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def get(self) -> dict[str, Any]:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()


@dataclass
class SessionRegistry:
    """Live sessions of this process: counts them for limits and drains them on shutdown."""

    max_sessions: int
    sessions: dict[str, StreamConnection] = field(default_factory=dict)
    draining: bool = False

    def admit(self, connection: StreamConnection) -> None:
        if self.draining:
            raise ShuttingDown("the server is shutting down")
        if len(self.sessions) >= self.max_sessions:
            raise TooManySessions(f"the server holds its maximum of {self.max_sessions} sessions; retry later")
        self.sessions[connection.session_id] = connection

    def remove(self, connection: StreamConnection) -> None:
        self.sessions.pop(connection.session_id, None)

    def snapshot(self) -> dict[str, float]:
        """Totals over open sessions, for ``/v1/status``."""
        live = list(self.sessions.values())
        return {
            "sessions": len(live),
            "backlog_seconds": round(sum(c.session.backlog_seconds for c in live), 3),
            "queued_events": sum(len(c.outbox) for c in live),
        }

    async def drain(self, grace_s: float) -> int:
        """Finalize every open session, deliver its finals, then close it with ``server_shutdown`` (1001).
        Returns how many sessions had not finished within ``grace_s``."""
        self.draining = True
        connections = list(self.sessions.values())
        for connection in connections:
            connection.begin_close(ShuttingDown.code, ShuttingDown.close_code)
        if connections:
            waiters = [asyncio.ensure_future(c.closed.wait()) for c in connections]
            _, pending = await asyncio.wait(waiters, timeout=grace_s)
            for waiter in pending:
                waiter.cancel()
        return sum(not c.closed.is_set() for c in connections)
