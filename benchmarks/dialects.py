"""A dialect costs no capacity: the same load through protocol v1, the Deepgram endpoint and the OpenAI Realtime
endpoint of one server, at the same stream counts, on the conversational-turns workload (the same excerpts for
every protocol). Reports final latency p50/p95 with counts, WER, and each dialect's p50 against protocol v1.

    python -m benchmarks.dialects --levels 1,8,16 --seconds 60    # writes benchmarks/results/dialects_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from .audio import default_audio_dir
from .launch import ServerProcess, http_ok, ours_command
from .protocols import AdapterConfig
from .stream_load import run_level
from .workloads import Turns, load_turn_utterances

RESULTS = Path(__file__).parent / "results"
# (system name, protocol, options): Deepgram's answers always carry word timings, so protocol v1 with word
# timestamps is measured too, as the like-for-like reference for it
PROTOCOLS = (
    ("native", "native", {}),
    ("native+words", "native", {"word_timestamps": True}),
    ("deepgram", "deepgram", {}),
    ("openai_realtime", "openai_realtime", {}),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,8,16")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of turns per client")
    parser.add_argument("--out", default=str(RESULTS / "dialects_cpu.json"))
    parser.add_argument("--only", default="", help="comma-separated systems to run (default: all)")
    args = parser.parse_args(argv)
    turns = Turns(tuple(load_turn_utterances(default_audio_dir())), args.seconds)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    with ServerProcess(ours_command(), http_ok("/readyz"), name="ours") as server:
        for n in [int(x) for x in args.levels.split(",")]:
            excerpts = turns.excerpts(n)
            for system, protocol, options in PROTOCOLS:
                if args.only and system not in args.only.split(","):
                    continue
                config = AdapterConfig(protocol, {"endpointing_ms": 500, **options})
                level = asyncio.run(run_level(system, server.ws_url, config, excerpts))
                row = level.to_json()
                row.pop("per_client", None)
                rows.append(row)
                latency = row["final_latency_s"]
                print(f"{system:16s} {n:3d} streams  p50 {latency['p50']} p95 {latency['p95']} "
                      f"(n={latency['count']})  WER {row['wer']}  passed {row['passed']}", flush=True)  # fmt: skip
    comparison = []
    for row in rows:
        reference = "native+words" if row["system"] == "deepgram" else "native"
        native = next((r for r in rows if r["system"] == reference and r["clients"] == row["clients"]), None)
        if native is not None and row["system"] != reference and row["final_latency_s"]["p50"] is not None:
            comparison.append(
                {
                    "protocol": row["system"],
                    "against": reference,
                    "streams": row["clients"],
                    "p50_minus_native_ms": round(
                        1000 * (row["final_latency_s"]["p50"] - native["final_latency_s"]["p50"]), 1
                    ),
                    "wer_minus_native": None if row["wer"] is None else round(row["wer"] - native["wer"], 4),
                }
            )
    out = {"workload": "turns", "seconds_per_client": args.seconds, "levels": rows, "against_native": comparison,
           "wall_s": round(time.monotonic() - started, 1)}  # fmt: skip
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(comparison, indent=1))


if __name__ == "__main__":
    main()
