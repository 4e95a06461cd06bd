"""One websocket stream, whatever its dialect: moves frames between the socket, a ``Dialect`` and a
``StreamSession``, and decides nothing about speech itself.

Three things run per connection on the event loop: the receive loop (frame -> dialect -> ``ClientCommand``s ->
session -> events), decode futures resolving (outcome -> session -> events), and the send loop draining an
``Outbox``. The receive loop never waits for a decode, so a slow batch never delays anybody's audio intake.

Limits (``StreamLimits``, decided by the pure ``ConnectionLimits``): an oversized message is dropped and
reported; a backlog of undecoded audio over ``max_backlog_s`` pauses intake (TCP pushes back) until half of it is
decoded, audio faster than ``max_intake_speed`` pauses it briefly, nothing accepted is dropped; idle or too long:
an error, then flushed like a client close; a client that does not read gets partials coalesced, finals never
dropped, and past ``max_queued_events`` it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Hashable, Sequence

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..decode.engine import Superseded
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
from ..session.events import DecodeError, DecodeRequested, Final, Partial, SessionEvent, SpeechEnded
from ..session.params import StreamParams
from .dialects import base
from .dialects.base import ClientCommand, Dialect, Message, SessionInfo
from .frames import Frame, FrameReader
from .limits import ConnectionLimits, LimitAction
from .outbox import Outbox
from .services import Services
from .session_api import SessionFactory, StreamSession
from .timing import FinalTimer

log = logging.getLogger("stream_server.session")


class StreamConnection:
    """Owns one accepted websocket and the session(s) behind it (a ``StartIn`` restarts the session). Event
    loop only. ``run`` returns when the session is over and the close frame is written."""

    def __init__(
        self,
        websocket: WebSocket,
        dialect: Dialect,
        session_factory: SessionFactory,
        services: Services,
        *,
        session_id: str,
        params: StreamParams | None,
        authenticated: bool,
    ) -> None:
        self.websocket = websocket
        self.dialect = dialect
        self.session_factory = session_factory
        self.services = services
        self.metrics = services.metrics
        self.session_id = session_id
        self.outbox = Outbox(self.metrics.on_coalesced)
        self.limits = ConnectionLimits(services.limits, time.monotonic())
        self.session: StreamSession | None = None
        self.params: StreamParams | None = None
        self._retired: list[StreamSession] = []  # sessions replaced by a restart, still delivering finals
        self._generation = 0  # sessions opened on this connection (keys partials apart across restarts)
        self._authenticated = authenticated
        self.finished = asyncio.Event()  # no more intake or events: the session is over
        self.closed = asyncio.Event()  # ... and its close frame is written
        self.close_reason = "client_closed"
        self.close_code = 1000
        self._all_sent = asyncio.Event()
        self._aborted = asyncio.Event()
        self._progress = asyncio.Event()  # a decode outcome arrived or closing began: backlog may have shrunk
        self._told_audio_ignored = False
        self._pending: set[asyncio.Future[DecodeResult]] = set()
        self.log = logging.LoggerAdapter(log, {"session_id": session_id})
        self.timer = FinalTimer(self.metrics, self.log)  # where each final's latency went
        self._coalesce = bool(getattr(dialect, "coalesce_partials", True))
        if params is not None:  # queued first, so a session drained before its handshake completes starts with it
            self._start(params)

    # --- what the registry reads (``registry.LiveSession``)

    @property
    def streams(self) -> int:
        """Channels transcribed (mixed down, or not started yet: one)."""
        return 1 if self.params is None or self.params.mixdown else self.params.channels

    @property
    def backlog_seconds(self) -> float:
        return sum(s.backlog_seconds for s in self._sessions())

    @property
    def queued_events(self) -> int:
        return len(self.outbox)

    @property
    def is_closed(self) -> bool:
        return self.closed.is_set()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    @property
    def audio_seconds(self) -> float:
        return self.session.audio_seconds if self.session is not None else 0.0

    def _sessions(self) -> list[StreamSession]:
        return [*self._retired, *([self.session] if self.session is not None else [])]

    # --- sessions

    def _start(self, params: StreamParams) -> None:
        """Open the session (raises ``InvalidParameter`` for params it cannot serve); a running one is flushed."""
        session = self.session_factory(self.session_id, params)
        if self.session is not None:
            old = self.session
            self._retired.append(old)
            self.emit(old, old.close())
        self.session, self.params = session, params
        self.timer.show = params.timing
        self.limits.audio_rate(params.channels, params.sample_rate)
        self._generation += 1
        info = SessionInfo(self.session_id, self.services.decoder.model_id, params)
        for message in self.dialect.started(info):
            self.send(message)

    # --- events out

    def emit(self, session: StreamSession, events: list[SessionEvent]) -> None:
        generation = self._generation if session is self.session else 0
        for event in events:
            if isinstance(event, DecodeRequested):
                self._submit(session, generation, event)
                continue
            utterance = (generation, event.channel, event.utterance_id)
            messages = self.dialect.render(event)
            if isinstance(event, (SpeechEnded, Final)):
                self.timer.passed(utterance, event, messages)
            elif isinstance(event, DecodeError):
                self.metrics.on_error(self.dialect.name, "decode_failed")
            coalesce = isinstance(event, Partial) and self._coalesce
            for i, message in enumerate(messages):
                self.send(message, (*utterance, i) if coalesce else None)
        self._check_done()

    def send(self, message: Message, coalesce_key: Hashable | None = None) -> None:
        if self._aborted.is_set() or self._all_sent.is_set():  # nothing follows the closing message
            return
        self.outbox.put(message, coalesce_key)
        limit = self.services.limits.max_queued_events
        if len(self.outbox) > limit:
            self._abort(SlowConsumer(f"more than {limit} events are waiting to be read"))

    def send_error(self, exc: StreamServerError) -> None:
        self.metrics.on_error(self.dialect.name, exc.code)
        for message in self.dialect.error(exc):
            self.send(message)

    def _submit(self, session: StreamSession, generation: int, request: DecodeRequested) -> None:
        try:
            future = self.services.decoder.submit(request.job)
        except StreamServerError as exc:
            self.emit(session, session.receive_decode_failure(request, exc.message))
            return
        if request.awaits_final:
            self.timer.submitted((generation, request.channel, request.utterance_id))
        self._pending.add(future)
        future.add_done_callback(functools.partial(self._on_decoded, session, request))

    def _on_decoded(
        self, session: StreamSession, request: DecodeRequested, future: asyncio.Future[DecodeResult]
    ) -> None:
        self._pending.discard(future)
        if self.finished.is_set():
            return
        if future.cancelled() or isinstance(future.exception(), Superseded):
            events = session.abandon(request)
        elif future.exception() is not None:
            events = session.receive_decode_failure(request, str(future.exception()))
        else:
            events = session.receive_decode_result(request, future.result())
        self.emit(session, events)
        self._progress.set()

    def _check_done(self) -> None:
        if self._all_sent.is_set() or not self.limits.closing:
            return
        if all(s.done for s in self._sessions()):
            for message in self.dialect.closed(self.close_reason, self.audio_seconds):
                self.send(message)
            self._all_sent.set()

    # --- lifecycle

    def begin_close(self, reason: str, close_code: int = 1000) -> None:
        """Flush every channel and close once the remaining finals are out (client close, a limit, shutdown)."""
        if not self.limits.begin_closing(time.monotonic()):
            return
        self.close_reason, self.close_code = reason, close_code
        self._progress.set()
        if self.session is not None:
            self.emit(self.session, self.session.close())
        self._check_done()

    def _abort(self, exc: StreamServerError) -> None:
        """Close now, without waiting for finals (the client stopped reading)."""
        if self._aborted.is_set():
            return
        self.log.warning("closing: %s", exc.message)
        self.metrics.on_error(self.dialect.name, exc.code)
        self.close_reason, self.close_code = exc.code, exc.close_code
        self._aborted.set()
        self._progress.set()

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop(), name=f"send-{self.session_id}")
        receiver = asyncio.create_task(self._receive_loop(), name=f"recv-{self.session_id}")
        waiters = [asyncio.create_task(e.wait()) for e in (self._all_sent, self._aborted)]
        drained: asyncio.Task[None] | None = None
        try:
            await asyncio.wait({sender, receiver, *waiters}, return_when=asyncio.FIRST_COMPLETED)
            if self._all_sent.is_set() and not self._aborted.is_set() and not sender.done():
                drained = asyncio.create_task(self.outbox.wait_drained())
                _, pending = await asyncio.wait(
                    {drained, sender}, timeout=self.services.limits.send_timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
                if pending == {drained, sender}:
                    self.log.info("client did not read the last events in %.0f s", self.services.limits.send_timeout_s)
        finally:
            self.finished.set()
            tasks = [sender, receiver, *waiters, *([drained] if drained is not None else [])]
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)  # a disconnect racing the cancel too
            self._report_crash(outcomes[:2])
            self.services.decoder.cancel_owner(self.session_id)
            for future in list(self._pending):
                future.cancel()
            for session in self._sessions():
                session.mark_closed()
            await self._close()
            self.closed.set()

    def _report_crash(self, outcomes: Sequence[object]) -> None:
        """A bug in the receive or send path must not pass silently: log it and close with 1011."""
        for exc in outcomes:
            if not isinstance(exc, BaseException) or isinstance(exc, (WebSocketDisconnect, asyncio.CancelledError)):
                continue
            self.log.error("session failed", exc_info=exc)
            self.metrics.on_error(self.dialect.name, "internal_error")
            self.close_reason, self.close_code = "internal_error", 1011

    async def _close(self) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            reason = "" if self.close_code == 1000 else self.close_reason[:100]
            with contextlib.suppress(Exception):  # the peer is already gone
                await asyncio.wait_for(
                    self.websocket.close(self.close_code, reason), timeout=self.services.limits.send_timeout_s
                )

    async def _send_loop(self) -> None:
        try:
            while True:
                message = await self.outbox.get()
                self.timer.written(message)
                await self.websocket.send_text(json.dumps(message))
                self.outbox.sent()
                self.metrics.on_message_sent(message)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.log.info("client went away while sending")

    # --- intake

    def _on_limit(self, action: LimitAction) -> bool:
        """Act on a due limit; True: stop reading."""
        limits = self.services.limits
        if action is LimitAction.GIVE_UP:
            self.log.warning("finals still missing %.0f s after closing began; closing", limits.closing_timeout_s)
            return True
        if action is LimitAction.MAX_DURATION:
            self.send_error(SessionTooLong(f"the session reached its maximum of {limits.max_session_s:g} s"))
            self.begin_close("max_duration")
        elif action is LimitAction.IDLE:
            self.send_error(IdleTimeout(f"no audio or keepalive for {limits.idle_timeout_s:g} s"))
            self.begin_close("idle_timeout")
        return False

    async def _receive_loop(self) -> None:
        reader = FrameReader(self.websocket, self.services.limits.max_message_bytes)
        try:
            while not self.finished.is_set() and not self._aborted.is_set():
                now = time.monotonic()
                action = self.limits.check(now, self.backlog_seconds)
                if action is not LimitAction.NONE and action is not LimitAction.RESUME:
                    if self._on_limit(action):
                        return
                    continue
                self._progress.clear()  # set by a decode outcome or a close: the backlog may have shrunk
                frame = await reader.next(self.limits.next_check() - now, self.limits.paused, self._progress)
                if frame is None:
                    continue
                if frame["type"] == "websocket.disconnect":
                    self.log.info("client disconnected (%s)", frame.get("code"))
                    raise WebSocketDisconnect(frame.get("code", 1000))
                self.limits.activity(time.monotonic())
                self._on_frame(frame)
        finally:
            await reader.close()

    def _on_frame(self, frame: Frame) -> None:
        try:
            if frame.get("bytes") is not None:
                self._on_binary(frame["bytes"])
            elif frame.get("text") is not None:
                self._on_text(frame["text"])
        except ClientError as exc:
            self.send_error(exc)
            if exc.fatal:
                self.begin_close("error")

    def _on_binary(self, data: bytes) -> None:
        limit = self.services.limits.max_message_bytes
        if len(data) > limit:
            raise MessageTooLarge(f"a message of {len(data)} bytes exceeds the limit of {limit}; it was dropped")
        self._apply(self.dialect.on_binary(data))

    def _on_text(self, text: str) -> None:
        if len(text) > self.services.limits.max_text_chars:
            raise MessageTooLarge(f"a text message of {len(text)} characters is too long; it was dropped")
        self._apply(self.dialect.on_text(text))

    def _apply(self, commands: list[ClientCommand]) -> None:
        for command in commands:
            if isinstance(command, base.AudioIn):
                self._on_audio(command)
            elif isinstance(command, base.KeepAliveIn):
                pass
            elif isinstance(command, base.FinalizeIn):
                if self.session is not None and not self.limits.closing:
                    self.emit(self.session, self.session.finalize(command.channel))
            elif isinstance(command, base.CloseIn):
                self.begin_close("client_closed")
            elif isinstance(command, base.ClearIn):
                if self.session is not None and not self.limits.closing:
                    self.session.clear()
            elif isinstance(command, base.StartIn):
                self._on_start(command)
            elif isinstance(command, base.ReplyOut):
                for message in command.messages:
                    self.send(message)

    def _on_start(self, command: base.StartIn) -> None:
        if self.limits.closing:
            raise ProtocolError(f"the session is closing ({self.close_reason}); it cannot be restarted")
        if command.api_key is not None or not self._authenticated:
            self.services.auth.check(command.api_key)
            self._authenticated = True
        self._start(command.params)

    def _on_audio(self, command: base.AudioIn) -> None:
        if self.limits.closing:  # said once; a live source keeps sending until it hears the close
            if self._told_audio_ignored:
                return
            self._told_audio_ignored = True
            raise ProtocolError(f"audio after the session began closing ({self.close_reason}) is ignored")
        session = self.session
        if session is None:
            raise ProtocolError("audio before the session started")
        before = session.audio_seconds
        if command.channel is None:
            events = session.receive_audio(command.data)
        else:
            events = session.receive_channel_audio(command.channel, command.data)
        self.emit(session, events)
        self.metrics.on_audio(session.audio_seconds - before)
        self.limits.took_audio(time.monotonic(), session.audio_seconds - before)
        if self.limits.over_backlog(self.backlog_seconds):
            limit = self.services.limits.max_backlog_s
            self.send_error(
                BacklogFull(
                    f"more than {limit:g} s of audio is waiting to be decoded; intake paused: send at real-time pace"
                )
            )
            self.metrics.on_backpressure()
            self.limits.pause()
