"""API keys against a real server: every route and the websocket, with and without keys configured.

The routes are read from the app itself (``create_app`` without starting it), so a route added later is
covered without editing this file: each one must answer 401 without a key, except ``/healthz`` and the
static caption page.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from fastapi.routing import APIRoute
from starlette.routing import Mount, WebSocketRoute

from stream_server.app import create_app
from stream_server.config import Settings

from ..conftest import ServerHandle, start_server_with_keys
from ..helpers import silence, stream_audio, synthesize, to_pcm16, wer, write_wav

FLAG_KEY = "k1-flag-Zq8Rt2"
FILE_KEY = "k2-file-Pw4Nx9"
WRONG_KEY = "k3-wrong-Hs6Vb1"
OPEN_ROUTES = {"/healthz"}
SENTENCE = "Please send the quarterly report to the finance team."


def app_routes(keys: list[str]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(method, path) of every HTTP route, the websocket paths and the mounts of an app with ``keys``."""
    app = create_app(Settings(api_keys=keys))
    http_routes, ws_paths, mounts = [], [], []
    for route in flatten(app.routes):
        if isinstance(route, APIRoute):
            path = re.sub(r"\{[^}]+\}", "whisper-1", route.path)
            http_routes += [(method, path) for method in sorted(route.methods or ())]
        elif isinstance(route, WebSocketRoute):
            ws_paths.append(route.path)
        elif isinstance(route, Mount):
            mounts.append(route.path or "/")
        elif hasattr(route, "path"):  # FastAPI's docs routes (plain starlette Routes)
            http_routes += [(m, route.path) for m in sorted(getattr(route, "methods", None) or {"GET"})]
    return http_routes, ws_paths, mounts


def flatten(routes: list[Any]) -> Iterator[Any]:
    """Routes of included routers too (FastAPI >= 0.120 keeps them as one ``_IncludedRouter`` entry each)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from flatten(included.routes) if included is not None else [route]


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    folder = tmp_path_factory.mktemp("auth")
    key_file = folder / "api-keys.txt"
    key_file.write_text(f"# one key per line\n{FILE_KEY}\n")
    handle = start_server_with_keys(folder, [FLAG_KEY], api_key_file=str(key_file))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    audio = np.concatenate([synthesize(SENTENCE), silence(0.5)])
    return write_wav(tmp_path_factory.mktemp("auth-audio") / "speech.wav", audio)


def request(
    server: ServerHandle, method: str, path: str, key: str | None, wav: Path, scheme: str = "Bearer"
) -> httpx.Response:
    headers = {"Authorization": f"{scheme} {key}"} if key else {}
    kwargs: dict[str, Any] = {}
    if method == "POST":
        kwargs["files"] = {"file": ("speech.wav", wav.read_bytes(), "audio/wav")}
        kwargs["data"] = {"model": "whisper-1"}
    return httpx.request(method, server.base_url + path, headers=headers, timeout=120, **kwargs)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, (response.request.url, response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "authentication_error"
    assert response.headers["www-authenticate"] == "Bearer"


def test_every_http_route_but_healthz_needs_a_key(keyed_server: ServerHandle, speech_wav: Path) -> None:
    routes, _, mounts = app_routes([FLAG_KEY])
    paths = {path for _, path in routes}
    assert {"/readyz", "/metrics", "/v1/status", "/v1/models", "/v1/audio/transcriptions"} <= paths
    assert not {"/docs", "/openapi.json"} & paths  # no open docs pages beside keyed routes
    for method, path in routes:
        if path in OPEN_ROUTES:
            assert request(keyed_server, method, path, None, speech_wav).status_code == 200
            continue
        assert_unauthorized(request(keyed_server, method, path, None, speech_wav))
        assert_unauthorized(request(keyed_server, method, path, WRONG_KEY, speech_wav))
        assert_unauthorized(request(keyed_server, method, path, FLAG_KEY, speech_wav, scheme="Basic"))
        for key in (FLAG_KEY, FILE_KEY):
            response = request(keyed_server, method, path, key, speech_wav)
            assert response.status_code == 200, (method, path, response.text)
            if path.startswith("/v1/audio/"):
                assert wer(SENTENCE, response.json()["text"]) <= 0.2
    # the caption page stays open (a browser cannot send a header when it navigates); it asks for the key
    assert mounts == ["/"]
    page = httpx.get(keyed_server.base_url + "/", timeout=10)
    assert page.status_code == 200 and "api-key" in page.text
    assert httpx.get(keyed_server.base_url + "/docs", timeout=10).status_code == 404


async def first_event_and_close(url: str, **connect: Any) -> tuple[dict[str, Any], int | None, str | None]:
    async with websockets.connect(url, open_timeout=30, **connect) as ws:
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        subprotocol = ws.subprotocol
        if event["type"] == "session.started":
            await ws.send(json.dumps({"type": "close_stream"}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 30)
        return event, closed.value.rcvd.code if closed.value.rcvd else None, subprotocol


@pytest.mark.parametrize(
    "connect",
    [
        {},
        {"additional_headers": {"Authorization": f"Bearer {WRONG_KEY}"}},
        {"additional_headers": {"Authorization": f"Basic {FLAG_KEY}"}},
        {"subprotocols": [f"bearer.{WRONG_KEY}"]},
        {"subprotocols": ["bearer."]},
    ],
    ids=["no-key", "wrong-header", "basic-scheme", "wrong-subprotocol", "empty-subprotocol"],
)
def test_websocket_without_a_valid_key_gets_an_error_then_1008(keyed_server: ServerHandle, connect: dict) -> None:
    event, code, subprotocol = asyncio.run(first_event_and_close(f"{keyed_server.ws_url}/v1/listen", **connect))
    assert event["type"] == "error" and event["code"] == "invalid_api_key", event
    assert code == 1008
    if "subprotocols" in connect:  # echoed, or a browser would fail the handshake without showing the error
        assert subprotocol == connect["subprotocols"][0]


def test_websocket_with_a_key_in_the_header_or_the_subprotocol(keyed_server: ServerHandle) -> None:
    url = f"{keyed_server.ws_url}/v1/listen"
    event, code, subprotocol = asyncio.run(first_event_and_close(url, subprotocols=["chat", f"bearer.{FILE_KEY}"]))
    assert event["type"] == "session.started" and code == 1000 and subprotocol == f"bearer.{FILE_KEY}"
    audio = to_pcm16(np.concatenate([synthesize(SENTENCE), silence(1.0)]))
    result = asyncio.run(
        stream_audio(keyed_server.ws_url, audio, realtime=False, headers={"Authorization": f"Bearer {FLAG_KEY}"})
    )
    assert wer(SENTENCE, result.text()) <= 0.2
    assert result.events[-1] == {**result.events[-1], "type": "session.closed", "reason": "client_closed"}


def test_refusals_are_counted_and_keys_never_logged(keyed_server: ServerHandle, speech_wav: Path) -> None:
    request(keyed_server, "GET", "/v1/models", WRONG_KEY, speech_wav)
    asyncio.run(first_event_and_close(f"{keyed_server.ws_url}/v1/listen?access_token={WRONG_KEY}"))
    metrics = request(keyed_server, "GET", "/metrics", FLAG_KEY, speech_wav).text
    assert re.search(r'errors_total\{code="invalid_api_key",transport="http"\} [1-9]', metrics), metrics
    assert re.search(r'errors_total\{code="invalid_api_key",transport="native"\} [1-9]', metrics)
    log = keyed_server.log()
    assert "api_keys=2 configured" in log  # counted (flag and file), never shown
    for key in (FLAG_KEY, FILE_KEY, WRONG_KEY):
        assert key not in log


def test_without_keys_every_route_is_open(live_server: ServerHandle) -> None:
    routes, _, _ = app_routes([])
    assert "/openapi.json" in {path for _, path in routes}
    for method, path in routes:
        if method == "GET":
            response = httpx.get(live_server.base_url + path, timeout=30)
            assert response.status_code == 200, (path, response.status_code, response.text)
    event, code, _ = asyncio.run(first_event_and_close(f"{live_server.ws_url}/v1/listen"))
    assert event["type"] == "session.started" and code == 1000
