"""The Whisper core alone: throughput and accuracy per batch size and encoder window, no server, no sockets.

Runs ``stream_server.decode.whisper_ct2.WhisperBackend.decode_batch`` (the very code the server batches through)
on the LibriSpeech utterances of ``../shared/audio`` (group ``librispeech_61-70970``, 41 utterances of 2-10.5 s),
for batch sizes 1..32 and three encoder-window policies:

* ``full``: every item padded to Whisper's 30 s window (the naive way; what ``--full-window`` does);
* ``trimmed``: the server's default rule (``min_window_s`` / ``window_margin_s`` / ``window_step_s`` from
  ``Settings``): the batch's longest utterance plus a margin of silence, rounded up;
* ``tight``: no margin and a 0.5 s step, to show what cutting the window right after the speech costs in WER.

Utterances are decoded in manifest order, ``batch_size`` at a time, as a scheduler would meet them; every
configuration decodes every utterance once after one warm-up batch, with greedy search at temperature 0 and
no fallback so that timings compare like with like. WER (Whisper's English normalizer, then jiwer) is pooled
over all utterances. A reference row gives faster-whisper's own ``transcribe`` (beam 5, its defaults) on the
same utterances.

    python -m benchmarks.decode_core [--quick] [--device cuda] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import metrics
from .audio import load_short_utterances

GROUP = "librispeech_61-70970"


@dataclass
class CoreRow:
    window: str
    batch_size: int
    utterances: int
    audio_s: float
    wall_s: float
    utterances_per_s: float
    ms_per_utterance: float
    realtime_factor: float  # audio seconds decoded per wall second
    mean_window_s: float
    wer: float | None


def _window_policies(settings: Any) -> dict[str, Any]:
    from dataclasses import replace

    from stream_server.decode.batching import WindowPolicy

    trimmed = settings.window_policy()
    return {
        "full": replace(trimmed, full_window=True),
        "trimmed": trimmed,
        "tight": WindowPolicy(min_window_s=1.0, margin_s=0.0, step_s=0.5, full_window=False),
    }


def run_core_benchmark(
    model_path: str,
    device: str,
    batch_sizes: list[int],
    utterance_limit: int | None,
    beam_size: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    from stream_server.config import Settings, available_cores
    from stream_server.decode.loader import default_cpu_threads
    from stream_server.decode.repair import decode_repaired
    from stream_server.decode.types import DecodeJob, DecodeOptions, JobKind
    from stream_server.decode.whisper_ct2 import WhisperBackend

    settings = Settings(device=device)  # type: ignore[arg-type,call-arg]
    compute_type = settings.resolved_compute_type(device)
    utterances = load_short_utterances(GROUP)
    if utterance_limit:
        utterances = utterances[:utterance_limit]
    audio = [(u[1].astype(np.float32) / 32768.0) for u in utterances]
    references = [u[2] for u in utterances]
    total_audio_s = sum(len(a) for a in audio) / 16000
    started = time.monotonic()
    backend = WhisperBackend(
        model_path,
        "bench",
        device=device,
        compute_type=compute_type,
        cpu_threads=default_cpu_threads(available_cores()),  # one caller: one worker
        window=settings.window_policy(),
    )
    load_s = time.monotonic() - started
    options = DecodeOptions(task="transcribe", language="en", beam_size=beam_size, temperatures=(0.0,))

    def jobs_for(indices: range) -> list[Any]:
        return [DecodeJob(owner="bench", kind=JobKind.FINAL, audio=audio[i], options=options) for i in indices]

    rows: list[CoreRow] = []
    for window_name, policy in _window_policies(settings).items():
        backend.window = policy
        decode_repaired(backend, jobs_for(range(min(2, len(audio)))))  # warm-up
        for batch_size in batch_sizes:
            if batch_size > len(audio) and batch_size != batch_sizes[0]:
                continue
            texts: list[str] = []
            windows: list[float] = []
            t0 = time.perf_counter()
            for first in range(0, len(audio), batch_size):
                results = decode_repaired(backend, jobs_for(range(first, min(first + batch_size, len(audio)))))
                texts.extend(r.text for r in results)
                windows.extend(r.window_s for r in results)
            wall = time.perf_counter() - t0
            row = CoreRow(
                window=window_name,
                batch_size=batch_size,
                utterances=len(audio),
                audio_s=round(total_audio_s, 2),
                wall_s=round(wall, 3),
                utterances_per_s=round(len(audio) / wall, 2),
                ms_per_utterance=round(1000 * wall / len(audio), 1),
                realtime_factor=round(total_audio_s / wall, 1),
                mean_window_s=round(sum(windows) / len(windows), 2),
                wer=metrics.rounded(metrics.corpus_wer(zip(references, texts))),
            )
            rows.append(row)
            log(
                f"[decode_core] {window_name:8s} batch {batch_size:2d}: {row.utterances_per_s:7.2f} utt/s "
                f"{row.ms_per_utterance:7.1f} ms/utt  WER {metrics.pct(row.wer)}"
            )
    reference = faster_whisper_reference(backend, audio, references)
    log(
        f"[decode_core] faster-whisper transcribe (beam 5): {reference['utterances_per_s']} utt/s, "
        f"WER {metrics.pct(reference['wer'])}"
    )
    return {
        "utterance_group": GROUP,
        "utterances": len(audio),
        "audio_s": round(total_audio_s, 2),
        "model_load_s": round(load_s, 2),
        "device": device,
        "compute_type": compute_type,
        "cpu_threads": backend.cpu_threads,
        "beam_size": beam_size,
        "temperatures": [0.0],
        "window_policies": {k: asdict(v) for k, v in _window_policies(settings).items()},
        "rows": [asdict(r) for r in rows],
        "faster_whisper_transcribe": reference,
    }


def faster_whisper_reference(backend: Any, audio: list[np.ndarray], references: list[str]) -> dict[str, Any]:
    """faster-whisper's own offline ``transcribe`` on the same model object and utterances."""
    model = backend._fw  # the faster_whisper.WhisperModel the backend loaded (no second copy in memory)
    texts = []
    t0 = time.perf_counter()
    for a in audio:
        segments, _ = model.transcribe(a, language="en", beam_size=5)
        texts.append(" ".join(s.text.strip() for s in segments))
    wall = time.perf_counter() - t0
    return {
        "beam_size": 5,
        "wall_s": round(wall, 3),
        "utterances_per_s": round(len(audio) / wall, 2),
        "ms_per_utterance": round(1000 * wall / len(audio), 1),
        "wer": metrics.rounded(metrics.corpus_wer(zip(references, texts))),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 utterances, batch sizes 1, 4, 16")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="embedded", help="CTranslate2 Whisper dir ('embedded': tiny.en)")
    parser.add_argument("--beam-size", type=int, default=1)
    args = parser.parse_args(argv)
    from stream_server.config import embedded_model_path

    model = embedded_model_path() if args.model == "embedded" else args.model
    batch_sizes = [1, 4, 16] if args.quick else [1, 2, 4, 8, 16, 32]
    result = run_core_benchmark(model, args.device, batch_sizes, 16 if args.quick else None, args.beam_size)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
