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
PROTOCOLS = ("native", "deepgram", "openai_realtime")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,8,16")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of turns per client")
    parser.add_argument("--out", default=str(RESULTS / "dialects_cpu.json"))
    args = parser.parse_args(argv)
    turns = Turns(tuple(load_turn_utterances(default_audio_dir())), args.seconds)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    with ServerProcess(ours_command(), http_ok("/readyz"), name="ours") as server:
        for n in [int(x) for x in args.levels.split(",")]:
            excerpts = turns.excerpts(n)
            for protocol in PROTOCOLS:
                config = AdapterConfig(protocol, {"endpointing_ms": 500})
                level = asyncio.run(run_level(protocol, server.ws_url, config, excerpts))
                row = level.to_json()
                row.pop("per_client", None)
                rows.append(row)
                latency = row["final_latency_s"]
                print(f"{protocol:16s} {n:3d} streams  p50 {latency['p50']} p95 {latency['p95']} "
                      f"(n={latency['count']})  WER {row['wer']}  passed {row['passed']}", flush=True)  # fmt: skip
    comparison = []
    for row in rows:
        native = next(r for r in rows if r["system"] == "native" and r["clients"] == row["clients"])
        if row["system"] != "native" and row["final_latency_s"]["p50"] is not None:
            comparison.append(
                {
                    "protocol": row["system"],
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
