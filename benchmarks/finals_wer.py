"""WER of stream finals on an idle server, without a network: deterministic, for changes to what a final hears.

Each client's audio goes through the server's own ``StreamingSession`` (the real VAD) in 200 ms pieces, and
every final it asks for (speculative ones included) is decoded at once by the real model, one at a time: the
idle server's path, where each final keeps its context and beam 5. Partials are not asked for; they never
change a final. Nothing depends on timing, so one run per variant is enough and two commits compare exactly
(run it at each). The load-dependent tiers of finals are the stream benchmark's business (``benchmarks.run``).

    python -m benchmarks.finals_wer                       # turns (12 clients x 60 s) and long (24 x 20 s)
    python -m benchmarks.finals_wer --noise-dbfs -50      # with white noise under everything (pauses too)
    python -m benchmarks.finals_wer --offline             # and faster-whisper offline on the same audio
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from stream_server.config import Settings
from stream_server.decode.loader import load_backend
from stream_server.decode.whisper_ct2 import WhisperBackend
from stream_server.session.events import DecodeRequested, Final, SessionEvent
from stream_server.session.machine import StreamingSession

from .accuracy import excerpt_key, offline_reference
from .audio import Excerpt, default_audio_dir, load_long_recordings
from .metrics import corpus_wer, rounded
from .workloads import LongRecordings, Turns, load_turn_utterances

PIECE_BYTES = 6400  # 200 ms of 16 kHz PCM16


def with_noise(samples: np.ndarray, noise_dbfs: float | None, seed: int) -> np.ndarray:
    """int16 audio with seeded white noise at ``noise_dbfs`` RMS added (None: unchanged)."""
    if noise_dbfs is None:
        return samples
    noise = np.random.default_rng(seed).standard_normal(len(samples)) * (10 ** (noise_dbfs / 20) * 32768)
    return np.clip(samples.astype(np.float64) + noise, -32768, 32767).astype(np.int16)


def stream_finals(backend: WhisperBackend, settings: Settings, samples: np.ndarray) -> list[str]:
    """The finals' texts of one client streaming ``samples`` (int16) and then closing."""
    params = dataclasses.replace(settings.stream_params(), interim_results=False)
    session = StreamingSession("finals-wer", params, settings.session_policy())
    texts: list[str] = []

    def perform(events: list[SessionEvent]) -> None:
        for event in events:
            if isinstance(event, DecodeRequested):
                (result,) = backend.decode_batch([event.job])
                perform(session.receive_decode_result(event, result))
            elif isinstance(event, Final):
                texts.append(event.text.strip())

    pcm = samples.astype("<i2").tobytes()
    for offset in range(0, len(pcm), PIECE_BYTES):
        perform(session.receive_audio(pcm[offset : offset + PIECE_BYTES]))
    perform(session.close())
    return texts


def measure(
    backend: WhisperBackend, settings: Settings, excerpts: list[Excerpt], noise_dbfs: float | None
) -> tuple[dict[str, Any], list[Excerpt]]:
    started = time.perf_counter()
    heard = [
        dataclasses.replace(ex, samples=with_noise(ex.samples, noise_dbfs, seed=k)) for k, ex in enumerate(excerpts)
    ]
    finals = [stream_finals(backend, settings, ex.samples) for ex in heard]
    pairs = [(ex.reference, " ".join(texts)) for ex, texts in zip(heard, finals)]
    result = {
        "wer": rounded(corpus_wer(pairs)),
        "clients": len(excerpts),
        "finals": sum(len(texts) for texts in finals),
        "audio_s": round(sum(ex.duration_s for ex in excerpts), 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "transcripts": [pair[1] for pair in pairs],
    }
    return result, heard


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio-dir", type=Path, default=None, help="default: ../shared/audio")
    parser.add_argument("--turns-clients", type=int, default=12, help="conversations of 60 s (0: none)")
    parser.add_argument("--long-clients", type=int, default=24, help="excerpts of 20 s of the long recordings")
    parser.add_argument("--noise-dbfs", type=float, default=None, help="white noise under everything, e.g. -50")
    parser.add_argument("--offline", action="store_true", help="also faster-whisper offline (beam 5) per excerpt")
    parser.add_argument("--out", type=Path, default=None, help="JSON result path")
    args = parser.parse_args(argv)

    audio_dir = args.audio_dir or default_audio_dir()
    if not (audio_dir / "manifest.jsonl").is_file():
        sys.exit(f"no manifest in {audio_dir}: this benchmark needs the shared recordings")
    settings = Settings()
    config = dataclasses.replace(settings.backend_config(), workers=1)
    backend = load_backend(config)
    workloads: dict[str, list[Excerpt]] = {}
    if args.turns_clients:
        workloads["turns"] = Turns(load_turn_utterances(audio_dir)).excerpts(args.turns_clients)
    if args.long_clients:
        workloads["long"] = LongRecordings(load_long_recordings(audio_dir), 20.0).excerpts(args.long_clients)

    report: dict[str, Any] = {"model": config.model_id, "noise_dbfs": args.noise_dbfs, "workloads": {}}
    for name, excerpts in workloads.items():
        result, heard = measure(backend, settings, excerpts, args.noise_dbfs)
        if args.offline:
            keyed = {excerpt_key(ex.source, ex.offset_s): ex for ex in heard}
            offline = offline_reference(config.model_path, backend.device, keyed)
            result["offline_wer"] = rounded(corpus_wer((ex.reference, offline[key]) for key, ex in keyed.items()))
        report["workloads"][name] = result
        offline_note = f", faster-whisper offline {result['offline_wer']:.2%}" if args.offline else ""
        print(
            f"{name}: WER {result['wer']:.2%} over {result['clients']} clients, {result['finals']} finals, "
            f"{result['audio_s']:.0f} s of audio{offline_note} ({result['wall_s']:.0f} s)",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
