"""Fixtures: real servers on free local ports (subprocesses, embedded model) and synthesized speech."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.launch import ServerProcess, http_ok, ours_command

from .helpers import SHARED_AUDIO, synthesize, write_wav

ServerHandle = ServerProcess  # what the tests call a running server


def _setting_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _start(tmp_dir: Path, overrides: dict[str, object], ready_headers: dict[str, str] | None = None) -> ServerHandle:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_SERVER_")}
    env.update({f"STREAM_SERVER_{key.upper()}": _setting_value(value) for key, value in overrides.items()})
    server = ServerProcess(ours_command(), http_ok("/readyz", ready_headers), name="server", env=env, log_dir=tmp_dir)
    return server.start(timeout_s=60)


def start_server(tmp_dir: Path, **overrides: object) -> ServerHandle:
    """A real server (embedded model) with ``overrides`` as its settings (environment variables), ready."""
    return _start(tmp_dir, overrides)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One real server with default settings, shared by the tests that do not need special settings."""
    handle = start_server(tmp_path_factory.mktemp("live-server"))
    yield handle
    handle.stop()


@pytest.fixture
def server_factory(
    tmp_path: Path,
) -> Iterator[Callable[..., contextlib.AbstractContextManager[ServerHandle]]]:
    """``with server_factory(max_sessions=2) as srv:`` starts a server with those settings (env overrides)."""

    @contextlib.contextmanager
    def factory(**overrides: object) -> Iterator[ServerHandle]:
        handle = start_server(tmp_path, **overrides)
        try:
            yield handle
        finally:
            handle.stop()

    yield factory


@pytest.fixture(scope="session")
def espeak(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``espeak(text, path=None, rate=16000) -> Path`` of a mono 16-bit WAV made by espeak-ng."""
    folder = tmp_path_factory.mktemp("speech")
    counter = iter(range(1_000_000))

    def make(text: str, path: Path | None = None, rate: int = 16000) -> Path:
        target = path or folder / f"speech-{next(counter)}.wav"
        return write_wav(target, synthesize(text, rate=rate), rate)

    return make


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    if not (SHARED_AUDIO / "manifest.jsonl").is_file():
        pytest.skip(f"real recordings not available: {SHARED_AUDIO} is absent")
    return SHARED_AUDIO


def start_server_with_keys(tmp_dir: Path, keys: list[str], **overrides: object) -> ServerHandle:
    """``start_server`` for a server that requires API keys: its readiness probe sends the first key."""
    return _start(tmp_dir, {"api_keys": keys, **overrides}, {"Authorization": f"Bearer {keys[0]}"})


# --- helpers for the hardening tests (limits, soak, fuzz, shutdown) -----------------------------------------


def server_status(server: ServerHandle) -> dict[str, Any]:
    """``GET /v1/status`` (open sessions, their backlog and queued events, scheduler statistics)."""
    with urllib.request.urlopen(f"{server.base_url}/v1/status", timeout=10) as response:
        status: dict[str, Any] = json.loads(response.read())
    return status


def metric_value(server: ServerHandle, name: str, **labels: str) -> float:
    """One sample of ``GET /metrics`` (0.0 when the labelled series does not exist yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{server.base_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def rss_mb(server: ServerHandle, field: str = "VmRSS") -> float:
    """Resident memory of the server process (``VmHWM``: its peak so far), in MiB, from /proc."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/{server.process.pid}/status")


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


async def read_until_closed(ws: Any, timeout_s: float = 60.0) -> tuple[list[dict[str, Any]], int | None, str]:
    """Every event a websocket delivers until it closes: (events, close code, close reason)."""
    import asyncio
    import json

    import websockets

    events: list[dict[str, Any]] = []

    async def collect() -> None:
        async for raw in ws:
            events.append(json.loads(raw))

    with contextlib.suppress(websockets.ConnectionClosed):
        await asyncio.wait_for(collect(), timeout_s)
    received = ws.protocol.close_rcvd
    return events, (received.code if received else None), (received.reason if received else "")


class RawWebsocket:
    """A blocking websocket client on a plain socket, built on websockets' sans-I/O ``ClientProtocol``.

    Unlike the asyncio client it reads only when asked (a client that stops reading, for real), can write
    arbitrary bytes (broken frames), and can vanish without a close frame (``abort``: TCP reset).
    """

    def __init__(
        self, port: int, path: str = "/v1/listen", *, rcvbuf: int | None = None, timeout_s: float = 30.0
    ) -> None:
        from websockets.client import ClientProtocol
        from websockets.http11 import Response
        from websockets.uri import parse_uri

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout_s)
        self.sock.connect(("127.0.0.1", port))
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"), max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self.texts: list[str] = []
        while not any(isinstance(e, Response) for e in self._read()):
            pass

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def _read(self) -> list[Any]:
        from websockets.frames import Frame, Opcode

        data = self.sock.recv(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        events = self.protocol.events_received()
        self.texts += [bytes(e.data).decode() for e in events if isinstance(e, Frame) and e.opcode is Opcode.TEXT]
        self._flush()  # pongs and the closing handshake
        if not data and not events:
            raise ConnectionError("the server closed the connection")
        return events

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def send_binary(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        self._flush()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until_closed(self) -> tuple[list[dict[str, Any]], int | None, str]:
        """Read everything up to the server's close: (events, close code, close reason)."""
        import json

        from websockets.protocol import State

        with contextlib.suppress(ConnectionError, OSError):
            while self.protocol.state is not State.CLOSED:
                self._read()
        self.sock.close()
        received = self.protocol.close_rcvd
        events = [json.loads(t) for t in self.texts]
        return events, (received.code if received else None), (received.reason if received else "")

    def abort(self) -> None:
        """Vanish: a TCP reset, no close frame."""
        import struct

        if self.sock.fileno() == -1:
            return
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
