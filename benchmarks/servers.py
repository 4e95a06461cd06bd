"""Start, watch and stop the servers under test, each as its own process (group) on a loopback port.

``ServerProcess`` is a context manager: it starts the command in a new process group, waits (bounded) until
the server answers, and on exit sends SIGTERM to that group, then SIGKILL after a grace period, so nothing it
started outlives the benchmark. ``ResourceSampler`` reads ``/proc`` for the process tree's CPU time and
resident memory (Linux; elsewhere it reports nothing rather than guessing).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .peers import LAUNCHERS_DIR, PEERS, REPO_ROOT, peer_env

READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read().decode())


@dataclass
class SystemSpec:
    """A system under test: how to start it and how to talk to it."""

    system: str  # key in results: ours, ours_naive, whisperlive, whisperlivekit
    label: str
    protocol: str  # benchmarks.protocols adapter
    command: Callable[[int], list[str]]  # port -> argv
    ready: Callable[[int], bool]
    env: dict[str, str] = field(default_factory=dict)
    status_path: str | None = None  # JSON scheduler stats (ours)
    peer: str | None = None  # venv name in benchmarks.peers
    notes: list[str] = field(default_factory=list)


def _http_ok(path: str) -> Callable[[int], bool]:
    def check(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:  # noqa: S310
                return r.status == 200
        except OSError:
            return False

    return check


def _wlk_ready(port: int) -> bool:
    try:
        return bool(http_get_json(f"http://127.0.0.1:{port}/health", 2).get("ready"))
    except (OSError, ValueError):
        return False


def _tcp_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def system_specs(
    model_path: str,
    device: str,
    endpointing_ms: int,
    extra_ours: list[str] | None = None,
    warmup_wav: str | None = None,
) -> dict[str, SystemSpec]:
    """Every system the benchmark knows, all serving ``model_path``."""
    ours_base = [
        sys.executable,
        "-m",
        "stream_server",
        "serve",
        "--host",
        "127.0.0.1",
        "--model",
        model_path,
        "--device",
        device,
        "--endpointing-ms",
        str(endpointing_ms),
        "--log-level",
        "warning",
        "--max-sessions",
        "512",
        *(extra_ours or []),
    ]
    wl_python = str(PEERS["whisperlive"].python)

    def whisperlive(port: int) -> list[str]:
        return [wl_python, str(LAUNCHERS_DIR / "whisperlive_server.py"), "--port", str(port), "--model-dir", model_path]

    wlk_server = str(PEERS["whisperlivekit"].venv_dir / "bin" / "whisperlivekit-server")
    wlk_device_env = {} if device == "cuda" else {"CUDA_VISIBLE_DEVICES": ""}
    return {
        "ours": SystemSpec(
            "ours",
            "stream-server (batched, trimmed windows)",
            "native",
            lambda port: [*ours_base, "--port", str(port)],
            _http_ok("/readyz"),
            status_path="/v1/status",
        ),
        "ours_naive": SystemSpec(
            "ours_naive",
            "stream-server naive (batch 1, 30 s windows)",
            "native",
            lambda port: [*ours_base, "--port", str(port), "--max-batch-size", "1", "--full-window"],
            _http_ok("/readyz"),
            status_path="/v1/status",
        ),
        "whisperlive": SystemSpec(
            "whisperlive",
            "WhisperLive 0.10 (faster-whisper backend)",
            "whisperlive",
            whisperlive,
            _tcp_listening,
            env=wlk_device_env,
            peer="whisperlive",
            notes=[
                "WhisperLive picks CUDA by itself when torch sees a GPU; int8 on CPU (its choice)",
                "single shared model (WhisperLive's mode for a custom model path), VAD on (client default)",
            ],
        ),
        "whisperlive_batch": SystemSpec(
            "whisperlive_batch",
            "WhisperLive 0.10 with its cross-client batching (--batch)",
            "whisperlive",
            lambda port: [*whisperlive(port), "--batch"],
            _tcp_listening,
            env=wlk_device_env,
            peer="whisperlive",
            notes=[
                "WhisperLive's BatchInferenceWorker (batch_max_size 16, 50 ms window, greedy, its defaults); "
                "meant for GPUs, measured here because batching is what ours does"
            ],
        ),
        "whisperlivekit": SystemSpec(
            "whisperlivekit",
            "WhisperLiveKit 0.2 (LocalAgreement, faster-whisper backend)",
            "whisperlivekit",
            lambda port: [
                wlk_server,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend",
                "faster-whisper",
                "--backend-policy",
                "localagreement",
                "--model_dir",
                model_path,
                "--pcm-input",
                "--language",
                "en",
                "--log-level",
                "WARNING",
                *(["--warmup-file", warmup_wav] if warmup_wav else []),
            ],
            _wlk_ready,
            env=wlk_device_env,
            peer="whisperlivekit",
            notes=[
                "SimulStreaming (its default policy) needs PyTorch Whisper weights, not a CTranslate2 "
                "directory, so LocalAgreement with the faster-whisper backend is the policy that can serve "
                "the same model; compute type 'auto' (its choice)"
            ],
        ),
    }


class ServerProcess(contextlib.AbstractContextManager):
    def __init__(self, spec: SystemSpec, port: int | None = None, log_dir: Path | None = None) -> None:
        self.spec = spec
        self.port = port or free_port()
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
        self.log_path = self.log_dir / f"{spec.system}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        env = dict(os.environ) if self.spec.peer is None else peer_env()
        env.update(self.spec.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.spec.command(self.port),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=env,
                start_new_session=True,
            )
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.system} exited with {self.proc.returncode} during start-up: " + self.log_tail()
                )
            if self.spec.ready(self.port):
                self.startup_s = time.monotonic() - started
                return
            time.sleep(0.3)
        raise RuntimeError(f"{self.spec.system} not ready within {timeout_s:.0f} s: " + self.log_tail())

    def status(self) -> dict[str, Any] | None:
        if not self.spec.status_path:
            return None
        try:
            return http_get_json(f"http://127.0.0.1:{self.port}{self.spec.status_path}")
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the pid of the process we started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError):  # stragglers of the group (worker processes)
            os.killpg(pgid, signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- resources from /proc --------------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _proc_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _cpu_and_rss(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read()
    after = fields[fields.rindex(")") + 2 :].split()
    cpu = (int(after[11]) + int(after[12])) / _CLK_TCK  # utime + stime
    with open(f"/proc/{pid}/statm") as fh:
        rss = int(fh.read().split()[1]) * _PAGE
    return cpu, rss


def tree_usage(root: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) summed over ``root`` and its descendants now alive."""
    cpu, rss = 0.0, 0
    for pid in _proc_tree(root):
        try:
            c, r = _cpu_and_rss(pid)
        except (OSError, ValueError, IndexError):
            continue
        cpu += c
        rss += r
    return cpu, rss


class ResourceSampler(contextlib.AbstractContextManager):
    """Samples a process tree every ``interval_s`` while active: CPU seconds used and peak RSS."""

    def __init__(self, pid: int | None, interval_s: float = 0.25) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.available = pid is not None and os.path.exists(f"/proc/{pid}/stat")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self.cpu_start = self.cpu_end = 0.0
        self.peak_rss = 0
        self.wall_start = self.wall_end = 0.0

    def _sample(self) -> float:
        cpu, rss = tree_usage(self.pid)  # type: ignore[arg-type]
        self.peak_rss = max(self.peak_rss, rss)
        return cpu

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.cpu_end = self._sample()

    def __enter__(self) -> ResourceSampler:
        self.wall_start = time.monotonic()
        if self.available:
            self.cpu_start = self.cpu_end = self._sample()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_end = time.monotonic()
        if self.available:
            self._stop.set()
            self._thread.join(5)
            with contextlib.suppress(OSError, ValueError):
                self.cpu_end = self._sample()

    def report(self) -> dict[str, Any]:
        if not self.available:
            return {"cpu_s": None, "cpu_cores_used": None, "peak_rss_mb": None}
        wall = max(1e-9, self.wall_end - self.wall_start)
        cpu = self.cpu_end - self.cpu_start
        return {
            "cpu_s": round(cpu, 2),
            "cpu_cores_used": round(cpu / wall, 3),
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
        }
