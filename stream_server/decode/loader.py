"""``BackendConfig`` and ``load_backend``: the model the server decodes with, from its typed configuration.

The CTranslate2 backend is imported only when a model is loaded, so that settings, tests with ``FakeBackend`` and
the CLI's ``--help`` do not pay for ctranslate2's import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .batching import WindowPolicy

if TYPE_CHECKING:
    from .whisper_ct2 import WhisperBackend

log = logging.getLogger(__name__)


def default_model_workers(device: str, cores: int) -> int:
    """Model replicas when none are set: one per core on CPU, each with one thread, as replicas need no OpenMP
    barrier between them; one on CUDA, where a replica batches the whole GPU (see docs/decisions.md#model-workers)."""
    return 1 if device == "cuda" else max(1, cores)


def default_cpu_threads(cores: int, workers: int = 1) -> int:
    """CTranslate2 threads of each model replica when none are set: one core stays for the event loop
    (websockets, VAD, features), as an OpenMP region waits for its slowest thread, and the rest is shared by the
    replicas (see docs/decisions.md#cpu-threads)."""
    return max(1, (cores - 1) // workers)


def default_compute_type(device: str) -> str:
    """The compute type of ``compute_type="default"``: int8 on CPU, float16 on CUDA."""
    return "float16" if device == "cuda" else "int8"


@dataclass(frozen=True)
class BackendConfig:
    """Built by ``Settings.backend_config()``."""

    model_path: str  # a CTranslate2 Whisper directory, or a size name faster-whisper may download
    model_id: str  # the id reported to clients
    device: Literal["cpu", "cuda", "auto"]
    compute_type: str  # "default": by device (``default_compute_type``)
    cpu_threads: int  # CTranslate2 intra-op threads of each model replica (0: ``default_cpu_threads``)
    window: WindowPolicy
    workers: int = 1  # model replicas decoding in parallel (CTranslate2 ``inter_threads``; 0: by device)
    cores: int = 1  # the cores this process may run on, for the defaults


def load_backend(config: BackendConfig) -> WhisperBackend:
    """Load the model (blocking: call it off the event loop). Seeds CTranslate2's sampling first: a worker
    thread seeds its generator once, so what a fallback samples is reproducible only from a fixed seed."""
    import ctranslate2

    from .whisper_ct2 import WhisperBackend

    ctranslate2.set_random_seed(0)
    device = config.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute_type = default_compute_type(device) if config.compute_type == "default" else config.compute_type
    workers = config.workers or default_model_workers(device, config.cores)
    threads = config.cpu_threads or default_cpu_threads(config.cores, workers)
    log.info(
        "loading model %s on %s (%s; %d worker(s) of %d thread(s))",
        config.model_path,
        device,
        compute_type,
        workers,
        threads,
    )
    return WhisperBackend(
        config.model_path,
        config.model_id,
        device=device,
        compute_type=compute_type,
        cpu_threads=threads,
        window=config.window,
        workers=workers,
    )
