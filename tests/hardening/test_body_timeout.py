"""Finding 3's last part: a request body trickled after complete headers is timed out (``--body-timeout-s``).

Real sockets against a real server: a body that stops, and one that trickles a byte at a time inside the gap,
both get ``408`` in OpenAI's error shape and a closed connection, while ``/healthz`` and a normal upload (with
the only upload decode slot) still work. ``BodyClock`` itself is checked without a clock.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets

from stream_server.request_body import BodyClock

from ..conftest import ServerHandle, start_server
from ..helpers import synthesize
from .test_connections import closed_by_server, health_s

BODY_TIMEOUT_S = 1.5
BOUNDARY = "b0undary"


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = start_server(tmp_path_factory.mktemp("body"), body_timeout_s=BODY_TIMEOUT_S, max_upload_decodes=1)
    yield handle
    handle.stop()


def upload_head(server: ServerHandle, body_bytes: int) -> bytes:
    return (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {body_bytes}\r\n\r\n"
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()


def assert_408(answer: bytes | None) -> None:
    assert answer is not None, "the trickled request is still open"
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head[:80]
    assert json.loads(body)["error"]["code"] == "request_timeout"


def normal_upload(server: ServerHandle, wav: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("speech.wav", wav, "audio/wav")},
        data={"model": "whisper-1"},
        timeout=60,
    )


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    try:
        audio = synthesize("Please call Stella.")
    except RuntimeError as exc:
        pytest.skip(f"espeak-ng is needed for speech: {exc}")
    out = io.BytesIO()
    sf.write(out, audio, 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()


def test_a_body_that_stops_gets_408_and_the_server_stays_usable(patient: ServerHandle, speech_wav: bytes) -> None:
    sock = socket.create_connection(("127.0.0.1", patient.port), timeout=5)
    sock.sendall(upload_head(patient, 100_000) + b"RIFF" + b"\0" * 1000)  # then nothing
    started = time.monotonic()
    assert health_s(patient) < 1
    assert normal_upload(patient, speech_wav).status_code == 200  # the stalled body holds no decode slot
    assert_408(closed_by_server(sock, BODY_TIMEOUT_S + 3))
    assert time.monotonic() - started < BODY_TIMEOUT_S + 2.5
    sock.close()


def test_a_body_trickled_inside_the_gap_is_cut_by_the_minimum_rate(patient: ServerHandle, speech_wav: bytes) -> None:
    sock = socket.create_connection(("127.0.0.1", patient.port), timeout=5)
    sock.sendall(upload_head(patient, 100_000))
    stop = threading.Event()

    def trickle() -> None:  # a byte every 0.2 s: never a gap of BODY_TIMEOUT_S, 5 bytes/s on average
        while not stop.wait(0.2):
            try:
                sock.sendall(b"\0")
            except OSError:
                return

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    started = time.monotonic()
    try:
        assert health_s(patient) < 1
        assert normal_upload(patient, speech_wav).status_code == 200
        assert_408(closed_by_server(sock, 2 * BODY_TIMEOUT_S + 3))
        assert time.monotonic() - started < 2 * BODY_TIMEOUT_S + 2.5
    finally:
        stop.set()
        sender.join(2)
        sock.close()


def test_a_slow_but_steady_upload_is_not_cut(patient: ServerHandle, speech_wav: bytes) -> None:
    """Over the minimum rate with pauses under the gap: the whole body arrives and is transcribed."""
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + speech_wav
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", patient.port), timeout=30)
    sock.sendall(head)
    step = len(body) // 8
    for i in range(0, len(body), step):  # 8 pieces, 0.5 s apart: about 4 s in all, well over 500 bytes/s
        sock.sendall(body[i : i + step])
        time.sleep(0.5)
    answer = closed_by_server(sock, 30)
    sock.close()
    assert answer is not None and answer.startswith(b"HTTP/1.1 200"), (answer or b"")[:200]
    assert b"Please call" in answer


def test_the_body_clock_counts_gaps_rates_and_not_the_servers_own_pauses() -> None:
    clock = BodyClock(gap_s=2.0, now=0.0)
    assert clock.expired(1.9, paused=False) is None
    assert clock.expired(2.0, paused=False) == "no part of the request body arrived for 2 s"
    steady = BodyClock(gap_s=2.0, now=0.0)
    for t in np.arange(0.1, 10.0, 0.1):
        steady.received(float(t), 60)  # 600 bytes/s
        assert steady.expired(float(t), paused=False) is None
    slow = BodyClock(gap_s=2.0, now=0.0)
    for t in np.arange(0.5, 2.01, 0.5):
        slow.received(float(t), 100)  # 200 bytes/s, never a gap
    assert slow.expired(2.0, paused=False) == "the request body arrived slower than 500 bytes/s"
    paused = BodyClock(gap_s=2.0, now=0.0)
    paused.received(1.0, 1000)
    assert paused.expired(30.0, paused=True) is None  # the server was not reading: not the client's gap
    assert paused.expired(31.0, paused=False) is None
    assert paused.counted_s == pytest.approx(2.0)


def test_a_websocket_session_outlives_the_body_timeout(patient: ServerHandle) -> None:
    """The upgrade request is where h11 still waits for a body: no 408 may be written into the websocket."""

    async def session() -> list[dict[str, object]]:
        async with websockets.connect(f"{patient.ws_url}/v1/listen") as ws:
            await ws.recv()
            await asyncio.sleep(2 * BODY_TIMEOUT_S + 1.5)
            await ws.send(json.dumps({"type": "close_stream"}))
            return [json.loads(m) async for m in ws]

    events = asyncio.run(session())
    assert events[-1]["type"] == "session.closed", events
