"""Service times of one model call on this machine: the real ``WhisperBackend`` over a grid of batch sizes and
encoder windows, for partials (greedy) and finals (greedy, beam 5). Feeds ``service.py``.

Each item is read speech (the LibriSpeech group of ``BENCH_AUDIO_DIR`` or ``../shared/audio``, else espeak-ng's),
concatenated and cut to ``window - margin`` seconds, so the backend's window rule gives exactly the window asked
for and the decoder emits a realistic number of tokens. The machine is shared: each cell keeps the minimum and
the median of its repeats; the model uses the minimum (the least-disturbed run).

    BENCH_AUDIO_DIR=/work/shared/audio python -m benchmarks.capacity.measure [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np

from ..audio import load_short_utterances
from ..decode_core import GROUP

BATCH_SIZES = (1, 2, 4, 8, 16)
WINDOWS_S = (4, 6, 8, 10, 14, 20, 30)
KINDS = (("final", 1), ("final", 5), ("partial", 1))  # (kind, beam)
# Cells with more item-seconds than this are skipped: a call that long never happens under the server's rules
# (partials are capped at 12 s of audio per batch on CPU; finals of 30 s windows do not come sixteen at once).
MAX_ITEM_SECONDS = 80


def _speech_and_backend() -> tuple[np.ndarray, Any]:
    """The shared utterances' audio as one pool, and the embedded model as the server loads it (one thread)."""
    from stream_server.config import Settings, embedded_model_path
    from stream_server.decode.whisper_ct2 import WhisperBackend

    pool = np.concatenate([u[1].astype(np.float32) / 32768.0 for u in load_short_utterances(GROUP)])
    backend = WhisperBackend(
        embedded_model_path(),
        "bench",
        device="cpu",
        compute_type="int8",
        cpu_threads=1,
        window=Settings().window_policy(),
    )
    return pool, backend


def _speech(seconds: float, offset: int, pool: np.ndarray) -> np.ndarray:
    n = int(seconds * 16000)
    start = (offset * 37 * 16000) % max(1, len(pool) - n)
    out: np.ndarray = pool[start : start + n].copy()
    return out


def audio_source() -> str:
    from ..audio import default_audio_dir

    where = default_audio_dir()
    if (where / "manifest.jsonl").exists():
        return f"{GROUP} from {where}"
    return "espeak-ng synthesized (no manifest at BENCH_AUDIO_DIR or ../shared/audio)"


def measure(
    repeats: int,
    batch_sizes: tuple[int, ...],
    windows: tuple[int, ...],
    log: Any = print,
    partial_out: str | None = None,
) -> dict[str, Any]:
    from stream_server.decode.types import DecodeJob, DecodeOptions, JobKind

    pool, backend = _speech_and_backend()
    margin = backend.window.margin_s
    rows: list[dict[str, Any]] = []
    for kind, beam in KINDS:
        options = DecodeOptions(language="en", beam_size=beam, temperatures=(0.0,))
        job_kind = JobKind.PARTIAL if kind == "partial" else JobKind.FINAL
        for window in windows:
            backend.decode_batch([DecodeJob("bench", job_kind, _speech(window - margin, 0, pool), options)])  # warm-up
            for size in batch_sizes:
                if size * window > MAX_ITEM_SECONDS and size != batch_sizes[0]:
                    continue
                jobs = [
                    DecodeJob(
                        owner="bench",
                        kind=job_kind,
                        audio=_speech(window - margin, i + window, pool),
                        options=options,
                        stream_key=("bench", 0, i) if kind == "partial" else None,
                    )
                    for i in range(size)
                ]
                times, tokens = [], 0
                for _ in range(repeats if size * window <= 40 else 1):
                    t0 = time.perf_counter()
                    results = backend.decode_batch(jobs)
                    times.append(time.perf_counter() - t0)
                    tokens = sum(len(r.text.split()) for r in results)
                seen = {r.window_s for r in results}
                row = {
                    "kind": kind,
                    "beam": beam,
                    "batch": size,
                    "window_s": window,
                    "windows_seen": sorted(seen),
                    "min_s": round(min(times), 4),
                    "median_s": round(statistics.median(times), 4),
                    "repeats": len(times),
                    "words": tokens,
                }
                rows.append(row)
                log(f"[capacity.measure] {kind:7s} beam {beam} b{size:2d} w{window:2d}: {row['min_s']:.3f} s")
                if partial_out:
                    with open(partial_out, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
    return {
        "kind": "capacity_service",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": "tiny.en (embedded, CTranslate2 int8)",
        "device": "cpu",
        "cpu_threads": 1,
        "speech": audio_source(),
        "loadavg_1m": os.getloadavg()[0],
        "max_item_seconds": MAX_ITEM_SECONDS,
        "statistic": "min of repeats (shared machine: the least-disturbed run); median kept for reference",
        "window_margin_s": margin,
        "rows": rows,
    }


def paired_beam_ratio(
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8), windows: tuple[int, ...] = (6, 14), repeats: int = 3
) -> dict[str, Any]:
    """Beam 5 over greedy for finals, per batch size: the two searches alternate on the same audio so that the
    load of a shared machine hits both alike (the grid's cells, measured minutes apart, do not compare)."""
    from stream_server.decode.types import FALLBACK_TEMPERATURES, DecodeJob, DecodeOptions, JobKind

    pool, backend = _speech_and_backend()
    searches = {
        1: DecodeOptions(language="en", temperatures=FALLBACK_TEMPERATURES),
        5: DecodeOptions(language="en", beam_size=5, temperatures=FALLBACK_TEMPERATURES),
    }
    ratios: dict[str, list[float]] = {}
    for size in batch_sizes:
        for window in windows:
            clips = [_speech(window - backend.window.margin_s, i + 3, pool) for i in range(size)]
            best = {1: float("inf"), 5: float("inf")}
            for _ in range(repeats):
                for beam, options in searches.items():
                    jobs = [DecodeJob("bench", JobKind.FINAL, clip, options) for clip in clips]
                    t0 = time.perf_counter()
                    backend.decode_batch(jobs)
                    best[beam] = min(best[beam], time.perf_counter() - t0)
            ratios.setdefault(str(size), []).append(best[5] / best[1])
            print(f"[capacity.measure] paired b{size:2d} w{window:2d}: beam 5 / greedy {best[5] / best[1]:.2f}")
    return {str(k): round(statistics.fmean(v), 3) for k, v in ratios.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch sizes 1, 4, 16; windows 4, 10, 30; 2 repeats")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None, help="default: results/capacity_service_cpu[_quick].json")
    parser.add_argument("--paired-only", action="store_true", help="add the beam 5 / greedy ratios to --out")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = f"benchmarks/results/capacity_service_cpu{'_quick' if args.quick else ''}.json"
    if args.paired_only:
        with open(args.out) as fh:
            result = json.load(fh)
        result["beam5_over_greedy"] = paired_beam_ratio()
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
            fh.write("\n")
        return
    if args.quick:
        result = measure(2, (1, 4, 16), (4, 10, 30))
    else:
        result = measure(args.repeats, BATCH_SIZES, WINDOWS_S, partial_out=args.out + ".rows.jsonl")
    result["beam5_over_greedy"] = paired_beam_ratio()
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
