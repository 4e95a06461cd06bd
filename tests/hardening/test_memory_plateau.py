"""RSS at rest after waves of abruptly dropped sessions (issue 18 finding 13).

glibc kept freed session memory in its heaps (RSS grew by hundreds of MB a wave), and every resampled channel
held a thread per core. ``allocator.bound_allocator`` bounds the arenas, ``allocator.trim_when_idle`` returns free
memory once the server is at rest, and ``audio.Resampler`` runs its filter graph on the calling thread.
See docs/decisions.md#memory-plateau.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import numpy as np
import pytest
import websockets

from ..conftest import ServerHandle, rss_mb, server_status, start_server, wait_until
from ..helpers import resample, synthesize


@pytest.fixture
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MALLOC_")}
    try:
        handle = start_server(tmp_path_factory.mktemp("plateau"), max_sessions=200)
    finally:
        os.environ.update(saved)
    yield handle
    handle.stop()


def drop_wave(server: ServerHandle, pcm: bytes, sessions: int, rate: int, channels: int) -> None:
    async def one() -> None:
        ws = await websockets.connect(
            f"{server.ws_url}/v1/listen?sample_rate={rate}&channels={channels}", open_timeout=60, max_size=None
        )
        await ws.recv()
        frame = 2 * channels
        cut = len(pcm) * 2 // 3 // frame * frame  # an open utterance on every channel
        step = rate * frame // 4  # 250 ms a message
        for i in range(0, cut, step):
            await ws.send(pcm[i : i + step])
        await asyncio.sleep(0.5)
        ws.transport.abort()

    async def wave() -> None:
        await asyncio.gather(*(one() for _ in range(sessions)))

    asyncio.run(wave())
    assert wait_until(lambda: server_status(server)["sessions"] == 0 and not server_status(server)["engine_busy"], 120)


@pytest.mark.slow  # about a minute a case on 2 cores
@pytest.mark.parametrize(
    ("channels", "rate"), [(8, 48000), (1, 48000), (8, 16000)], ids=["8ch-48k", "1ch-48k", "8ch-16k"]
)
def test_rss_at_rest_after_dropped_sessions_stays_bounded(
    plain_install: ServerHandle, channels: int, rate: int
) -> None:
    speech = synthesize("Please call Stella and ask her to bring these things with her from the store.")
    if rate != 16000:
        speech = resample(speech, 16000, rate)
    pcm = (np.tile(speech[:, None], (1, channels)) * 32767).astype("<i2").tobytes()
    start_mb = rss_mb(plain_install)
    at_rest = []
    for _ in range(4):
        drop_wave(plain_install, pcm, 20, rate, channels)
        time.sleep(5)  # the server trims its heap once at rest (within two of its 2 s checks)
        at_rest.append(round(rss_mb(plain_install)))
    threads = len(os.listdir(f"/proc/{plain_install.process.pid}/task"))
    print(
        f"{channels} ch {rate} Hz: threads {threads}; RSS at rest: start {start_mb:.0f} MB, "
        f"after each wave of 20 drops {at_rest}"
    )
    assert at_rest[-1] - start_mb < 60  # was +940, +130 and +1010 MB after four waves, and growing
    assert at_rest[-1] - at_rest[0] < 60  # no growth from one wave to the next
    assert threads < 40  # was 2 a resampled channel (one per core) until collected
