"""Fixtures: real servers on free local ports (subprocesses, embedded model) and synthesized speech."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import REPO, SHARED_AUDIO, synthesize, write_wav


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerHandle:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(tmp_dir: Path, **overrides: object) -> ServerHandle:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_SERVER_")}
    for key, value in overrides.items():
        env[f"STREAM_SERVER_{key.upper()}"] = (
            value
            if isinstance(value, str)
            else __import__("json").dumps(value)
            if isinstance(value, (list, dict))
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
    log_path = tmp_dir / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "stream_server", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    handle = ServerHandle(process, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{handle.log()}")
        try:
            with urllib.request.urlopen(f"{handle.base_url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return handle
        except OSError:
            time.sleep(0.2)
    handle.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not become ready:\n{handle.log()}")


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
