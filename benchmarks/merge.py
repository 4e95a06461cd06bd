"""One result from a capacity search that ran as several ``benchmarks.run`` invocations.

A lent GPU machine comes with minutes, not an hour: its search runs as a few short invocations (``--levels``
and ``--max-level`` placing each next to the last pass and the first failure). This puts their levels back
together per system and workload, in one file shaped like any run's. Capacity is recomputed over all levels by
the same rule as a single run (``metrics.capacity``: the last pass below the first failure); each search step
says which input it came from; ``merged_from`` lists the inputs with their dates and load averages. Inputs must
agree on device, mode, model and endpointing.

    python -m benchmarks.merge OUT.json IN1.json IN2.json ...
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import metrics
from .report import markdown_table, summarize
from .results import LevelResult, RunResult, SystemResult, replace

SAME = ("mode", "endpointing_ms")


def _check_compatible(runs: Sequence[RunResult]) -> None:
    first = runs[0]
    for run in runs[1:]:
        for key in SAME:
            if getattr(run, key) != getattr(first, key):
                raise ValueError(f"inputs differ in {key}: {getattr(first, key)!r} vs {getattr(run, key)!r}")
        if run.machine.get("device") != first.machine.get("device"):
            raise ValueError("inputs ran on different devices")
        if run.model.get("path") != first.model.get("path"):
            raise ValueError("inputs used different models")


def merge_systems(parts: Sequence[tuple[str, SystemResult]]) -> SystemResult:
    """One system's levels, search and probes from several runs (``(source name, result)``, in run order)."""
    levels: dict[int, LevelResult] = {}
    search: list[dict[str, Any]] = []
    base = parts[0][1]
    single_stream, nonspeech = base.single_stream, base.nonspeech
    for source, part in parts:
        for level in part.levels:
            if level.clients in levels:
                raise ValueError(f"level {level.clients} measured twice ({source})")
            levels[level.clients] = level
        search.extend({**step, "run": source} for step in part.search or [])
        single_stream = single_stream or part.single_stream
        nonspeech = nonspeech or part.nonspeech
    ordered = [levels[n] for n in sorted(levels)]
    last = parts[-1][1]
    return replace(
        base,
        levels=ordered,
        search=search,
        single_stream=single_stream,
        nonspeech=nonspeech,
        capacity=metrics.capacity((lv.clients, lv.passed) for lv in ordered),
        max_streams_kept_up=metrics.capacity((lv.clients, lv.kept_up) for lv in ordered),
        stopped=f"searched in {len(parts)} runs; the last: {last.stopped}",
        status="ok" if all(p.status == "ok" for _, p in parts) else last.status,
    )


def merge_runs(named: Sequence[tuple[str, RunResult]]) -> RunResult:
    runs = [run for _, run in named]
    _check_compatible(runs)
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run.systems if k not in keys)
    systems = {
        key: merge_systems([(name, run.systems[key]) for name, run in named if key in run.systems]) for key in keys
    }
    summary = summarize(systems)
    first = runs[0]
    merged_from = [
        {
            "file": name,
            "date_utc": run.date_utc,
            "loadavg_1m_start": run.loadavg_1m_start,
            "loadavg_1m_end": run.loadavg_1m_end,
            "budget_s": run.budget_s,
            "measure_seconds": run.measure_seconds,
        }
        for name, run in named
    ]
    return replace(
        first,
        systems=systems,
        summary=summary,
        summary_markdown=markdown_table(summary, first.endpointing_ms),
        measure_seconds=round(sum(run.measure_seconds or 0.0 for run in runs), 1),
        loadavg_1m_end=runs[-1].loadavg_1m_end,
        budget_s=None,
        extra={**first.extra, "merged_from": merged_from},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output")
    parser.add_argument("inputs", nargs="+")
    args = parser.parse_args(argv)
    named = [(Path(p).name, RunResult.from_json(json.loads(Path(p).read_text()))) for p in args.inputs]
    merged = merge_runs(named)
    Path(args.output).write_text(json.dumps(merged.to_json(), indent=1) + "\n")
    print(merged.summary_markdown)


if __name__ == "__main__":
    main()
