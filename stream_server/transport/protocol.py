"""Protocol v1 moved to ``transport/dialects/native.py``; this name is kept for ``tests/integration/test_fuzz``."""

from __future__ import annotations

from .dialects.native import KNOWN_PARAMS, event_message

__all__ = ["KNOWN_PARAMS", "event_message"]
