"""Accuracy on real read speech: LibriSpeech test-clean through /v1/listen vs faster-whisper's own transcribe."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import soundfile as sf

from ..helpers import manifest, silence, stream_audio, to_pcm16, wer


@pytest.fixture(scope="module")
def test_clean(shared_audio):
    items = [m for m in manifest() if m["kind"] == "short" and "librispeech_test-clean" in m["audio"]]
    assert len(items) >= 40
    return [(shared_audio / m["audio"], m["text"]) for m in items]


def offline_faster_whisper(paths) -> list[str]:
    from faster_whisper import WhisperModel

    from stream_server.config import embedded_model_path

    model = WhisperModel(embedded_model_path(), device="cpu", compute_type="int8", cpu_threads=2)
    texts = []
    for path in paths:
        segments, _ = model.transcribe(str(path), language="en")
        texts.append(" ".join(s.text.strip() for s in segments))
    return texts


def test_streaming_wer_is_within_two_points_of_faster_whisper(live_server, test_clean):
    async def stream_all() -> list[str]:
        gate = asyncio.Semaphore(4)  # four live sessions at a time: their utterances share batches

        async def one(path) -> str:
            audio, rate = sf.read(str(path), dtype="float32")
            payload = to_pcm16(np.concatenate([audio, silence(1.0, rate)]))
            async with gate:
                result = await stream_audio(
                    live_server.ws_url,
                    payload,
                    sample_rate=rate,
                    realtime=False,
                    params={"interim_results": "false"},
                )
            return result.text()

        return await asyncio.gather(*(one(path) for path, _ in test_clean))

    started = time.monotonic()
    streamed = asyncio.run(stream_all())
    stream_s = time.monotonic() - started
    started = time.monotonic()
    offline = offline_faster_whisper([path for path, _ in test_clean])
    offline_s = time.monotonic() - started
    references = [text for _, text in test_clean]
    stream_wer, offline_wer = wer(references, streamed), wer(references, offline)
    print(
        f"\nLibriSpeech test-clean, {len(references)} utterances: streaming WER {stream_wer:.2%} ({stream_s:.1f} s), "
        f"faster-whisper transcribe WER {offline_wer:.2%} ({offline_s:.1f} s)"
    )
    assert stream_wer <= offline_wer + 0.02
