"""A dialect costs no capacity: the same load through protocol v1, the Deepgram endpoint and the OpenAI Realtime
endpoint of one server, on the conversational-turns workload (the same excerpts for every protocol).

Two measurements, one server:

* **levels**: each protocol alone at the same stream counts, one after another: final latency p50/p95 with
  counts, WER and pass/fail (the capacity question).
* **paired**: every excerpt streamed through all protocols at once (2 ms apart, in an order that rotates), so
  each utterance ends at the same moment on every protocol and is decoded in the same batches. The per-utterance
  latency difference to protocol v1 is the dialect's own cost (framing, base64, event mapping), free of the
  run-to-run noise that makes two separate p50s differ by tens of milliseconds on a shared 2-core machine.

    python -m benchmarks.dialects --levels 1,8,16 --paired 16 --seconds 60   # writes results/dialects_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from . import metrics
from .audio import Excerpt, default_audio_dir
from .launch import ServerProcess, http_ok, ours_command
from .protocols import AdapterConfig
from .stream_load import ClientResult, run_client, run_level
from .workloads import Turns, load_turn_utterances

RESULTS = Path(__file__).parent / "results"
CHUNK_MS = 100
PAIR_STEP_S = 0.002
PAIR_TOLERANCE_S = 0.3  # two finals of one excerpt are the same utterance when their ends differ by less
# (system name, protocol, options): Deepgram's answers always carry word timings, so protocol v1 with word
# timestamps is measured too, as the like-for-like reference for it
PROTOCOLS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("native", "native", {}),
    ("native+words", "native", {"word_timestamps": True}),
    ("deepgram", "deepgram", {}),
    ("openai_realtime", "openai_realtime", {}),
)


def reference_of(system: str, measured: Collection[str] = ("native+words",)) -> str:
    """What ``system`` is compared with: protocol v1 doing the same work (with word timestamps for Deepgram, when
    that was measured: not when the server estimates Deepgram's word times, ``--deepgram-word-times estimated``)."""
    return "native+words" if system == "deepgram" and "native+words" in measured else "native"


def adapter_config(options: dict[str, Any], protocol: str) -> AdapterConfig:
    return AdapterConfig(protocol, {"endpointing_ms": 500, **options})


def paired_differences(reference: ClientResult, other: ClientResult) -> list[float]:
    """Latency of each of ``other``'s finals minus that of the same utterance's final in ``reference`` (seconds);
    utterances are matched by their end in stream time, each reference final used once."""
    unused = sorted(zip(reference.final_points, range(len(reference.final_points))))
    out: list[float] = []
    for end_s, latency_s in other.final_points:
        match = min(unused, key=lambda p: abs(p[0][0] - end_s), default=None)
        if match is None or abs(match[0][0] - end_s) > PAIR_TOLERANCE_S:
            continue
        unused.remove(match)
        out.append(latency_s - match[0][1])
    return out


def summarize_pairs(system: str, against: str, streams: int, differences: Sequence[float]) -> dict[str, Any]:
    summary = metrics.summarize(differences)
    ms = {k: (None if v is None else round(1000 * v, 1)) for k, v in summary.items() if k != "count"}
    return {"protocol": system, "against": against, "streams_in_run": streams, "pairs": summary["count"],
            "difference_ms": ms}  # fmt: skip


def start_delay_s(excerpt: int, excerpts: int, rank: int) -> float:
    """Excerpts are staggered within one chunk; an excerpt's copies start ``PAIR_STEP_S`` apart in an order that
    rotates from excerpt to excerpt, so no protocol's jobs always reach the scheduler's queue first."""
    return (excerpt * CHUNK_MS / 1000) / excerpts + rank * PAIR_STEP_S


async def run_paired(
    base_url: str, excerpts: list[Excerpt], systems: Sequence[tuple[str, str, dict[str, Any]]]
) -> dict[str, Any]:
    """Each excerpt through every system at once (the same start instant per excerpt, excerpts staggered within
    one chunk): per-system latency summaries and paired differences against each system's reference."""
    n, m = len(excerpts), len(systems)
    tasks = {
        (system, k): run_client(
            k, base_url, adapter_config(options, protocol), ex, start_delay_s(k, n, (j + k) % m), CHUNK_MS
        )
        for j, (system, protocol, options) in enumerate(systems)
        for k, ex in enumerate(excerpts)
    }
    results = dict(zip(tasks, await asyncio.gather(*tasks.values())))
    names = [s for s, _, _ in systems]
    per_system = {}
    for system in names:
        mine = [results[(system, k)] for k in range(n)]
        per_system[system] = {
            "final_latency_s": {k: metrics.rounded(v) if isinstance(v, float) else v
                                for k, v in metrics.summarize([x for r in mine for x in r.final_latencies_s]).items()},
            "wer": metrics.rounded(metrics.corpus_wer((r.reference, r.transcript) for r in mine)),
            "errors": [f"client {r.client}: {e}" for r in mine for e in r.errors][:10],
        }  # fmt: skip
    pairs = []
    for system in names:
        against = reference_of(system, names)
        if system == against or against not in names:
            continue
        diffs = [d for k in range(n) for d in paired_differences(results[(against, k)], results[(system, k)])]
        pairs.append(summarize_pairs(system, against, n * len(names), diffs))
    return {"excerpts": n, "streams": n * len(names), "systems": per_system, "paired": pairs}


def compare_levels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    comparison = []
    for row in rows:
        reference = reference_of(row["system"], {r["system"] for r in rows})
        native = next((r for r in rows if r["system"] == reference and r["clients"] == row["clients"]), None)
        if native is None or row["system"] == reference or row["final_latency_s"]["p50"] is None:
            continue
        comparison.append(
            {
                "protocol": row["system"],
                "against": reference,
                "streams": row["clients"],
                "p50_minus_native_ms": _minus_ms(row, native, "p50"),
                "p95_minus_native_ms": _minus_ms(row, native, "p95"),
                "passed": row["passed"],
                "native_passed": native["passed"],
                "wer_minus_native": None if row["wer"] is None else round(row["wer"] - native["wer"], 4),
            }
        )  # fmt: skip
    return comparison


def _minus_ms(row: dict[str, Any], native: dict[str, Any], key: str) -> float:
    return round(1000 * (float(row["final_latency_s"][key]) - float(native["final_latency_s"][key])), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,8,16", help="stream counts of the one-protocol-at-a-time runs ('' none)")
    parser.add_argument(
        "--paired", default="16,32", help="total streams of the paired runs (multiples of the systems, >= their square)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of turns per client")
    parser.add_argument("--out", default=str(RESULTS / "dialects_cpu.json"))
    parser.add_argument("--only", default="", help="comma-separated systems to run (default: all)")
    parser.add_argument("--server-args", default="", help="extra flags for the server, quoted")
    args = parser.parse_args(argv)
    systems = [p for p in PROTOCOLS if not args.only or p[0] in args.only.split(",")]
    turns = Turns(tuple(load_turn_utterances(default_audio_dir())), args.seconds)
    rows: list[dict[str, Any]] = []
    paired: list[dict[str, Any]] = []
    started = time.monotonic()
    with ServerProcess(ours_command(*shlex.split(args.server_args)), http_ok("/readyz"), name="ours") as server:
        for total in [int(x) for x in args.paired.split(",") if x]:
            if total < len(systems) ** 2:  # fewer excerpts than protocols: the start order cannot rotate fully
                raise SystemExit(f"--paired {total}: at least {len(systems) ** 2} streams for {len(systems)} systems")
            run = asyncio.run(run_paired(server.ws_url, turns.excerpts(total // len(systems)), systems))
            paired.append(run)
            for row in run["paired"]:
                d = row["difference_ms"]
                print(f"paired {run['streams']:3d} streams  {row['protocol']:16s} - {row['against']:13s} "
                      f"median {d['p50']} ms  p95 {d['p95']} ms  (pairs={row['pairs']})", flush=True)  # fmt: skip
        for n in [int(x) for x in args.levels.split(",") if x]:
            excerpts = turns.excerpts(n)
            for system, protocol, options in systems:
                level = asyncio.run(run_level(system, server.ws_url, adapter_config(options, protocol), excerpts))
                row = level.to_json()
                row.pop("per_client", None)
                rows.append(row)
                latency = row["final_latency_s"]
                print(f"{system:16s} {n:3d} streams  p50 {latency['p50']} p95 {latency['p95']} "
                      f"(n={latency['count']})  WER {row['wer']}  passed {row['passed']}", flush=True)  # fmt: skip
    comparison = compare_levels(rows)
    out = {"workload": "turns", "seconds_per_client": args.seconds, "server_args": args.server_args,
           "paired": paired, "levels": rows,
           "against_native": comparison, "load_average": [round(x, 2) for x in os.getloadavg()],
           "wall_s": round(time.monotonic() - started, 1)}  # fmt: skip
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(comparison, indent=1))


if __name__ == "__main__":
    main()
