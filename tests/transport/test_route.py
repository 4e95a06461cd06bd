"""``dialect_route``: a dialect with ``refuse_with_http`` is refused with an HTTP status before the upgrade, in
Starlette's test client and for real through uvicorn's ``websockets-sansio`` implementation (the one the server
runs)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest
import uvicorn
import websockets
from fastapi import FastAPI
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse

from stream_server.app import create_app
from stream_server.config import Settings
from stream_server.errors import StreamServerError
from stream_server.transport.dialects.base import Message
from stream_server.transport.dialects.native import NativeDialect
from stream_server.transport.route import dialect_route

from .fakes import FakeBackend


class HttpRefusingDialect(NativeDialect):
    """Protocol v1 whose refusals are HTTP responses, with a body of its own shape."""

    name: ClassVar[str] = "refusing"
    refuse_with_http: ClassVar[bool] = True

    def error(self, exc: StreamServerError) -> list[Message]:
        return [{"err_code": exc.code, "err_msg": exc.message}]


def app_with_refusing_route(**settings: object) -> FastAPI:
    app = create_app(Settings(**settings), FakeBackend())  # type: ignore[arg-type]
    # ahead of the static mount at "/", which would take the path otherwise
    app.router.routes.insert(0, WebSocketRoute("/refusing/listen", dialect_route(HttpRefusingDialect)))
    return app


def test_the_test_client_sees_the_http_refusal() -> None:
    with TestClient(app_with_refusing_route(api_keys=["k1"])) as client:
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/refusing/listen"):
            pass
        assert denied.value.status_code == 401
        assert denied.value.headers["www-authenticate"] == "Bearer"
        assert denied.value.json() == {"err_code": "invalid_api_key", "err_msg": denied.value.json()["err_msg"]}
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/refusing/listen?bogus=1"):
            pass
        assert denied.value.status_code == 401  # the key is checked first: nothing is said about the parameters
        metrics = client.get("/metrics", headers={"Authorization": "Bearer k1"}).text
        assert 'errors_total{code="invalid_api_key",transport="refusing"} 2.0' in metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def uvicorn_url() -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        app_with_refusing_route(api_keys=["k1"], max_sessions=1),
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"ws://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(20)


def test_uvicorn_websockets_sansio_sends_the_refusal_as_http(uvicorn_url: str) -> None:
    async def scenario() -> None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{uvicorn_url}/refusing/listen", additional_headers={"Authorization": "Bearer x"})
        response = refused.value.response
        assert response.status_code == 401
        assert json.loads(response.body) == {"err_code": "invalid_api_key", "err_msg": "invalid API key"}
        key = {"Authorization": "Bearer k1"}
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{uvicorn_url}/refusing/listen?channels=9", additional_headers=key)
        assert refused.value.response.status_code == 400
        async with websockets.connect(f"{uvicorn_url}/refusing/listen", additional_headers=key) as held:
            assert json.loads(await held.recv())["type"] == "session.started"
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(f"{uvicorn_url}/refusing/listen", additional_headers=key)
            assert refused.value.response.status_code == 429
            assert refused.value.response.headers["Retry-After"] == "1"

    asyncio.run(scenario())


def test_a_paused_session_keeps_answering_keepalive_pings() -> None:
    """Issue 18 finding 6: while intake is paused for backpressure the websocket layer must still see pongs, or
    its keepalive closes the session (1011) and the finals of accepted audio are lost."""
    try:
        from ..helpers import silence, synthesize, to_pcm16

        speech = synthesize("hello there this is a test")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    import numpy as np

    payload = to_pcm16(np.concatenate([speech, silence(1.0), speech, silence(1.0)]))
    backend = FakeBackend()
    backend.hold()
    app = create_app(Settings(max_backlog_s=0.5), backend)
    port = _free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        ws_ping_interval=0.2,
        ws_ping_timeout=0.3,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)

    async def scenario() -> tuple[list[dict[str, object]], int | None]:
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/listen?interim_results=false") as ws:
            for i in range(0, len(payload), 3200):
                await ws.send(payload[i : i + 3200])
            await ws.send(json.dumps({"type": "close_stream"}))
            events: list[dict[str, object]] = []
            while not any(e.get("code") == "backlog_full" for e in events):
                events.append(json.loads(await ws.recv()))
            await asyncio.sleep(1.5)  # paused for five ping timeouts
            backend.release()
            try:
                while True:
                    events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            except websockets.ConnectionClosed as closed:
                return events, closed.rcvd.code if closed.rcvd else None

    try:
        events, code = asyncio.run(scenario())
    finally:
        backend.release()
        server.should_exit = True
        thread.join(20)
    assert code == 1000
    assert [e["type"] for e in events].count("final") == 2 and events[-1]["type"] == "session.closed"
