"""The live sessions of this process: admission against ``max_sessions``, totals for ``/v1/status`` and the
drain on shutdown. Typed against a small protocol so that it imports nothing of the connection."""

from __future__ import annotations

import asyncio
from typing import Protocol

from ..errors import ShuttingDown, TooManySessions


class LiveSession(Protocol):
    """What the registry needs of a connection."""

    @property
    def session_id(self) -> str: ...

    @property
    def backlog_seconds(self) -> float: ...

    @property
    def queued_events(self) -> int: ...

    def begin_close(self, reason: str, close_code: int = 1000) -> None: ...

    async def wait_closed(self) -> None: ...

    @property
    def is_closed(self) -> bool: ...

    @property
    def streams(self) -> int:
        """What it counts against ``max_sessions``: its channels (a connection of 8 channels is 8 streams)."""
        ...


class SessionRegistry:
    """Owned by the event loop; one per app."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.sessions: dict[str, LiveSession] = {}
        self.draining = False
        self.admitted = 0  # sessions admitted since start (the allocator's trimmer watches it move)

    def admit(self, session: LiveSession) -> None:
        """Register ``session``; raises ``ShuttingDown`` or ``TooManySessions``."""
        if self.draining:
            raise ShuttingDown("the server is shutting down")
        held = sum(s.streams for s in self.sessions.values())
        if held + session.streams > self.max_sessions:
            raise TooManySessions(
                f"the server holds {held} of its {self.max_sessions} streams and this session needs "
                f"{session.streams}; retry later"
            )
        self.sessions[session.session_id] = session
        self.admitted += 1

    def remove(self, session: LiveSession) -> None:
        self.sessions.pop(session.session_id, None)

    def __len__(self) -> int:
        return len(self.sessions)

    def snapshot(self) -> dict[str, float]:
        """Totals over open sessions, for ``/v1/status``."""
        live = list(self.sessions.values())
        return {
            "sessions": len(live),
            "backlog_seconds": round(sum(s.backlog_seconds for s in live), 3),
            "queued_events": sum(s.queued_events for s in live),
        }

    async def drain(self, grace_s: float) -> int:
        """Finalize every open session, deliver its finals, then close it with ``server_shutdown`` (1001).
        Refuses new sessions from now on. Returns how many sessions had not finished within ``grace_s``."""
        self.draining = True
        live = list(self.sessions.values())
        for session in live:
            session.begin_close(ShuttingDown.code, ShuttingDown.close_code)
        if live:
            waiters = [asyncio.ensure_future(s.wait_closed()) for s in live]
            _, pending = await asyncio.wait(waiters, timeout=grace_s)
            for waiter in pending:
                waiter.cancel()
        return sum(not s.is_closed for s in live)
