"""Where each final's latency went: a connection's record of when each utterance's end was decided, when its
final was ready and when it was written, split into stages for ``/metrics`` and for clients that ask
(protocol v1 ``timing=true``; see docs/protocol.md#timing).

Stages, each in seconds, summing to the time from where the speaker stopped to the final being written:
``endpointing`` (stream seconds from the speech's end to the end being decided: the wait for silence),
``queue`` (from that decision to its decode starting: behind the channel's earlier finals and in the decode
queue), ``decode`` (its model calls, repairs included), ``send`` (from the final being ready to its write).
A speculative final decoded during the pause counts only what came after the decision. Event loop only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ..metrics import Metrics
from ..session.events import Final, SpeechEnded

Key = tuple[int, int, int]  # (session generation, channel, utterance id)


@dataclass(frozen=True)
class FinalTiming:
    """One final's stages in seconds (module docstring); ``speculative``: its decode began before the end
    was decided."""

    endpointing_s: float
    queue_s: float
    decode_s: float
    send_s: float
    speculative: bool

    @property
    def total_s(self) -> float:
        return self.endpointing_s + self.queue_s + self.decode_s + self.send_s

    def to_json(self) -> dict[str, Any]:
        """The protocol v1 ``timing`` object: milliseconds."""

        def ms(seconds: float) -> float:
            return round(seconds * 1000, 1)

        return {
            "endpointing_ms": ms(self.endpointing_s),
            "queue_ms": ms(self.queue_s),
            "decode_ms": ms(self.decode_s),
            "send_ms": ms(self.send_s),
            "total_ms": ms(self.total_s),
            "speculative": self.speculative,
        }


@dataclass(frozen=True)
class _Ready:
    """A final handed to the outbox, its stages up to then known."""

    endpointing_s: float
    queue_s: float
    decode_s: float
    speculative: bool
    ready_at: float
    show: bool  # the client asked for ``timing``


class FinalTimer:
    """Per connection: ``submitted`` as a final's decode is submitted, ``passed`` as an end or a final is queued
    to the socket, ``written`` just before each message is written. ``show``: the client asked for timing."""

    def __init__(self, metrics: Metrics, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.metrics = metrics
        self.log = log
        self.show = False
        self._decided_at: dict[Key, float] = {}
        self._submitted_at: dict[Key, float] = {}  # a final's (or speculative final's) decode job was submitted
        # id(message) -> (message, its final's stages so far); holding the message keeps its id unique
        self._ready: dict[int, tuple[dict[str, Any], _Ready]] = {}

    def submitted(self, key: Key) -> None:
        self._submitted_at[key] = time.monotonic()

    def passed(self, key: Key, event: SpeechEnded | Final, messages: list[dict[str, Any]]) -> None:
        """``event`` is queued to the socket as ``messages`` (the final's time is its first message's)."""
        now = time.monotonic()
        if isinstance(event, SpeechEnded):
            self._decided_at[key] = now
            return
        self.log.debug("final %s/%s %r", event.channel, event.utterance_id, event.text)
        self._ready_final(key, event, messages[0] if messages else None, now)

    def _ready_final(self, key: Key, final: Final, message: dict[str, Any] | None, now: float) -> None:
        submitted = self._submitted_at.pop(key, None)
        if submitted is not None:
            self.metrics.on_final_latency(now - submitted)
        decided = self._decided_at.pop(key, None)
        if decided is None or message is None:
            return
        after = max(0.0, now - decided)  # from the decision to the final being ready
        decode = 0.0 if final.decode is None else min(final.decode.decode_s, after)
        speculative = final.decode is not None and final.decode.decode_s > after
        self._ready[id(message)] = (
            message,
            _Ready(final.endpointing_s, after - decode, decode, speculative, now, self.show),
        )

    def written(self, message: dict[str, Any]) -> FinalTiming | None:
        """Called as ``message`` is about to be written: a final's timing, added to it if its client asked."""
        entry = self._ready.pop(id(message), None)
        if entry is None:
            return None
        ready = entry[1]
        send = max(0.0, time.monotonic() - ready.ready_at)
        timing = FinalTiming(ready.endpointing_s, ready.queue_s, ready.decode_s, send, ready.speculative)
        self.metrics.on_final_timing(timing.endpointing_s, timing.queue_s, timing.decode_s, timing.send_s)
        if ready.show:
            message["timing"] = timing.to_json()
        return timing
