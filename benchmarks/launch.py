"""Start, watch and stop a server in a subprocess on a loopback port: the one launcher of the tests and benchmarks.

``ServerProcess`` starts its command in a new process group with stdout and stderr in a log file, waits
(bounded) until ``ready(port)`` holds, and on ``stop`` signals the whole group, then SIGKILLs it after a grace
period, so nothing it started outlives its owner. Standard library only, so the tests can import it without
the benchmark extras.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(path: str, headers: Mapping[str, str] | None = None) -> Callable[[int], bool]:
    """Readiness probe: ``GET path`` on the port answers 200."""

    def check(port: int) -> bool:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 (loopback only)
                return bool(response.status == 200)
        except OSError:
            return False

    return check


def tcp_listening(port: int) -> bool:
    """Readiness probe for servers without a health route: the port accepts connections."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def ours_command(*args: str) -> Callable[[int], list[str]]:
    """``python -m stream_server serve --port PORT ARGS...`` with this interpreter."""
    return lambda port: [sys.executable, "-m", "stream_server", "serve", "--port", str(port), *args]


class ServerProcess(contextlib.AbstractContextManager["ServerProcess"]):
    """One server subprocess. ``command(port) -> argv``; ``env`` replaces the environment when given (else
    the parent's is inherited) and ``extra_env`` is laid over it. Not thread-safe."""

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        ready: Callable[[int], bool],
        *,
        name: str = "server",
        env: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        port: int | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.command = command
        self.ready = ready
        self.name = name
        self.port = port or free_port()
        self.env = {**(os.environ if env is None else env), **(extra_env or {})}
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="server-logs-"))
        self.log_path = self.log_dir / f"{name}-{self.port}.log"
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._process

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> ServerProcess:
        """Start and wait until ready; raises ``RuntimeError`` with the log's tail if it exits or times out."""
        env = {**self.env, "PYTHONUNBUFFERED": self.env.get("PYTHONUNBUFFERED", "1")}
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                list(self.command(self.port)),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._process.returncode}:\n{self.log()}")
            if self.ready(self.port):
                self.startup_s = time.monotonic() - started
                return self
            time.sleep(0.2)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"{self.name} not ready within {timeout_s:.0f} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 12) -> str:
        return " | ".join(self.log().strip().splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process group, wait up to ``timeout`` s, then SIGKILL it; returns the exit code."""
        if self._process is None:
            return None
        group = self._process.pid  # start_new_session: the group id is the pid of the process started
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                self._process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # stragglers (worker processes)
            os.killpg(group, signal.SIGKILL)
        return self._process.returncode

    def __enter__(self) -> ServerProcess:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
