"""Limits, backpressure and faults against real servers with small limits (embedded model, espeak speech).

Two servers: ``tight`` has short time limits (idle 2 s, session 6 s, 3 sessions, 64 KiB messages), ``loaded``
has a small backlog (3 s), a decoded-upload cap, the test-only decode fault injection and JSON logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets

from ..conftest import (
    RawWebsocket,
    ServerHandle,
    metric_value,
    read_until_closed,
    rss_mb,
    server_status,
    start_server,
    wait_until,
)
from ..helpers import silence, synthesize, to_pcm16, wer

MESSAGE_LIMIT = 65536
FAULT_MARKER = "FAULT-INJECT-7c1e"
SENTENCES = [
    "The children are playing football in the park.",
    "Please send the quarterly report to the finance team.",
    "My favorite color is green and I like to read books.",
    "Thank you for calling customer support, how can I help you?",
    "The train to the city leaves at half past seven.",
    "We need more coffee and some milk for the office.",
    "Turn left at the next corner and walk two blocks.",
    "She plays the piano every evening after dinner.",
]


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = start_server(
        tmp_path_factory.mktemp("tight"),
        max_sessions=3,
        max_message_bytes=MESSAGE_LIMIT,
        idle_timeout_s=2,
        max_session_s=6,
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = start_server(
        tmp_path_factory.mktemp("loaded"),
        max_backlog_s=3,
        max_upload_duration_s=60,
        fail_decode_marker=FAULT_MARKER,
        log_format="json",
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def sentence_audio() -> list[np.ndarray]:
    return [synthesize(s) for s in SENTENCES]


async def keepalive(ws: websockets.ClientConnection, every_s: float = 0.5) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            await ws.send(json.dumps({"type": "keepalive"}))
            await asyncio.sleep(every_s)


async def send_chunked(ws: websockets.ClientConnection, payload: bytes, chunk: int = 32000) -> None:
    for i in range(0, len(payload), chunk):
        await ws.send(payload[i : i + chunk])


def codes(events: list[dict]) -> list[str]:
    return [e["code"] for e in events if e["type"] == "error"]


# --- tight: sessions, message size, idle and duration -------------------------------------------------------


def test_too_many_sessions_get_an_error_then_1013(tight: ServerHandle) -> None:
    url = f"{tight.ws_url}/v1/listen"

    async def scenario() -> None:
        held = [await websockets.connect(url) for _ in range(3)]
        pingers = [asyncio.create_task(keepalive(ws)) for ws in held]
        for ws in held:
            assert json.loads(await ws.recv())["type"] == "session.started"
        async with websockets.connect(url) as refused:
            events, code, _ = await read_until_closed(refused, 20)
        assert [e["type"] for e in events] == ["error"] and events[0]["code"] == "too_many_sessions", events
        assert code == 1013
        await held[0].send(json.dumps({"type": "close_stream"}))
        await read_until_closed(held[0], 20)
        assert await asyncio.to_thread(wait_until, lambda: server_status(tight)["sessions"] == 2, 10)
        async with websockets.connect(url) as admitted:  # a freed slot is usable at once
            assert json.loads(await admitted.recv())["type"] == "session.started"
        for task in pingers:
            task.cancel()
        for ws in held[1:]:
            await ws.close()

    asyncio.run(scenario())
    assert metric_value(tight, "errors_total", transport="native", code="too_many_sessions") >= 1
    assert wait_until(lambda: server_status(tight)["sessions"] == 0, 10)


def test_an_oversized_message_is_refused_and_the_session_goes_on(tight: ServerHandle) -> None:
    speech = to_pcm16(np.concatenate([synthesize(SENTENCES[1]), silence(0.8)]))

    async def scenario() -> tuple[list[dict], int | None]:
        async with websockets.connect(f"{tight.ws_url}/v1/listen") as ws:
            await ws.send(bytes(MESSAGE_LIMIT + 2))
            await ws.send("x" * (MESSAGE_LIMIT + 1))
            await send_chunked(ws, speech, MESSAGE_LIMIT)
            await ws.send(json.dumps({"type": "close_stream"}))
            events, code, _ = await read_until_closed(ws, 30)
        return events, code

    events, code = asyncio.run(scenario())
    assert codes(events) == ["message_too_large", "message_too_large"]
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 1 and wer(SENTENCES[1], finals[0]["text"]) <= 0.2
    assert events[-1]["type"] == "session.closed" and code == 1000


def test_a_message_over_twice_the_limit_closes_with_1009(tight: ServerHandle) -> None:
    async def scenario() -> int | None:
        async with websockets.connect(f"{tight.ws_url}/v1/listen") as ws:
            await ws.recv()
            await ws.send(bytes(2 * MESSAGE_LIMIT + 1))
            _, code, _ = await read_until_closed(ws, 20)
        return code

    assert asyncio.run(scenario()) == 1009
    assert httpx.get(f"{tight.base_url}/readyz").status_code == 200
    assert wait_until(lambda: server_status(tight)["sessions"] == 0, 10)


def test_idle_timeout_flushes_accepted_audio_then_closes(tight: ServerHandle) -> None:
    speech = to_pcm16(synthesize(SENTENCES[2]))  # no trailing silence: the utterance is still open

    async def scenario() -> tuple[list[dict], int | None, float]:
        async with websockets.connect(f"{tight.ws_url}/v1/listen") as ws:
            await send_chunked(ws, speech)
            sent = time.monotonic()
            events, code, _ = await read_until_closed(ws, 30)
        return events, code, time.monotonic() - sent

    events, code, elapsed = asyncio.run(scenario())
    assert codes(events) == ["idle_timeout"]
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 1 and wer(SENTENCES[2], finals[0]["text"]) <= 0.2  # accepted audio is never lost
    assert events[-1]["type"] == "session.closed" and events[-1]["reason"] == "idle_timeout"
    assert code == 1000 and 1.8 <= elapsed <= 20


def test_keepalives_hold_an_idle_session_open(tight: ServerHandle) -> None:
    async def scenario() -> list[dict]:
        async with websockets.connect(f"{tight.ws_url}/v1/listen") as ws:
            for _ in range(8):  # 4 s: twice the idle timeout
                await ws.send(json.dumps({"type": "keepalive"}))
                await asyncio.sleep(0.5)
            await ws.send(json.dumps({"type": "close_stream"}))
            events, _, _ = await read_until_closed(ws, 20)
        return events

    events = asyncio.run(scenario())
    assert codes(events) == [] and events[-1]["reason"] == "client_closed"


def test_max_session_duration_closes_after_delivering_finals(tight: ServerHandle) -> None:
    speech = to_pcm16(synthesize(SENTENCES[3]))

    async def scenario() -> tuple[list[dict], float]:
        async with websockets.connect(f"{tight.ws_url}/v1/listen") as ws:
            started = time.monotonic()
            pinger = asyncio.create_task(keepalive(ws))
            await asyncio.sleep(3)
            await send_chunked(ws, speech)  # mid-utterance when the 6 s run out
            events, _, _ = await read_until_closed(ws, 30)
            pinger.cancel()
        return events, time.monotonic() - started

    events, elapsed = asyncio.run(scenario())
    assert codes(events) == ["max_session_duration"]
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 1 and wer(SENTENCES[3], finals[0]["text"]) <= 0.2
    assert events[-1] == {**events[-1], "type": "session.closed", "reason": "max_duration"}
    assert 5.8 <= elapsed <= 30


# --- loaded: backpressure, slow readers, faults, disconnects, uploads ---------------------------------------


def test_a_client_faster_than_real_time_is_throttled_and_loses_nothing(
    loaded: ServerHandle, sentence_audio: list[np.ndarray]
) -> None:
    audio = np.concatenate([np.concatenate([a, silence(0.8)]) for a in sentence_audio])
    payload = to_pcm16(audio)
    chunk = 16000  # 0.5 s per message, sent as fast as the server reads
    backlog_seen: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            backlog_seen.append(server_status(loaded)["backlog_seconds"])
            time.sleep(0.05)

    async def scenario() -> tuple[list[dict], float]:
        async with websockets.connect(f"{loaded.ws_url}/v1/listen") as ws:
            started = time.monotonic()
            for i in range(0, len(payload), chunk):
                await ws.send(payload[i : i + chunk])
            await ws.send(json.dumps({"type": "close_stream"}))
            send_s = time.monotonic() - started
            events, _, _ = await read_until_closed(ws, 120)
        return events, send_s

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        events, send_s = asyncio.run(scenario())
    finally:
        stop.set()
        watcher.join()
    assert "backlog_full" in codes(events)
    finals = [e for e in events if e["type"] == "final"]
    assert [f["utterance_id"] for f in finals] == list(range(len(SENTENCES))), finals
    assert wer(" ".join(SENTENCES), " ".join(f["text"] for f in finals)) <= 0.2
    assert events[-1]["reason"] == "client_closed"
    # bounded: the 3 s budget plus what one message and the utterances it ends can add
    assert max(backlog_seen) <= 3 + 6, max(backlog_seen)
    assert metric_value(loaded, "stream_backpressure_total") >= 1
    print(f"sent {len(audio) / 16000:.1f} s of audio in {send_s:.2f} s; most backlog seen {max(backlog_seen):.1f} s")


UNKNOWN_TYPE = json.dumps({"type": "x" * 200})  # each answered by a ~150-byte protocol_error


def back_up(ws: RawWebsocket, server: ServerHandle, until: Callable[[], bool]) -> int:
    """Send bad messages without reading the errors until ``until()``: the kernel's socket buffers
    (autotuned up to a few MB on loopback) fill first, then the server's outbox. Returns how many."""
    answered_before = metric_value(server, "errors_total", transport="native", code="protocol_error")

    def caught_up() -> bool:  # the server has read every bad message sent so far (none waits in TCP buffers)
        return metric_value(server, "errors_total", transport="native", code="protocol_error") >= answered_before + sent

    sent = 0
    while sent < 100_000:
        for _ in range(500):
            ws.send_text(UNKNOWN_TYPE)
        sent += 500
        # on a slow machine the server reads slower than this loop writes: pace on its reading, so that the
        # outbox grows by at most one burst past ``until`` (not by everything still in flight)
        wait_until(lambda: caught_up() or until(), 30, interval_s=0.02)
        if until():
            return sent
    raise AssertionError(f"the server's writes never backed up after {sent} unread events")


def test_a_slow_reader_gets_coalesced_partials_and_every_final(
    loaded: ServerHandle, sentence_audio: list[np.ndarray]
) -> None:
    audio = to_pcm16(np.concatenate([sentence_audio[4], sentence_audio[5], silence(1.0)]))
    coalesced_before = metric_value(loaded, "stream_partials_coalesced_total")
    ws = RawWebsocket(loaded.port, rcvbuf=4096)
    junk = back_up(ws, loaded, lambda: server_status(loaded)["queued_events"] >= 20)
    for i in range(0, len(audio), 3200):  # 4x real time, still unread
        ws.send_binary(audio[i : i + 3200])
        time.sleep(0.025)
    ws.send_text(json.dumps({"type": "close_stream"}))
    events, code, _ = ws.read_until_closed()
    assert codes(events).count("protocol_error") == junk  # errors are never dropped either
    assert set(codes(events)) <= {"protocol_error", "backlog_full"}  # 4x real time on a 3 s backlog
    finals = [e for e in events if e["type"] == "final"]
    assert wer(f"{SENTENCES[4]} {SENTENCES[5]}", " ".join(f["text"] for f in finals)) <= 0.2
    assert metric_value(loaded, "stream_partials_coalesced_total") > coalesced_before
    assert events[-1]["reason"] == "client_closed" and code == 1000
    print(
        f"{junk} unread errors backed the socket up; partials received: {sum(e['type'] == 'partial' for e in events)}"
    )


def test_a_client_that_never_reads_is_closed_as_slow_consumer(loaded: ServerHandle) -> None:
    ws = RawWebsocket(loaded.port, rcvbuf=4096)
    gave_up = lambda: metric_value(loaded, "errors_total", transport="native", code="slow_consumer") > 0  # noqa: E731
    with contextlib.suppress(OSError):  # once it gives up the server stops reading too: our sends block
        back_up(ws, loaded, gave_up)
    assert wait_until(gave_up, 10)
    _, code, reason = ws.read_until_closed()
    assert (code, reason) == (1008, "slow_consumer")
    assert wait_until(lambda: server_status(loaded)["sessions"] == 0, 15)


def test_a_failing_decode_fails_only_its_requests(loaded: ServerHandle, sentence_audio: list[np.ndarray]) -> None:
    failed_before = metric_value(loaded, "decode_failed_batches_total")
    speech = to_pcm16(np.concatenate([sentence_audio[0], silence(1.0), sentence_audio[1], silence(1.0)]))

    async def session(prompt: str) -> list[dict]:
        async with websockets.connect(f"{loaded.ws_url}/v1/listen?prompt={prompt}") as ws:
            await ws.send(speech)
            await ws.send(json.dumps({"type": "close_stream"}))
            events, _, _ = await read_until_closed(ws, 60)
        return events

    doomed = asyncio.run(session(FAULT_MARKER))
    finals = [e for e in doomed if e["type"] == "final"]
    assert [f["utterance_id"] for f in finals] == [0, 1] and all(f["text"] == "" for f in finals)
    assert codes(doomed).count("decode_failed") == 2
    assert doomed[-1]["type"] == "session.closed"
    healthy = asyncio.run(session("names"))
    assert wer(f"{SENTENCES[0]} {SENTENCES[1]}", " ".join(e["text"] for e in healthy if e["type"] == "final")) <= 0.2
    assert metric_value(loaded, "decode_failed_batches_total") >= failed_before + 1
    wav = io.BytesIO()
    sf.write(wav, sentence_audio[0], 16000, format="WAV", subtype="PCM_16")
    upload = {"file": ("speech.wav", wav.getvalue(), "audio/wav")}
    failed = httpx.post(
        f"{loaded.base_url}/v1/audio/transcriptions",
        files=upload,
        data={"model": "whisper-1", "prompt": FAULT_MARKER},
        timeout=60,
    )
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "decode_failed", failed.text
    fine = httpx.post(
        f"{loaded.base_url}/v1/audio/transcriptions", files=upload, data={"model": "whisper-1"}, timeout=60
    )
    assert wer(SENTENCES[0], fine.json()["text"]) <= 0.2
    assert httpx.get(f"{loaded.base_url}/readyz").json()["ready"] is True


def test_clients_that_vanish_mid_utterance_free_everything(
    loaded: ServerHandle, sentence_audio: list[np.ndarray]
) -> None:
    speech = to_pcm16(np.concatenate([sentence_audio[6], silence(0.7), sentence_audio[7]]))  # ends mid-speech

    async def vanish() -> None:
        ws = await websockets.connect(f"{loaded.ws_url}/v1/listen")
        await ws.recv()
        await ws.send(speech)
        await ws.send(json.dumps({"type": "finalize"}))
        ws.transport.abort()  # no close frame, no FIN handshake: the TCP connection just dies

    async def scenario() -> None:
        await asyncio.gather(*(vanish() for _ in range(6)))

    asyncio.run(scenario())

    def freed() -> bool:
        status = server_status(loaded)
        return status["sessions"] == 0 and status["scheduler"]["queue_depth"] == 0 and status["queued_events"] == 0

    assert wait_until(freed, 20), server_status(loaded)
    assert wait_until(lambda: metric_value(loaded, "stream_active_sessions") == 0, 5)


def test_an_upload_that_decodes_to_hours_is_refused_early(loaded: ServerHandle, tmp_path: Path) -> None:
    import subprocess

    bomb = tmp_path / "two-hours-of-silence.flac"  # 1.3 MB that decodes to 460 MB of 16 kHz float32
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=8000:cl=mono",
            "-t",
            "7200",
            "-c:a",
            "flac",
            str(bomb),
        ],
        check=True,
    )
    peak_before = rss_mb(loaded, "VmHWM")
    started = time.monotonic()
    response = httpx.post(
        f"{loaded.base_url}/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"file": (bomb.name, bomb.read_bytes(), "audio/flac")},
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "limit_exceeded" and "60" in response.json()["error"]["message"]
    assert rss_mb(loaded, "VmHWM") - peak_before < 150  # decoded in full it would add ~460 MB
    print(f"2 h upload refused in {elapsed:.2f} s; peak RSS {peak_before:.0f} -> {rss_mb(loaded, 'VmHWM'):.0f} MB")


# --- observability -------------------------------------------------------------------------------------------


def test_metrics_follow_a_session(loaded: ServerHandle, sentence_audio: list[np.ndarray]) -> None:
    names = {
        "finals": ("stream_messages_sent_total", {"type": "final"}),
        "latency": ("stream_final_latency_seconds_count", {}),
        "audio": ("stream_audio_seconds_total", {}),
        "batches": ("decode_batch_size_count", {}),
        "waits": ("decode_queue_wait_seconds_count", {}),
        "extras": ("decode_final_tier_total", {"tier": "full"}),  # an idle server: context and beam 5 for the final
    }
    before = {k: metric_value(loaded, name, **labels) for k, (name, labels) in names.items()}
    audio = np.concatenate([sentence_audio[2], silence(1.0)])

    async def scenario() -> list[dict]:
        async with websockets.connect(f"{loaded.ws_url}/v1/listen") as ws:
            await send_chunked(ws, to_pcm16(audio))
            await ws.send(json.dumps({"type": "close_stream"}))
            events, _, _ = await read_until_closed(ws, 60)
        return events

    assert len([e for e in asyncio.run(scenario()) if e["type"] == "final"]) == 1
    after = {k: metric_value(loaded, name, **labels) for k, (name, labels) in names.items()}
    assert after["finals"] - before["finals"] == 1
    assert after["latency"] - before["latency"] == 1  # one observation per final
    assert after["audio"] - before["audio"] == pytest.approx(len(audio) / 16000, abs=0.05)
    assert after["batches"] > before["batches"] and after["waits"] > before["waits"]
    assert after["extras"] > before["extras"]
    assert metric_value(loaded, "stream_active_sessions") == 0


def test_json_logs_carry_the_session_id(loaded: ServerHandle) -> None:
    """Runs after the sessions above: every line is JSON, and every line about a session names it."""
    entries = [json.loads(line) for line in loaded.log().splitlines() if line.strip()]
    assert {"time", "level", "logger", "session_id", "message"} <= set(entries[0])
    session_lines = [e for e in entries if e["logger"] == "stream_server.session"]
    assert session_lines and all(len(e["session_id"]) == 16 for e in session_lines)
    accepted = [e for e in entries if "WebSocket /v1/listen" in e["message"]]  # uvicorn's own handshake lines
    assert accepted and all(e["session_id"] != "-" for e in accepted)
    assert any(e["level"] == "error" and "injected fault" in e.get("exception", "") for e in entries)
