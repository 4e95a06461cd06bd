"""openai's realtime client in transcription mode against the real server: GA (server VAD, commit-only, G.711)
and the beta path, with ``base_url`` pointing at the server as for the batch API."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ..conftest import ServerHandle
from ..helpers import silence
from .e2e import API_KEY, assert_wer_close, mulaw_8k, pcm16_at, sentences_16k, two_sentences_16k

openai = pytest.importorskip("openai")

COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


def client(server: ServerHandle) -> Any:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)


def beta_client(server: ServerHandle) -> Any:
    """The beta connect always uses wss:// from ``base_url``; a plain-ws server is named explicitly."""
    return openai.AsyncOpenAI(
        base_url=f"{server.base_url}/v1", websocket_base_url=f"{server.ws_url}/v1", api_key=API_KEY, max_retries=0
    )


async def append(connection: Any, payload: bytes, bytes_per_s: int) -> None:
    step = bytes_per_s // 20  # 50 ms per event, as LiveKit sends
    for i in range(0, len(payload), step):
        await connection.input_audio_buffer.append(audio=base64.b64encode(payload[i : i + step]).decode())
        await asyncio.sleep(0.01)


async def collect_until(
    connection: Any, events: list[Any], done: Callable[[list[Any]], bool], timeout: float = 90
) -> None:
    async def loop() -> None:
        while not done(events):
            events.append(await connection.recv())

    await asyncio.wait_for(loop(), timeout)


def completed(events: list[Any]) -> list[Any]:
    return [e for e in events if e.type == COMPLETED]


def assert_deltas_concatenate(events: list[Any]) -> None:
    for item in completed(events):
        deltas = "".join(e.delta for e in events if e.type == DELTA and e.item_id == item.item_id)
        assert deltas == item.transcript, (deltas, item.transcript)


def ga_session(format_: dict[str, Any], turn_detection: dict[str, Any] | None) -> dict[str, Any]:
    audio_input = {"format": format_, "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                   "turn_detection": turn_detection}  # fmt: skip
    return {"type": "transcription", "audio": {"input": audio_input}}


SERVER_VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}


def test_server_vad_two_sentences_in_order(dialect_server: ServerHandle, native_text: str) -> None:
    events: list[Any] = []

    async def scenario() -> None:
        async with client(dialect_server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
            await collect_until(connection, events, lambda ev: len(ev) >= 1)
            await connection.session.update(session=ga_session({"type": "audio/pcm", "rate": 24000}, SERVER_VAD))
            await append(connection, pcm16_at(two_sentences_16k(), 24000), 48000)
            await collect_until(connection, events, lambda ev: len(completed(ev)) >= 2)

    asyncio.run(scenario())
    assert events[0].type == "session.created" and events[1].type == "session.updated"
    assert events[1].session.audio.input.turn_detection.silence_duration_ms == 500
    first, second = completed(events)
    assert first.item_id != second.item_id and events.index(first) < events.index(second)
    for item in (first, second):
        kinds = [e.type for e in events if getattr(e, "item_id", None) == item.item_id]
        assert kinds[0] == "input_audio_buffer.speech_started"
        assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")
        assert kinds[-1] == COMPLETED and item.usage.seconds > 1
    assert_deltas_concatenate(events)
    assert_wer_close(f"{first.transcript} {second.transcript}", native_text, points=1)


def test_commit_only_and_a_bad_event_does_not_end_the_session(dialect_server: ServerHandle) -> None:
    events: list[Any] = []
    first, second = sentences_16k()

    async def scenario() -> None:
        async with client(dialect_server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
            await connection.session.update(session=ga_session({"type": "audio/pcm", "rate": 24000}, None))
            await append(connection, pcm16_at(np.concatenate([silence(0.3), first, silence(2.0)]), 24000), 48000)
            await connection.input_audio_buffer.commit()
            await collect_until(connection, events, lambda ev: len(completed(ev)) >= 1)
            await connection.send({"type": "response.create"})  # not part of a transcription session
            await collect_until(connection, events, lambda ev: ev[-1].type == "error")
            await append(connection, pcm16_at(np.concatenate([second, silence(0.3)]), 24000), 48000)
            await connection.input_audio_buffer.commit()
            await collect_until(connection, events, lambda ev: len(completed(ev)) >= 2)

    asyncio.run(scenario())
    assert not [e for e in events if e.type.startswith("input_audio_buffer.speech_")]  # no VAD without it
    assert [e.type for e in events if e.type == "error"] == ["error"]
    texts = [c.transcript.lower() for c in completed(events)]
    assert "block books" in texts[0] and "first importance" in texts[1], texts
    assert_deltas_concatenate(events)


def test_pcmu(dialect_server: ServerHandle, native_text: str) -> None:
    events: list[Any] = []

    async def scenario() -> None:
        async with client(dialect_server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
            await connection.session.update(session=ga_session({"type": "audio/pcmu"}, SERVER_VAD))
            await append(connection, mulaw_8k(two_sentences_16k()), 8000)
            await collect_until(connection, events, lambda ev: len(completed(ev)) >= 2)

    asyncio.run(scenario())
    assert_deltas_concatenate(events)
    assert_wer_close(" ".join(c.transcript for c in completed(events)), native_text, points=3)


def test_beta_transcription_session(dialect_server: ServerHandle) -> None:
    events: list[dict[str, Any]] = []
    first, _ = sentences_16k()

    async def scenario() -> None:
        connect = beta_client(dialect_server).beta.realtime.connect(
            model="whisper-1", extra_query={"intent": "transcription"}
        )
        async with connect as connection:
            update = {"type": "transcription_session.update", "session": {"input_audio_format": "pcm16",
                      "input_audio_transcription": {"model": "whisper-1"}, "turn_detection": SERVER_VAD}}  # fmt: skip
            await connection.send(update)
            await append(connection, pcm16_at(np.concatenate([silence(0.3), first, silence(1.5)]), 24000), 48000)
            while not any(e.get("type") == COMPLETED for e in events):
                events.append(json.loads(await connection.recv_bytes()))

    asyncio.run(asyncio.wait_for(scenario(), 120))
    kinds = [e["type"] for e in events]
    assert "transcription_session.updated" in kinds
    assert "block books" in events[-1]["transcript"].lower()
