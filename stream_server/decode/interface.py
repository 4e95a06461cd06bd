"""The seam between everything that produces decode jobs (sessions, uploads) and whatever decodes them.

In one process it is ``engine.DecodeEngine``; across processes (Ray Serve) it is the cluster's remote decoder.
Nothing above this interface knows which one it talks to.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from .types import BatchStats, DecodeJob, DecodeResult


class Decoder(Protocol):
    """Accepts jobs from the event loop; results come back as futures on that loop."""

    @property
    def model_id(self) -> str: ...

    @property
    def is_multilingual(self) -> bool: ...

    @property
    def alive(self) -> bool:
        """Ready to take jobs (``/readyz``)."""
        ...

    def submit(self, job: DecodeJob) -> asyncio.Future[DecodeResult]:
        """Queue ``job``. The future resolves with its result or raises ``Superseded`` (a newer job of the same
        utterance replaced it), ``DecodeFailed``; ``submit`` itself raises ``Overloaded`` or ``ShuttingDown``."""
        ...

    def cancel_owner(self, owner: str) -> int:
        """Drop every queued job of ``owner`` (a closed session or abandoned upload); returns how many."""
        ...

    def stats(self) -> BatchStats: ...
