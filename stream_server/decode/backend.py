"""The contract between the scheduler's driver and whatever runs the model."""

from __future__ import annotations

from typing import Protocol

from .types import DecodeJob, DecodeResult


class DecodeBackend(Protocol):
    """Decodes a batch. Called from the one model thread only, never from the event loop.

    Returns one result per job, in order. May raise; the engine then fails every job of that batch.
    """

    model_id: str
    is_multilingual: bool

    def decode_batch(self, jobs: list[DecodeJob]) -> list[DecodeResult]: ...
