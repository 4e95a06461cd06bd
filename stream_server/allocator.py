"""glibc's allocator for a long-running server: arenas bounded at start-up, and memory freed by ended sessions
given back to the OS once the server is at rest (glibc only; elsewhere these do nothing).

glibc keeps freed chunks inside its heaps; after waves of dropped sessions RSS stayed hundreds of MB above the
baseline although the memory was free (see docs/decisions.md#memory-plateau). ``malloc_trim(0)`` returns it, but
it holds the allocator's locks while it walks the heap, so it runs only when no stream is open and the decoder
is idle: a live stream never waits on it. A dropped session's buffers sit in reference cycles until the
collector's oldest generation runs, so a full collection comes first.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_ARENA_MAX = -8


def bound_allocator() -> bool:
    """``MALLOC_ARENA_MAX=2`` for any install: glibc otherwise keeps memory freed by ended sessions in one arena
    per thread. Only the arena bound: a fixed ``mmap`` threshold and a zero trim threshold map and unmap every
    large buffer of every decode and cost latency (see docs/decisions.md#memory-plateau). Variables set in the
    environment win; returns whether the setting was applied (glibc only)."""
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, 2))


def malloc_trim() -> bool:
    """Release the free memory of every glibc arena to the OS; False where there is no glibc. Blocking: call
    it from a worker thread (ctypes releases the GIL for the call)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


async def trim_when_idle(
    is_idle: Callable[[], bool],
    activity: Callable[[], int],
    interval_s: float = 2.0,
    trim: Callable[[], bool] = malloc_trim,
) -> None:
    """Every ``interval_s``: once the server has been busy (seen busy at a check, or ``activity()``, a count of
    sessions opened, moved) and ``is_idle()`` holds again (no open stream, the decoder idle), collect cycles and
    trim once in a worker thread. Runs until cancelled; both callables are read on the event loop."""
    busy_since_trim = False
    seen = activity()
    while True:
        await asyncio.sleep(interval_s)
        if not is_idle():
            busy_since_trim = True
        elif busy_since_trim or activity() != seen:
            busy_since_trim, seen = False, activity()
            gc.collect()
            if not await asyncio.to_thread(trim):
                log.debug("malloc_trim unavailable or released nothing")
