"""``/v1/listen``: moves bytes between a websocket and a ``StreamingSession``; decides nothing itself.

Per connection three things run on the event loop: the receive loop (frames -> session -> events), decode
futures resolving (results -> session -> events), and the sender draining an ``Outbox``. The receive loop
never waits for a decode, so a slow batch never delays anybody's audio intake.

Limits, and what each does to a session (all in ``StreamLimits``, from the settings):
- a message over ``max_message_bytes``: an ``error`` (``message_too_large``), the message is dropped, the
  session goes on (over twice the limit the websocket layer closes the connection with 1009);
- ended utterances waiting for their finals over ``max_backlog_s`` of audio: an ``error`` (``backlog_full``) and
  intake pauses (TCP pushes back on the client) until half of it is decoded; no accepted audio is dropped;
- ``idle_timeout_s`` without any message, or ``max_session_s`` in all: an ``error``, then the session is
  flushed like ``close_stream`` (finals of accepted audio delivered) and closed;
- a client that does not read: partials wait coalesced (a newer one replaces the unsent older one of its
  utterance), finals are never dropped; past ``max_queued_events`` waiting events the session is closed
  (``slow_consumer``), so memory per session stays bounded whatever the client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..auth import websocket_credentials
from ..decode.engine import DecodeEngine, Superseded
from ..decode.types import DecodeResult
from ..errors import (
    BacklogFull,
    ClientError,
    IdleTimeout,
    MessageTooLarge,
    ProtocolError,
    SessionTooLong,
    SlowConsumer,
    StreamServerError,
)
from ..logs import session_id_var
from ..metrics import Metrics
from ..session.events import DecodeRequested, Final, SessionEvent
from ..session.machine import StreamingSession
from .protocol import error_message, event_message, parse_stream_config
from .sessions import Outbox, StreamLimits

log = logging.getLogger("stream_server.session")

# Closing handshakes and the last sends of a finished session get this long before we give up on a peer.
SEND_TIMEOUT_S = 10.0
# After close_stream (or a limit, or shutdown) the remaining finals get this long to arrive.
CLOSING_TIMEOUT_S = 60.0
MAX_TEXT_CHARS = 65536
BACKPRESSURE_POLL_S = 0.05


class StreamConnection:
    def __init__(
        self,
        websocket: WebSocket,
        session: StreamingSession,
        engine: DecodeEngine,
        limits: StreamLimits,
        hooks: Metrics | None,
    ) -> None:
        self.websocket = websocket
        self.session = session
        self.session_id = session.session_id
        self.engine = engine
        self.limits = limits
        self.hooks = hooks
        self.outbox = Outbox(hooks.on_coalesced if hooks is not None else None)
        self.finished = asyncio.Event()  # no more intake or events: the session is over
        self.closed = asyncio.Event()  # ... and its close frame is written
        self.close_reason = "client_closed"
        self.close_code = 1000
        self.started = self.last_activity = time.monotonic()
        self._closing_since: float | None = None
        self._all_sent = asyncio.Event()
        self._told_audio_ignored = False
        self._aborted = asyncio.Event()
        self._sending = False
        self._pending: set[asyncio.Future[DecodeResult]] = set()
        self._final_submitted_at: dict[tuple[int, int], float] = {}  # (channel, utterance) -> monotonic
        self.log = logging.LoggerAdapter(log, {"session_id": self.session_id})
        # queued first, so that even a session drained before its handshake completes starts with it
        language = session.params.language or ("auto" if engine.backend.is_multilingual else "en")
        self.send(
            {
                "type": "session.started",
                "session_id": self.session_id,
                "model": engine.backend.model_id,
                "sample_rate": session.params.sample_rate,
                "channels": session.params.channels,
                "language": language,
            }
        )

    # --- events out

    def emit(self, events: list[SessionEvent]) -> None:
        for event in events:
            if isinstance(event, DecodeRequested):
                self._submit(event)
                continue
            message = event_message(event, self.session.params.language or "en")
            if message is None:
                continue
            if isinstance(event, Final):
                self.log.debug("final %s/%s %r", event.channel, event.utterance_id, event.text)
                submitted = self._final_submitted_at.pop((event.channel, event.utterance_id), None)
                if submitted is not None and self.hooks is not None:
                    self.hooks.on_final_latency(time.monotonic() - submitted)
            self.send(message)
        self._check_done()

    def send(self, message: dict[str, Any]) -> None:
        if self._aborted.is_set() or self._all_sent.is_set():  # nothing follows session.closed
            return
        self.outbox.put(message)
        if message["type"] == "error" and self.hooks is not None:
            self.hooks.on_error("ws", message["code"])
        if len(self.outbox) > self.limits.max_queued_events:
            self._abort(SlowConsumer(f"more than {self.limits.max_queued_events} events are waiting to be read"))

    def send_error(self, exc: StreamServerError) -> None:
        self.send(error_message(exc.code, exc.message))

    def _submit(self, request: DecodeRequested) -> None:
        job = request.job
        try:
            future = self.engine.submit(job)
        except StreamServerError as exc:
            self.emit(self.session.receive_decode_failure(request, exc.message))
            return
        if request.awaits_final:
            self._final_submitted_at[(request.channel, request.utterance_id)] = time.monotonic()
        self._pending.add(future)
        future.add_done_callback(functools.partial(self._on_decoded, request))

    def _on_decoded(self, request: DecodeRequested, future: asyncio.Future[DecodeResult]) -> None:
        self._pending.discard(future)
        if self.finished.is_set():
            return
        if future.cancelled() or isinstance(future.exception(), Superseded):
            events = self.session.abandon(request)
        elif future.exception() is not None:
            events = self.session.receive_decode_failure(request, str(future.exception()))
        else:
            events = self.session.receive_decode_result(request, future.result())
        self.emit(events)

    def _check_done(self) -> None:
        if self.session.done and not self._all_sent.is_set():
            self.send(
                {
                    "type": "session.closed",
                    "reason": self.close_reason,
                    "audio_seconds": round(self.session.audio_seconds, 3),
                }
            )
            self._all_sent.set()

    # --- lifecycle

    def begin_close(self, reason: str, close_code: int = 1000) -> None:
        """Flush every channel and close once the remaining finals are out (client close_stream, a limit,
        or shutdown)."""
        if self._closing_since is not None:
            return
        self._closing_since = time.monotonic()
        self.close_reason, self.close_code = reason, close_code
        self.emit(self.session.close())
        self._check_done()

    def _abort(self, exc: StreamServerError) -> None:
        """Close now, without waiting for finals (the client stopped reading)."""
        if self._aborted.is_set():
            return
        self.log.warning("closing: %s", exc.message)
        if self.hooks is not None:
            self.hooks.on_error("ws", exc.code)
        self.close_reason, self.close_code = exc.code, exc.close_code
        self._aborted.set()

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop(), name=f"send-{self.session_id}")
        receiver = asyncio.create_task(self._receive_loop(), name=f"recv-{self.session_id}")
        waiters = [asyncio.create_task(e.wait()) for e in (self._all_sent, self._aborted)]
        try:
            await asyncio.wait({sender, receiver, *waiters}, return_when=asyncio.FIRST_COMPLETED)
            if self._all_sent.is_set() and not self._aborted.is_set() and not sender.done():
                await asyncio.wait_for(self._drain_outbox(sender), timeout=SEND_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.log.info("client did not read the last events within %.0f s", SEND_TIMEOUT_S)
        finally:
            self.finished.set()
            for task in (sender, receiver, *waiters):
                task.cancel()
            # wait for them: an outcome racing the cancel (a disconnect) must be retrieved, not left to warn
            outcomes = await asyncio.gather(sender, receiver, *waiters, return_exceptions=True)
            self._report_crash(outcomes[:2])
            self.engine.cancel_owner(self.session_id)
            for future in list(self._pending):
                future.cancel()
            self.session.mark_closed()
            await self._close()
            self.closed.set()

    def _report_crash(self, outcomes: Sequence[object]) -> None:
        """A bug in the receive or send path must not pass silently: log it and close with 1011."""
        for exc in outcomes:
            if not isinstance(exc, BaseException) or isinstance(exc, (WebSocketDisconnect, asyncio.CancelledError)):
                continue
            self.log.error("session failed", exc_info=exc)
            if self.hooks is not None:
                self.hooks.on_error("ws", "internal_error")
            self.close_reason, self.close_code = "internal_error", 1011

    async def _drain_outbox(self, sender: asyncio.Task[None]) -> None:
        while (len(self.outbox) or self._sending) and not sender.done():
            await asyncio.sleep(0.01)

    async def _close(self) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            reason = "" if self.close_code == 1000 else self.close_reason[:100]
            with contextlib.suppress(Exception):  # the peer is already gone
                await asyncio.wait_for(self.websocket.close(self.close_code, reason), timeout=SEND_TIMEOUT_S)

    async def _send_loop(self) -> None:
        try:
            while True:
                message = await self.outbox.get()
                self._sending = True  # taken from the outbox, not yet written: draining must wait for it
                await self.websocket.send_text(json.dumps(message))
                self._sending = False
                if self.hooks is not None:
                    self.hooks.on_message_sent(message)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.log.info("client went away while sending")

    # --- intake

    def _deadline(self) -> float:
        if self._closing_since is not None:
            return self._closing_since + CLOSING_TIMEOUT_S
        return min(self.started + self.limits.max_session_s, self.last_activity + self.limits.idle_timeout_s)

    def _on_deadline(self) -> bool:
        """A deadline passed: start closing (idle, too long), or give up on a close (True: stop reading)."""
        if self._closing_since is not None:
            self.log.warning("finals still missing %.0f s after closing began; closing anyway", CLOSING_TIMEOUT_S)
            return True
        if time.monotonic() >= self.started + self.limits.max_session_s:
            self.send_error(SessionTooLong(f"the session reached its maximum of {self.limits.max_session_s:g} s"))
            self.begin_close("max_duration")
        else:
            self.send_error(IdleTimeout(f"no audio or keepalive for {self.limits.idle_timeout_s:g} s"))
            self.begin_close("idle_timeout")
        return False

    async def _receive_loop(self) -> None:
        # Checked each turn, not left to task cancellation alone: on Python < 3.12, ``wait_for`` swallows a
        # cancel that arrives as its inner receive completes, which a client flooding us makes likely (found by
        # the slow-consumer test: the session went on reading for two minutes after it was aborted).
        while not self.finished.is_set():
            timeout = self._deadline() - time.monotonic()
            if timeout <= 0:
                if self._on_deadline():
                    return
                continue
            try:
                message = await asyncio.wait_for(self.websocket.receive(), timeout=timeout)
            except asyncio.TimeoutError:
                continue
            if message["type"] == "websocket.disconnect":
                self.log.info("client disconnected (%s)", message.get("code"))
                raise WebSocketDisconnect(message.get("code", 1000))
            self.last_activity = time.monotonic()
            try:
                if message.get("bytes") is not None:
                    await self._on_audio(message["bytes"])
                elif message.get("text") is not None:
                    self._on_text(message["text"])
            except ClientError as exc:
                self.send_error(exc)
                if exc.fatal:
                    self.begin_close("error")

    async def _on_audio(self, data: bytes) -> None:
        if len(data) > self.limits.max_message_bytes:
            raise MessageTooLarge(
                f"a message of {len(data)} bytes exceeds the limit of {self.limits.max_message_bytes}; it was dropped"
            )
        if self._closing_since is not None:  # said once; a live source keeps sending until it hears the close
            if self._told_audio_ignored:
                return
            self._told_audio_ignored = True
            raise ProtocolError(f"audio after the session began closing ({self.close_reason}) is ignored")
        before = self.session.audio_seconds
        self.emit(self.session.receive_audio(data))
        if self.hooks is not None:
            self.hooks.on_audio(self.session.audio_seconds - before)
        await self._apply_backpressure()

    async def _apply_backpressure(self) -> None:
        """Stop reading (TCP pushes back on the client) while this session's undecoded audio is over budget."""
        limit = self.limits.max_backlog_s
        if self.session.backlog_seconds <= limit:
            return
        self.send_error(
            BacklogFull(
                f"more than {limit:g} s of audio is waiting to be decoded; intake paused: send at real-time pace"
            )
        )
        if self.hooks is not None:
            self.hooks.on_backpressure()
        end_of_session = self.started + self.limits.max_session_s
        while (
            self.session.backlog_seconds > limit / 2
            and not self.finished.is_set()
            and not self._aborted.is_set()
            and time.monotonic() < end_of_session
        ):
            await asyncio.sleep(BACKPRESSURE_POLL_S)
        self.last_activity = time.monotonic()  # a paused client was not idle

    def _on_text(self, text: str) -> None:
        if len(text) > min(MAX_TEXT_CHARS, self.limits.max_message_bytes):
            raise MessageTooLarge(f"a text message of {len(text)} characters is too long; it was dropped")
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"malformed JSON: {exc.msg}") from None
        except (ValueError, RecursionError):  # nesting too deep, or an integer of thousands of digits
            raise ProtocolError("malformed JSON: too deeply nested or a number too long") from None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "keepalive":
            return
        if kind == "finalize":
            self.emit(self.session.finalize())
            return
        if kind == "close_stream":
            self.begin_close("client_closed")
            return
        shown = repr(kind) if len(repr(kind)) <= 60 else repr(kind)[:57] + "..."
        raise ProtocolError(f"unknown message type {shown}; expected finalize, close_stream or keepalive")


async def _refuse(websocket: WebSocket, subprotocol: str | None, exc: StreamServerError, hooks: Metrics | None) -> None:
    """Complete the handshake only to say why: an ``error`` event, then close with the error's code."""
    log.info("session refused: %s", exc.code)
    if hooks is not None:
        hooks.on_error("ws", exc.code)
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await websocket.accept(subprotocol=subprotocol)
        await websocket.send_text(json.dumps(error_message(exc.code, exc.message)))
        await websocket.close(exc.close_code)


async def listen(websocket: WebSocket) -> None:
    """The ``/v1/listen`` route. Every log line while serving it carries the session id."""
    session_id = uuid.uuid4().hex[:16]
    token = session_id_var.set(session_id)
    try:
        await _serve(websocket, session_id)
    finally:
        session_id_var.reset(token)


async def _serve(websocket: WebSocket, session_id: str) -> None:
    state = websocket.app.state
    engine, registry, hooks = state.engine, state.sessions, state.hooks
    key, subprotocol = websocket_credentials(websocket.headers, websocket.scope.get("subprotocols", []))
    try:
        state.auth.check(key)
        config = parse_stream_config(
            dict(websocket.query_params), state.stream_defaults, engine.backend.is_multilingual
        )
        connection = StreamConnection(
            websocket, StreamingSession(session_id, config, state.session_policy), engine, state.stream_limits, hooks
        )
        registry.admit(connection)
    except StreamServerError as exc:
        await _refuse(websocket, subprotocol, exc, hooks)
        return
    counted = False
    try:
        await websocket.accept(subprotocol=subprotocol)
        connection.log.info("session started %s", config)
        if hooks is not None:
            hooks.on_session(+1)
            counted = True
        await connection.run()
    except WebSocketDisconnect:
        connection.log.info("client went away during the handshake")
    finally:
        registry.remove(connection)
        if counted and hooks is not None:
            hooks.on_session(-1)
        connection.log.info(
            "session ended (%s, %.1f s of audio)", connection.close_reason, connection.session.audio_seconds
        )
