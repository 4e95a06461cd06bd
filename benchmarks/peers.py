"""Peer servers (WhisperLive, WhisperLiveKit): isolated installation and launch commands.

Each peer lives in its own virtual environment under ``.bench-venvs/`` at the repository root, so its pinned
dependencies never touch ours. ``ensure_peer_venv`` creates and fills the environment when it is missing (or
was made from another spec) and is a no-op otherwise; the time it took is returned so the run can report
installation apart from measurement.

Why the installs look the way they do:

* PyTorch comes first, with ``--no-deps`` from PyTorch's CPU index (or a local wheel that pip's find-links
  already knows): both peers import ``torch`` at start-up, and a plain ``pip install torch`` from PyPI pulls the
  CUDA build with several GB of NVIDIA libraries. ``BENCH_TORCH_SPEC`` overrides the version (default
  ``torch==2.13.0``, the CPU wheel on this development machine's disk).
* ``whisper-live`` 0.10.0 is installed with ``--no-deps`` plus what its faster-whisper server path imports: its
  metadata also asks for PyAudio (a C build against portaudio headers; only its microphone client uses it),
  OpenVINO, optimum, openai-whisper, TensorRT helpers and the CUDA cuBLAS/cuDNN wheels, none of which the
  faster-whisper backend touches. Its own pins that matter for that path are kept (``faster-whisper==1.2.0``,
  ``tokenizers==0.20.3``, ``numpy<2.5``).
* ``whisperlivekit`` installs with its declared dependencies (torch already satisfied by the CPU build).

Models: every server serves the same CTranslate2 directory (the embedded ``tiny.en``). Both peers are run with
``HF_HUB_OFFLINE=1`` so nothing is fetched at run time; WhisperLive's Silero VAD file (which it would fetch with
wget) is not needed because the faster-whisper backend uses faster-whisper's bundled Silero model.
WhisperLiveKit's SimulStreaming decodes with PyTorch Whisper, so ``ensure_whisper_torch`` writes a PyTorch copy of
the CTranslate2 model once (same weights; ``peer_launchers/ct2_to_whisper_torch.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENVS_DIR = REPO_ROOT / ".bench-venvs"
LAUNCHERS_DIR = Path(__file__).resolve().parent / "peer_launchers"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
INSTALL_TIMEOUT_S = 1800


def torch_spec() -> str:
    return os.environ.get("BENCH_TORCH_SPEC", "torch==2.13.0")


def torch_index() -> str:
    """Where PyTorch comes from. Both peers pick CUDA only when their torch sees a GPU, so a GPU run needs a
    CUDA index here (e.g. ``BENCH_TORCH_INDEX=https://download.pytorch.org/whl/cu126``) and a fresh venv."""
    return os.environ.get("BENCH_TORCH_INDEX", TORCH_CPU_INDEX)


@dataclass(frozen=True)
class PeerSpec:
    """How to install one peer and check that the install can serve."""

    name: str
    pip_packages: tuple[str, ...]  # installed with their dependencies
    no_deps_packages: tuple[str, ...] = ()  # installed last, alone
    import_check: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def fingerprint(self) -> str:
        parts: list[object] = [self.pip_packages, self.no_deps_packages, torch_spec()]
        if torch_index() != TORCH_CPU_INDEX:
            parts.append(torch_index())
        payload = json.dumps(parts).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    @property
    def venv_dir(self) -> Path:
        return VENVS_DIR / self.name

    @property
    def python(self) -> Path:
        return self.venv_dir / "bin" / "python"


WHISPERLIVE = PeerSpec(
    name="whisperlive",
    pip_packages=(
        "faster-whisper==1.2.0",
        "tokenizers==0.20.3",
        "numpy>=1.26.4,<2.5",
        "onnxruntime>=1.20.0,<2",
        "websockets",
        "fastapi",
        "uvicorn",
        "python-multipart",
        "scipy",
        "av",
        "prometheus-client",
    ),
    no_deps_packages=("whisper-live==0.10.0",),
    import_check="import whisper_live.server, whisper_live.backend.faster_whisper_backend",
    notes=("installed with --no-deps plus its faster-whisper server path's imports (see benchmarks/peers.py)",),
)

WHISPERLIVEKIT = PeerSpec(
    name="whisperlivekit",
    pip_packages=("whisperlivekit==0.2.26",),
    import_check=("import whisperlivekit.basic_server, whisperlivekit.core, whisperlivekit.local_agreement.backends"),
)

PEERS: dict[str, PeerSpec] = {p.name: p for p in (WHISPERLIVE, WHISPERLIVEKIT)}


@dataclass
class InstallOutcome:
    name: str
    ok: bool
    seconds: float
    reused: bool
    reason: str = ""
    log_path: str = ""


def _marker(spec: PeerSpec) -> Path:
    return spec.venv_dir / ".bench-installed"


def _run_logged(cmd: list[str], log: Path, timeout_s: float) -> None:
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=True, timeout=timeout_s)


def _import_ok(spec: PeerSpec, log: Path | None = None) -> tuple[bool, str]:
    if not spec.python.exists():
        return False, "venv python missing"
    proc = subprocess.run(
        [str(spec.python), "-c", spec.import_check],
        capture_output=True,
        text=True,
        timeout=300,
        env=peer_env(),
    )
    if proc.returncode == 0:
        return True, ""
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    if log is not None:
        with log.open("a") as fh:
            fh.write("import check failed:\n" + proc.stderr)
    return False, "import check failed: " + " | ".join(tail)


def ensure_peer_venv(spec: PeerSpec, *, log: Callable[[str], None] = print) -> InstallOutcome:
    """Create/fill ``spec``'s venv unless a matching one is there. Never raises for install failures."""
    started = time.monotonic()
    marker = _marker(spec)
    if marker.exists() and marker.read_text().strip() == spec.fingerprint():
        ok, reason = _import_ok(spec)
        if ok:
            return InstallOutcome(spec.name, True, time.monotonic() - started, reused=True)
        log(f"[peers] {spec.name}: existing venv unusable ({reason}); reinstalling")
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    install_log = VENVS_DIR / f"{spec.name}-install.log"
    install_log.write_text("")
    log(f"[peers] installing {spec.name} into {spec.venv_dir} (log: {install_log})")
    pip = [str(spec.python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    try:
        if not spec.python.exists():
            _run_logged([sys.executable, "-m", "venv", str(spec.venv_dir)], install_log, 300)
        # torch first, CPU build, without its CUDA dependency tree; then its (small) pure-Python deps
        _run_logged(
            pip + ["--no-deps", "--retries", "1", "--timeout", "30", "--index-url", torch_index(), torch_spec()],
            install_log,
            INSTALL_TIMEOUT_S,
        )
        _run_logged(pip + [torch_spec(), *spec.pip_packages], install_log, INSTALL_TIMEOUT_S)
        if spec.no_deps_packages:
            _run_logged(pip + ["--no-deps", *spec.no_deps_packages], install_log, INSTALL_TIMEOUT_S)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        tail = install_log.read_text().strip().splitlines()[-5:]
        return InstallOutcome(
            spec.name,
            False,
            time.monotonic() - started,
            reused=False,
            reason=f"pip install failed ({exc}): " + " | ".join(tail),
            log_path=str(install_log),
        )
    ok, reason = _import_ok(spec, install_log)
    if ok:
        marker.write_text(spec.fingerprint())
    return InstallOutcome(
        spec.name, ok, time.monotonic() - started, reused=False, reason=reason, log_path=str(install_log)
    )


def peer_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for peer processes: offline model hubs, no user site, no buffering."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONUNBUFFERED="1",
        PYTHONNOUSERSITE="1",
    )
    if extra:
        env.update(extra)
    return env


def installed_versions(spec: PeerSpec, dists: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m\n"
        f"out = {{}}\nfor d in {list(dists)!r}:\n"
        "    try: out[d] = m.version(d)\n"
        "    except Exception: out[d] = None\n"
        "print(json.dumps(out))"
    )
    try:
        proc = subprocess.run([str(spec.python), "-c", code], capture_output=True, text=True, timeout=120)
        versions: dict[str, str] = json.loads(proc.stdout)
        return versions
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}


def whisper_torch_dir(model_path: str) -> Path:
    """Where the PyTorch copy of the CTranslate2 model at ``model_path`` lives (one folder per model)."""
    digest = hashlib.sha256(str(Path(model_path).resolve()).encode()).hexdigest()[:16]
    return VENVS_DIR / "whisper-torch" / digest


def ensure_whisper_torch(model_path: str, model_id: str) -> InstallOutcome:
    """Write the PyTorch Whisper checkpoint SimulStreaming decodes with, converted from the CTranslate2 model
    (``peer_launchers/ct2_to_whisper_torch.py``, run by WhisperLiveKit's venv), unless it is there already."""
    started = time.monotonic()
    out = whisper_torch_dir(model_path) / f"{model_id}.pt"
    if out.exists():
        return InstallOutcome("whisper_torch", True, time.monotonic() - started, reused=True, log_path=str(out))
    proc = subprocess.run(
        [str(WHISPERLIVEKIT.python), str(LAUNCHERS_DIR / "ct2_to_whisper_torch.py"), model_path, str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=peer_env(),
    )
    reason = "" if proc.returncode == 0 else "conversion failed: " + " | ".join(proc.stderr.strip().splitlines()[-3:])
    return InstallOutcome(
        "whisper_torch",
        proc.returncode == 0,
        time.monotonic() - started,
        reused=False,
        reason=reason,
        log_path=str(out),
    )


if __name__ == "__main__":
    for peer in PEERS.values():
        print(ensure_peer_venv(peer))
