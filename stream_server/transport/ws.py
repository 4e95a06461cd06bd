"""``/v1/listen``: moves bytes between a websocket and a ``StreamingSession``; decides nothing itself.

Per connection three things run on the event loop: the receive loop (frames -> session -> events), decode
futures resolving (results -> session -> events), and the sender draining an ``Outbox``. The receive loop
never waits for a decode, so a slow batch never delays anybody's audio intake. A slow reader only grows its
own outbox, where a newer partial replaces an unsent older one of the same utterance; finals are never dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..decode.engine import DecodeEngine, Superseded
from ..decode.types import DecodeJob, DecodeResult
from ..errors import BacklogFull, ClientError, ProtocolError, ShuttingDown, StreamServerError, TooManySessions
from ..session.events import DecodeRequested, Final, SessionEvent
from ..session.machine import StreamConfig, StreamingSession
from .protocol import error_message, event_message, parse_stream_config

log = logging.getLogger("stream_server.session")

# Closing handshakes and the last sends of a finished session get this long before we give up on a peer.
SEND_TIMEOUT_S = 10.0


class Outbox:
    """Messages waiting for the socket. A partial replaces the queued partial of its utterance."""

    def __init__(self) -> None:
        self._queue: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()
        self.coalesced = 0

    def put(self, message: dict[str, Any]) -> None:
        if message["type"] == "partial":
            key = (message["channel"], message["utterance_id"])
            for i, queued in enumerate(self._queue):
                if queued["type"] == "partial" and (queued["channel"], queued["utterance_id"]) == key:
                    self._queue[i] = message
                    self.coalesced += 1
                    return
        self._queue.append(message)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def get(self) -> dict[str, Any]:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()


@dataclass
class SessionRegistry:
    """Live sessions of this process: counts them for limits and drains them on shutdown."""

    max_sessions: int
    sessions: dict[str, StreamConnection] = field(default_factory=dict)
    draining: bool = False

    def admit(self, connection: StreamConnection) -> None:
        if self.draining:
            raise ShuttingDown("the server is shutting down")
        if len(self.sessions) >= self.max_sessions:
            raise TooManySessions(f"the server holds its maximum of {self.max_sessions} sessions; retry later")
        self.sessions[connection.session_id] = connection

    def remove(self, connection: StreamConnection) -> None:
        self.sessions.pop(connection.session_id, None)

    async def drain(self, grace_s: float) -> None:
        """Finalize every open session, deliver its finals, then close it with ``server_shutdown``."""
        self.draining = True
        connections = list(self.sessions.values())
        for connection in connections:
            connection.begin_close("server_shutdown")
        if connections:
            await asyncio.wait([asyncio.ensure_future(c.finished.wait()) for c in connections], timeout=grace_s)


class StreamConnection:
    def __init__(
        self, websocket: WebSocket, session: StreamingSession, engine: DecodeEngine, model_id: str, hooks: Any
    ) -> None:
        self.websocket = websocket
        self.session = session
        self.session_id = session.session_id
        self.engine = engine
        self.model_id = model_id
        self.hooks = hooks  # metrics sink with .on_event(message) / .on_audio(seconds); may be None
        self.outbox = Outbox()
        self.finished = asyncio.Event()
        self.close_reason = "client_closed"
        self.last_activity = time.monotonic()
        self._all_sent = asyncio.Event()
        self._pending: set[asyncio.Future[DecodeResult]] = set()
        self._close_requested = False
        self.log = logging.LoggerAdapter(log, {"session_id": self.session_id})

    # --- events out

    def emit(self, events: list[SessionEvent]) -> None:
        for event in events:
            if isinstance(event, DecodeRequested):
                self._submit(event.job)
                continue
            message = event_message(event, self.session.config.language or "en")
            if message is not None:
                if isinstance(event, Final):
                    self.log.debug("final %s/%s %r", event.channel, event.utterance_id, event.text)
                self.send(message)
        self._check_done()

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.put(message)
        if self.hooks is not None:
            self.hooks.on_message(message)

    def send_error(self, exc: StreamServerError) -> None:
        self.send(error_message(exc.code, exc.message))

    def _submit(self, job: DecodeJob) -> None:
        try:
            future = self.engine.submit(job)
        except StreamServerError as exc:
            self.emit(self.session.receive_decode_failure(job, exc.message))
            return
        self._pending.add(future)
        future.add_done_callback(lambda f, job=job: self._on_decoded(job, f))

    def _on_decoded(self, job: DecodeJob, future: asyncio.Future[DecodeResult]) -> None:
        self._pending.discard(future)
        if self.finished.is_set():
            return
        if future.cancelled():
            events = self.session.abandon(job)
        elif isinstance(future.exception(), Superseded):
            events = self.session.abandon(job)
        elif future.exception() is not None:
            events = self.session.receive_decode_failure(job, str(future.exception()))
        else:
            events = self.session.receive_decode_result(job, future.result())
        self.emit(events)

    def _check_done(self) -> None:
        if self.session.done and not self._all_sent.is_set():
            self.send({"type": "session.closed", "reason": self.close_reason,
                       "audio_seconds": round(self.session.audio_seconds, 3)})
            self._all_sent.set()

    # --- lifecycle

    def begin_close(self, reason: str) -> None:
        """Flush every channel and close once the remaining finals are out (client close_stream or shutdown)."""
        if self._close_requested:
            return
        self._close_requested = True
        self.close_reason = reason
        self.emit(self.session.close())
        self._check_done()

    async def run(self, settings: Any) -> None:
        self.send({"type": "session.started", "session_id": self.session_id, "model": self.model_id,
                   "sample_rate": self.session.config.sample_rate, "channels": self.session.config.channels,
                   "language": self.session.config.language or ("en" if not self.engine.backend.is_multilingual
                                                                   else "auto")})
        sender = asyncio.create_task(self._send_loop(), name=f"send-{self.session_id}")
        receiver = asyncio.create_task(self._receive_loop(settings), name=f"recv-{self.session_id}")
        try:
            done_waiter = asyncio.create_task(self._all_sent.wait())
            await asyncio.wait({sender, receiver, done_waiter}, return_when=asyncio.FIRST_COMPLETED)
            if self._all_sent.is_set() and not sender.done():
                # drain what is queued, then close politely
                await asyncio.wait_for(self._drain_outbox(sender), timeout=SEND_TIMEOUT_S)
            done_waiter.cancel()
        except (asyncio.TimeoutError, WebSocketDisconnect):
            pass
        finally:
            self.finished.set()
            receiver.cancel()
            sender.cancel()
            self.engine.cancel_owner(self.session_id)
            for future in list(self._pending):
                future.cancel()
            self.session.mark_closed()
            await self._close(1000)

    async def _drain_outbox(self, sender: asyncio.Task[None]) -> None:
        while len(self.outbox) and not sender.done():
            await asyncio.sleep(0.01)

    async def _close(self, code: int) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            try:
                await asyncio.wait_for(self.websocket.close(code), timeout=SEND_TIMEOUT_S)
            except Exception:  # the peer is already gone
                pass

    async def _send_loop(self) -> None:
        try:
            while True:
                message = await self.outbox.get()
                await self.websocket.send_text(json.dumps(message))
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.log.info("client went away while sending")

    async def _receive_loop(self, settings: Any) -> None:
        started = time.monotonic()
        while True:
            timeout = min(settings.idle_timeout_s, settings.max_session_s - (time.monotonic() - started))
            if timeout <= 0:
                self.send_error(ClientError(f"session reached its maximum of {settings.max_session_s:.0f} s"))
                self.begin_close("max_duration")
                return
            try:
                message = await asyncio.wait_for(self.websocket.receive(), timeout=timeout)
            except asyncio.TimeoutError:
                if time.monotonic() - started >= settings.max_session_s:
                    continue
                self.send(error_message("idle_timeout", f"no audio or keepalive for {settings.idle_timeout_s:.0f} s"))
                self.begin_close("idle_timeout")
                return
            if message["type"] == "websocket.disconnect":
                self.log.info("client disconnected")
                self.finished.set()
                raise WebSocketDisconnect(message.get("code", 1000))
            self.last_activity = time.monotonic()
            try:
                if message.get("bytes") is not None:
                    await self._on_audio(message["bytes"], settings)
                elif message.get("text") is not None:
                    self._on_text(message["text"], settings)
            except ClientError as exc:
                self.send_error(exc)
                if exc.fatal:
                    self.begin_close("error")
                    return

    async def _on_audio(self, data: bytes, settings: Any) -> None:
        if len(data) > settings.max_message_bytes:
            raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {settings.max_message_bytes}")
        if self._close_requested:
            raise ProtocolError("audio after close_stream is ignored")
        before = self.session.audio_seconds
        self.emit(self.session.receive_audio(data))
        if self.hooks is not None:
            self.hooks.on_audio(self.session.audio_seconds - before)
        await self._apply_backpressure(settings)

    async def _apply_backpressure(self, settings: Any) -> None:
        """Stop reading (TCP pushes back on the client) while this session's undecoded audio is over budget."""
        if self.session.backlog_seconds <= settings.max_backlog_s:
            return
        self.send_error(BacklogFull(
            f"more than {settings.max_backlog_s:.0f} s of audio is waiting to be decoded; send at real-time pace"))
        while self.session.backlog_seconds > settings.max_backlog_s / 2 and not self.finished.is_set():
            await asyncio.sleep(0.05)

    def _on_text(self, text: str, settings: Any) -> None:
        if len(text) > 65536:
            raise ProtocolError("text message too long")
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"malformed JSON: {exc.msg}") from None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "keepalive":
            return
        if kind == "finalize":
            self.emit(self.session.finalize())
            return
        if kind == "close_stream":
            self.begin_close("client_closed")
            return
        raise ProtocolError(f"unknown message type {kind!r}; expected finalize, close_stream or keepalive")


def _auth_token(websocket: WebSocket) -> tuple[str | None, str | None]:
    """(token, subprotocol to echo) from ``Authorization: Bearer`` or ``Sec-WebSocket-Protocol: bearer.KEY``."""
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), None
    for proto in websocket.scope.get("subprotocols", []):
        if proto.startswith("bearer."):
            return proto[len("bearer."):], proto
    return None, None


async def listen(websocket: WebSocket) -> None:
    """The ``/v1/listen`` route."""
    state = websocket.app.state
    settings, engine, registry = state.settings, state.engine, state.sessions
    token, subprotocol = _auth_token(websocket)
    session_id = uuid.uuid4().hex[:16]
    try:
        state.auth.check(token)
        config = parse_stream_config(dict(websocket.query_params), state.stream_defaults,
                                     engine.backend.is_multilingual)
        session = StreamingSession(session_id, config)
        connection = StreamConnection(websocket, session, engine, engine.backend.model_id, state.hooks)
        registry.admit(connection)
    except StreamServerError as exc:
        await websocket.accept(subprotocol=subprotocol)
        await websocket.send_text(json.dumps(error_message(exc.code, exc.message)))
        await websocket.close(exc.close_code)
        if state.hooks is not None:
            state.hooks.on_message(error_message(exc.code, exc.message))
        return
    await websocket.accept(subprotocol=subprotocol)
    connection.log.info("session started %s", config)
    if state.hooks is not None:
        state.hooks.on_session(+1)
    try:
        await connection.run(settings)
    finally:
        registry.remove(connection)
        if state.hooks is not None:
            state.hooks.on_session(-1)
        connection.log.info("session ended (%s, %.1f s of audio)", connection.close_reason,
                            session.audio_seconds)


def stream_defaults(settings: Any) -> StreamConfig:
    return StreamConfig(
        endpointing_ms=settings.endpointing_ms,
        partial_interval_ms=settings.partial_interval_ms,
        max_utterance_s=settings.max_utterance_s,
        soft_max_utterance_s=settings.soft_max_utterance_s,
        vad_aggressiveness=settings.vad_aggressiveness,
        prompt_max_tokens=settings.prompt_max_tokens,
        prompt_reset_silence_s=settings.prompt_reset_silence_s,
        final_beam_size=settings.final_beam_size,
        partial_beam_size=settings.partial_beam_size,
    )


