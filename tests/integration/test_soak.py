"""Soak: hundreds of sessions opened and abruptly dropped on loopback while others stream; afterwards the
server holds no session, no queued job and no queued event, and its memory is back near its baseline.

Short mode (CI, default): 300 dropped sessions in waves of 30 after a warm-up of 90, about 30 s. Long mode
(``STREAM_TESTS_LONG=1``): 3000 in waves of 100 after 300. Memory is read at rest after the warm-up and
after each half: it must stay near the baseline and must not keep growing from one half to the next. Bounded
in time and count either way; see docs/operations.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
import websockets

from ..conftest import ServerHandle, metric_value, rss_mb, server_status, start_server, wait_until
from ..helpers import StreamResult, silence, stream_audio, synthesize, to_pcm16, wer

LONG = os.environ.get("STREAM_TESTS_LONG") == "1"
WAVES, WAVE_SIZE = (30, 100) if LONG else (10, 30)
GOOD_TEXT = "The train to the city leaves at half past seven."
DROP_KINDS = (
    "after_handshake",
    "mid_utterance",
    "after_finalize",
    "mid_frame",
    "during_handshake",
    "close_frame",
    "never_reads",
)


# glibc keeps freed memory in per-thread arenas (CTranslate2 runs several threads): RSS then grows by 100-250 MB
# to a plateau that says nothing about leaks. Told to hand memory back, RSS measures what is really held.
ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    saved = {k: os.environ.get(k) for k in ALLOCATOR_ENV}
    os.environ.update(ALLOCATOR_ENV)
    try:
        handle = start_server(tmp_path_factory.mktemp("soak"), max_sessions=WAVE_SIZE + 20)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield handle
    handle.stop()
    log = handle.log()
    assert "Traceback" not in log, log[-5000:]


async def drop_one(server: ServerHandle, kind: str, speech: bytes, rng: random.Random) -> None:
    """Open a session and vanish in one of several rude ways."""
    if kind == "during_handshake":
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        request = (
            f"GET /v1/listen HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {'a' * 22}==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        writer.write(request[: rng.randrange(1, len(request))])
        await writer.drain()
        writer.transport.abort()
        return
    ws = await websockets.connect(f"{server.ws_url}/v1/listen", open_timeout=60)
    await ws.recv()  # session.started
    if kind in ("mid_utterance", "after_finalize", "mid_frame", "close_frame"):
        cut = rng.randrange(len(speech) // 3, len(speech)) // 2 * 2  # speech still going: an open utterance
        await ws.send(speech[:cut])
    if kind == "after_finalize":
        await ws.send(json.dumps({"type": "finalize"}))  # its final is queued, or decoding, as it leaves
    if kind == "mid_frame":
        ws.transport.write(b"\x82\xfe\x40\x00" + os.urandom(4) + os.urandom(rng.randrange(0, 1000)))
    if kind == "close_frame":
        await ws.close()  # a polite close, but without close_stream: the open utterance is abandoned
        return
    if kind == "never_reads":
        # stops reading (the client pauses its transport), asks for the end, holds the socket a while
        ws.transport.pause_reading()
        await ws.send(speech)
        await ws.send(json.dumps({"type": "close_stream"}))
        await asyncio.sleep(1.0 + rng.random())
    await asyncio.sleep(rng.random() * 0.05)
    ws.transport.abort()


class GoodStreams:
    """Two sessions streaming a known sentence at real-time pace, over and over, until stopped."""

    def __init__(self, server: ServerHandle, count: int = 2) -> None:
        self.payload = to_pcm16(np.concatenate([synthesize(GOOD_TEXT), silence(1.0)]))
        self.server = server
        self.results: list[StreamResult] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.results.append(asyncio.run(stream_audio(self.server.ws_url, self.payload, timeout_s=120)))
            except BaseException as exc:
                self.failures.append(exc)
                return

    def __enter__(self) -> GoodStreams:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(180)


def quiet(server: ServerHandle) -> bool:
    status = server_status(server)
    return (
        status["sessions"] == 0
        and status["scheduler"]["queue_depth"] == 0
        and status["queued_events"] == 0
        and not status["engine_busy"]
    )


def run_wave(server: ServerHandle, speech: bytes, rng: random.Random, tally: Counter[str]) -> None:
    kinds = [rng.choice(DROP_KINDS) for _ in range(WAVE_SIZE)]
    tally.update(kinds)

    async def wave() -> None:
        results = await asyncio.gather(*(drop_one(server, k, speech, rng) for k in kinds), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[:3]

    asyncio.run(wave())


def soak(server: ServerHandle, waves: int, speech: bytes, rng: random.Random, tally: Counter[str]) -> GoodStreams:
    """``waves`` waves of rude clients, spread over the good streams' lifetime; returns those streams."""
    with GoodStreams(server) as good:
        for _ in range(waves):
            run_wave(server, speech, rng, tally)
            time.sleep(0.3)
    assert not good.failures, good.failures
    for result in good.results:
        assert wer(GOOD_TEXT, result.text()) <= 0.2, result.finals
        assert result.events[-1]["type"] == "session.closed"
    assert wait_until(lambda: quiet(server), 60), server_status(server)
    return good


def test_dropped_sessions_leave_nothing_behind(server: ServerHandle) -> None:
    rng = random.Random(5)
    speech = to_pcm16(synthesize("Please call Stella and ask her to bring these things with her from the store."))
    tally: Counter[str] = Counter()
    started = time.monotonic()
    # warm-up under the same load, so that the baseline already holds the caches, pools and allocator arenas
    # that this much concurrency needs (CTranslate2's allocator keeps what its largest batch used). Measured
    # in-process with tracemalloc: Python objects grow by under 1 MB over 300 drops; native memory reaches its
    # plateau only after about 15 waves, so the warm-up is that long.
    soak(server, 15, speech, rng, tally)
    baseline_mb = rss_mb(server)
    fds_at_start = len(os.listdir(f"/proc/{server.process.pid}/fd"))
    first = soak(server, WAVES // 2, speech, rng, tally)
    first_mb = rss_mb(server)
    second = soak(server, WAVES - WAVES // 2, speech, rng, tally)
    second_mb = rss_mb(server)
    print(
        f"soak: {sum(tally.values())} sessions dropped ({dict(tally)}) in {time.monotonic() - started:.0f} s, "
        f"{len(first.results) + len(second.results)} good sessions meanwhile; RSS at rest: baseline "
        f"{baseline_mb:.0f} MB, after the first half {first_mb:.0f} MB, after the second {second_mb:.0f} MB"
    )
    assert metric_value(server, "stream_active_sessions") == 0
    # no socket kept for a client gone or never reading (the listening socket, the log, the model's files)
    assert wait_until(lambda: len(os.listdir(f"/proc/{server.process.pid}/fd")) <= fds_at_start, 15)
    assert metric_value(server, "decode_queue_depth") == 0
    # A leak of what a session holds (the audio it sent: ~100 KB on average here) would cost tens of MB per half
    # in short mode, hundreds in long mode, and as much again in the second half.
    # Native memory at rest moves by tens of MB either way as glibc and CTranslate2 return and take arenas (one CI
    # run: 265 MB at baseline, 237 after the first half, 258 after the second), so the second half is held against
    # the highest level seen before it: a steady leak of L per half still shows as L there, a dip and return as 0.
    assert second_mb - baseline_mb <= 40, (baseline_mb, first_mb, second_mb)
    assert second_mb - max(baseline_mb, first_mb) <= 20, (baseline_mb, first_mb, second_mb)
