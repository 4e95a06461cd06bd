"""The Ray tier against the single process, on the same machine and workload (conversational turns).

1. The hop: one stream of >= 30 finals through the cluster (one ingress, one decoder replica) and through the single
   process; final latency p50/p95 of each with counts, the difference, and the hop's own cost per job (ms and bytes,
   from the ingress's ``RemoteDecoder``: call time minus the time the job spent in the decoder replica).
2. Capacity: the levels of ``--levels`` through the cluster with one and with two decoder replicas (each with
   ``--decoder-cpus`` logical CPUs and one model thread), stopping at the first level that fails.

    python -m benchmarks.cluster --quick        # writes benchmarks/results/cluster_cpu_quick.json

Needs the cluster extra (``pip install -e '.[cluster]'``) and the shared recordings (``BENCH_AUDIO_DIR``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
import urllib.request
from pathlib import Path
from typing import Any

from . import metrics
from .audio import default_audio_dir
from .launch import ServerProcess, free_port, http_ok, ours_command
from .protocols import AdapterConfig
from .stream_load import run_level
from .workloads import Turns, load_turn_utterances

RESULTS = Path(__file__).parent / "results"
OPTIONS = {"endpointing_ms": 500}


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=30) as response:
        status: dict[str, Any] = json.loads(response.read())
    return status


def _level(port: int, excerpts: list[Any], system: str) -> dict[str, Any]:
    level = asyncio.run(run_level(system, f"ws://127.0.0.1:{port}", AdapterConfig("native", OPTIONS), excerpts))
    row = level.to_json()
    row.pop("per_client", None)
    return row


def single_process(turns: Turns, finals: int) -> dict[str, Any]:
    port = free_port()
    server = ServerProcess(ours_command("--cpu-threads", "1"), http_ok("/readyz"), name="ours", port=port)
    with server:
        return {"single_stream": _level(port, [turns.single_stream(finals)], "single-process")}


def cluster(turns: Turns, finals: int, decoders: int, levels: list[int], decoder_cpus: float) -> dict[str, Any]:
    import ray
    from ray import serve

    from stream_server.cluster.app import DECODERS_APP, INGRESS_APP, ClusterPlan, build
    from stream_server.config import Settings

    port = free_port()
    ray.init(num_cpus=max(4, int(decoders * decoder_cpus) + 2), include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = Settings(cpu_threads=1, port=port)
        ingress, decoder_app = build(settings, ClusterPlan(decoders=decoders, ingress=1, decoder_cpus=decoder_cpus))
        serve.run(decoder_app, name=DECODERS_APP, route_prefix=None)
        serve.run(ingress, name=INGRESS_APP, route_prefix="/")
        out: dict[str, Any] = {"decoders": decoders}
        if finals:
            out["single_stream"] = _level(port, [turns.single_stream(finals)], f"cluster-{decoders}")
            out["hop"] = _status(port).get("hop")
        out["levels"] = []
        for n in levels:
            row = _level(port, turns.excerpts(n), f"cluster-{decoders}")
            out["levels"].append(row)
            print(json.dumps({k: row[k] for k in ("system", "clients", "final_latency_s", "passed")}), flush=True)
            if not row["passed"]:
                break
        out["capacity"] = max([r["clients"] for r in out["levels"] if r["passed"]], default=0)
        out["hop_after_levels"] = _status(port).get("hop")
        return out
    finally:
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="levels 1,4,8,16 and 60 s per client")
    parser.add_argument("--levels", default="1,2,4,8,16,24,32")
    parser.add_argument("--finals", type=int, default=30, help="finals of the single-stream probe")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of turns per client")
    parser.add_argument("--decoder-cpus", type=float, default=1.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    levels = [1, 4, 8, 16] if args.quick else [int(x) for x in args.levels.split(",")]
    turns = Turns(tuple(load_turn_utterances(default_audio_dir())), args.seconds)
    started = time.monotonic()
    single = single_process(turns, args.finals)
    one = cluster(turns, args.finals, 1, levels, args.decoder_cpus)
    two = cluster(turns, 0, 2, levels, args.decoder_cpus)
    p50 = {name: r["single_stream"]["final_latency_s"]["p50"] for name, r in (("single", single), ("cluster", one))}
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "workload": "turns",
        "single_process": single,
        "cluster_1_decoder": one,
        "cluster_2_decoders": two,
        "hop_added_p50_ms": metrics.rounded(1000 * (p50["cluster"] - p50["single"])),
        "wall_s": round(time.monotonic() - started, 1),
    }
    out = Path(args.out) if args.out else RESULTS / ("cluster_cpu_quick.json" if args.quick else "cluster_cpu.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("hop_added_p50_ms", "wall_s")}))
    print("capacity: 1 decoder", one["capacity"], "| 2 decoders", two["capacity"], "| written", out)


if __name__ == "__main__":
    main()
