"""A client of protocol v1 (``/v1/listen``): connect, send audio, finalize or close, read typed events.

One library for every Python client of the project (the ``stream-client`` CLI, the tests, the benchmarks), so
that real-time pacing and final latency are defined once:

* pacing: chunk ``i`` leaves at ``t0 + i * chunk_s`` (the schedule never drifts; a late chunk is sent at once
  and the lateness is recorded);
* final latency: the arrival time of a final minus the time the client sent the audio sample at the final's
  ``end`` (``SendLog``). It includes the endpointing silence the server waits for.

The wire parsing (``events.parse_event``, re-exported here) and the send bookkeeping (``SendLog``) are pure;
``Client`` does the I/O on one asyncio loop (not thread-safe). Times are ``time.monotonic()`` seconds; stream
times are seconds of audio.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection

from .events import (
    Error,
    Event,
    Final,
    Partial,
    ProtocolViolation,
    SessionClosed,
    SessionStarted,
    SpeechStarted,
    Unknown,
    Word,
    parse_event,
)

__all__ = [
    "CLOSE_STREAM",
    "FINALIZE",
    "KEEPALIVE",
    "Client",
    "Error",
    "Event",
    "Final",
    "Partial",
    "ProtocolViolation",
    "Received",
    "SendLog",
    "SessionClosed",
    "SessionStarted",
    "SpeechStarted",
    "Transcript",
    "Unknown",
    "Word",
    "listen_url",
    "parse_event",
    "send_paced",
    "session_url",
    "transcribe",
]

LISTEN_PATH = "/v1/listen"


# ---- URLs and client messages ------------------------------------------------------------------------------

FINALIZE = json.dumps({"type": "finalize"})
CLOSE_STREAM = json.dumps({"type": "close_stream"})
KEEPALIVE = json.dumps({"type": "keepalive"})
# A prompt longer than this percent-encoded goes in a ``configure`` message: the server's request line holds 8 KiB
MAX_QUERY_PROMPT_BYTES = 2048


def listen_url(url: str) -> str:
    """The websocket URL of ``/v1/listen`` from what a user types: ``host:port``, ``ws://host:port``,
    ``http://host:port`` (the address the server prints) or the whole URL."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else LISTEN_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def session_url(url: str, params: Mapping[str, object]) -> str:
    """``listen_url(url)`` with the session's query parameters (booleans as true/false) added."""
    base = listen_url(url)
    query = urlencode({k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()})
    if not query:
        return base
    return f"{base}{'&' if urlsplit(base).query else '?'}{query}"


# ---- timing ------------------------------------------------------------------------------------------------


class SendLog:
    """When each chunk of a stream left the client: maps stream seconds to wall (monotonic) times.

    ``record(first_frame, n_frames, wall_time)`` is called after each chunk is handed to the socket (a frame:
    one sample of every channel). The send time of stream time ``t`` is that of the chunk holding the last
    frame *before* ``t`` (a result ending at exactly 3.0 s needs the frame at 2.99994 s, not the one at 3.0 s).
    """

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate
        self._chunk_ends: list[int] = []  # exclusive end frame of each chunk, ascending
        self._wall: list[float] = []

    def record(self, first_sample: int, n_samples: int, wall_time: float) -> None:
        end = first_sample + n_samples
        if self._chunk_ends and end <= self._chunk_ends[-1]:
            raise ValueError("chunks must be recorded in stream order")
        self._chunk_ends.append(end)
        self._wall.append(wall_time)

    @property
    def samples_sent(self) -> int:
        return self._chunk_ends[-1] if self._chunk_ends else 0

    @property
    def seconds_sent(self) -> float:
        return self.samples_sent / self.sample_rate

    @property
    def last_send_time(self) -> float | None:
        return self._wall[-1] if self._wall else None

    def sent_at(self, stream_s: float) -> float | None:
        """Wall time the audio at ``stream_s`` was sent; clamped to the last chunk; None if nothing sent."""
        if not self._wall:
            return None
        sample = max(0, math.ceil(stream_s * self.sample_rate) - 1)
        index = bisect.bisect_right(self._chunk_ends, sample)
        return self._wall[min(index, len(self._wall) - 1)]

    def latency(self, end_s: float, arrival: float) -> float | None:
        """The latency of a result covering the stream up to ``end_s`` that arrived at ``arrival``."""
        sent = self.sent_at(end_s)
        return None if sent is None else arrival - sent


async def send_paced(
    send: Callable[[bytes], Awaitable[None]],
    payload: bytes,
    *,
    frame_bytes: int,
    log: SendLog,
    chunk_s: float = 0.1,
    realtime: bool = True,
    speed: float = 1.0,
) -> float:
    """Send ``payload`` (whole frames of ``frame_bytes``) in ``chunk_s`` chunks, at ``speed`` x real-time pace
    unless ``realtime`` is False, recording each chunk in ``log``. Returns how late the worst chunk left
    (seconds)."""
    chunk = max(1, round(log.sample_rate * chunk_s))
    frames = len(payload) // frame_bytes
    first_frame = log.samples_sent
    late = 0.0
    t0 = time.monotonic()
    for i, first in enumerate(range(0, frames, chunk)):
        if realtime:
            delay = t0 + i * chunk / (log.sample_rate * speed) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
        n = min(chunk, frames - first)
        await send(payload[first * frame_bytes : (first + n) * frame_bytes])
        log.record(first_frame + first, n, time.monotonic())
    return late


# ---- the client --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """An event with its arrival time; ``latency_s`` for finals (see the module docstring), else None."""

    event: Event
    at: float
    latency_s: float | None


_BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_f32le": 4}


class Client:
    """One protocol-v1 session. Use as ``async with Client(url, sample_rate=16000) as client:``; send with
    ``stream``/``send_audio`` (typically in a task) while iterating ``async for received in client``.

    ``params`` are extra query parameters (language, endpointing_ms, ...), except a ``prompt`` too long for the
    request line, sent in a ``configure`` message before any audio; ``api_key`` goes in the Authorization
    header. Iteration ends when the server closes the socket.
    """

    def __init__(
        self,
        url: str,
        *,
        sample_rate: int = 16000,
        channels: int = 1,
        encoding: Literal["pcm_s16le", "pcm_f32le"] = "pcm_s16le",
        params: Mapping[str, object] | None = None,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        open_timeout_s: float = 30.0,
    ) -> None:
        query: dict[str, object] = {"sample_rate": sample_rate}
        if channels != 1:
            query["channels"] = channels
        if encoding != "pcm_s16le":
            query["encoding"] = encoding
        query.update(params or {})
        prompt = str(query.get("prompt", ""))
        self.configure: str | None = None
        if len(quote(prompt, safe="")) > MAX_QUERY_PROMPT_BYTES:
            del query["prompt"]
            self.configure = json.dumps({"type": "configure", "prompt": prompt})
        self.url = session_url(url, query)
        self.headers = dict(headers or {})
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.frame_bytes = _BYTES_PER_SAMPLE[encoding] * channels
        self.send_log = SendLog(sample_rate)
        self.max_send_late_s = 0.0
        self.open_timeout_s = open_timeout_s
        self._ws: ClientConnection | None = None

    async def __aenter__(self) -> Client:
        self._ws = await websockets.connect(
            self.url, additional_headers=self.headers or None, max_size=None, open_timeout=self.open_timeout_s
        )
        if self.configure is not None:
            await self._ws.send(self.configure)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.ws.close()

    @property
    def ws(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("not connected: use `async with Client(...)`")
        return self._ws

    async def send_audio(self, pcm: bytes) -> None:
        """Send one chunk now (whole frames), recorded for latency."""
        await self.ws.send(pcm)
        self.send_log.record(self.send_log.samples_sent, len(pcm) // self.frame_bytes, time.monotonic())

    async def stream(
        self, pcm: bytes, *, chunk_s: float = 0.1, realtime: bool = True, close: bool = True, speed: float = 1.0
    ) -> None:
        """Send ``pcm`` in ``chunk_s`` chunks (at ``speed`` x real-time pace unless ``realtime`` is False), then
        ``close_stream`` when ``close``."""
        late = await send_paced(
            self.ws.send,
            pcm,
            frame_bytes=self.frame_bytes,
            log=self.send_log,
            chunk_s=chunk_s,
            realtime=realtime,
            speed=speed,
        )
        self.max_send_late_s = max(self.max_send_late_s, late)
        if close:
            await self.close_stream()

    async def finalize(self) -> None:
        """Ask for the finals of the open utterances now, without closing."""
        await self.ws.send(FINALIZE)

    async def close_stream(self) -> None:
        """End the stream: the server sends the remaining finals, then ``session.closed``, then closes."""
        await self.ws.send(CLOSE_STREAM)

    async def keepalive(self) -> None:
        await self.ws.send(KEEPALIVE)

    def received(self, message: str | bytes, at: float) -> Received:
        event = parse_event(message)
        latency = self.send_log.latency(event.end, at) if isinstance(event, Final) else None
        return Received(event, at, latency)

    async def __aiter__(self) -> AsyncIterator[Received]:
        try:
            async for message in self.ws:
                yield self.received(message, time.monotonic())
        except websockets.ConnectionClosedError:
            return  # an abnormal close ends the stream too; its code is in ``close_code``

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self.ws.close_reason


@dataclass
class Transcript:
    """Everything one session delivered (``transcribe``)."""

    received: list[Received] = field(default_factory=list)
    close_code: int | None = None
    max_send_late_s: float = 0.0

    @property
    def events(self) -> list[Event]:
        return [r.event for r in self.received]

    @property
    def finals(self) -> list[Final]:
        return [e for e in self.events if isinstance(e, Final)]

    @property
    def final_latencies_s(self) -> list[float]:
        return [r.latency_s for r in self.received if isinstance(r.event, Final) and r.latency_s is not None]

    def text(self, channel: int | None = None) -> str:
        return " ".join(f.text.strip() for f in self.finals if channel is None or f.channel == channel).strip()


async def transcribe(
    client: Client,
    pcm: bytes,
    *,
    chunk_s: float = 0.1,
    realtime: bool = True,
    close: bool = True,
    speed: float = 1.0,
) -> Transcript:
    """Connect ``client``, stream ``pcm`` (at ``speed`` x real time) and collect every event until the server
    closes."""
    out = Transcript()
    async with client:
        sender = asyncio.create_task(client.stream(pcm, chunk_s=chunk_s, realtime=realtime, close=close, speed=speed))
        try:
            async for received in client:
                out.received.append(received)
        finally:
            if not sender.done():  # the server closed first (a refusal, a limit): stop sending
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await sender
        out.close_code = client.close_code
        out.max_send_late_s = client.max_send_late_s
    return out
