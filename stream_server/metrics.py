"""Prometheus metrics (prometheus-client), one registry per app so tests can run several servers."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .decode.engine import BatchReport


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge("stream_active_sessions", "Open websocket sessions", registry=r)
        self.audio_seconds = Counter("stream_audio_seconds_total", "Seconds of stream audio received", registry=r)
        self.messages = Counter("stream_messages_sent_total", "Events sent to clients", ["type"], registry=r)
        self.errors = Counter("stream_errors_total", "Errors reported to clients", ["code"], registry=r)
        self.batch_size = Histogram(
            "decode_batch_size", "Jobs per decode batch", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.queue_wait = Histogram(
            "decode_queue_wait_seconds", "Time a job waited before its batch ran",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )
        self.batch_seconds = Histogram(
            "decode_batch_seconds", "Wall time of one decode batch",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )
        self.failed_batches = Counter("decode_failed_batches_total", "Batches that raised", registry=r)
        self.final_latency = Histogram(
            "stream_final_latency_seconds", "Time from an utterance's end being received to its final being queued",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5), registry=r,
        )
        self.http_requests = Counter(
            "http_transcription_requests_total", "Batch API requests", ["endpoint", "status"], registry=r
        )

    # hooks called by the transports and the engine
    def on_session(self, delta: int) -> None:
        self.active_sessions.inc(delta)

    def on_audio(self, seconds: float) -> None:
        if seconds > 0:
            self.audio_seconds.inc(seconds)

    def on_message(self, message: dict[str, Any]) -> None:
        self.messages.labels(message["type"]).inc()
        if message["type"] == "error":
            self.errors.labels(message.get("code", "unknown")).inc()

    def on_batch(self, report: BatchReport) -> None:
        self.batch_size.observe(len(report.jobs))
        self.batch_seconds.observe(report.run_s)
        for wait in report.queue_wait_s:
            self.queue_wait.observe(wait)
        if report.failed:
            self.failed_batches.inc()
