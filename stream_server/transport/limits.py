"""What bounds one websocket session, as data and pure decisions: ``StreamLimits`` (from the settings) and
``ConnectionLimits``, the clock-free state machine that says when a session has been idle or open too long, when
a close has waited long enough for its finals, and when paused intake may resume.

The connection reads the clock and acts; this module only decides, so every limit is unit-tested by passing
``now`` (no sleeping).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..config import Settings

# After a close began (client close, a limit, shutdown) the remaining finals get this long to arrive.
CLOSING_TIMEOUT_S = 60.0
# Closing handshakes and the last sends of a finished session get this long before we give up on a peer.
SEND_TIMEOUT_S = 10.0
# Longest text frame read, whatever max_message_bytes says: control messages are small.
MAX_TEXT_CHARS = 65536


@dataclass(frozen=True)
class StreamLimits:
    """Per-session limits (seconds are wall seconds except ``max_backlog_s``, seconds of audio)."""

    max_message_bytes: int
    max_session_s: float
    idle_timeout_s: float
    max_backlog_s: float
    max_queued_events: int
    closing_timeout_s: float = CLOSING_TIMEOUT_S
    send_timeout_s: float = SEND_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamLimits:
        return cls(
            max_message_bytes=settings.max_message_bytes,
            max_session_s=settings.max_session_s,
            idle_timeout_s=settings.idle_timeout_s,
            max_backlog_s=settings.max_backlog_s,
            max_queued_events=settings.max_queued_events,
        )

    @property
    def max_text_chars(self) -> int:
        return min(MAX_TEXT_CHARS, self.max_message_bytes)


class LimitAction(enum.Enum):
    """What ``ConnectionLimits.check`` asks of the connection."""

    NONE = "none"  # nothing is due; wait until ``next_check``
    IDLE = "idle_timeout"  # send IdleTimeout and begin closing
    MAX_DURATION = "max_duration"  # send SessionTooLong and begin closing
    GIVE_UP = "closing_timeout"  # finals still missing after closing_timeout_s: close anyway
    RESUME = "resume"  # paused intake may read again


class ConnectionLimits:
    """The deadlines of one connection. Times are ``time.monotonic()`` seconds passed in by the caller.

    Intake is paused (``pause``) while the session's backlog of undecoded audio is over ``max_backlog_s``; it
    resumes once the backlog is at most half of that, or when the session reaches its maximum duration (which
    then ends it). A paused client is not idle.
    """

    def __init__(self, limits: StreamLimits, now: float) -> None:
        self.limits = limits
        self.started = now
        self.last_activity = now
        self.closing_since: float | None = None
        self.paused = False

    def activity(self, now: float) -> None:
        """A frame arrived (audio, keepalive, any message)."""
        self.last_activity = now

    def begin_closing(self, now: float) -> bool:
        """Closing starts now; False if it had already started."""
        if self.closing_since is not None:
            return False
        self.closing_since = now
        return True

    @property
    def closing(self) -> bool:
        return self.closing_since is not None

    def over_backlog(self, backlog_s: float) -> bool:
        """True when intake must pause for ``backlog_s`` of undecoded audio."""
        return backlog_s > self.limits.max_backlog_s

    def pause(self) -> None:
        self.paused = True

    def check(self, now: float, backlog_s: float = 0.0) -> LimitAction:
        """The limit that is due at ``now`` (``backlog_s``: the session's undecoded audio, for resuming)."""
        if self.closing_since is not None:
            if now >= self.closing_since + self.limits.closing_timeout_s:
                return LimitAction.GIVE_UP
            if self.paused:
                return self._resume(now)
            return LimitAction.NONE
        if self.paused:
            if backlog_s <= self.limits.max_backlog_s / 2 or now >= self._session_end:
                return self._resume(now)
            return LimitAction.NONE
        if now >= self._session_end:
            return LimitAction.MAX_DURATION
        if now >= self.last_activity + self.limits.idle_timeout_s:
            return LimitAction.IDLE
        return LimitAction.NONE

    def next_check(self) -> float:
        """The monotonic time by which ``check`` must run again (earlier when the backlog shrinks)."""
        if self.closing_since is not None:
            return self.closing_since + self.limits.closing_timeout_s
        if self.paused:
            return self._session_end
        return min(self._session_end, self.last_activity + self.limits.idle_timeout_s)

    @property
    def _session_end(self) -> float:
        return self.started + self.limits.max_session_s

    def _resume(self, now: float) -> LimitAction:
        self.paused = False
        self.last_activity = now  # a paused client was not idle
        return LimitAction.RESUME
