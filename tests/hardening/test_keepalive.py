"""Websocket keepalive against a client the server itself reads slowly (issue 18, finding 6).

A client sending 8-channel 48 kHz audio as fast as it can is read at ``max_intake_speed``: its pong to the
server's keepalive ping waits behind its own queued audio. It must not be closed with 1011 for that, and
nothing it sent may be lost; a peer that sends nothing at all must still be found by the ping timeout.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
import websockets

from ..conftest import ServerHandle, start_server

PING_S = 1.0
RATE, CHANNELS = 48000, 8


@pytest.fixture(scope="module")
def slow_reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = start_server(
        tmp_path_factory.mktemp("keepalive"), ping_interval_s=PING_S, ping_timeout_s=PING_S, max_intake_speed=2
    )
    yield handle
    handle.stop()


async def flood_then_close(server: ServerHandle, flood_s: float) -> tuple[float, dict[str, object], int | None]:
    """Send quiet 8-channel audio as fast as the socket takes it for ``flood_s``, then ``close_stream``; the
    seconds of audio sent, the ``session.closed`` event (empty if none) and the close code."""
    noise = np.random.default_rng(0).standard_normal(RATE * CHANNELS) * 30  # 1 s of quiet noise, no speech
    chunk = noise.astype(np.int16).tobytes()
    closed: dict[str, object] = {}
    url = f"{server.ws_url}/v1/listen?sample_rate={RATE}&channels={CHANNELS}&interim_results=false"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()  # session.started

        async def read() -> None:
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "session.closed":
                    closed.update(event)

        reader = asyncio.create_task(read())
        sent = 0
        deadline = time.monotonic() + flood_s
        while time.monotonic() < deadline:
            await asyncio.wait_for(ws.send(chunk), 30)
            sent += len(chunk)
        await ws.send(json.dumps({"type": "close_stream"}))
        await asyncio.wait_for(reader, 60)
        return sent / (2 * CHANNELS * RATE), closed, ws.close_code


def test_flooding_client_is_not_closed_by_its_own_late_pong(slow_reader: ServerHandle) -> None:
    sent_s, closed, code = asyncio.run(flood_then_close(slow_reader, flood_s=8 * PING_S))
    assert code == 1000, f"closed with {code} (a 1011 is the keepalive timeout)"
    assert closed.get("reason") != "error", closed
    # everything the client sent was taken, up to the last sample (per channel)
    assert closed["audio_seconds"] == pytest.approx(sent_s, abs=0.01), (closed, sent_s)


def test_silent_peer_is_still_closed_by_the_ping_timeout(slow_reader: ServerHandle) -> None:
    """A client that never reads (so never answers a ping) and sends nothing is closed within a few pings."""

    async def silent() -> float:
        started = time.monotonic()
        async with websockets.connect(f"{slow_reader.ws_url}/v1/listen", ping_interval=None) as ws:
            ws.protocol.receive_data = lambda data: None  # type: ignore[method-assign]  # a dead peer: no pongs
            await asyncio.wait_for(ws.wait_closed(), 10 * PING_S)
        return time.monotonic() - started

    assert asyncio.run(silent()) < 6 * PING_S
