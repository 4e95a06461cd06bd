"""SIGTERM on a real server: new sessions stop, every open utterance is finalized, its final and
``session.closed`` (``server_shutdown``) reach the client, and the process exits within the grace period."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import websockets

from ..conftest import RawWebsocket, ServerHandle, server_status, start_server
from ..helpers import silence, synthesize, to_pcm16, wer

FIRST = "The children are playing football in the park."
SECOND = "Please send the quarterly report to the finance team and thank them for their help."


async def stream_until_closed(url: str, payload: bytes, log: list[dict]) -> int | None:
    """Stream at real-time pace (then keepalives, as a live source would) until the server closes; every
    event is appended to ``log`` as it arrives. Returns the close code."""
    async with websockets.connect(url, open_timeout=30) as ws:

        async def send() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                t0 = time.monotonic()
                for i in range(0, len(payload), 3200):
                    await ws.send(payload[i : i + 3200])
                    await asyncio.sleep(max(0.0, t0 + (i + 3200) / 32000 - time.monotonic()))
                while True:
                    await ws.send(json.dumps({"type": "keepalive"}))
                    await asyncio.sleep(0.5)

        sender = asyncio.create_task(send())
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                log.append(json.loads(raw))
        sender.cancel()
        return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None


def in_second_utterance(log: list[dict]) -> bool:
    return any(e["type"] == "speech.started" and e["utterance_id"] == 1 for e in log)


def wait_exit(server: ServerHandle, timeout_s: float) -> float:
    started = time.monotonic()
    while server.process.poll() is None and time.monotonic() - started < timeout_s:
        time.sleep(0.05)
    return time.monotonic() - started


def test_sigterm_delivers_every_accepted_utterance(tmp_path: Path) -> None:
    server = start_server(tmp_path, shutdown_grace_s=10)
    payload = to_pcm16(np.concatenate([silence(0.3), synthesize(FIRST), silence(1.2), synthesize(SECOND)]))
    logs: list[list[dict]] = [[] for _ in range(4)]  # the last one sends no audio at all

    async def scenario() -> list[int | None]:
        url = f"{server.ws_url}/v1/listen"
        streams = [asyncio.create_task(stream_until_closed(url, payload, log)) for log in logs[:3]]
        streams.append(asyncio.create_task(stream_until_closed(url, b"", logs[3])))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(in_second_utterance(log) for log in logs[:3]):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # well inside the second sentence
        server.process.send_signal(signal.SIGTERM)
        return list(await asyncio.gather(*streams))

    try:
        close_codes = asyncio.run(scenario())
        exit_s = wait_exit(server, 30)
        with pytest.raises(OSError):  # no new connections once draining began (or the process is gone)
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    finally:
        server.stop(signal.SIGKILL)
    print(f"exit {exit_s:.2f} s after the sessions closed; close codes {close_codes}")
    assert close_codes == [1001] * 4
    for log in logs[:3]:
        finals = [e for e in log if e["type"] == "final"]
        started = sorted(e["utterance_id"] for e in log if e["type"] == "speech.started")
        assert [f["utterance_id"] for f in finals] == started == [0, 1], log
        assert wer(FIRST, finals[0]["text"]) <= 0.2
        cut = finals[1]["text"].lower().strip()  # the utterance SIGTERM cut short, finalized with what was said
        assert cut and SECOND.lower().startswith(cut.split()[0].strip(",.")), finals[1]
        assert log[-1] == {**log[-1], "type": "session.closed", "reason": "server_shutdown"}
        assert {e["code"] for e in log if e["type"] == "error"} <= {"protocol_error"}  # audio sent after SIGTERM
    assert [e["type"] for e in logs[3]] == ["session.started", "session.closed"]
    assert logs[3][-1]["reason"] == "server_shutdown"
    assert exit_s <= 10, exit_s


def test_a_client_that_never_reads_cannot_hold_shutdown_past_the_grace_period(tmp_path: Path) -> None:
    server = start_server(tmp_path, shutdown_grace_s=3)
    try:
        stuck = RawWebsocket(server.port, rcvbuf=4096)
        junk = json.dumps({"type": "x" * 200})
        for _ in range(100):  # unread errors until the server's writes to it back up
            for _ in range(1000):
                stuck.send_text(junk)
            time.sleep(0.1)
            if server_status(server)["queued_events"] >= 20:
                break
        assert server_status(server)["queued_events"] >= 20
        log: list[dict] = []

        async def scenario() -> tuple[int | None, float]:
            url = f"{server.ws_url}/v1/listen"
            task = asyncio.create_task(stream_until_closed(url, to_pcm16(synthesize(FIRST)), log))
            while not any(e["type"] == "speech.started" for e in log):
                await asyncio.sleep(0.05)
            server.process.send_signal(signal.SIGTERM)
            return await task, time.monotonic()

        code, signalled = asyncio.run(scenario())
        wait_exit(server, 30)
        exit_s = time.monotonic() - signalled
    finally:
        server.stop(signal.SIGKILL)
        stuck.abort()
    assert code == 1001 and [e["type"] for e in log if e["type"] == "final"] == ["final"]
    assert log[-1].get("reason") == "server_shutdown", log[-3:]
    assert exit_s <= 3 + 6, exit_s  # the grace, plus the decode batch running at its end and start-up slack
    print(f"exited {exit_s:.2f} s after SIGTERM with a stuck client")
