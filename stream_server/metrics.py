"""Prometheus metrics (prometheus-client), one registry per app so tests can run several servers.

The transports and the engine call the ``on_*`` hooks; nothing here knows about sockets. Names (all listed in
docs/operations.md):

- ``stream_active_sessions`` (gauge), ``stream_audio_seconds_total``, ``stream_messages_sent_total{type}``
  (events written to sockets; a coalesced partial is never sent, so never counted),
  ``stream_partials_coalesced_total``, ``stream_final_latency_seconds`` (final decode job submitted ->
  final queued to its socket), ``stream_backpressure_total`` (times a session was throttled).
- ``stream_final_{endpointing_wait,queue_wait,decode,send}_seconds``: where each final's latency went, from
  where the speaker stopped to the final written (``transport/timing.py``; the stages sum to that time).
- ``errors_total{transport,code}``: every error reported to a client by stable code; ``transport`` is the
  websocket dialect's name (``native``, ``deepgram``, ...) or ``http``.
- ``decode_batch_size``, ``decode_queue_wait_seconds``, ``decode_batch_seconds``, ``decode_failed_batches_total``,
  ``decode_queue_depth`` (gauge), ``decode_final_tier_total{tier}`` (how finals that had a choice were decoded:
  ``full`` with context and final beam, ``no_context`` while the server was busy, ``late`` after waiting).
- ``http_transcription_requests_total{endpoint,status}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .decode.engine import BatchReport


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge("stream_active_sessions", "Open websocket sessions", registry=r)
        self.audio_seconds = Counter("stream_audio_seconds_total", "Seconds of stream audio received", registry=r)
        self.messages = Counter("stream_messages_sent_total", "Events written to client sockets", ["type"], registry=r)
        self.coalesced = Counter(
            "stream_partials_coalesced_total", "Partials replaced unsent by a newer one (slow readers)", registry=r
        )
        self.backpressure = Counter(
            "stream_backpressure_total", "Times a session's intake was paused for a full backlog", registry=r
        )
        self.errors = Counter("errors_total", "Errors reported to clients", ["transport", "code"], registry=r)
        self.batch_size = Histogram(
            "decode_batch_size", "Jobs per decode batch", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.queue_wait = Histogram(
            "decode_queue_wait_seconds",
            "Time a job waited before its batch ran",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "decode_batch_seconds",
            "Wall time of one decode batch",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.failed_batches = Counter("decode_failed_batches_total", "Batches that raised", registry=r)
        self.queue_depth = Gauge("decode_queue_depth", "Decode jobs waiting for a batch", registry=r)
        self.final_tiers = Counter(
            "decode_final_tier_total",
            "How finals that had a choice were decoded: full, no_context (server busy), late (they had waited)",
            ["tier"],
            registry=r,
        )
        self.final_latency = Histogram(
            "stream_final_latency_seconds",
            "Time from an utterance's final decode job being submitted to its final being queued to the socket",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
            registry=r,
        )
        stage_buckets = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
        self.final_stages = {
            stage: Histogram(f"stream_final_{stage}_seconds", help_text, buckets=stage_buckets, registry=r)
            for stage, help_text in (
                (
                    "endpointing_wait",
                    "Stream seconds from where the speaker stopped to the utterance's end being decided",
                ),
                (
                    "queue_wait",
                    "From the end being decided to the final's decode starting (earlier finals, decode queue)",
                ),
                ("decode", "Of a final's decode, the part after its end was decided"),
                ("send", "From a final being ready to its being written to the socket"),
            )
        }
        self.http_requests = Counter(
            "http_transcription_requests_total", "Batch API requests", ["endpoint", "status"], registry=r
        )

    def watch_queue_depth(self, depth: Callable[[], float]) -> None:
        """Read the engine's queue depth at scrape time."""
        self.queue_depth.set_function(depth)

    # hooks called by the transports and the engine
    def on_session(self, delta: int) -> None:
        self.active_sessions.inc(delta)

    def on_audio(self, seconds: float) -> None:
        if seconds > 0:
            self.audio_seconds.inc(seconds)

    def on_message_sent(self, message: dict[str, Any]) -> None:
        self.messages.labels(message["type"]).inc()

    def on_error(self, transport: str, code: str) -> None:
        self.errors.labels(transport, code).inc()

    def on_coalesced(self) -> None:
        self.coalesced.inc()

    def on_backpressure(self) -> None:
        self.backpressure.inc()

    def on_final_latency(self, seconds: float) -> None:
        self.final_latency.observe(seconds)

    def on_final_timing(self, endpointing_s: float, queue_s: float, decode_s: float, send_s: float) -> None:
        """One final's latency stages (``transport/timing.py``), observed as it is written."""
        for stage, seconds in zip(self.final_stages.values(), (endpointing_s, queue_s, decode_s, send_s)):
            stage.observe(seconds)

    def on_batch(self, report: BatchReport) -> None:
        self.batch_size.observe(len(report.jobs))
        self.batch_seconds.observe(report.run_s)
        for wait in report.queue_wait_s:
            self.queue_wait.observe(wait)
        if report.failed:
            self.failed_batches.inc()
        for tier, count in report.tiers.items():
            self.final_tiers.labels(tier.value).inc(count)
