"""A model-free ``DecodeBackend`` for the in-process transport tier: every job decodes to a fixed text at once,
or waits on ``gate`` (a test holds decodes back to build a backlog)."""

from __future__ import annotations

import threading

from stream_server.decode.types import DecodeJob, DecodeResult


class FakeBackend:
    model_id = "fake-model"
    is_multilingual = False

    def __init__(self, text: str = "hello world") -> None:
        self.text = text
        self.gate = threading.Event()
        self.gate.set()
        self.jobs: list[DecodeJob] = []

    def split(self, jobs: list[DecodeJob]) -> list[list[DecodeJob]]:
        return [jobs]

    def decode_batch(self, jobs: list[DecodeJob]) -> list[DecodeResult]:
        self.gate.wait(30)
        self.jobs.extend(jobs)
        return [DecodeResult(j.job_id, self.text, (1, 2), "en", -0.1, 1.0, 0.0, 0.0) for j in jobs]
