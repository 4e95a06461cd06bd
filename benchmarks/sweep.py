"""The streaming sweep of one system: start its server, warm it up, find its capacity level by level, stop it.

Capacity is found, not capped: levels follow the plan while they pass, continue past the plan's top (doubling)
until one fails, then bisect between the last pass and the first failure (``next_level``, a pure rule). A time
budget can stop the search early; the system's ``stopped`` says so. A level is one ``stream_load.run_level``
of N concurrent real-time clients, each with its own audio from the workload.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import metrics
from .protocols import AdapterConfig
from .results import LevelResult, SystemResult, replace
from .servers import ResourceSampler, SystemSpec, server_process, server_status
from .stream_load import run_level
from .workloads import Workload, nonspeech_excerpts, words_per_minute

OURS = "ours"
GROWTH = 2  # past the plan's top level, each next level is this many times the last pass
LEVEL_LIMIT = 512  # our server's --max-sessions in the benchmark
TURN_MEAN_S, PAUSE_MEAN_S = 6.0, 1.2  # rough length of one turn, for budgeting the single-stream probe


@dataclass(frozen=True)
class Plan:
    mode: str
    levels: tuple[int, ...]
    excerpt_s: float  # seconds of audio per client, long-recordings workload
    chunk_ms: int
    finish_timeout_s: float
    core_batch_sizes: tuple[int, ...]
    core_utterances: int | None
    budget_s: float | None  # streaming + core + offline, installs excluded
    turns_s: float = 60.0  # seconds of conversation per client, turns workload
    single_stream_finals: int = 30  # finals of the single-stream latency probe (0: no probe)
    resolution: float = 0.125  # bisect until the gap is at most this fraction of the last pass (and > 1)
    nonspeech_s: float = 30.0  # seconds of each non-speech signal (0: no non-speech probe)
    level_limit: int = LEVEL_LIMIT  # the search never goes past this many streams

    @classmethod
    def for_mode(cls, quick: bool) -> Plan:
        if quick:
            return cls("quick", (1, 2, 4, 8, 16, 32), 20.0, 100, 15.0, (1, 8), 12, 540.0, 60.0, 30, nonspeech_s=20.0)
        full_levels = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
        return cls("full", full_levels, 60.0, 100, 30.0, (1, 2, 4, 8, 16, 32), None, None, 60.0, 60)


def next_level(
    plan_levels: tuple[int, ...], outcomes: Mapping[int, bool], resolution: float = 0.125, limit: int = LEVEL_LIMIT
) -> tuple[int, str] | None:
    """The next concurrency level to try and why ("plan", "beyond the plan", "bisect"), or None when the
    capacity is known: the last pass below the first failure, to within ``resolution`` of it."""
    failures = [n for n, ok in outcomes.items() if not ok]
    first_failure = min(failures) if failures else None
    last_pass = max((n for n, ok in outcomes.items() if ok and (first_failure is None or n < first_failure)), default=0)
    if first_failure is None:
        for n in sorted(plan_levels):
            if n not in outcomes and n <= limit:
                return n, "plan"
        if last_pass >= limit:
            return None
        return min(limit, max(last_pass + 1, last_pass * GROWTH)), "beyond the plan"
    if first_failure - last_pass <= max(1, int(last_pass * resolution)):
        return None
    for n in sorted(plan_levels):  # a plan level below the failure not yet run (the plan's order was broken)
        if last_pass < n < first_failure and n not in outcomes:
            return n, "plan"
    return (last_pass + first_failure) // 2, "bisect"


def level_seconds(plan: Plan, system: str, workload_s: float) -> float:
    """Expected wall time of one level (audio + start stagger + drain), to keep within the budget."""
    drain = 3.0 if system.startswith("ours") else plan.finish_timeout_s
    return workload_s * 1.15 + drain + 2.0


def sweep_system(
    spec: SystemSpec,
    plan: Plan,
    workload: Workload,
    endpointing_ms: int,
    deadline: float | None,
    reserve_s: float,
    log_dir: Path,
    log: Callable[[str], None] = print,
    nonspeech: bool = False,
) -> SystemResult:
    """Start the server, warm it up, search its capacity on ``workload`` (time permitting), stop it. With
    ``nonspeech``, also count the words it emits on non-speech."""
    options = {"endpointing_ms": endpointing_ms} if spec.protocol == "native" else {}
    adapter = AdapterConfig(spec.protocol, options)
    server = server_process(spec, log_dir=log_dir)
    levels: list[LevelResult] = []
    search: list[dict[str, Any]] = []
    fields: dict[str, Any] = {}
    try:
        fields["command"] = spec.command(server.port)
        server.start()
        fields["startup_s"] = round(server.startup_s or 0.0, 2)
        warm = workload.warmup()
        asyncio.run(run_level(spec.system, server.ws_url, adapter, [warm], plan.chunk_ms, plan.finish_timeout_s))
        if nonspeech and plan.nonspeech_s:
            fields["nonspeech"] = nonspeech_probe(spec, server, adapter, plan, log)
        if plan.single_stream_finals and workload.name == "turns":
            probe_s = plan.single_stream_finals * (TURN_MEAN_S + PAUSE_MEAN_S)
            if deadline is None or time.monotonic() + probe_s + reserve_s < deadline:
                fields["single_stream"] = single_stream_probe(spec, server, adapter, plan, workload, log)
            else:
                fields["single_stream"] = {"skipped": "time budget of the run"}
        outcomes: dict[int, bool] = {}
        while (step := next_level(plan.levels, outcomes, plan.resolution, plan.level_limit)) is not None:
            n, why = step
            if (
                deadline is not None
                and time.monotonic() + level_seconds(plan, spec.system, workload.seconds) + (reserve_s) > deadline
            ):
                fields["stopped"] = f"time budget of the run (next level would have been {n}, {why})"
                break
            level = run_one_level(spec, server, adapter, plan, workload, n)
            levels.append(level)
            outcomes[n] = level.passed
            search.append({"clients": n, "why": why, "passed": level.passed, "kept_up": level.kept_up})
            fl = level.final_latency_s
            log(
                f"[stream] {spec.system:15s} {workload.name:5s} N={n:3d} ({why})  p50 {_s(fl['p50'])}  "
                f"p95 {_s(fl['p95'])}  p99 {_s(fl['p99'])} (n={fl['count']})  WER {metrics.pct(level.wer)}  "
                f"kept_up={level.kept_up}  passed={level.passed}  cpu {level.server.get('cpu_cores_used')}"
            )
            if level.latency_breakdown_s:
                log(f"[stream] {'':15s} {workload.name:5s} N={n:3d} where: {breakdown_line(level.latency_breakdown_s)}")
        else:
            fields["stopped"] = "capacity found" if any(not ok for ok in outcomes.values()) else "level limit"
        fields["status"] = "ok"
    except Exception as exc:  # a peer that cannot run is reported, not dropped
        fields["status"] = "failed"
        fields["reason"] = f"{type(exc).__name__}: {exc}"
        fields["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
        log(f"[stream] {spec.system}: FAILED: {fields['reason'][:400]}")
    finally:
        server.stop()
        fields["server_log_tail"] = server.log_tail(6)
    levels.sort(key=lambda lv: lv.clients)
    passed = [(lv.clients, lv.passed) for lv in levels]
    kept = [(lv.clients, lv.kept_up) for lv in levels]
    return SystemResult(
        label=spec.label,
        protocol=spec.protocol,
        notes=list(spec.notes),
        levels=levels,
        workload=workload.name,
        search=search,
        capacity=metrics.capacity(passed) if levels else None,
        max_streams_kept_up=metrics.capacity(kept) if levels else None,
        **fields,
    )


def run_one_level(
    spec: SystemSpec, server: Any, adapter: AdapterConfig, plan: Plan, workload: Workload, n: int
) -> LevelResult:
    excerpts = workload.excerpts(n)
    before = server_status(spec, server)
    load_before = os.getloadavg()[0]
    with ResourceSampler(server.pid) as sampler:
        level = asyncio.run(
            run_level(spec.system, server.ws_url, adapter, excerpts, plan.chunk_ms, plan.finish_timeout_s)
        )
    resources: dict[str, Any] = {**sampler.report(), "loadavg_1m_before": round(load_before, 2)}
    after = server_status(spec, server)
    if before and after:
        resources["scheduler"] = scheduler_delta(before, after)
    return replace(level, server=resources, workload=workload.name)


def single_stream_probe(
    spec: SystemSpec, server: Any, adapter: AdapterConfig, plan: Plan, workload: Workload, log: Callable[[str], None]
) -> dict[str, Any]:
    """One client alone, long enough for ``plan.single_stream_finals`` finals: single-stream latency."""
    excerpt = workload.single_stream(plan.single_stream_finals)
    level = asyncio.run(run_level(spec.system, server.ws_url, adapter, [excerpt], plan.chunk_ms, plan.finish_timeout_s))
    fl = level.final_latency_s
    log(f"[stream] {spec.system:15s} single stream: p50 {_s(fl['p50'])} p95 {_s(fl['p95'])} (n={fl['count']})")
    if level.latency_breakdown_s:
        log(f"[stream] {spec.system:15s} single stream where: {breakdown_line(level.latency_breakdown_s)}")
    return {
        "audio_s": level.audio_s,
        "utterances": workload.utterances_in(excerpt),
        "final_latency_s": fl,
        "final_latency_by_reason_s": level.final_latency_by_reason_s,
        "latency_breakdown_s": level.latency_breakdown_s,
        "wer": level.wer,
        "client_errors": level.client_errors,
    }


def nonspeech_probe(
    spec: SystemSpec, server: Any, adapter: AdapterConfig, plan: Plan, log: Callable[[str], None]
) -> dict[str, Any]:
    """Words emitted per minute of white noise, hum, tones and babble-like noise (one client each, at once)."""
    excerpts = nonspeech_excerpts(plan.nonspeech_s)
    level = asyncio.run(run_level(spec.system, server.ws_url, adapter, excerpts, plan.chunk_ms, plan.finish_timeout_s))
    wpm = {
        row["source"].removeprefix("nonspeech-"): round(words_per_minute(row["transcript"], row["audio_s"]), 2)
        for row in level.per_client
    }
    log(f"[stream] {spec.system:15s} non-speech words/min: {wpm}")
    return {
        "seconds": plan.nonspeech_s,
        "words_per_minute": wpm,
        "transcripts": {row["source"]: row["transcript"] for row in level.per_client},
        "client_errors": [e for e in level.client_errors if "no final result" not in e],
    }


def scheduler_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Batches formed during one level, from ``/v1/status`` snapshots."""
    b, a = before.get("scheduler", {}), after.get("scheduler", {})
    batches = a.get("batches", 0) - b.get("batches", 0)
    items = a.get("items", 0) - b.get("items", 0)
    hist_b, hist_a = b.get("batch_size_histogram", {}), a.get("batch_size_histogram", {})
    hist = {k: v - hist_b.get(k, 0) for k, v in hist_a.items() if v - hist_b.get(k, 0) > 0}
    return {
        "batches": batches,
        "items": items,
        "mean_batch_size": round(items / batches, 2) if batches else None,
        "max_batch_size_seen": a.get("max_batch_size_seen"),
        "superseded_partials": a.get("superseded_partials", 0) - b.get("superseded_partials", 0),
        "batch_size_histogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
    }


def _s(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def breakdown_line(breakdown: dict[str, Any]) -> str:
    """Each stage's p50 / p95 over every final (``metrics.breakdown_by_reason``), for the log."""
    every = breakdown.get("all") or {}
    stages = "  ".join(
        f"{stage} {_s(every[stage]['p50'])}/{_s(every[stage]['p95'])}" for stage in (*metrics.STAGES, "total")
    )
    return f"{stages} s p50/p95 (n={every.get('count')}, speculative {every.get('speculative')})"
