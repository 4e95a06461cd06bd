"""One command for the whole benchmark: core, streaming sweep of every system, offline reference, JSON, plots.

    python -m benchmarks.run --quick          # < 10 minutes on 2 cores once the peer venvs exist
    python -m benchmarks.run                  # full: longer excerpts, more levels, the whole core grid
    python -m benchmarks.run --device cuda --model /path/to/ct2-model

Order of work: (1) peer venvs are created when missing (timed and printed apart from the measurement); (2) the
Whisper core alone (``decode_core``); (3) for each system (ours, ours naive, WhisperLive, WhisperLiveKit) its
server is started, warmed up with one short stream, then swept over concurrency levels 1, 2, 4, ... until it
falls behind (or reaches its level cap, or the time budget), then stopped; (4) faster-whisper's offline
transcription of the very excerpts that were streamed, as the accuracy reference; (5) results JSON
(``benchmarks/results/stream_<device>_<mode>.json``, the latest run; a dated copy beside it) and PNG plots.

Every system serves the same CTranslate2 model directory; nothing downloads a model. A peer that cannot be
installed or started is reported with the reason under ``systems.<name>.status``. The CPU is shared by the
server and the load generator; the load average before and after is recorded, since other work on the machine
skews every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import metrics
from .audio import Excerpt, default_audio_dir, load_long_recordings, plan_excerpts, write_wav_int16
from .peers import PEERS, ensure_peer_venv, installed_versions
from .protocols import AdapterConfig
from .servers import ResourceSampler, ServerProcess, SystemSpec, system_specs
from .stream_load import LevelResult, run_level

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_SYSTEMS = ("ours", "ours_naive", "whisperlive", "whisperlivekit")
ALL_SYSTEMS = (*DEFAULT_SYSTEMS, "whisperlive_batch")
OURS = "ours"


@dataclass(frozen=True)
class Plan:
    mode: str
    levels: tuple[int, ...]
    peer_max_level: int  # peers and the naive baseline are not swept past this (time)
    excerpt_s: float
    chunk_ms: int
    finish_timeout_s: float
    core_batch_sizes: tuple[int, ...]
    core_utterances: int | None
    budget_s: float | None  # streaming + core + offline, installs excluded

    @classmethod
    def for_mode(cls, quick: bool) -> Plan:
        if quick:
            return cls("quick", (1, 2, 4, 8, 16, 32), 8, 20.0, 100, 15.0, (1, 8), 12, 540.0)
        return cls("full", (1, 2, 4, 8, 12, 16, 24, 32, 48, 64), 16, 60.0, 100, 30.0, (1, 2, 4, 8, 16, 32), None, None)


def level_seconds(plan: Plan, system: str) -> float:
    """Expected wall time of one level (excerpt + start stagger + drain), to keep within the budget."""
    drain = 3.0 if system.startswith("ours") else plan.finish_timeout_s
    return plan.excerpt_s * 1.3 + drain + 2.0


def machine_info(device: str) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    mem_gb = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as fh:
        mem_gb = round(int(fh.readline().split()[1]) / 2**20, 1)
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gb": mem_gb,
        "device": device,
    }
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            info["gpu"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
    return info


def our_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for dist in ("stream-server", "faster-whisper", "ctranslate2", "websockets", "numpy", "jiwer"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def _log(msg: str) -> None:
    print(msg, flush=True)


# ---- one system ------------------------------------------------------------------------------------------------


def sweep_system(
    spec: SystemSpec,
    plan: Plan,
    recordings: list[Any],
    endpointing_ms: int,
    deadline: float | None,
    reserve_s: float,
    log_dir: Path,
) -> dict[str, Any]:
    """Start the server, warm it up, run levels until it falls behind (or time runs out), stop it."""
    out: dict[str, Any] = {"label": spec.label, "protocol": spec.protocol, "notes": spec.notes, "levels": []}
    options = {"endpointing_ms": endpointing_ms} if spec.protocol == "native" else {}
    adapter = AdapterConfig(spec.protocol, options)
    max_level = plan.levels[-1] if spec.system == OURS else plan.peer_max_level
    server = ServerProcess(spec, log_dir=log_dir)
    try:
        server.start()
        out["startup_s"] = round(server.startup_s or 0.0, 2)
        warm = plan_excerpts(recordings, 1, 6.0)[0]
        asyncio.run(
            run_level(
                spec.system, server.base_url, adapter, [warm], plan.chunk_ms, finish_timeout_s=plan.finish_timeout_s
            )
        )
        for n in plan.levels:
            if n > max_level:
                out["stopped"] = f"level cap {max_level} for this system in {plan.mode} mode"
                break
            if deadline is not None and time.monotonic() + level_seconds(plan, spec.system) + reserve_s > deadline:
                out["stopped"] = "time budget of the run"
                break
            level = _run_one_level(spec, server, adapter, plan, recordings, n)
            out["levels"].append(asdict(level))
            _log(
                f"[stream] {spec.system:15s} N={n:3d}  p50 {_s(level.final_latency_s['p50'])}  "
                f"p95 {_s(level.final_latency_s['p95'])}  p99 {_s(level.final_latency_s['p99'])}  "
                f"WER {metrics.pct(level.wer)}  kept_up={level.kept_up}  passed={level.passed}  "
                f"cpu {level.server.get('cpu_cores_used')}  rss {level.server.get('peak_rss_mb')} MB"
            )
            if not level.kept_up:
                out["stopped"] = f"fell behind at {n} streams"
                break
        else:
            out.setdefault("stopped", "largest level of the plan reached")
        out["status"] = "ok"
    except Exception as exc:  # a peer that cannot run is reported, not dropped
        out["status"] = "failed"
        out["reason"] = f"{type(exc).__name__}: {exc}"
        out["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
        _log(f"[stream] {spec.system}: FAILED: {out['reason'][:400]}")
    finally:
        server.stop()
        out["server_log_tail"] = server.log_tail(6)
    passed = [(lv["clients"], lv["passed"]) for lv in out["levels"]]
    out["capacity"] = metrics.capacity(passed) if out["levels"] else None
    kept = [(lv["clients"], lv["kept_up"]) for lv in out["levels"]]
    out["max_streams_kept_up"] = metrics.capacity(kept) if out["levels"] else None
    return out


def _run_one_level(
    spec: SystemSpec, server: ServerProcess, adapter: AdapterConfig, plan: Plan, recordings: list[Any], n: int
) -> LevelResult:
    excerpts = plan_excerpts(recordings, n, plan.excerpt_s)
    before = server.status()
    load_before = os.getloadavg()[0]
    with ResourceSampler(server.pid) as sampler:
        level = asyncio.run(
            run_level(
                spec.system, server.base_url, adapter, excerpts, plan.chunk_ms, finish_timeout_s=plan.finish_timeout_s
            )
        )
    level.server = {**sampler.report(), "loadavg_1m_before": round(load_before, 2)}
    after = server.status()
    if before and after:
        level.server["scheduler"] = scheduler_delta(before, after)
    return level


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


# ---- offline accuracy reference -------------------------------------------------------------------------------


def offline_reference(model_path: str, device: str, excerpts: dict[tuple[str, int], Excerpt]) -> dict[Any, str]:
    """faster-whisper's offline ``transcribe`` (beam 5, its defaults) of each distinct streamed excerpt."""
    from faster_whisper import WhisperModel

    compute_type = "float16" if device == "cuda" else "int8"
    model = WhisperModel(model_path, device=device, compute_type=compute_type, cpu_threads=os.cpu_count() or 0)
    texts = {}
    for key, ex in excerpts.items():
        segments, _ = model.transcribe(ex.samples.astype("float32") / 32768.0, language="en", beam_size=5)
        texts[key] = " ".join(s.text.strip() for s in segments)
    return texts


def attach_wer_summary(system: dict[str, Any], offline: dict[Any, str], recordings: list[Any], plan: Plan) -> None:
    """Pooled streaming WER over every client the system served, and faster-whisper offline on the same audio."""
    stream_pairs, offline_pairs = [], []
    for level in system.get("levels", []):
        level_offline = []
        for client in level["per_client"]:
            key = (client["source"], round(client["offset_s"], 3))
            stream_pairs.append((client["reference"], client["transcript"]))
            if key in offline:
                offline_pairs.append((client["reference"], offline[key]))
                level_offline.append((client["reference"], offline[key]))
        # the same level's clients offline: accuracy by load (ours keeps its extras only when not busy)
        level["offline_wer_same_audio"] = metrics.rounded(metrics.corpus_wer(level_offline)) if level_offline else None
    system["wer_pooled"] = metrics.rounded(metrics.corpus_wer(stream_pairs)) if stream_pairs else None
    system["offline_faster_whisper_wer_same_audio"] = (
        metrics.rounded(metrics.corpus_wer(offline_pairs)) if offline_pairs else None
    )
    if system["wer_pooled"] is not None and system["offline_faster_whisper_wer_same_audio"] is not None:
        system["wer_minus_offline_points"] = round(
            100 * (system["wer_pooled"] - system["offline_faster_whisper_wer_same_audio"]), 2
        )


# ---- summary ----------------------------------------------------------------------------------------------------


def summarize(systems: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = {}
    for name, s in systems.items():
        levels = s.get("levels", [])
        one = next((lv for lv in levels if lv["clients"] == 1), None)
        cap = s.get("capacity")
        at_cap = next((lv for lv in levels if lv["clients"] == cap), None)
        rows[name] = {
            "label": s.get("label"),
            "status": s.get("status"),
            "reason": s.get("reason"),
            "capacity_streams": cap,
            "max_streams_kept_up": s.get("max_streams_kept_up"),
            "single_stream_final_latency_s": one["final_latency_s"] if one else None,
            "single_stream_partial_lag_p50_s": one["partial_lag_s"]["p50"] if one else None,
            "at_capacity_final_latency_s": at_cap["final_latency_s"] if at_cap else None,
            "at_capacity_cpu_cores_used": at_cap["server"].get("cpu_cores_used") if at_cap else None,
            "at_capacity_peak_rss_mb": at_cap["server"].get("peak_rss_mb") if at_cap else None,
            "wer_pooled": s.get("wer_pooled"),
            "offline_faster_whisper_wer_same_audio": s.get("offline_faster_whisper_wer_same_audio"),
            "stopped": s.get("stopped"),
        }
    ours = rows.get(OURS, {})
    ratios = {}
    for name, row in rows.items():
        if name == OURS:
            continue
        ours_one = ours.get("single_stream_final_latency_s") or {}
        theirs_one = row.get("single_stream_final_latency_s") or {}
        ratios[name] = {
            "capacity_ours_over_theirs": metrics.ratio(ours.get("capacity_streams"), row.get("capacity_streams")),
            # when theirs is 0 (no level met the latency bound) the ratio is undefined; these say what there is
            "capacity_ours_vs_theirs": f"{ours.get('capacity_streams')} vs {row.get('capacity_streams')}",
            "streams_kept_up_ours_over_theirs": metrics.ratio(
                ours.get("max_streams_kept_up"), row.get("max_streams_kept_up")
            ),
            "single_stream_p50_theirs_over_ours": metrics.ratio(theirs_one.get("p50"), ours_one.get("p50")),
            "single_stream_p95_theirs_over_ours": metrics.ratio(theirs_one.get("p95"), ours_one.get("p95")),
        }
    return {"systems": rows, "ratios_vs_ours": ratios}


def markdown_table(summary: dict[str, Any], endpointing_ms: int) -> str:
    head = (
        "| system | capacity (streams, p95 ≤ 1.2 s) | streams kept up | final latency 1 stream "
        "p50 / p95 / p99 (s) | p95 at capacity (s) | WER streamed | WER faster-whisper offline, same audio |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in summary["systems"].values():
        one = row.get("single_stream_final_latency_s") or {}
        cap = row.get("at_capacity_final_latency_s") or {}
        status = "" if row.get("status") == "ok" else f" ({row.get('status')}: {str(row.get('reason'))[:80]})"
        lines.append(
            f"| {row.get('label')}{status} | {row.get('capacity_streams')} | "
            f"{row.get('max_streams_kept_up')} | {_s(one.get('p50'))} / "
            f"{_s(one.get('p95'))} / {_s(one.get('p99'))} | {_s(cap.get('p95'))} | "
            f"{metrics.pct(row.get('wer_pooled'))} | {metrics.pct(row.get('offline_faster_whisper_wer_same_audio'))} |"
        )
    return head + "\n".join(lines) + f"\n\nendpointing_ms = {endpointing_ms} for every stream of ours.\n"


def _s(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2f}"


# ---- main -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the < 10 minute version")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="embedded", help="CTranslate2 Whisper dir ('embedded': tiny.en)")
    parser.add_argument(
        "--systems", default=",".join(DEFAULT_SYSTEMS), help="comma-separated, from " + ", ".join(ALL_SYSTEMS)
    )
    parser.add_argument("--levels", default="", help="override the concurrency levels, e.g. 1,2,4")
    parser.add_argument("--excerpt-s", type=float, default=0.0, help="override seconds of audio per client")
    parser.add_argument("--endpointing-ms", type=int, default=500)
    parser.add_argument("--skip-core", action="store_true", help="skip the decode_core part")
    parser.add_argument("--skip-install", action="store_true", help="never install peer venvs")
    parser.add_argument("--ours-args", default="", help="extra flags for our server (both modes), quoted")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    args = parser.parse_args(argv)

    plan = Plan.for_mode(args.quick)
    if args.levels:
        levels = tuple(int(x) for x in args.levels.split(","))
        plan = Plan(**{**asdict(plan), "levels": levels, "peer_max_level": max(levels)})
    if args.excerpt_s:
        plan = Plan(**{**asdict(plan), "excerpt_s": args.excerpt_s})
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(ALL_SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)}")

    from stream_server.config import embedded_model_path

    model_path = embedded_model_path() if args.model == "embedded" else args.model
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = (
        Path(os.environ.get("BENCH_LOG_DIR", ""))
        if os.environ.get("BENCH_LOG_DIR")
        else Path(__import__("tempfile").mkdtemp(prefix="bench-logs-"))
    )
    started_wall = dt.datetime.now(dt.timezone.utc)
    result: dict[str, Any] = {
        "kind": "stream-server streaming benchmark",
        "date_utc": started_wall.isoformat(timespec="seconds"),
        "mode": plan.mode,
        "plan": asdict(plan),
        "machine": machine_info(args.device),
        "model": {"path": model_path, "id": "tiny.en" if args.model == "embedded" else Path(model_path).name},
        "versions": {"ours": our_versions()},
        "endpointing_ms": args.endpointing_ms,
        "definitions": metrics.__doc__,
        "audio_dir": str(default_audio_dir()),
        "loadavg_1m_start": round(os.getloadavg()[0], 2),
        "install": {},
        "systems": {},
    }
    _log(
        f"[run] {plan.mode} run, device {args.device}, model {model_path}, systems {systems}; "
        f"load average {result['loadavg_1m_start']} (other work on the machine skews the figures)"
    )

    # (1) peers' venvs: timed apart from the measurement
    peers_needed = {system_specs("", args.device, args.endpointing_ms)[name].peer for name in systems} - {None}
    for peer in sorted(p for p in peers_needed if p):
        spec = PEERS[peer]
        if args.skip_install and not spec.python.exists():
            result["install"][peer] = {"ok": False, "reason": "venv missing and --skip-install given"}
            continue
        outcome = ensure_peer_venv(spec, log=_log)
        result["install"][peer] = asdict(outcome)
        _log(
            f"[install] {peer}: ok={outcome.ok} reused={outcome.reused} {outcome.seconds:.1f} s {outcome.reason[:300]}"
        )
        if outcome.ok:
            result["versions"][peer] = installed_versions(
                spec, ("whisper-live", "whisperlivekit", "faster-whisper", "ctranslate2", "torch", "websockets")
            )

    measure_start = time.monotonic()
    install_s = sum(i.get("seconds", 0.0) for i in result["install"].values() if not i.get("reused"))
    # quick mode keeps the whole command under 10 minutes, a first-time install of the peers included
    budget = None if plan.budget_s is None else max(360.0, plan.budget_s - install_s)
    deadline = measure_start + budget if budget else None
    result["budget_s"] = budget
    exit_code = 0
    try:
        # (2) the core alone
        if not args.skip_core:
            from .decode_core import run_core_benchmark

            try:
                result["decode_core"] = run_core_benchmark(
                    model_path, args.device, list(plan.core_batch_sizes), plan.core_utterances, log=_log
                )
            except Exception as exc:
                result["decode_core"] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
                _log(f"[decode_core] FAILED: {exc}")

        # (3) streaming sweep per system
        recordings = load_long_recordings()
        warm_wav = log_dir / "warmup.wav"
        write_wav_int16(warm_wav, plan_excerpts(recordings, 1, 5.0)[0].samples)
        specs = system_specs(
            model_path, args.device, args.endpointing_ms, args.ours_args.split() or None, warmup_wav=str(warm_wav)
        )
        for i, name in enumerate(systems):
            remaining = systems[i + 1 :]
            reserve = sum(level_seconds(plan, s) + 20 for s in remaining) + 45  # level 1 of the rest + offline
            install = result["install"].get(specs[name].peer or "")
            if install is not None and not install.get("ok"):
                result["systems"][name] = {
                    "label": specs[name].label,
                    "status": "not installed",
                    "reason": install.get("reason"),
                    "levels": [],
                    "capacity": None,
                }
                continue
            result["systems"][name] = sweep_system(
                specs[name], plan, recordings, args.endpointing_ms, deadline, reserve, log_dir
            )

        # (4) offline reference on the very excerpts that were streamed
        distinct: dict[tuple[str, float], Excerpt] = {}
        max_clients = max((lv["clients"] for s in result["systems"].values() for lv in s.get("levels", [])), default=0)
        for ex in plan_excerpts(recordings, max_clients, plan.excerpt_s) if max_clients else []:
            distinct.setdefault((ex.source, round(ex.offset_s, 3)), ex)
        if distinct:
            t0 = time.monotonic()
            offline = offline_reference(model_path, args.device, distinct)
            result["offline_reference"] = {
                "engine": "faster-whisper WhisperModel.transcribe, beam 5",
                "excerpts": len(distinct),
                "seconds": round(time.monotonic() - t0, 1),
                "texts": [{"source": src, "offset_s": off, "text": text} for (src, off), text in offline.items()],
            }
            for name, system in result["systems"].items():
                attach_wer_summary(system, offline, recordings, plan)
                by_level = "  ".join(
                    f"N={lv['clients']} {metrics.pct(lv['wer'])}/{metrics.pct(lv.get('offline_wer_same_audio'))}"
                    for lv in system.get("levels", [])
                )
                if by_level:
                    _log(f"[wer] {name:15s} streamed/offline by level: {by_level}")
        result["summary"] = summarize(result["systems"])
        result["summary_markdown"] = markdown_table(result["summary"], args.endpointing_ms)
    except KeyboardInterrupt:
        exit_code = 130
        result["interrupted"] = True
    finally:
        result["measure_seconds"] = round(time.monotonic() - measure_start, 1)
        result["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
        paths = write_results(result, out_dir, args.device, plan.mode, args.tag)
        _log(f"[run] results: {', '.join(str(p) for p in paths)}")
    if "summary_markdown" in result:
        _log(result["summary_markdown"])
    return exit_code


def write_results(result: dict[str, Any], out_dir: Path, device: str, mode: str, tag: str) -> list[Path]:
    suffix = f"_{tag}" if tag else ""
    stamp = result["date_utc"].replace(":", "").replace("-", "")[:15]
    latest = out_dir / f"stream_{device}_{mode}{suffix}.json"
    dated = out_dir / "history" / f"stream_{device}_{mode}{suffix}_{stamp}.json"
    dated.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1, default=str)
    tmp = latest.with_suffix(".json.tmp")
    tmp.write_text(text)
    tmp.replace(latest)
    dated.write_text(text)
    paths = [latest, dated]
    try:
        from .plots import plot_core, plot_latency

        paths.append(plot_latency(result, out_dir / f"latency_{device}_{mode}{suffix}.png"))
        if isinstance(result.get("decode_core"), dict) and result["decode_core"].get("rows"):
            paths.append(plot_core(result["decode_core"], out_dir / f"decode_core_{device}_{mode}{suffix}.png"))
    except ImportError as exc:
        _log(f"[run] no plots ({exc}); install the 'bench' extra (matplotlib)")
    return paths


if __name__ == "__main__":
    sys.exit(main())
