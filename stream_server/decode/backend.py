"""The contract between the scheduler's driver and whatever runs the model."""

from __future__ import annotations

from typing import Protocol

from .types import DecodeJob, DecodeResult


class DecodeBackend(Protocol):
    """Decodes a batch. ``decode_batch`` is called from the one model thread only, never from the event loop.

    ``decode_batch`` returns one result per job, in order. May raise; the engine then fails every job of that
    call. ``split`` says which model calls a batch will take, in the order they run (jobs that cannot share
    one call, such as different encoder windows, run one after another anyway): the engine hands over one
    part at a time and delivers each part's results as soon as it is done."""

    model_id: str
    is_multilingual: bool

    def split(self, jobs: list[DecodeJob]) -> list[list[DecodeJob]]: ...

    def decode_batch(self, jobs: list[DecodeJob]) -> list[DecodeResult]: ...
