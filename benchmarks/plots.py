"""PNG plots of a results JSON: latency against concurrent streams (one line per system), where it went (stacked
by stage, ours), and the core grid.

python -m benchmarks.plots benchmarks/results/stream_cpu_quick.json   # redraw from a saved run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from .metrics import CAPACITY_P95_S, STAGES  # noqa: E402

COLORS = {
    "ours": "tab:blue",
    "ours_naive": "tab:orange",
    "whisperlive": "tab:green",
    "whisperlivekit": "tab:red",
    "whisperlive_batch": "tab:olive",
    "whisperlivekit_la": "tab:purple",
}


def plot_latency(result: dict[str, Any], path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for name, system in result.get("systems", {}).items():
        levels = sorted(
            (lv for lv in system.get("levels", []) if lv["final_latency_s"]["count"]), key=lambda lv: lv["clients"]
        )
        if not levels:
            continue
        n = [lv["clients"] for lv in levels]
        system_name, _, workload = name.partition("@")  # "ours@turns": ours on the turns workload
        color = COLORS.get(system_name)
        style = "--" if workload else "-"
        label = f"{system.get('label', name)}{f' [{workload}]' if workload else ''} (capacity {system.get('capacity')})"
        for ax, key in zip(axes, ("p50", "p95", "p99")):
            ax.plot(n, [lv["final_latency_s"][key] for lv in levels], style, marker="o", color=color, label=label)
            behind = [(lv["clients"], lv["final_latency_s"][key]) for lv in levels if not lv["kept_up"]]
            if behind and key != "p99":
                ax.scatter(*zip(*behind), marker="x", s=90, color=color)
    titles = ("p50 final latency", "p95 final latency", "p99 final latency")
    all_n = sorted({lv["clients"] for s in result.get("systems", {}).values() for lv in s.get("levels", [])})
    for ax, title in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        if all_n:
            ax.set_xticks(all_n)
        ax.set_xlabel("concurrent real-time streams")
        ax.set_ylabel("seconds (audio sent -> final received)")
        ax.set_title(title)
        ax.axhline(CAPACITY_P95_S, color="grey", linestyle="--", linewidth=1)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    machine = result.get("machine", {})
    return _save(
        fig,
        path,
        f"{result.get('model', {}).get('id')} on {machine.get('device')} ({machine.get('cpu_count')} cores, "
        f"{machine.get('cpu', '')[:40]}), {result.get('mode')} run {result.get('date_utc', '')[:10]}; "
        f"x = fell behind; dashed = {CAPACITY_P95_S} s",
        rect=(0, 0.1, 1, 1),
    )


def _save(fig: Any, path: Path, title: str, rect: tuple[float, float, float, float] | None = None) -> Path:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


STAGE_COLORS = {"endpointing": "tab:gray", "queue": "tab:orange", "decode": "tab:blue", "send": "tab:green"}


def plot_breakdown(result: dict[str, Any], path: Path) -> Path | None:
    """Where the final latency went, stacked by stage against streams: one row per system and workload whose
    server reported it (ours), p50 and p95 of each stage over every final of the level (a stack of p95s is not
    the p95 of the total, which the title gives). None when no system reported stages."""
    rows = []
    for name, system in result.get("systems", {}).items():
        levels = sorted(
            (lv for lv in system.get("levels", []) if (lv.get("latency_breakdown_s") or {}).get("all")),
            key=lambda lv: lv["clients"],
        )
        if levels:
            rows.append((name, system, levels))
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 2, figsize=(13, 3.8 * len(rows)), squeeze=False)
    for (name, system, levels), pair in zip(rows, axes):
        positions = range(len(levels))
        for ax, key in zip(pair, ("p50", "p95")):
            bottom = [0.0] * len(levels)
            for stage in STAGES:
                heights = [lv["latency_breakdown_s"]["all"][stage][key] or 0.0 for lv in levels]
                ax.bar(positions, heights, 0.6, bottom=bottom, color=STAGE_COLORS[stage], label=stage)
                bottom = [b + h for b, h in zip(bottom, heights)]
            totals = [lv["latency_breakdown_s"]["all"]["total"][key] for lv in levels]
            ax.plot(positions, totals, "k_", markersize=18, label=f"total {key}")
            counts = [lv["latency_breakdown_s"]["all"]["count"] for lv in levels]
            ax.set_xticks(list(positions), [f"{lv['clients']}\n(n={c})" for lv, c in zip(levels, counts)], fontsize=7)
            ax.set_xlabel("concurrent real-time streams (finals)")
            ax.set_ylabel("seconds (server side)")
            ax.set_title(
                f"{system.get('label', name)} [{system.get('workload') or 'long'}]: {key} of each stage", fontsize=9
            )
            ax.axhline(CAPACITY_P95_S, color="grey", linestyle="--", linewidth=1)
            ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    return _save(
        fig,
        path,
        f"Where the final latency goes (speech end -> final written), {result.get('model', {}).get('id')}, "
        f"{result.get('mode')} run {result.get('date_utc', '')[:10]}; dashed = {CAPACITY_P95_S} s",
    )


def plot_core(core: dict[str, Any], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    windows = sorted({r["window"] for r in core["rows"]}, key=["full", "trimmed", "tight"].index)
    for window in windows:
        rows = [r for r in core["rows"] if r["window"] == window]
        wer = ", ".join(f"{100 * r['wer']:.1f}" for r in rows if r["wer"] is not None)
        axes[0].plot(
            [r["batch_size"] for r in rows],
            [r["utterances_per_s"] for r in rows],
            marker="o",
            label=f"{window} window (WER % by batch: {wer})",
        )
        axes[1].plot([r["batch_size"] for r in rows], [r["ms_per_utterance"] for r in rows], marker="o", label=window)
    ref = core.get("faster_whisper_transcribe") or {}
    if ref:
        axes[0].axhline(
            ref["utterances_per_s"],
            color="grey",
            linestyle="--",
            label=f"faster-whisper transcribe, beam 5 (WER {100 * (ref['wer'] or 0):.1f}%)",
        )
    for ax, ylabel in zip(axes, ("utterances / s", "ms / utterance")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xticks(sorted({r["batch_size"] for r in core["rows"]}))
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(
        fig,
        path,
        f"Whisper core alone: {core['utterances']} LibriSpeech utterances ({core['audio_s']} s), "
        f"{core['device']} {core['compute_type']}, beam {core['beam_size']}",
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    for name in argv:
        path = Path(name)
        result = json.loads(path.read_text())
        print(plot_latency(result, path.with_name(path.stem.replace("stream_", "latency_") + ".png")))
        breakdown = plot_breakdown(result, path.with_name(path.stem.replace("stream_", "breakdown_") + ".png"))
        if breakdown:
            print(breakdown)
        if result.get("decode_core", {}).get("rows"):
            print(
                plot_core(result["decode_core"], path.with_name(path.stem.replace("stream_", "decode_core_") + ".png"))
            )


if __name__ == "__main__":
    main()
