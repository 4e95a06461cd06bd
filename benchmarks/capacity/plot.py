"""The capacity model's figure: simulated p95 final latency per stream count (one decoder each), and decoder
GPUs needed for the call-center fleets."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    series = [("cpu_process_tiny.en", "tiny.en, 1 CPU process (this machine)")]
    series += [(k, k.removeprefix("gpu_") + ", 1 H200") for k in result if k.startswith("gpu_")]
    for key, label in series:
        levels = sorted(result[key]["levels"], key=lambda r: r["streams"])
        left.plot([r["streams"] for r in levels], [r["final_latency_p95_s"] for r in levels], "o-", label=label)
    left.axhline(result["p95_target_s"], color="grey", linestyle="--", label="p95 target")
    left.set_xscale("log", base=2)
    left.set_ylim(0, 3)
    left.set_xlabel("concurrent call-center streams on one decoder")
    left.set_ylabel("p95 final latency from end of speech (s)")
    left.set_title("Simulated (GPU base / large-v3-turbo: FLOPs estimates)")
    left.legend(fontsize=8)
    gpus = [(k.removeprefix("gpu_"), result[k]["gpus"]) for k in result if k.startswith("gpu_")]
    width = 0.35
    for i, fleet in enumerate(("1000", "10000")):
        xs = [j + (i - 0.5) * width for j in range(len(gpus))]
        ys = [g[fleet] or 0 for _, g in gpus]
        bars = right.bar(xs, ys, width, label=f"{int(fleet):,} streams")
        right.bar_label(bars, fontsize=8)
    right.set_xticks(range(len(gpus)), [m for m, _ in gpus])
    right.set_yscale("log")
    right.set_ylabel("decoder GPUs (H100/H200 class)")
    right.set_title(f"GPUs needed at p95 <= {result['p95_target_s']} s, headroom x{result['headroom']}")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
