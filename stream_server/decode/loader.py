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
    cpu_threads: int  # CTranslate2 intra-op threads of each model replica (resolved: at least 1)
    window: WindowPolicy
    workers: int = 1  # model replicas decoding in parallel (CTranslate2 ``inter_threads``; the engine's loops)


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
    log.info("loading model %s on %s (%s)", config.model_path, device, compute_type)
    return WhisperBackend(
        config.model_path,
        config.model_id,
        device=device,
        compute_type=compute_type,
        cpu_threads=config.cpu_threads,
        window=config.window,
        workers=config.workers,
    )
