"""Reading a connection's frames, and holding them while its intake is paused.

A paused connection still reads: the websocket layer handles pings and pongs only while the app takes frames
(uvicorn stops reading the socket until the app has taken the last message), so a pause longer than the ping
timeout would otherwise cost the session. Frames read while paused are held in order, none dropped, up to
``hold_bytes``; past that the reader stops and TCP pushes back on the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import MutableMapping
from typing import Any

from starlette.websockets import WebSocket

Frame = MutableMapping[str, Any]  # an ASGI websocket receive event


class FrameReader:
    """One per connection, event loop only; ``close`` when the connection ends."""

    def __init__(self, websocket: WebSocket, hold_bytes: int) -> None:
        self.websocket = websocket
        self.hold_bytes = hold_bytes
        self.held: deque[Frame] = deque()
        self.held_bytes = 0
        self._receiving: asyncio.Task[Frame] | None = None

    async def next(self, timeout: float, paused: bool, progress: asyncio.Event) -> Frame | None:
        """The next frame to act on, or None when ``timeout`` passed, ``progress`` was set, or the frame read was
        held (``paused``). A disconnect is returned even while paused."""
        if not paused and self.held:
            frame = self.held.popleft()
            self.held_bytes -= _size(frame)
            return frame
        waiters: set[asyncio.Future[Any]] = set()
        if not paused or self.held_bytes < self.hold_bytes:
            if self._receiving is None:
                self._receiving = asyncio.ensure_future(self.websocket.receive())
            waiters.add(self._receiving)
        progressed = asyncio.ensure_future(progress.wait()) if paused else None
        if progressed is not None:
            waiters.add(progressed)
        try:
            await asyncio.wait(waiters, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if progressed is not None:
                progressed.cancel()
        if self._receiving is None or not self._receiving.done():
            return None
        frame = self._receiving.result()
        self._receiving = None
        if paused and frame["type"] != "websocket.disconnect":
            self.held.append(frame)
            self.held_bytes += _size(frame)
            return None
        return frame

    async def close(self) -> None:
        if self._receiving is not None:
            self._receiving.cancel()
            with contextlib.suppress(BaseException):
                await self._receiving


def _size(frame: Frame) -> int:
    data = frame.get("bytes") or frame.get("text") or b""
    return len(data)
