"""The systems under test (how to start each and talk to it) and their resource use.

``system_specs`` describes every system; ``server_process`` turns one into a ``launch.ServerProcess`` (its own
process group on a loopback port). ``ResourceSampler`` reads ``/proc`` for the process tree's CPU time and
resident memory (Linux; elsewhere it reports nothing rather than guessing).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .launch import ServerProcess, http_ok, tcp_listening
from .peers import LAUNCHERS_DIR, PEERS, peer_env, whisper_torch_dir


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
    unavailable: str | None = None  # why it cannot run on this machine (reported, never silently skipped)


SIMUL_NO_CHECKPOINT = (
    "WhisperLiveKit's SimulStreaming decodes with PyTorch Whisper weights (it cannot decode from a CTranslate2 "
    "directory) and no PyTorch copy of the model is here: the run converts one "
    "(benchmarks/peer_launchers/ct2_to_whisper_torch.py) unless that failed (see install.whisper_torch), or "
    "set BENCH_WHISPER_TORCH to an openai-whisper checkpoint"
)


def whisper_torch_checkpoint(model_path: str) -> tuple[str | None, str | None]:
    """The PyTorch Whisper checkpoint for SimulStreaming's decoder and its alignment heads (WhisperLiveKit's
    ``--custom-alignment-heads`` form, or None for its own choice): ``BENCH_WHISPER_TORCH``, else the copy
    converted from ``model_path`` (``peers.ensure_whisper_torch``); (None, None) when neither exists."""
    configured = os.environ.get("BENCH_WHISPER_TORCH")
    if configured:
        return (configured, None) if Path(configured).exists() else (None, None)
    converted = sorted(whisper_torch_dir(model_path).glob("*.pt")) if model_path else []
    if not converted:
        return None, None
    heads = converted[0].with_name(converted[0].name + ".alignment_heads")
    return str(converted[0]), heads.read_text().strip() if heads.exists() else None


def _wlk_ready(port: int) -> bool:
    try:
        return bool(http_get_json(f"http://127.0.0.1:{port}/health", 2).get("ready"))
    except (OSError, ValueError):
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
        launcher = str(LAUNCHERS_DIR / "whisperlive_server.py")
        flags = ["--model-dir", model_path, "--max-clients", "512", "--omp-num-threads", "1"]
        return [wl_python, launcher, "--port", str(port), *flags]

    wlk_server = str(PEERS["whisperlivekit"].venv_dir / "bin" / "whisperlivekit-server")
    wlk_device_env = {} if device == "cuda" else {"CUDA_VISIBLE_DEVICES": ""}

    def wlk(port: int, *policy: str) -> list[str]:
        return [
            wlk_server,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *policy,
            "--pcm-input",
            "--language",
            "en",
            "--min-chunk-size",
            "0.1",
            "--log-level",
            "WARNING",
            *(["--warmup-file", warmup_wav] if warmup_wav else []),
        ]

    decoder, alignment_heads = whisper_torch_checkpoint(model_path)
    simul_policy = [
        "--backend-policy",
        "simulstreaming",
        "--backend",
        "faster-whisper",
        "--encoder-model-path",
        model_path,
        "--decoder-model-path",
        decoder or "",
        "--frame-threshold",
        "25",
        "--beams",
        "1",
        *(["--custom-alignment-heads", alignment_heads] if alignment_heads else []),
    ]
    la_policy = [
        "--backend-policy",
        "localagreement",
        "--backend",
        "faster-whisper",
        "--model_dir",
        model_path,
        "--confidence-validation",
    ]
    return {
        "ours": SystemSpec(
            "ours",
            "stream-server (batched, trimmed windows)",
            "native",
            lambda port: [*ours_base, "--port", str(port)],
            http_ok("/readyz"),
            status_path="/v1/status",
        ),
        "ours_naive": SystemSpec(
            "ours_naive",
            "stream-server naive (batch 1, 30 s windows, one model call at a time)",
            "native",
            lambda port: [
                *ours_base,
                "--port",
                str(port),
                "--max-batch-size",
                "1",
                "--full-window",
                "--model-workers",
                "1",
            ],
            http_ok("/readyz"),
            status_path="/v1/status",
        ),
        "whisperlive": SystemSpec(
            "whisperlive",
            "WhisperLive 0.10 (faster-whisper backend)",
            "whisperlive",
            whisperlive,
            tcp_listening,
            env=wlk_device_env,
            peer="whisperlive",
            notes=[
                "WhisperLive picks CUDA by itself when torch sees a GPU; int8 on CPU (its choice)",
                "single shared model (WhisperLive's mode for a custom model path); OMP_NUM_THREADS=1 "
                "(its run_server.py default); client options: use_vad true, no_speech_thresh 0.45, "
                "send_last_n_segments 10, same_output_threshold 10, clip_audio false (its defaults)",
            ],
        ),
        "whisperlive_batch": SystemSpec(
            "whisperlive_batch",
            "WhisperLive 0.10 with its cross-client batching (--batch)",
            "whisperlive",
            lambda port: [
                *whisperlive(port),
                "--batch",
                "--batch-max-size",
                "8",
                "--batch-window-ms",
                "50",
                "--batch-max-admissions-per-s",
                "1000",
            ],
            tcp_listening,
            env=wlk_device_env,
            peer="whisperlive",
            notes=[
                "WhisperLive's BatchInferenceWorker with its README's settings (batch_max_size 8, "
                "batch_window_ms 50), greedy, each item padded to a 30 s window (its batched path); it refuses "
                "new clients (WAIT) while its queue wait exceeds 0.5 s (its default, kept: a full server says "
                "so); its admission rate limit (5 clients/s, a burst of 5) is raised to 1000/s because a level "
                "starts all its clients within 100 ms; meant for GPUs, measured because batching is what ours "
                "does",
                "same server options and client options as whisperlive otherwise",
            ],
        ),
        "whisperlivekit": SystemSpec(
            "whisperlivekit",
            "WhisperLiveKit 0.2 (SimulStreaming, its default policy)",
            "whisperlivekit",
            lambda port: wlk(port, *simul_policy),
            _wlk_ready,
            env=wlk_device_env,
            peer="whisperlivekit",
            unavailable=None if decoder else SIMUL_NO_CHECKPOINT,
            notes=[
                "SimulStreaming (AlignAtt) encodes with faster-whisper on the same CTranslate2 directory "
                "(--encoder-model-path) and decodes with PyTorch Whisper (--decoder-model-path: the same weights, "
                "converted from the CTranslate2 model unless BENCH_WHISPER_TORCH names a checkpoint; the "
                "model's alignment heads drive the policy); frame threshold 25, greedy, 0.1 s chunks (its "
                "defaults)",
            ],
        ),
        "whisperlivekit_la": SystemSpec(
            "whisperlivekit_la",
            "WhisperLiveKit 0.2 (LocalAgreement, faster-whisper backend)",
            "whisperlivekit",
            lambda port: wlk(port, *la_policy),
            _wlk_ready,
            env=wlk_device_env,
            peer="whisperlivekit",
            notes=[
                "LocalAgreement with the faster-whisper backend on the same CTranslate2 directory; "
                "--confidence-validation (its README's faster commit), 0.1 s chunks, compute type 'auto' "
                "(its choice)"
            ],
        ),
    }


def server_process(spec: SystemSpec, log_dir: Path | None = None) -> ServerProcess:
    """The (unstarted) subprocess of a system under test; peers run with their venv's environment."""
    return ServerProcess(
        spec.command,
        spec.ready,
        name=spec.system,
        env=None if spec.peer is None else peer_env(),
        extra_env=spec.env,
        log_dir=log_dir,
    )


def server_status(spec: SystemSpec, server: ServerProcess) -> dict[str, Any] | None:
    """The scheduler statistics of a system that publishes them (ours), else None."""
    if not spec.status_path:
        return None
    try:
        status = http_get_json(f"{server.base_url}{spec.status_path}")
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


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


class ResourceSampler(contextlib.AbstractContextManager["ResourceSampler"]):
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
