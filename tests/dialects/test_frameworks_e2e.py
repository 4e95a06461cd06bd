"""Voice-agent frameworks against the real server with nothing but a base URL changed: LiveKit Agents' Deepgram
and OpenAI (realtime) STT streams run standalone, and Pipecat's DeepgramSTTService through its own run_test."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from ..conftest import ServerHandle
from ..helpers import silence, to_pcm16, wer
from .e2e import API_KEY, pcm16_at, references, sentences_16k


def first_sentence() -> np.ndarray:
    return np.concatenate([silence(0.3), sentences_16k()[0], silence(1.0)])


async def livekit_transcribe(stt: Any, pcm: bytes, rate: int) -> list[Any]:
    from livekit import rtc

    stream = stt.stream()
    events: list[Any] = []

    async def read() -> None:
        async for event in stream:
            events.append(event)

    reader = asyncio.create_task(read())
    step = rate // 100 * 2  # 10 ms frames, as a LiveKit room delivers them
    for i in range(0, len(pcm), step * 5):
        for j in range(i, min(i + step * 5, len(pcm)), step):
            chunk = pcm[j : j + step]
            stream.push_frame(rtc.AudioFrame(chunk, rate, 1, len(chunk) // 2))
        await asyncio.sleep(0.01)
    stream.flush()
    await asyncio.sleep(1.0)
    stream.end_input()
    await asyncio.wait_for(reader, 90)
    await stream.aclose()
    return events


def final_texts(events: list[Any]) -> list[str]:
    from livekit.agents import stt

    return [e.alternatives[0].text for e in events if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT]


def test_livekit_deepgram_plugin(dialect_server: ServerHandle) -> None:
    pytest.importorskip("livekit.plugins.deepgram", reason="livekit-plugins-deepgram is in the dialects-test extra")
    import aiohttp
    from livekit.agents import stt as lk_stt
    from livekit.plugins import deepgram

    async def scenario() -> list[Any]:
        async with aiohttp.ClientSession() as http:
            plugin = deepgram.STT(
                base_url=f"{dialect_server.base_url}/deepgram/v1/listen", api_key=API_KEY, http_session=http,
                model="nova-3", language="en-US",
            )  # fmt: skip
            return await livekit_transcribe(plugin, to_pcm16(first_sentence()), 16000)

    events = asyncio.run(scenario())
    kinds = [e.type for e in events]
    assert kinds[0] == lk_stt.SpeechEventType.START_OF_SPEECH
    assert lk_stt.SpeechEventType.INTERIM_TRANSCRIPT in kinds and lk_stt.SpeechEventType.END_OF_SPEECH in kinds
    finals = [t for t in final_texts(events) if t]
    assert len(finals) == 1, finals  # two Finalizes and a CloseStream: still one final
    assert wer(references()[0], finals[0]) < 0.3, finals


def test_livekit_openai_realtime_plugin(dialect_server: ServerHandle) -> None:
    pytest.importorskip("livekit.plugins.openai", reason="livekit-plugins-openai is in the dialects-test extra")
    from livekit.agents.utils import http_context
    from livekit.plugins import openai as lk_openai

    async def scenario() -> list[Any]:
        async with http_context.open():  # what an agent job provides: the plugin's aiohttp session
            plugin = lk_openai.STT(
                base_url=f"{dialect_server.base_url}/v1", api_key=API_KEY, use_realtime=True,
                model="gpt-4o-mini-transcribe", language="en",
            )  # fmt: skip
            return await livekit_transcribe(plugin, pcm16_at(first_sentence(), 24000), 24000)

    finals = [t for t in final_texts(asyncio.run(scenario())) if t]
    assert finals and wer(references()[0], " ".join(finals)) < 0.3, finals


def test_pipecat_deepgram_service(dialect_server: ServerHandle) -> None:
    pytest.importorskip("pipecat", reason="pipecat-ai is in the dialects-test extra")
    from pipecat.frames.frames import InputAudioRawFrame, TranscriptionFrame, VADUserStoppedSpeakingFrame
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.tests.utils import SleepFrame, run_test

    pcm = to_pcm16(first_sentence())
    frames: list[Any] = []
    for i in range(0, len(pcm), 640 * 5):
        frames.append(InputAudioRawFrame(audio=pcm[i : i + 640 * 5], sample_rate=16000, num_channels=1))
        frames.append(SleepFrame(sleep=0.02))
    frames += [VADUserStoppedSpeakingFrame(), SleepFrame(sleep=4.0)]
    service = DeepgramSTTService(api_key=API_KEY, base_url=f"{dialect_server.ws_url}/deepgram", sample_rate=16000)
    down, _ = asyncio.run(run_test(service, frames_to_send=frames, start_timeout=10.0))
    texts = [f.text for f in down if isinstance(f, TranscriptionFrame) and f.text]
    assert texts and wer(references()[0], " ".join(texts)) < 0.3, texts
