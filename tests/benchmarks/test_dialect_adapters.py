"""The load-test adapters for the Deepgram and OpenAI Realtime endpoints turn their messages into the same
observations as protocol v1's (pure: messages in, events out)."""

from __future__ import annotations

import json

from benchmarks.dialect_adapters import DeepgramAdapter, OpenAIRealtimeAdapter
from benchmarks.protocols import AdapterConfig


def results(text: str, start: float, duration: float, **flags: bool) -> str:
    alternative = {"transcript": text, "confidence": 0.9, "words": []}
    channel = {"alternatives": [alternative]}
    return json.dumps({"type": "Results", "start": start, "duration": duration, "channel": channel, **flags})


def test_deepgram_interim_and_final_results_and_the_end() -> None:
    adapter = AdapterConfig("deepgram", {"endpointing_ms": 500}).make()
    assert isinstance(adapter, DeepgramAdapter) and "endpointing=500" in adapter.url("ws://h")
    (partial,) = adapter.feed(results("hello", 0.5, 1.0, is_final=False), 1.0)
    (final,) = adapter.feed(results("hello world", 0.5, 1.5, is_final=True, speech_final=True), 2.0)
    assert (partial.kind, partial.end_s) == ("partial", 1.5)
    assert (final.kind, final.end_s, final.reason) == ("final", 2.0, "endpoint")
    assert not adapter.finished.is_set()
    adapter.feed(json.dumps({"type": "Metadata", "duration": 2.0}), 3.0)
    assert adapter.finished.is_set() and adapter.transcript() == "hello world"


def test_openai_realtime_items_become_finals_at_their_speech_end() -> None:
    adapter = AdapterConfig("openai_realtime", {"endpointing_ms": 500}).make()
    assert isinstance(adapter, OpenAIRealtimeAdapter)
    frame = adapter.audio_frame(b"\x00\x01" * 4)
    assert isinstance(frame, str) and json.loads(frame)["type"] == "input_audio_buffer.append"
    assert (
        adapter.feed(json.dumps({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 2300, "item_id": "a"}), 1)
        == []
    )
    adapter.feed(json.dumps({"type": "input_audio_buffer.committed", "item_id": "a"}), 1.0)
    (final,) = adapter.feed(
        json.dumps(
            {"type": "conversation.item.input_audio_transcription.completed", "item_id": "a", "transcript": "Hi."}
        ),
        2,
    )
    assert (final.kind, final.end_s, final.text) == ("final", 2.3, "Hi.")
    assert adapter.transcript() == "Hi."
