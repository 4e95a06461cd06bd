"""One websocket client adapter per system under test, each speaking that system's own protocol.

Every adapter turns its server's messages into the same two kinds of observations, so one load generator and
one set of metrics serve all systems:

* ``final``: text the server commits and never retracts, with the stream time ``end_s`` it covers up to.
* ``partial``: interim text with the stream time it covers up to (when the protocol says so).

How each protocol maps onto them (read from the installed packages, versions in the results JSON):

* ours (protocol v1, ``/v1/listen``, parsed by ``stream_server.clients.v1``): ``final`` and ``partial`` events,
  ``end`` in stream seconds; the stream ends with ``{"type": "close_stream"}`` and the server answers the
  remaining finals, then ``session.closed``.
* WhisperLive (``whisper_live/server.py``, ``backend/base.py``): a JSON options message first, then
  ``SERVER_READY``; the server repeats its last segments in every message, ``completed: true`` ones are final
  (first arrival of each counts), the trailing incomplete one is the partial. It commits a segment only when
  Whisper starts a next one or after the same text came back ``same_output_threshold`` times; on
  ``END_OF_AUDIO`` it stops at once and drops what is not committed, so after the audio the client waits until
  nothing is pending (bounded) before it says END_OF_AUDIO (what its own client does: ``wait_before_disconnect``).
* WhisperLiveKit (``basic_server.py`` ``/asr`` with ``--pcm-input``): a ``config`` message first, then
  snapshots whose ``lines`` hold the committed text (each line with ``start``/``end`` as ``H:MM:SS.cc``) and
  ``buffer_transcription`` the uncommitted tail; a final is observed whenever the committed end advances. An
  empty binary frame ends the stream; ``ready_to_stop`` says all audio was processed. Its buffer carries no
  time, so it has no partial lag.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from stream_server.clients import v1


@dataclass(frozen=True)
class ResultEvent:
    kind: Literal["partial", "final"]
    end_s: float
    arrival: float  # time.monotonic()
    text: str
    reason: str | None = None  # why a final ended (endpoint, max_length, ...), where the protocol says
    timing: dict[str, Any] | None = None  # where the server says the final's latency went (ours: ms per stage)


def parse_clock(value: Any) -> float:
    """'H:MM:SS.cc' (WhisperLiveKit), 'SS.mmm' strings (WhisperLive) or numbers -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = str(value).split(":")
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part)
    return seconds


class StreamAdapter:
    """Per-connection protocol state; ``feed`` is called with every server message, in order."""

    name = "base"

    def __init__(self) -> None:
        self.errors: list[str] = []  # the stream did not complete as the protocol says: the level fails
        self.warnings: list[str] = []  # worth reporting, not a failure of the server
        self.finished = asyncio.Event()  # the server said it has sent everything (or closed)
        self.last_message_at: float | None = None

    def url(self, base_url: str) -> str:
        raise NotImplementedError

    async def handshake(self, ws: Any, timeout_s: float) -> None:
        """After connecting, before audio."""

    def audio_frame(self, pcm_s16le: bytes) -> bytes | str:
        """What carries one chunk of audio: binary PCM, or a text frame for protocols that want JSON."""
        return pcm_s16le

    async def finish(self, ws: Any, audio_s: float, timeout_s: float) -> None:
        """After the last audio frame (``audio_s`` seconds streamed): end the stream and wait (bounded) until
        the server is done."""
        raise NotImplementedError

    def feed(self, message: str | bytes, now: float) -> list[ResultEvent]:
        raise NotImplementedError

    def transcript(self) -> str:
        """The whole committed text (plus, for servers that drop their tail, what was pending at the end)."""
        raise NotImplementedError

    async def _wait_finished(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self.finished.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False


class NativeAdapter(StreamAdapter):
    """This project's protocol v1, parsed by its client library (``stream_server.clients.v1``)."""

    name = "native"

    def __init__(self, endpointing_ms: int = 500, word_timestamps: bool = False, timing: bool = True) -> None:
        super().__init__()
        self.endpointing_ms = endpointing_ms
        self.word_timestamps = word_timestamps
        self.timing = timing  # ask for each final's latency stages (docs/protocol.md#timing)
        self.finals: list[v1.Final] = []
        self.session_closed: v1.SessionClosed | None = None

    def url(self, base_url: str) -> str:
        params = {
            "sample_rate": 16000,
            "encoding": "pcm_s16le",
            "language": "en",
            "endpointing_ms": self.endpointing_ms,
        }
        if self.word_timestamps:
            params["word_timestamps"] = "true"
        if self.timing:
            params["timing"] = "true"
        return v1.session_url(base_url, params)

    async def finish(self, ws: Any, audio_s: float, timeout_s: float) -> None:
        await ws.send(v1.CLOSE_STREAM)
        if not await self._wait_finished(timeout_s):
            self.errors.append(f"no session.closed within {timeout_s:.0f} s of close_stream")

    def feed(self, message: str | bytes, now: float) -> list[ResultEvent]:
        try:
            event = v1.parse_event(message)
        except v1.ProtocolViolation as exc:
            self.errors.append(str(exc))
            return []
        if isinstance(event, v1.Final):
            self.finals.append(event)
            timing = event.raw.get("timing")
            return [ResultEvent("final", event.end, now, event.text, event.reason, timing)]
        if isinstance(event, v1.Partial):
            return [ResultEvent("partial", event.end, now, event.text)]
        if isinstance(event, v1.Error):
            self.errors.append(f"{event.code}: {event.message}")
        elif isinstance(event, v1.SessionClosed):
            self.session_closed = event
            self.finished.set()
        return []

    def transcript(self) -> str:
        ordered = sorted(self.finals, key=lambda f: (f.utterance_id, f.channel))
        return " ".join(f.text.strip() for f in ordered if f.text.strip())


class WhisperLiveAdapter(StreamAdapter):
    """WhisperLive 0.10 (``whisper_live.server``), faster-whisper backend."""

    name = "whisperlive"
    # After the audio: done once nothing is pending and the committed text reaches the last speech (within
    # COVERED_MARGIN_S of the end), or once the server has been silent for QUIET_DONE_S with nothing pending.
    COVERED_MARGIN_S = 1.5
    QUIET_DONE_S = 6.0

    def __init__(self, model_name: str = "tiny.en", use_vad: bool = True) -> None:
        super().__init__()
        self.uid = str(uuid.uuid4())
        self.model_name = model_name
        self.use_vad = use_vad
        self.ready = asyncio.Event()
        self.completed: dict[float, tuple[float, str]] = {}  # start -> (end, text)
        self.pending: tuple[float, float, str] | None = None  # the latest incomplete segment
        self.last_partial_end = -1.0

    def url(self, base_url: str) -> str:
        return base_url

    async def handshake(self, ws: Any, timeout_s: float) -> None:
        await ws.send(
            json.dumps(
                {
                    "uid": self.uid,
                    "language": "en",
                    "task": "transcribe",
                    "model": self.model_name,
                    "use_vad": self.use_vad,
                    "audio_format": "int16",
                    "send_last_n_segments": 10,
                    "no_speech_thresh": 0.45,
                    "clip_audio": False,
                    "same_output_threshold": 10,
                }
            )
        )
        await asyncio.wait_for(self.ready.wait(), timeout_s)

    async def finish(self, ws: Any, audio_s: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            quiet_for = time.monotonic() - (self.last_message_at or 0.0)
            committed_end = max((end for end, _ in self.completed.values()), default=0.0)
            covered = committed_end >= audio_s - self.COVERED_MARGIN_S
            if self.pending is None and (covered or quiet_for >= self.QUIET_DONE_S):
                break
            await asyncio.sleep(0.1)
        else:
            if self.pending is not None:  # its design (no flush on end of audio), not a failure
                self.warnings.append(f"uncommitted text still pending {timeout_s:.0f} s after the audio")
        await ws.send(b"END_OF_AUDIO")
        self.finished.set()

    def feed(self, message: str | bytes, now: float) -> list[ResultEvent]:
        msg = json.loads(message)
        if msg.get("message") == "SERVER_READY":
            self.ready.set()
            return []
        if msg.get("status") in ("ERROR", "WAIT"):
            self.errors.append(f"{msg.get('status')}: {msg.get('message')}")
            self.ready.set()
            return []
        segments = msg.get("segments")
        if not segments:
            return []
        events = []
        pending = None
        for seg in segments:
            start, end, text = parse_clock(seg["start"]), parse_clock(seg["end"]), seg.get("text", "")
            if seg.get("completed"):
                if start not in self.completed:
                    self.completed[start] = (end, text)
                    events.append(ResultEvent("final", end, now, text))
            else:
                pending = (start, end, text)
        if pending is not None and pending[2].strip():
            self.pending = pending
            if pending[1] > self.last_partial_end:
                self.last_partial_end = pending[1]
                events.append(ResultEvent("partial", pending[1], now, pending[2]))
        else:
            self.pending = None
        return events

    def transcript(self) -> str:
        pieces = [text.strip() for _, (_, text) in sorted(self.completed.items())]
        if self.pending is not None:
            last_end = max((end for end, _ in self.completed.values()), default=-1.0)
            if self.pending[0] >= last_end - 0.01:
                pieces.append(self.pending[2].strip())
        return " ".join(p for p in pieces if p)


class WhisperLiveKitAdapter(StreamAdapter):
    """WhisperLiveKit 0.2 (``whisperlivekit.basic_server``), ``/asr`` with raw PCM input."""

    name = "whisperlivekit"

    def __init__(self) -> None:
        super().__init__()
        self.config_seen = asyncio.Event()
        self.lines: list[dict[str, Any]] = []
        self.buffer_text = ""
        self.committed_end = 0.0
        self.committed_chars = 0
        self.remaining_s_max = 0.0

    def url(self, base_url: str) -> str:
        return f"{base_url}/asr?language=en"

    async def handshake(self, ws: Any, timeout_s: float) -> None:
        await asyncio.wait_for(self.config_seen.wait(), timeout_s)

    async def finish(self, ws: Any, audio_s: float, timeout_s: float) -> None:
        await ws.send(b"")
        if not await self._wait_finished(timeout_s):
            self.errors.append(f"no ready_to_stop within {timeout_s:.0f} s of the end of audio")

    def feed(self, message: str | bytes, now: float) -> list[ResultEvent]:
        msg = json.loads(message)
        kind = msg.get("type")
        if kind == "config":
            if not msg.get("useAudioWorklet"):
                self.errors.append("server expects encoded audio (start it with --pcm-input)")
            self.config_seen.set()
            return []
        if kind == "ready_to_stop":
            self.finished.set()
            return []
        if kind == "error" or msg.get("status") == "error":
            self.errors.append(str(msg.get("error")))
            return []
        if "lines" not in msg:
            return []
        self.lines = [line for line in msg["lines"] if line.get("text")]
        self.buffer_text = msg.get("buffer_transcription", "")
        self.remaining_s_max = max(self.remaining_s_max, float(msg.get("remaining_time_transcription") or 0))
        events = []
        chars = sum(len(line["text"]) for line in self.lines)
        if self.lines:
            end = parse_clock(self.lines[-1]["end"])
            if end > self.committed_end + 1e-6 and chars > self.committed_chars:
                events.append(ResultEvent("final", end, now, self.lines[-1]["text"]))
                self.committed_end = end
        self.committed_chars = chars
        return events

    def transcript(self) -> str:
        pieces = [line["text"].strip() for line in self.lines]
        if self.buffer_text.strip():
            pieces.append(self.buffer_text.strip())
        return " ".join(p for p in pieces if p)


ADAPTERS = {
    "native": NativeAdapter,
    "whisperlive": WhisperLiveAdapter,
    "whisperlivekit": WhisperLiveKitAdapter,
}


@dataclass
class AdapterConfig:
    protocol: str
    options: dict[str, Any] = field(default_factory=dict)

    def make(self) -> StreamAdapter:
        if self.protocol in ("deepgram", "openai_realtime"):  # this server's other dialects
            from .dialect_adapters import DeepgramAdapter, OpenAIRealtimeAdapter

            dialects: dict[str, type[StreamAdapter]] = {
                "deepgram": DeepgramAdapter,
                "openai_realtime": OpenAIRealtimeAdapter,
            }
            return dialects[self.protocol](**self.options)
        adapter: StreamAdapter = ADAPTERS[self.protocol](**self.options)
        return adapter
