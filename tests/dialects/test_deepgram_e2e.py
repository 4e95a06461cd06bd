"""deepgram-sdk's live client against the real server (embedded model, real speech): only the base URL changes."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from ..conftest import ServerHandle
from ..helpers import silence, to_pcm16
from .e2e import API_KEY, assert_wer_close, mulaw_8k, references, sentences_16k, two_sentences_16k

deepgram = pytest.importorskip("deepgram", reason="deepgram-sdk is in the dialects-test extra")


def client(server: ServerHandle, key: str = API_KEY) -> Any:
    base = f"{server.base_url}/deepgram"
    env = deepgram.DeepgramClientEnvironment(
        base=base, production=f"{server.ws_url}/deepgram", agent=f"{server.ws_url}/deepgram", agent_rest=base
    )
    return deepgram.AsyncDeepgramClient(api_key=key, environment=env, reconnect=False)


async def run_live(
    server: ServerHandle, payload: bytes, bytes_per_s: int, *, after: list[str] = (), **options: Any
) -> list[Any]:
    """Stream ``payload`` (0.1 s chunks, about 4x real time), then send ``after`` (Finalize, CloseStream ...);
    every message received until the server closes."""
    received: list[Any] = []
    async with client(server).listen.v1.connect(model="nova-3", **options) as connection:

        async def listen() -> None:
            async for message in connection:
                received.append(message)

        listener = asyncio.create_task(listen())
        step = bytes_per_s // 10
        for i in range(0, len(payload), step):
            await connection.send_media(payload[i : i + step])
            await asyncio.sleep(0.025)
        for name in after:
            await {"Finalize": connection.send_finalize, "CloseStream": connection.send_close_stream}[name]()
            await asyncio.sleep(1.5)
        await asyncio.wait_for(listener, 120)
    return received


def finals(messages: list[Any]) -> list[Any]:
    return [m for m in messages if m.type == "Results" and m.is_final]


def transcript(messages: list[Any], channel: int | None = None) -> str:
    return " ".join(
        m.channel.alternatives[0].transcript
        for m in finals(messages)
        if m.channel.alternatives[0].transcript and (channel is None or m.channel_index[0] == channel)
    )


def test_live_pcm_interim_final_vad_events_finalize_and_close(dialect_server: ServerHandle, native_text: str) -> None:
    first, second = sentences_16k()
    # the second sentence has no trailing silence: only the Finalize can end it
    audio = np.concatenate([silence(0.5), first, silence(1.5), second, silence(0.2)])
    messages = asyncio.run(
        run_live(
            dialect_server, to_pcm16(audio), 32000, after=["Finalize", "Finalize", "CloseStream"],
            encoding="linear16", sample_rate=16000, channels=1, interim_results=True, vad_events=True,
            utterance_end_ms=1000, endpointing=500, language="en-US", punctuate=True, smart_format=True,
            keyterm=["typography"],
        )
    )  # fmt: skip
    kinds = [m.type for m in messages]
    assert kinds.index("SpeechStarted") < kinds.index("Results")
    assert any(m.type == "Results" and not m.is_final for m in messages), "no interim results"
    endpointed, finalized, empty = finals(messages)[0], finals(messages)[-2], finals(messages)[-1]
    assert endpointed.speech_final and not endpointed.from_finalize
    assert finalized.from_finalize and finalized.channel.alternatives[0].transcript
    assert empty.from_finalize and empty.channel.alternatives[0].transcript == ""  # nothing was open
    words = endpointed.channel.alternatives[0].words
    assert (
        words and 0 <= words[0].start < words[-1].end <= endpointed.start + endpointed.duration + 0.5
    )  # Whisper's timing
    assert "UtteranceEnd" in kinds and kinds[-1] == "Metadata"
    assert messages[-1].duration == pytest.approx(len(audio) / 16000, abs=0.1)
    assert_wer_close(transcript(messages), native_text, points=1)


def test_live_mulaw_8k(dialect_server: ServerHandle, native_text: str) -> None:
    payload = mulaw_8k(two_sentences_16k())
    messages = asyncio.run(
        run_live(dialect_server, payload, 8000, after=["CloseStream"], encoding="mulaw", sample_rate=8000,
                 endpointing=500)
    )  # fmt: skip
    assert len(finals(messages)) >= 2 and messages[-1].type == "Metadata"
    assert_wer_close(transcript(messages), native_text, points=3)


def test_live_two_channels_multichannel(dialect_server: ServerHandle) -> None:
    first, second = sentences_16k()
    length = max(len(first), len(second)) + 24000
    stereo = np.zeros((length + 8000, 2), np.float32)
    stereo[8000 : 8000 + len(first), 0] = first
    stereo[8000 : 8000 + len(second), 1] = second
    messages = asyncio.run(
        run_live(dialect_server, to_pcm16(stereo.reshape(-1)), 64000, after=["CloseStream"], encoding="linear16",
                 sample_rate=16000, channels=2, multichannel=True, endpointing=500)
    )  # fmt: skip
    assert {tuple(m.channel_index) for m in finals(messages) if m.channel.alternatives[0].transcript} == {
        (0, 2),
        (1, 2),
    }
    from ..helpers import wer

    for channel, reference in enumerate(references()):
        assert wer(reference, transcript(messages, channel)) < 0.35, transcript(messages, channel)


def test_wrong_key_fails_at_the_handshake(dialect_server: ServerHandle) -> None:
    async def attempt() -> None:
        async with client(dialect_server, key="wrong").listen.v1.connect(model="nova-3", encoding="linear16"):
            pass

    with pytest.raises(Exception) as info:  # noqa: B017 - the SDK raises its ApiError
        asyncio.run(attempt())
    assert "401" in str(info.value) or "invalid credentials" in str(info.value)


def test_two_channels_without_multichannel_are_mixed_down(dialect_server: ServerHandle) -> None:
    first, _ = sentences_16k()
    stereo = np.zeros((len(first) + 24000, 2), np.float32)
    stereo[8000 : 8000 + len(first), 0] = first  # the speaker on the left only: the mix still carries it
    messages = asyncio.run(
        run_live(dialect_server, to_pcm16(stereo.reshape(-1)), 64000, after=["CloseStream"], encoding="linear16",
                 sample_rate=16000, channels=2, endpointing=500)
    )  # fmt: skip
    spoken = [m for m in finals(messages) if m.channel.alternatives[0].transcript]
    assert spoken and {tuple(m.channel_index) for m in spoken} == {(0, 1)}
    from ..helpers import wer

    assert wer(references()[0], transcript(messages)) < 0.35, transcript(messages)
    assert messages[-1].type == "Metadata" and messages[-1].channels == 1


def _webm_opus(audio_16k: np.ndarray, tmp: Any) -> bytes:
    """``audio_16k`` encoded the way a browser's MediaRecorder sends it: WebM/Opus from ffmpeg."""
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    src, out = tmp / "speech.raw", tmp / "speech.webm"
    src.write_bytes(to_pcm16(audio_16k))
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", str(src),
         "-c:a", "libopus", "-b:a", "32k", str(out)],
        check=True,
    )  # fmt: skip
    return out.read_bytes()


def test_live_webm_opus_without_encoding(dialect_server: ServerHandle, native_text: str, tmp_path: Any) -> None:
    """No ``encoding``: containerized audio, sniffed and decoded as it streams in 250 ms slices (about 2 KB)."""
    payload = _webm_opus(two_sentences_16k(), tmp_path)
    seconds = len(two_sentences_16k()) / 16000
    per_250ms = int(len(payload) / seconds / 4) + 1
    messages = asyncio.run(
        run_live(dialect_server, payload, per_250ms * 10, after=["CloseStream"], endpointing=500)
    )  # fmt: skip
    assert len(finals(messages)) >= 2 and messages[-1].type == "Metadata"
    assert_wer_close(transcript(messages), native_text, points=1)


def test_native_webm_and_garbage_containers(dialect_server: ServerHandle, native_text: str, tmp_path: Any) -> None:
    """Protocol v1 takes the same stream as ``encoding=webm``; bytes that are not a container get a clear
    ``invalid_audio`` error."""
    import json

    import websockets

    payload = _webm_opus(two_sentences_16k(), tmp_path)
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def session(data: bytes) -> list[dict[str, Any]]:
        url = f"{dialect_server.ws_url}/v1/listen?encoding=webm"
        events: list[dict[str, Any]] = []
        async with websockets.connect(url, additional_headers=headers) as ws:
            for i in range(0, len(data), 2000):
                await ws.send(data[i : i + 2000])
                await asyncio.sleep(0.02)
            await ws.send(json.dumps({"type": "close_stream"}))
            async for message in ws:
                events.append(json.loads(message))
        return events

    events = asyncio.run(session(payload))
    finals_text = " ".join(e["text"] for e in events if e["type"] == "final")
    assert events[-1]["type"] == "session.closed"
    assert_wer_close(finals_text, native_text, points=1)
    errors = [e for e in asyncio.run(session(b"this is not a webm stream" * 100)) if e["type"] == "error"]
    assert errors and errors[0]["code"] == "invalid_audio" and "WebM" in errors[0]["message"]
