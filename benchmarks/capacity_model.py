"""Capacity model of one decoder process (issue 14 item 7): how many streams one CPU process or one GPU holds
at p95 final latency <= 1.2 s, checked against the real server's recorded runs, and how many decoder GPUs
1,000 and 10,000 call-center streams need. Method and figures: docs/scaling.md.

    python -m benchmarks.capacity_model [--quick] [--service benchmarks/results/capacity_service_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .capacity.service import SHAPES, ServiceModel, cpu_model, gpu_model, gpu_tiny_from_record
from .capacity.sim import Policy, Result, Simulation
from .capacity.workload import CALL_CENTER, READ_ALOUD, Workload

RESULTS = Path(__file__).resolve().parent / "results"
P95_TARGET_S = 1.2
HEADROOM = 0.7  # streams per GPU in production = simulated capacity x this (see docs/scaling.md#headroom)
FLEETS = (1000, 10000)
CPU_POLICY = Policy()
GPU_POLICY = Policy(max_batch_audio_s=0.0)  # the server's CUDA default: no audio cap per batch


def simulate(
    service: ServiceModel,
    policy: Policy,
    workload: Workload,
    streams: int,
    duration_s: float,
    warmup_s: float,
    seeds: int,
    count_cut: bool = False,
) -> dict[str, Any]:
    """Mean of ``seeds`` runs (each its own talk/pause draw)."""
    sim = Simulation(service, policy)
    runs: list[Result] = [sim.run(workload, streams, duration_s, warmup_s, s, count_cut) for s in range(1, seeds + 1)]
    out: dict[str, Any] = {"streams": streams}
    for key in ("final_latency_p50_s", "final_latency_p95_s", "partial_interval_p50_s", "utilisation"):
        out[key] = round(statistics.fmean(getattr(r, key) for r in runs), 4)
    out["partials_per_voiced_s"] = round(statistics.fmean(r.partials_delivered_per_voiced_s for r in runs), 3)
    out["partials_per_stream_s"] = round(
        sum(r.partials_delivered for r in runs) / (seeds * max(streams, 1) * duration_s), 3
    )
    out["finals"] = sum(r.finals for r in runs)
    out["unfinished_finals"] = sum(r.unfinished_finals for r in runs)
    out["ok"] = out["final_latency_p95_s"] <= P95_TARGET_S and out["unfinished_finals"] == 0
    return out


def capacity(
    run: Callable[[int], dict[str, Any]], start: int = 8, limit: int = 4096
) -> tuple[int, list[dict[str, Any]]]:
    """Most streams whose run is ``ok``: doubling, then bisection (the latency rises monotonically with load up
    to noise). Returns it and every level run."""
    levels: dict[int, dict[str, Any]] = {}

    def ok(n: int) -> bool:
        if n not in levels:
            levels[n] = run(n)
        return bool(levels[n]["ok"])

    lo, hi = 0, start
    while hi <= limit and ok(hi):
        lo, hi = hi, hi * 2
    if lo == 0:
        lo, hi = 0, start
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        return lo, [levels[k] for k in sorted(levels)]
    while hi - lo > max(1, lo // 32):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo, [levels[k] for k in sorted(levels)]


def validate(name: str, service: ServiceModel, policy: Policy, seeds: int) -> dict[str, Any]:
    """Simulate the levels of the recorded run ``results/<name>.json`` (read-aloud excerpts, all clients starting
    together) and compare p95 final latency per level and the capacity."""
    record = json.loads((RESULTS / f"{name}.json").read_text())
    ours = record["systems"]["ours"]
    excerpt_s = float(record["plan"]["excerpt_s"])
    rows = []
    for level in ours["levels"]:
        n, real = level["clients"], level["final_latency_s"]["p95"]
        sim = simulate(service, policy, READ_ALOUD, n, excerpt_s, 0.0, seeds, count_cut=True)
        err = (sim["final_latency_p95_s"] - real) / real
        rows.append(
            {
                "streams": n,
                "real_p95_s": real,
                "sim_p95_s": sim["final_latency_p95_s"],
                "relative_error": round(err, 3),
                "real_partials_per_stream_s": round(level["partial_lag_s"]["count"] / level["audio_s"], 3),
                "sim_partials_per_stream_s": sim["partials_per_stream_s"],
            }
        )
    real_cap = record["summary"]["systems"]["ours"]["capacity_streams"]
    levels = [r["streams"] for r in rows]
    sim_ok = [r["streams"] for r in rows if r["sim_p95_s"] <= P95_TARGET_S]
    sim_cap = max(sim_ok, default=0)
    apart = abs(levels.index(sim_cap) - levels.index(real_cap)) if sim_cap in levels and real_cap in levels else None
    return {
        "record": f"benchmarks/results/{name}.json ({record.get('date_utc')})",
        "cpu_threads": record.get("decode_core", {}).get("cpu_threads"),
        "machine": record.get("machine", {}).get("gpu") or record.get("machine", {}).get("cpu"),
        "levels": rows,
        "real_capacity": real_cap,
        "sim_capacity": sim_cap,
        "capacity_within_one_level": apart is not None and apart <= 1,
        "within_20pct": sum(abs(r["relative_error"]) <= 0.2 for r in rows),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, 40 s of speech per stream")
    parser.add_argument("--service", default=str(RESULTS / "capacity_service_cpu.json"))
    parser.add_argument("--out", default=None, help="JSON path (default: results/capacity_{quick,full}.json)")
    args = parser.parse_args(argv)
    seeds, duration_s = (1, 40.0) if args.quick else (3, 90.0)
    started = time.monotonic()
    cpu_record = json.loads((RESULTS / "stream_cpu_quick.json").read_text())
    gpu_record = json.loads((RESULTS / "stream_cuda_quick.json").read_text())
    idle = next(
        r["ms_per_utterance"]
        for r in cpu_record["decode_core"]["rows"]
        if r["window"] == "trimmed" and r["batch_size"] == 1
    )
    cpu = cpu_model(json.loads(Path(args.service).read_text()), idle)
    tiny = gpu_tiny_from_record(gpu_record["decode_core"])
    gpus = {m: gpu_model(m, tiny) for m in SHAPES}

    out: dict[str, Any] = {
        "kind": "capacity_model",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "quick" if args.quick else "full",
        "p95_target_s": P95_TARGET_S,
        "headroom": HEADROOM,
        "seeds": seeds,
        "speech_s_per_stream": duration_s,
        "workloads": {w.name: asdict(w) for w in (CALL_CENTER, READ_ALOUD)},
        "policies": {"cpu": asdict(CPU_POLICY), "gpu": asdict(GPU_POLICY)},
        "service_models": {"cpu tiny.en": cpu.as_dict(), **{f"gpu {m}": s.as_dict() for m, s in gpus.items()}},
    }
    out["validation"] = {
        "cpu": validate("stream_cpu_quick", cpu, CPU_POLICY, max(seeds, 3)),
        "gpu": validate("stream_cuda_quick", gpus["tiny.en"], GPU_POLICY, max(seeds, 3)),
        "gpu_threads1": validate("stream_cuda_quick_threads1", gpus["tiny.en"], GPU_POLICY, max(seeds, 3)),
    }
    for name, v in out["validation"].items():
        print(f"[capacity] validation {name} against the run of {v['record']}:")
        for r in v["levels"]:
            print(
                f"  {r['streams']:4d} streams: real p95 {r['real_p95_s']:.2f} s, "
                f"sim {r['sim_p95_s']:.2f} s ({r['relative_error']:+.0%}); partials per stream-second real "
                f"{r['real_partials_per_stream_s']:.2f}, sim {r['sim_partials_per_stream_s']:.2f}"
            )
        print(f"  capacity real {v['real_capacity']}, sim {v['sim_capacity']}")

    def per_process(service: ServiceModel, policy: Policy) -> dict[str, Any]:
        cap, levels = capacity(lambda n: simulate(service, policy, CALL_CENTER, n, duration_s, 10.0, seeds))
        lively = [lv["streams"] for lv in levels if lv["ok"] and lv["partials_per_voiced_s"] >= 1.0]
        return {
            "capacity_streams": cap,
            # among the levels run (not searched for): interim results still at least one per voiced second
            "capacity_with_partials_1_per_s": max(lively, default=0),
            "levels": levels,
        }

    out["cpu_process_tiny.en"] = per_process(cpu, CPU_POLICY)
    print(
        f"[capacity] one CPU process (this machine, tiny.en): {out['cpu_process_tiny.en']['capacity_streams']} streams"
    )
    answer = []
    for model, service in gpus.items():
        entry = per_process(service, GPU_POLICY)
        per_gpu = math.floor(entry["capacity_streams"] * HEADROOM)
        entry["streams_per_gpu_with_headroom"] = per_gpu
        entry["gpus"] = {str(n): math.ceil(n / per_gpu) if per_gpu else None for n in FLEETS}
        entry["source"] = service.source
        out[f"gpu_{model}"] = entry
        answer.append((model, entry))
        print(
            f"[capacity] H200 {model}: {entry['capacity_streams']} streams/GPU simulated, {per_gpu} with headroom; "
            + ", ".join(f"{n:,} streams -> {entry['gpus'][str(n)]} GPUs" for n in FLEETS)
        )
    out["wall_s"] = round(time.monotonic() - started, 1)
    path = Path(args.out) if args.out else RESULTS / f"capacity_{out['mode']}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    try:
        from .capacity.plot import plot

        print(f"[capacity] plot: {plot(out, path.with_suffix('.png'))}")
    except ImportError as exc:  # matplotlib is a benchmark extra
        print(f"[capacity] no plot ({exc})")
    print(f"[capacity] wrote {path}")


if __name__ == "__main__":
    main()
