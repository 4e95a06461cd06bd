"""The session as the transport sees it: a small protocol, and the factory that opens one from a dialect's
``StreamParams``.

``StreamConnection`` talks only to ``StreamSession`` (``session.machine.StreamingSession`` satisfies it);
``session_factory`` is the one place that knows how a session is built: the client's params, checked by
``session.params.validate_params``, and the server's ``SessionPolicy``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..decode.types import DecodeResult
from ..session.events import DecodeRequested, SessionEvent
from ..session.machine import StreamingSession
from ..session.params import StreamParams
from ..session.policy import SessionPolicy


class StreamSession(Protocol):
    """One stream's sans-I/O logic: bytes and decode outcomes in, ``SessionEvent``s out. One owner (the
    connection, on the event loop)."""

    @property
    def session_id(self) -> str: ...

    @property
    def audio_seconds(self) -> float:
        """Stream seconds received (per channel)."""
        ...

    @property
    def backlog_seconds(self) -> float:
        """Audio of ended utterances still waiting for their finals (what backpressure bounds)."""
        ...

    @property
    def done(self) -> bool:
        """Closing and every final delivered."""
        ...

    def receive_audio(self, data: bytes) -> list[SessionEvent]: ...

    def receive_channel_audio(self, channel: int, data: bytes) -> list[SessionEvent]: ...

    def finalize(self, channel: int | None = None) -> list[SessionEvent]: ...

    def clear(self) -> None: ...

    def close(self) -> list[SessionEvent]: ...

    def mark_closed(self) -> None: ...

    def receive_decode_result(self, request: DecodeRequested, result: DecodeResult) -> list[SessionEvent]: ...

    def receive_decode_failure(self, request: DecodeRequested, message: str) -> list[SessionEvent]: ...

    def abandon(self, request: DecodeRequested) -> list[SessionEvent]: ...


# (session_id, params already checked by ``validate_params``) -> a new session
SessionFactory = Callable[[str, StreamParams], StreamSession]


def session_factory(policy: SessionPolicy) -> SessionFactory:
    """Opens sessions that follow ``policy``."""

    def open_session(session_id: str, params: StreamParams) -> StreamSession:
        return StreamingSession(session_id, params, policy)

    return open_session
