"""``StreamConnection`` on a scripted socket (a slow or silent client is easy to play here, impossible through the
test client whose queues never fill) and a real ``DecodeEngine`` on the fake backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from starlette.websockets import WebSocketState

from stream_server.app import build_engine, build_services
from stream_server.config import Settings
from stream_server.transport.connection import StreamConnection
from stream_server.transport.dialects.base import Handshake
from stream_server.transport.dialects.native import NativeDialect
from stream_server.transport.services import Services

from ..helpers import silence, synthesize, to_pcm16
from .fakes import FakeBackend

CHUNK = 3200


class ScriptedSocket:
    """The websocket surface the connection uses; ``reading`` cleared: the client stops reading."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self.closed_with: tuple[int, str] | None = None
        self.application_state = WebSocketState.CONNECTED

    def text(self, payload: Any) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(payload)})

    def audio(self, data: bytes) -> None:
        for i in range(0, len(data), CHUNK):
            self.inbox.put_nowait({"type": "websocket.receive", "bytes": data[i : i + CHUNK]})

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        await self.reading.wait()
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = (code, reason or "")
        self.application_state = WebSocketState.DISCONNECTED

    def types(self) -> list[str]:
        return [m["type"] if m["type"] != "error" else m["code"] for m in self.sent]


@asynccontextmanager
async def served(**settings: Any) -> AsyncIterator[tuple[Services, Any]]:
    svc = build_services(Settings(**settings))
    backend = FakeBackend()
    engine = build_engine(Settings(**settings), backend)
    engine.start()
    svc.decoder.attach(engine)
    try:
        yield svc, backend
    finally:
        backend.release()
        await engine.stop()


def connect(svc: Services, socket: ScriptedSocket, query: dict[str, list[str]] | None = None) -> StreamConnection:
    dialect = NativeDialect()
    handshake = Handshake("/v1/listen", {}, query or {}, {}, [], svc.stream_defaults, False)
    accepted = dialect.accept(handshake)
    return StreamConnection(
        socket,  # type: ignore[arg-type]
        dialect,
        svc.session_factory,
        svc,
        session_id="s1",
        params=accepted.params,
        authenticated=True,
    )


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.fixture(scope="module")
def two_utterances() -> bytes:
    try:
        speech = synthesize("hello there this is a test")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    return to_pcm16(np.concatenate([speech, silence(1.0), speech, silence(1.0)]))


def test_a_client_that_stops_reading_is_closed_as_slow_consumer() -> None:
    async def scenario() -> None:
        async with served(max_queued_events=20) as (svc, _):
            socket = ScriptedSocket()
            socket.reading.clear()
            connection = connect(svc, socket)
            for _ in range(40):
                socket.text({"type": "nope"})
            await connection.run()
            assert socket.closed_with == (1008, "slow_consumer")
            assert connection.close_reason == "slow_consumer"

    run(scenario)


def test_an_idle_client_is_told_then_flushed_and_closed() -> None:
    async def scenario() -> None:
        async with served(idle_timeout_s=0.05) as (svc, _):
            socket = ScriptedSocket()
            await connect(svc, socket).run()
            assert socket.types() == ["session.started", "idle_timeout", "session.closed"]
            assert socket.sent[-1]["reason"] == "idle_timeout" and socket.closed_with == (1000, "")

    run(scenario)


def test_a_session_at_its_maximum_duration_is_closed_whatever_the_keepalives() -> None:
    async def scenario() -> None:
        async with served(max_session_s=0.1, idle_timeout_s=0.05) as (svc, _):
            socket = ScriptedSocket()
            connection = connect(svc, socket)
            task = asyncio.ensure_future(connection.run())
            while not task.done():
                socket.text({"type": "keepalive"})
                await asyncio.sleep(0.01)
            assert socket.types() == ["session.started", "max_session_duration", "session.closed"]
            assert socket.sent[-1]["reason"] == "max_duration"

    run(scenario)


def test_a_full_backlog_pauses_intake_until_half_is_decoded_and_drops_nothing(two_utterances: bytes) -> None:
    async def scenario() -> None:
        async with served(max_backlog_s=0.5) as (svc, backend):
            backend.hold()  # finals wait: the backlog grows
            socket = ScriptedSocket()
            connection = connect(svc, socket, {"interim_results": ["false"]})
            task = asyncio.ensure_future(connection.run())
            socket.audio(two_utterances)
            socket.text({"type": "close_stream"})
            await until(lambda: "backlog_full" in socket.types())
            accepted = connection.audio_seconds
            # still reading (so the websocket layer still answers pings) but holding what it reads
            await until(lambda: socket.inbox.empty())
            await asyncio.sleep(0.05)
            assert connection.limits.paused and connection.audio_seconds == accepted
            assert "session.closed" not in socket.types()  # the held close_stream waits its turn
            backend.release()
            await task
            types = socket.types()
            assert types.count("final") == 2 and types[-1] == "session.closed"
            assert socket.sent[-1]["audio_seconds"] == pytest.approx(len(two_utterances) / 32000, abs=0.01)
            assert svc.metrics.backpressure._value.get() == 1

    run(scenario)


def test_past_its_hold_a_paused_connection_stops_reading(two_utterances: bytes) -> None:
    async def scenario() -> None:
        async with served(max_backlog_s=0.5, max_message_bytes=CHUNK) as (svc, backend):
            backend.hold()
            socket = ScriptedSocket()
            connection = connect(svc, socket, {"interim_results": ["false"]})
            task = asyncio.ensure_future(connection.run())
            socket.audio(two_utterances)
            await until(lambda: connection.limits.paused)
            left = socket.inbox.qsize()
            await asyncio.sleep(0.05)
            assert socket.inbox.qsize() == left > 0  # one message held, then TCP would push back
            backend.release()
            socket.text({"type": "close_stream"})
            await task
            assert socket.sent[-1]["audio_seconds"] == pytest.approx(len(two_utterances) / 32000, abs=0.01)

    run(scenario)


def test_drain_finalizes_open_sessions_and_closes_them_with_1001(two_utterances: bytes) -> None:
    async def scenario() -> None:
        async with served() as (svc, _):
            socket = ScriptedSocket()
            connection = connect(svc, socket, {"interim_results": ["false"]})
            svc.registry.admit(connection)
            task = asyncio.ensure_future(connection.run())
            socket.audio(two_utterances[: len(two_utterances) // 2 - 16000])  # mid-way: an utterance is open
            await until(lambda: socket.inbox.empty())
            assert await svc.registry.drain(5.0) == 0
            await task
            assert socket.types()[-2:] == ["final", "session.closed"]
            assert socket.sent[-1]["reason"] == "server_shutdown"
            assert socket.closed_with == (1001, "server_shutdown")

    run(scenario)
