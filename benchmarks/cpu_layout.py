"""Many cores on CPU: one CTranslate2 model with many intra-op threads, or several model replicas
(``--model-workers``, CTranslate2's ``inter_threads``) with few threads each.

Each layout (``workers`` replicas of ``threads`` threads, ``workers * threads`` = the cores given to the model)
loads the real ``WhisperBackend`` and decodes the LibriSpeech utterances of ``../shared/audio`` (the group
``decode_core`` uses) two ways:

* **alone**: one final at a time, with the final beam (5) and nothing else running, as a lone speaker meets
  the server: milliseconds per utterance, p50 and p95. Intra-op threads are all that can speed this up.
* **saturated**: as many callers as replicas, each taking batches of ``batch`` utterances from one shared queue
  and decoding them greedily, as the server does at capacity: audio seconds decoded per wall second (the
  throughput that sets capacity) and milliseconds per batch, p50 and p95.

Both sides run in the same process, one after the other, on the same utterances.

    python -m benchmarks.cpu_layout [--cores 16] [--layouts 1x16,2x8,4x4,8x2,16x1] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import metrics
from .audio import load_short_utterances
from .decode_core import GROUP

ALONE_BEAM = 5  # Settings.final_beam_size: a final that did not wait for the model
SATURATED_BEAM = 1  # greedy, as partials and the finals that waited are


@dataclass
class LayoutRow:
    workers: int
    threads: int
    load_s: float
    alone_n: int
    alone_p50_ms: float
    alone_p95_ms: float
    saturated_batches: int
    saturated_p50_ms: float
    saturated_p95_ms: float
    saturated_audio_s_per_s: float
    saturated_wall_s: float


def parse_layouts(text: str, cores: int) -> list[tuple[int, int]]:
    """ "1x16,4x4" -> [(1, 16), (4, 4)]; "auto": every split of ``cores`` into workers x threads, powers of two."""
    if text == "auto":
        out, workers = [], 1
        while workers <= cores:
            out.append((workers, max(1, cores // workers)))
            workers *= 2
        return out
    layouts = []
    for item in text.split(","):
        workers, threads = item.lower().split("x")
        layouts.append((int(workers), int(threads)))
    return layouts


def _percentile_ms(samples: list[float], q: float) -> float:
    return round(1000 * (metrics.percentile(samples, q) or 0.0), 1)


def measure_layout(
    model_path: str,
    workers: int,
    threads: int,
    audio: list[np.ndarray],
    batch: int,
    rounds: int,
    alone_n: int,
) -> LayoutRow:
    from stream_server.config import Settings
    from stream_server.decode.repair import decode_repaired
    from stream_server.decode.types import DecodeJob, DecodeOptions, JobKind
    from stream_server.decode.whisper_ct2 import WhisperBackend

    settings = Settings()  # type: ignore[call-arg]
    started = time.monotonic()
    backend = WhisperBackend(
        model_path,
        "bench",
        device="cpu",
        compute_type=settings.resolved_compute_type("cpu"),
        cpu_threads=threads,
        window=settings.window_policy(),
        workers=workers,
    )
    load_s = time.monotonic() - started

    def job(i: int, beam: int) -> Any:
        options = DecodeOptions(task="transcribe", language="en", beam_size=beam, temperatures=(0.0,))
        return DecodeJob(owner="bench", kind=JobKind.FINAL, audio=audio[i % len(audio)], options=options)

    # Warm every replica: callers from as many threads as there are replicas.
    warm = [threading.Thread(target=decode_repaired, args=(backend, [job(i, 1)])) for i in range(workers)]
    for t in warm:
        t.start()
    for t in warm:
        t.join()

    decode_repaired(backend, [job(0, ALONE_BEAM)])  # and the beam search
    alone = []
    for i in range(alone_n):
        t0 = time.perf_counter()
        decode_repaired(backend, [job(i, ALONE_BEAM)])
        alone.append(time.perf_counter() - t0)

    batches: queue.Queue[list[int]] = queue.Queue()
    total = len(audio) * rounds
    for first in range(0, total, batch):
        batches.put(list(range(first, min(first + batch, total))))
    batch_s: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        while True:
            try:
                indices = batches.get_nowait()
            except queue.Empty:
                return
            t0 = time.perf_counter()
            decode_repaired(backend, [job(i, SATURATED_BEAM) for i in indices])
            with lock:
                batch_s.append(time.perf_counter() - t0)

    callers = [threading.Thread(target=caller) for _ in range(workers)]
    t0 = time.perf_counter()
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    wall = time.perf_counter() - t0
    audio_s = sum(len(audio[i % len(audio)]) for i in range(total)) / 16000
    return LayoutRow(
        workers=workers,
        threads=threads,
        load_s=round(load_s, 2),
        alone_n=len(alone),
        alone_p50_ms=_percentile_ms(alone, 50),
        alone_p95_ms=_percentile_ms(alone, 95),
        saturated_batches=len(batch_s),
        saturated_p50_ms=_percentile_ms(batch_s, 50),
        saturated_p95_ms=_percentile_ms(batch_s, 95),
        saturated_audio_s_per_s=round(audio_s / wall, 1),
        saturated_wall_s=round(wall, 2),
    )


def run_layouts(
    model_path: str,
    layouts: list[tuple[int, int]],
    batch: int = 8,
    rounds: int = 2,
    alone_n: int = 20,
    utterance_limit: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    utterances = load_short_utterances(GROUP)[:utterance_limit]
    audio = [u[1].astype(np.float32) / 32768.0 for u in utterances]
    rows = []
    for workers, threads in layouts:
        row = measure_layout(model_path, workers, threads, audio, batch, rounds, min(alone_n, len(audio)))
        rows.append(row)
        log(
            f"[cpu_layout] {workers:2d} x {threads:2d} threads: alone p50 {row.alone_p50_ms:7.1f} ms "
            f"p95 {row.alone_p95_ms:7.1f} ms (n={row.alone_n}); saturated {row.saturated_audio_s_per_s:7.1f} "
            f"audio s/s, batch p50 {row.saturated_p50_ms:7.1f} ms p95 {row.saturated_p95_ms:7.1f} ms "
            f"(n={row.saturated_batches})"
        )
    best_throughput = max(rows, key=lambda r: r.saturated_audio_s_per_s)
    best_alone = min(rows, key=lambda r: r.alone_p50_ms)
    one_model = next((r for r in rows if r.workers == 1), None)
    return {
        "utterance_group": GROUP,
        "utterances": len(audio),
        "audio_s": round(sum(len(a) for a in audio) / 16000, 2),
        "batch": batch,
        "rounds": rounds,
        "alone_beam": ALONE_BEAM,
        "saturated_beam": SATURATED_BEAM,
        "machine": {"processor": platform.processor(), "python": platform.python_version()},
        "rows": [asdict(r) for r in rows],
        "best_throughput": f"{best_throughput.workers}x{best_throughput.threads}",
        "best_alone": f"{best_alone.workers}x{best_alone.threads}",
        "throughput_ratio_best_vs_one_model": (
            round(best_throughput.saturated_audio_s_per_s / one_model.saturated_audio_s_per_s, 2) if one_model else None
        ),
    }


def main(argv: list[str] | None = None) -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="CTranslate2 Whisper dir ('embedded': tiny.en)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores given to the model")
    parser.add_argument("--layouts", default="auto", help="workers x threads, comma-separated, or 'auto'")
    parser.add_argument("--batch", type=int, default=8, help="utterances per batch when saturated")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the utterances when saturated")
    parser.add_argument("--alone", type=int, default=20, help="utterances decoded alone")
    parser.add_argument("--utterances", type=int, default=None, help="use only the first N utterances")
    parser.add_argument("--output", default=None, help="JSON path (default: print only)")
    args = parser.parse_args(argv)
    from stream_server.config import Settings

    model_path = Settings(model=args.model).resolved_model_path()  # type: ignore[call-arg]
    result = run_layouts(
        model_path,
        parse_layouts(args.layouts, args.cores),
        batch=args.batch,
        rounds=args.rounds,
        alone_n=args.alone,
        utterance_limit=args.utterances,
    )
    result["cores"] = args.cores
    text = json.dumps(result, indent=2)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
