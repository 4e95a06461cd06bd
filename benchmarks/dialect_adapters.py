"""Load-test adapters for this server's vendor dialects, so one load generator measures every endpoint alike:

* Deepgram live v1 (``/deepgram/v1/listen``): ``Results`` with ``is_final`` are finals, covering up to
  ``start + duration``; interim ``Results`` are partials; ``CloseStream`` ends the stream and ``Metadata`` says
  everything was sent. ``speech_final`` marks an endpointed final, ``from_finalize`` one the client ended.
* OpenAI Realtime transcription (``/v1/realtime?intent=transcription``): audio goes as base64 in
  ``input_audio_buffer.append`` (16 kHz ``audio/pcm``); a ``...transcription.completed`` item is a final covering up
  to its ``speech_stopped.audio_end_ms``; deltas carry no time (no partial lag). At the end the client commits
  and waits until every committed item is completed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from .protocols import ResultEvent, StreamAdapter


class DeepgramAdapter(StreamAdapter):
    name = "deepgram"

    def __init__(self, endpointing_ms: int = 500) -> None:
        super().__init__()
        self.endpointing_ms = endpointing_ms
        self.finals: list[str] = []

    def url(self, base_url: str) -> str:
        query = f"encoding=linear16&sample_rate=16000&channels=1&interim_results=true&endpointing={self.endpointing_ms}"
        return f"{base_url}/deepgram/v1/listen?{query}&language=en-US&model=nova-3&smart_format=true"

    async def finish(self, ws: Any, audio_s: float, timeout_s: float) -> None:
        await ws.send(json.dumps({"type": "CloseStream"}))
        if not await self._wait_finished(timeout_s):
            self.errors.append(f"no Metadata within {timeout_s:.0f} s of CloseStream")

    def feed(self, message: str | bytes, now: float) -> list[ResultEvent]:
        event = json.loads(message)
        kind = event.get("type")
        if kind == "Metadata":
            self.finished.set()
        elif kind == "Error":
            self.errors.append(f"{event.get('variant')}: {event.get('description')}")
        elif kind == "Results":
            text = event["channel"]["alternatives"][0]["transcript"]
            end = float(event["start"]) + float(event["duration"])
            if not event.get("is_final"):
                return [ResultEvent("partial", end, now, text)]
            self.finals.append(text)
            reason = "endpoint" if event.get("speech_final") else "finalize" if event.get("from_finalize") else None
            return [ResultEvent("final", end, now, text, reason)]
        return []

    def transcript(self) -> str:
        return " ".join(t.strip() for t in self.finals if t.strip())


class OpenAIRealtimeAdapter(StreamAdapter):
    name = "openai_realtime"

    def __init__(self, endpointing_ms: int = 500) -> None:
        super().__init__()
        self.endpointing_ms = endpointing_ms
        self.ends_s: dict[str, float] = {}  # item id -> where its speech stopped (stream seconds)
        self.committed: list[str] = []
        self.completed: dict[str, str] = {}
        self._all_done = asyncio.Event()
        self._closing = False

    def url(self, base_url: str) -> str:
        return f"{base_url}/v1/realtime?intent=transcription"

    async def handshake(self, ws: Any, timeout_s: float) -> None:
        audio = {
            "format": {"type": "audio/pcm", "rate": 16000},
            "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": self.endpointing_ms},
        }
        await ws.send(
            json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio}}})
        )

    def audio_frame(self, pcm_s16le: bytes) -> str:  # a text frame: the Realtime API takes JSON events only
        return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm_s16le).decode()})

    async def finish(self, ws: Any, audio_s: float, timeout_s: float) -> None:
        self._closing = True
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        try:
            await asyncio.wait_for(self._all_done.wait(), timeout_s)
        except asyncio.TimeoutError:
            self.errors.append(
                f"{len(self.committed) - len(self.completed)} item(s) not completed in {timeout_s:.0f} s"
            )
        self.finished.set()

    def feed(self, message: str | bytes, now: float) -> list[ResultEvent]:
        event = json.loads(message)
        kind = event.get("type", "")
        out: list[ResultEvent] = []
        if kind == "input_audio_buffer.speech_stopped":
            self.ends_s[event["item_id"]] = event["audio_end_ms"] / 1000.0
        elif kind == "input_audio_buffer.committed":
            self.committed.append(event["item_id"])
        elif kind == "conversation.item.input_audio_transcription.completed":
            item = event["item_id"]
            self.completed[item] = event.get("transcript", "")
            if item in self.ends_s:
                out.append(ResultEvent("final", self.ends_s[item], now, self.completed[item], "endpoint"))
        elif kind == "error":
            self.errors.append(f"{event.get('error', {}).get('code')}: {event.get('error', {}).get('message')}")
        if self._closing and self.committed and len(self.completed) >= len(self.committed):
            self._all_done.set()
        return out

    def transcript(self) -> str:
        texts = (self.completed.get(item, "") for item in self.committed)
        return " ".join(t.strip() for t in texts if t.strip())
