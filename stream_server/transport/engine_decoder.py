"""``DecodeEngine`` seen through the ``Decoder`` interface (its model's id and languages come from its
backend). Goes away once the engine satisfies ``decode.interface.Decoder`` itself."""

from __future__ import annotations

import asyncio

from ..decode.engine import DecodeEngine
from ..decode.types import BatchStats, DecodeJob, DecodeResult


class EngineDecoder:
    def __init__(self, engine: DecodeEngine) -> None:
        self.engine = engine

    @property
    def model_id(self) -> str:
        return self.engine.backend.model_id

    @property
    def is_multilingual(self) -> bool:
        return bool(self.engine.backend.is_multilingual)

    @property
    def alive(self) -> bool:
        return self.engine.alive

    def submit(self, job: DecodeJob) -> asyncio.Future[DecodeResult]:
        return self.engine.submit(job)

    def cancel_owner(self, owner: str) -> int:
        return self.engine.cancel_owner(owner)

    def stats(self) -> BatchStats:
        stats: BatchStats = self.engine.stats()  # type: ignore[no-untyped-call]  # engine.stats is unannotated
        return stats
