"""Batch API throughput: audio seconds per wall second on the long recordings of ``../shared/audio``.

Compares, in one run on one machine with the same model files and thread count:

* ``endpoint``: ``POST /v1/audio/transcriptions`` of this server, one file at a time (VAD chunks decoded as
  batches through the shared scheduler);
* ``endpoint_concurrent``: the same files all uploaded at once (cross-request batching); only with 2+ files;
* ``faster_whisper``: faster-whisper's ``WhisperModel.transcribe`` (sequential 30 s windows, beam 5,
  previous-text conditioning: the accuracy reference);
* ``faster_whisper_batched``: faster-whisper's ``BatchedInferencePipeline.transcribe`` (Silero VAD chunks,
  batched, no previous-text conditioning).

Every system reads the same audio files (decoding is part of its time) and is warmed up first; model loading
is not timed. WER is the corpus WER after Whisper's English normalizer against the manifest's text.

    python -m benchmarks.batch_api            # every long file; writes benchmarks/results/batch_api.json
    python -m benchmarks.batch_api --quick    # only the LibriSpeech chapter (about 4 minutes of audio)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.audio import default_audio_dir, load_manifest
from benchmarks.launch import ServerProcess, http_ok, ours_command
from benchmarks.metrics import corpus_wer, ratio, rounded

REPO = Path(__file__).resolve().parent.parent
QUICK_FILE = "long_librispeech_test-clean_61-70970_chapter.wav"


@dataclass
class FileRun:
    audio: str
    duration_s: float
    wall_s: float
    wer: float | None
    text: str = field(repr=False)


@dataclass
class SystemRun:
    name: str
    wall_s: float  # the whole set, as the system ran it (sequentially, or all at once)
    audio_s: float
    files: list[FileRun]
    corpus_wer: float | None = None
    note: str = ""

    @property
    def audio_s_per_wall_s(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s else 0.0


# --- the server under test ---------------------------------------------------------------------------------


def local_server(cpu_threads: int, log_dir: Path, extra_args: list[str]) -> ServerProcess:
    """``stream-server serve`` in a subprocess with the embedded model, for the duration of the run."""
    command = ours_command("--cpu-threads", str(cpu_threads), "--log-level", "warning", *extra_args)
    return ServerProcess(command, http_ok("/readyz"), name="batch_api_server", log_dir=log_dir).start(120)


def _post_transcription(url: str, path: Path) -> str:
    import httpx

    with path.open("rb") as f:
        response = httpx.post(
            f"{url}/v1/audio/transcriptions", files={"file": (path.name, f)}, data={"model": "whisper-1"}, timeout=3600
        )
    response.raise_for_status()
    return str(response.json()["text"])


# --- running and scoring -----------------------------------------------------------------------------------


def _score(
    name: str,
    entries: list[dict[str, Any]],
    texts: list[str],
    walls: list[float],
    total_wall_s: float,
    audio_dir: Path,
    note: str = "",
) -> SystemRun:
    files = [
        FileRun(e["audio"], float(e["duration_s"]), round(w, 3), corpus_wer([(e["text"], t)]), t)
        for e, t, w in zip(entries, texts, walls, strict=True)
    ]
    return SystemRun(
        name=name,
        wall_s=round(total_wall_s, 3),
        audio_s=round(sum(f.duration_s for f in files), 3),
        files=files,
        corpus_wer=corpus_wer([(e["text"], t) for e, t in zip(entries, texts, strict=True)]),
        note=note,
    )


def run_interleaved(
    systems: dict[str, Callable[[Path], str]],
    entries: list[dict[str, Any]],
    audio_dir: Path,
    notes: dict[str, str],
    repeats: int = 1,
) -> list[SystemRun]:
    """Each file through every system in turn, one at a time: on a shared machine, load that comes and goes
    then falls on all systems alike instead of on whichever happened to run at that moment. With ``repeats``,
    the fastest of the repeats counts (interference only ever slows a run down)."""
    texts: dict[str, list[str]] = {name: [] for name in systems}
    walls: dict[str, list[float]] = {name: [] for name in systems}
    for entry in entries:
        for name, transcribe in systems.items():
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                text = transcribe(audio_dir / entry["audio"])
                best = min(best, time.perf_counter() - started)
            texts[name].append(text)
            walls[name].append(best)
            print(f"  {name:24s} {entry['audio']:55s} {best:7.1f} s", flush=True)
    return [
        _score(name, entries, texts[name], walls[name], sum(walls[name]), audio_dir, notes.get(name, ""))
        for name in systems
    ]


def run_concurrent(url: str, entries: list[dict[str, Any]], audio_dir: Path) -> SystemRun:
    def one(entry: dict[str, Any]) -> tuple[str, float]:
        started = time.perf_counter()
        text = _post_transcription(url, audio_dir / entry["audio"])
        return text, time.perf_counter() - started

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(entries)) as pool:
        results = list(pool.map(one, entries))
    total = time.perf_counter() - started
    print(f"  {'endpoint_concurrent':24s} {len(entries)} files at once{'':35s} {total:7.1f} s", flush=True)
    return _score(
        "endpoint_concurrent",
        entries,
        [t for t, _ in results],
        [w for _, w in results],
        total,
        audio_dir,
        note="all files uploaded at once; per-file wall is each request's latency",
    )


def faster_whisper_systems(cpu_threads: int, batch_size: int) -> dict[str, Callable[[Path], str]]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from stream_server.config import embedded_model_path

    path = embedded_model_path()
    # Separate model objects: transcribe(chunk_length=...) changes a model's feature extractor for later calls.
    sequential = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=cpu_threads)
    batched = BatchedInferencePipeline(WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=cpu_threads))

    def fw(p: Path) -> str:
        segments, _ = sequential.transcribe(str(p), beam_size=5)
        return " ".join(s.text.strip() for s in segments)

    def fw_batched(p: Path) -> str:
        segments, _ = batched.transcribe(str(p), beam_size=5, batch_size=batch_size)
        return " ".join(s.text.strip() for s in segments)

    return {"faster_whisper": fw, "faster_whisper_batched": fw_batched}


def _warm_up(transcribe: Callable[[Path], str], audio_dir: Path, manifest: list[dict[str, Any]]) -> None:
    short = next((e for e in manifest if e.get("kind") == "short" and e.get("language") == "en"), None)
    if short is not None:
        transcribe(audio_dir / short["audio"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the LibriSpeech chapter")
    parser.add_argument("--audio-dir", type=Path, default=None, help="default: ../shared/audio")
    parser.add_argument("--url", default=None, help="a running server to test instead of starting one")
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="CTranslate2 threads, for the server and faster-whisper alike",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="BatchedInferencePipeline batch size")
    parser.add_argument("--out", type=Path, default=None, help="JSON result path")
    parser.add_argument("--repeats", type=int, default=1, help="runs per file and system; the fastest counts")
    parser.add_argument(
        "--beam-size",
        dest="final_beam_size",
        type=int,
        default=None,
        help="the server's --upload-beam-size (default: its own default)",
    )
    args = parser.parse_args(argv)

    audio_dir = args.audio_dir or default_audio_dir()
    if not (audio_dir / "manifest.jsonl").is_file():
        sys.exit(f"no manifest in {audio_dir}: this benchmark needs the shared recordings")
    manifest = load_manifest(audio_dir)
    entries = [e for e in manifest if e.get("kind") == "long_derived"]
    if args.quick:
        entries = [e for e in entries if e["audio"] == QUICK_FILE]
    out = args.out or REPO / "benchmarks" / "results" / ("batch_api_quick.json" if args.quick else "batch_api.json")
    print(
        f"{len(entries)} file(s), {sum(e['duration_s'] for e in entries):.0f} s of audio, "
        f"{args.cpu_threads} CPU thread(s)",
        flush=True,
    )

    server_args = [] if args.final_beam_size is None else ["--upload-beam-size", str(args.final_beam_size)]
    server = None if args.url else local_server(args.cpu_threads, Path(tempfile.gettempdir()), server_args)
    url = args.url or server.base_url  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that ``finally`` stops the server
    failures: dict[str, str] = {}
    try:
        systems: dict[str, Callable[[Path], str]] = {
            "endpoint": functools.partial(_post_transcription, url),
            **faster_whisper_systems(args.cpu_threads, args.batch_size),
        }
        for transcribe in systems.values():
            _warm_up(transcribe, audio_dir, manifest)
        notes = {
            "endpoint": f"one upload at a time; server beam {args.final_beam_size or 'default'}",
            "faster_whisper": "WhisperModel.transcribe, beam 5",
            "faster_whisper_batched": f"BatchedInferencePipeline, beam 5, batch {args.batch_size}",
        }
        runs = run_interleaved(systems, entries, audio_dir, notes, args.repeats)
        if len(entries) > 1:
            try:
                runs.append(run_concurrent(url, entries, audio_dir))
            except Exception as exc:  # recorded, not fatal: the sequential comparison still stands
                failures["endpoint_concurrent"] = str(exc)
                print(f"  endpoint_concurrent failed: {exc}", flush=True)
    finally:
        if server is not None:
            server.stop()

    by_name = {r.name: r for r in runs}
    ours = by_name["endpoint"].audio_s_per_wall_s
    ratios = {
        f"endpoint_vs_{other}": rounded(ratio(ours, by_name[other].audio_s_per_wall_s), 2)
        for other in ("faster_whisper", "faster_whisper_batched")
    }
    if "endpoint_concurrent" in by_name:
        conc = by_name["endpoint_concurrent"].audio_s_per_wall_s
        ratios["endpoint_concurrent_vs_faster_whisper_batched"] = rounded(
            ratio(conc, by_name["faster_whisper_batched"].audio_s_per_wall_s), 2
        )
    result = {
        "benchmark": "batch_api",
        "quick": args.quick,
        "repeats": args.repeats,
        "server_args": server_args if server is not None else f"external server {args.url}",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "cpu_threads": args.cpu_threads,
            "python": platform.python_version(),
        },
        "model": "tiny.en (embedded, CTranslate2 int8)",
        "versions": _versions(),
        "files": [e["audio"] for e in entries],
        "systems": {
            r.name: {
                **{k: v for k, v in asdict(r).items() if k != "files"},
                "audio_s_per_wall_s": round(r.audio_s_per_wall_s, 2),
                "files": [{k: v for k, v in asdict(f).items() if k != "text"} for f in r.files],
            }
            for r in runs
        },
        "ratios": ratios,
        "failures": failures,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(runs, ratios)
    print(f"written to {out}")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("faster-whisper", "ctranslate2", "stream-server"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    return found


def print_table(runs: list[SystemRun], ratios: dict[str, float | None]) -> None:
    print()
    print(f"| {'system':24s} | audio s / wall s | wall s | WER % |")
    print(f"|{'-' * 26}|-----------------:|-------:|------:|")
    for r in runs:
        wer = f"{100 * r.corpus_wer:.2f}" if r.corpus_wer is not None else "-"
        print(f"| {r.name:24s} | {r.audio_s_per_wall_s:16.1f} | {r.wall_s:6.1f} | {wer:>5s} |")
    print()
    for key, value in ratios.items():
        print(f"{key}: {value}x")


if __name__ == "__main__":
    main()
