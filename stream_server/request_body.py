"""How long a request body may take: the clock the HTTP protocol consults while a body streams in.

What production servers do: nginx's ``client_body_timeout`` bounds the gap between two successive reads of the
body (60 s), and Apache's ``mod_reqtimeout`` adds a minimum rate (``body=20,MinRate=500``). A gap alone lets a
client trickle one byte per gap forever; a rate alone punishes a slow start. Both together: no read for
``gap_s``, or, once ``gap_s`` has passed, an average under ``min_rate`` bytes per second since the head, ends
the request with ``408``. Time during which the server itself paused reading (the app had not taken the body
yet) does not count against the client.

Pure: times are ``time.monotonic()`` seconds passed in by the caller (one per connection, event loop only).
"""

from __future__ import annotations

# Apache mod_reqtimeout's MinRate for request bodies (bytes per second), after the first ``gap_s``.
MIN_BODY_RATE = 500.0


class BodyClock:
    """The deadlines of one request body, from the moment its head is complete."""

    def __init__(self, gap_s: float, now: float, min_rate: float = MIN_BODY_RATE) -> None:
        self.gap_s = gap_s
        self.min_rate = min_rate
        self.last_read = now
        self.counted_s = 0.0  # seconds the client was the one to wait for (the server reading)
        self.bytes = 0
        self._since = now

    def received(self, now: float, size: int) -> None:
        """``size`` bytes of the body arrived."""
        self._advance(now, paused=False)
        self.last_read = now
        self.bytes += size

    def expired(self, now: float, paused: bool) -> str | None:
        """Why the body has taken too long at ``now`` (None: it has not). ``paused``: the server is not reading
        (its flow control), so the time since the last look is not the client's."""
        self._advance(now, paused)
        if paused:
            self.last_read = now
            return None
        if now - self.last_read >= self.gap_s:
            return f"no part of the request body arrived for {self.gap_s:g} s"
        if self.counted_s >= self.gap_s and self.bytes < self.min_rate * self.counted_s:
            return f"the request body arrived slower than {self.min_rate:g} bytes/s"
        return None

    def _advance(self, now: float, paused: bool) -> None:
        if not paused:
            self.counted_s += max(0.0, now - self._since)
        self._since = now
