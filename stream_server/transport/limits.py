"""What bounds one websocket session, as data and pure decisions: ``StreamLimits`` (from the settings) and
``ConnectionLimits``, the clock-free state machine that says when a session has been idle or open too long, when
a close has waited long enough for its finals, when intake is too fast, and when paused intake may resume.

Intake has two bounds. The backlog (``max_backlog_s``) bounds speech waiting for its finals, summed over
channels. The intake speed (``max_intake_speed``) bounds everything else a fast client can make the event loop
do (decoding, resampling and speech detection of audio, speech or not): a token bucket over the connection's
samples, all channels at its sample rate, refilled at that many times its real-time rate, that holds
``INTAKE_BURST_S`` of its audio. Past it reading pauses until the bucket has refilled; nothing is dropped.

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
# Seconds of a connection's audio taken at once before ``max_intake_speed`` paces it (a short file sent whole).
INTAKE_BURST_S = 10.0


@dataclass(frozen=True)
class StreamLimits:
    """Per-session limits (seconds are wall seconds except ``max_backlog_s``, seconds of audio)."""

    max_message_bytes: int
    max_session_s: float
    idle_timeout_s: float
    max_backlog_s: float
    max_queued_events: int
    max_intake_speed: float = 0.0  # x real time over the connection's samples; 0: no limit
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
            max_intake_speed=settings.max_intake_speed,
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
    then ends it). It is also paused until ``throttled_until`` when audio came faster than the intake speed
    (``took_audio``). A paused client is not idle.
    """

    def __init__(self, limits: StreamLimits, now: float) -> None:
        self.limits = limits
        self.started = now
        self.last_activity = now
        self.closing_since: float | None = None
        self.backlog_paused = False
        self.throttled_until: float | None = None
        self._samples_per_s = 0.0  # the connection's real-time rate: channels x sample rate
        self._budget = 0.0  # samples the bucket holds
        self._refilled = now

    @property
    def paused(self) -> bool:
        """Intake is paused (the backlog, or the intake speed): frames are held, not acted on."""
        return self.backlog_paused or self.throttled_until is not None

    def audio_rate(self, channels: int, sample_rate: int) -> None:
        """The session's format (set at every session start): what real time is for this connection."""
        self._samples_per_s = float(channels * sample_rate)
        self._budget = INTAKE_BURST_S * self._samples_per_s

    def took_audio(self, now: float, seconds: float) -> None:
        """``seconds`` of the connection's audio (every channel) were taken; past the intake speed, pause reading
        until the bucket has refilled."""
        rate = self.limits.max_intake_speed * self._samples_per_s
        if rate <= 0:
            return
        burst = INTAKE_BURST_S * self._samples_per_s
        self._budget = min(burst, self._budget + (now - self._refilled) * rate) - seconds * self._samples_per_s
        self._refilled = now
        if self._budget < 0:
            self.throttled_until = now - self._budget / rate

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
        self.backlog_paused = True

    def check(self, now: float, backlog_s: float = 0.0) -> LimitAction:
        """The limit that is due at ``now`` (``backlog_s``: the session's undecoded audio, for resuming)."""
        if self.throttled_until is not None:
            if now < self.throttled_until and self.closing_since is None:
                return LimitAction.NONE
            self.throttled_until = None
            if not self.backlog_paused:
                return self._resume(now)
        if self.closing_since is not None:
            if now >= self.closing_since + self.limits.closing_timeout_s:
                return LimitAction.GIVE_UP
            if self.backlog_paused:
                return self._resume(now)
            return LimitAction.NONE
        if self.backlog_paused:
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
            due = self.closing_since + self.limits.closing_timeout_s
        elif self.backlog_paused:
            due = self._session_end
        else:
            due = min(self._session_end, self.last_activity + self.limits.idle_timeout_s)
        return due if self.throttled_until is None else min(due, self.throttled_until)

    @property
    def _session_end(self) -> float:
        return self.started + self.limits.max_session_s

    def _resume(self, now: float) -> LimitAction:
        self.backlog_paused = False
        self.last_activity = now  # a paused client was not idle
        return LimitAction.RESUME
