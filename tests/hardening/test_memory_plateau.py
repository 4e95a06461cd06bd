"""RSS at rest after abrupt drops of 8-channel 48 kHz sessions (issue 18 finding 13).

glibc kept freed session memory in per-thread arenas and, once a large buffer had been freed, served later
ones from the heap: RSS settled about 480-620 MB above its baseline. ``server.bound_allocator`` applies at
start-up what the Docker image's ``MALLOC_*`` variables do, so a plain install is bounded too.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import numpy as np
import pytest
import websockets

from ..conftest import ServerHandle, rss_mb, server_status, start_server, wait_until
from ..helpers import resample, synthesize


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MALLOC_")}
    try:
        handle = start_server(tmp_path_factory.mktemp("plateau"), max_sessions=40)
    finally:
        os.environ.update(saved)
    yield handle
    handle.stop()


def drop_wave(server: ServerHandle, pcm: bytes, sessions: int) -> None:
    async def one() -> None:
        ws = await websockets.connect(
            f"{server.ws_url}/v1/listen?sample_rate=48000&channels=8", open_timeout=60, max_size=None
        )
        await ws.recv()
        cut = len(pcm) * 2 // 3 // 16 * 16  # an open utterance on every channel
        for i in range(0, cut, 96000):
            await ws.send(pcm[i : i + 96000])
        await asyncio.sleep(0.5)
        ws.transport.abort()

    async def wave() -> None:
        await asyncio.gather(*(one() for _ in range(sessions)))

    asyncio.run(wave())
    assert wait_until(lambda: server_status(server)["sessions"] == 0 and not server_status(server)["engine_busy"], 120)


@pytest.mark.slow  # about a minute on 2 cores
def test_rss_at_rest_after_dropped_8_channel_sessions_stays_bounded(plain_install: ServerHandle) -> None:
    speech = resample(
        synthesize("Please call Stella and ask her to bring these things with her from the store."), 16000, 48000
    )
    pcm = (np.tile(speech[:, None], (1, 8)) * 32767).astype("<i2").tobytes()
    start_mb = rss_mb(plain_install)
    at_rest = []
    for _ in range(4):
        drop_wave(plain_install, pcm, 20)
        at_rest.append(rss_mb(plain_install))
    print(f"RSS at rest: start {start_mb:.0f} MB, after each wave of 20 dropped sessions {at_rest}")
    assert at_rest[-1] - start_mb < 250  # was about +615 MB
    assert at_rest[-1] - at_rest[0] < 60  # no growth from one wave to the next
