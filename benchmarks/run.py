"""One command for the whole benchmark: core, streaming sweep of every system, offline reference, JSON, plots.

    python -m benchmarks.run --quick          # about 10 minutes: a time budget ends the capacity searches
    python -m benchmarks.run                  # full: longer excerpts, no budget, the whole core grid
    python -m benchmarks.run --device cuda --model /path/to/ct2-model
    python -m benchmarks.run --quick --systems ours --workloads turns --levels 1 --max-level 2 --turns-s 8 \
        --single-finals 3 --nonspeech-s 3 --skip-core --output-dir /tmp/bench   # a dry run of the harness

Order of work: (1) peer venvs are created when missing (timed and printed apart from the measurement); (2) the
Whisper core alone (``decode_core``); (3) for each system (ours, ours naive, WhisperLive with and without
``--batch``, WhisperLiveKit with SimulStreaming and with LocalAgreement) and
each workload (``workloads``: long recordings, conversational turns) its server is started and warmed up, its
non-speech word rate and single-stream latency are probed, and its capacity is searched (``sweep``) until
found or the time budget ends; (4) faster-whisper's offline transcription of the very audio that was streamed,
as the accuracy reference; (5) results JSON (``benchmarks/results/stream_<device>_<mode>.json``, the latest
run; a dated copy beside it; ``results``) and PNG plots (``report``).

Every system serves the same CTranslate2 model directory; nothing downloads a model. A peer that cannot be
installed or started is reported with the reason under ``systems.<name>.status``; the turns workload's results
are under ``systems.<name>@turns``. The CPU is shared by the
server and the load generator; the load average before and after is recorded, since other work on the machine
skews every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import metrics
from .accuracy import attach_wer_summary, by_level_line, distinct_excerpts, offline_reference
from .audio import default_audio_dir, load_long_recordings, plan_excerpts, write_wav_int16
from .peers import PEERS, ensure_peer_venv, ensure_whisper_torch, installed_versions
from .report import base_name, markdown_table, summarize, system_key, write_results
from .results import RunResult, SystemResult
from .servers import system_specs
from .sweep import Plan, level_seconds, sweep_system
from .workloads import LongRecordings, Turns, Workload, load_turn_utterances

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_SYSTEMS = ("ours", "ours_naive", "whisperlive", "whisperlive_batch", "whisperlivekit", "whisperlivekit_la")
ALL_SYSTEMS = DEFAULT_SYSTEMS
WORKLOADS = ("long", "turns")


# CPU features that decide how fast CTranslate2 runs int8 (its kernels use the widest available): on 2 cores the
# Whisper core ran 2.2-2.3x faster on an Intel Xeon with AVX-512 VNNI and AMX than on an AMD EPYC with AVX2 only
# (benchmarks/README.md, run of 2026-12-01 09:50 UTC), so results name them
INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def machine_info(device: str) -> dict[str, Any]:
    cpu = ""
    flags: list[str] = []
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        lines = fh.read().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
        present = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
        flags = [f for f in INT8_CPU_FLAGS if f in present]
    mem_gb = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as fh:
        mem_gb = round(int(fh.readline().split()[1]) / 2**20, 1)
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_int8_flags": flags,
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


# ---- main -------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the short version (a time budget stops the search)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="embedded", help="CTranslate2 Whisper dir ('embedded': tiny.en)")
    parser.add_argument(
        "--systems", default=",".join(DEFAULT_SYSTEMS), help="comma-separated, from " + ", ".join(ALL_SYSTEMS)
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, from long, turns")
    parser.add_argument("--levels", default="", help="the plan's concurrency levels (the search goes on past them)")
    parser.add_argument("--excerpt-s", type=float, default=0.0, help="override seconds of audio per client (long)")
    parser.add_argument("--turns-s", type=float, default=0.0, help="override seconds of audio per client (turns)")
    parser.add_argument("--single-finals", type=int, default=-1, help="finals of the single-stream probe (0: none)")
    parser.add_argument("--nonspeech-s", type=float, default=-1.0, help="seconds per non-speech signal (0: none)")
    parser.add_argument("--budget-s", type=float, default=0.0, help="override the time budget (seconds)")
    parser.add_argument("--max-level", type=int, default=0, help="never search past this many streams")
    parser.add_argument("--endpointing-ms", type=int, default=500)
    parser.add_argument("--skip-core", action="store_true", help="skip the decode_core part")
    parser.add_argument("--skip-offline", action="store_true", help="skip the offline accuracy reference")
    parser.add_argument("--skip-install", action="store_true", help="never install peer venvs")
    parser.add_argument("--ours-args", default="", help="extra flags for our server (both modes), quoted")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    args = parser.parse_args(argv)
    unknown = set(args.systems.split(",")) - set(ALL_SYSTEMS) - {""}
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)}")
    if set(args.workloads.split(",")) - set(WORKLOADS) - {""}:
        parser.error(f"unknown workloads in {args.workloads!r}; choose from {', '.join(WORKLOADS)}")
    return args


def plan_from(args: argparse.Namespace) -> Plan:
    plan = Plan.for_mode(args.quick)
    changes: dict[str, Any] = {}
    if args.levels:
        changes["levels"] = tuple(int(x) for x in args.levels.split(","))
    if args.excerpt_s:
        changes["excerpt_s"] = args.excerpt_s
    if args.turns_s:
        changes["turns_s"] = args.turns_s
    if args.single_finals >= 0:
        changes["single_stream_finals"] = args.single_finals
    if args.nonspeech_s >= 0:
        changes["nonspeech_s"] = args.nonspeech_s
    if args.budget_s:
        changes["budget_s"] = args.budget_s
    if args.max_level:
        changes["level_limit"] = args.max_level
    return dataclasses.replace(plan, **changes)


def install_peers(systems: list[str], args: argparse.Namespace, versions: dict[str, Any]) -> dict[str, Any]:
    """Create the peers' venvs when missing (timed apart from the measurement)."""
    install: dict[str, Any] = {}
    peers_needed = {system_specs("", args.device, args.endpointing_ms)[name].peer for name in systems} - {None}
    for peer in sorted(p for p in peers_needed if p):
        spec = PEERS[peer]
        if args.skip_install and not spec.python.exists():
            install[peer] = {"ok": False, "reason": "venv missing and --skip-install given"}
            continue
        outcome = ensure_peer_venv(spec, log=_log)
        install[peer] = dataclasses.asdict(outcome)
        _log(
            f"[install] {peer}: ok={outcome.ok} reused={outcome.reused} {outcome.seconds:.1f} s {outcome.reason[:300]}"
        )
        if outcome.ok:
            versions[peer] = installed_versions(
                spec, ("whisper-live", "whisperlivekit", "faster-whisper", "ctranslate2", "torch", "websockets")
            )
    return install


def make_workloads(names: list[str], plan: Plan) -> list[Workload]:
    out: list[Workload] = []
    for name in names:
        if name == "long":
            out.append(LongRecordings(tuple(load_long_recordings()), plan.excerpt_s))
        elif name == "turns":
            audio_dir = default_audio_dir()
            if not (audio_dir / "manifest.jsonl").exists():
                raise SystemExit(f"the turns workload needs real recordings: {audio_dir} is absent")
            out.append(Turns(tuple(load_turn_utterances(audio_dir)), plan.turns_s))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    systems = [s for s in args.systems.split(",") if s]
    workload_names = [w for w in args.workloads.split(",") if w]

    from stream_server.config import embedded_model_path

    model_path = embedded_model_path() if args.model == "embedded" else args.model
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = Path(os.environ.get("BENCH_LOG_DIR") or tempfile.mkdtemp(prefix="bench-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    started_wall = dt.datetime.now(dt.timezone.utc)
    head: dict[str, Any] = {
        "kind": "stream-server streaming benchmark",
        "date_utc": started_wall.isoformat(timespec="seconds"),
        "mode": plan.mode,
        "plan": dataclasses.asdict(plan),
        "machine": machine_info(args.device),
        "model": {"path": model_path, "id": "tiny.en" if args.model == "embedded" else Path(model_path).name},
        "versions": {"ours": our_versions()},
        "endpointing_ms": args.endpointing_ms,
        "definitions": metrics.__doc__,
        "audio_dir": str(default_audio_dir()),
        "loadavg_1m_start": round(os.getloadavg()[0], 2),
    }
    _log(
        f"[run] {plan.mode} run, device {args.device}, model {model_path}, systems {systems}, workloads "
        f"{workload_names}; load average {head['loadavg_1m_start']} (other work on the machine skews the figures)"
    )
    head["install"] = install_peers(systems, args, head["versions"])
    if "whisperlivekit" in systems and head["install"].get("whisperlivekit", {}).get("ok"):
        torch_copy = ensure_whisper_torch(model_path, head["model"]["id"])
        head["install"]["whisper_torch"] = dataclasses.asdict(torch_copy)
        _log(f"[install] PyTorch copy of the model for SimulStreaming: ok={torch_copy.ok} {torch_copy.reason[:300]}")
    measure_start = time.monotonic()
    install_s = sum(i.get("seconds", 0.0) for i in head["install"].values() if not i.get("reused"))
    # quick mode keeps the whole command within its budget, a first-time install of the peers included (at
    # least 360 s of measuring after an install, unless a smaller budget was asked for)
    budget = None if plan.budget_s is None else max(min(360.0, plan.budget_s), plan.budget_s - install_s)
    deadline = measure_start + budget if budget else None
    results: dict[str, SystemResult] = {}
    tail: dict[str, Any] = {"budget_s": budget}
    exit_code = 0
    try:
        if not args.skip_core:
            tail["decode_core"] = core_benchmark(model_path, args.device, plan)
        workloads = make_workloads(workload_names, plan)
        warm_wav = log_dir / "warmup.wav"
        write_wav_int16(warm_wav, plan_excerpts(load_long_recordings(), 1, 5.0)[0].samples)
        specs = system_specs(
            model_path, args.device, args.endpointing_ms, args.ours_args.split() or None, warmup_wav=str(warm_wav)
        )
        runs = [(name, w) for name in systems for w in workloads]
        for i, (name, workload) in enumerate(runs):
            key = system_key(name, workload.name)
            reserve = sum(level_seconds(plan, s, w.seconds) + 20 for s, w in runs[i + 1 :]) + 45
            install = head["install"].get(specs[name].peer or "")
            if install is not None and not install.get("ok"):
                results[key] = SystemResult(
                    label=specs[name].label,
                    protocol=specs[name].protocol,
                    workload=workload.name,
                    status="not installed",
                    reason=install.get("reason"),
                )
                continue
            if specs[name].unavailable:
                _log(f"[stream] {name}: cannot run: {specs[name].unavailable}")
                results[key] = SystemResult(
                    label=specs[name].label,
                    protocol=specs[name].protocol,
                    notes=list(specs[name].notes),
                    workload=workload.name,
                    status="cannot run",
                    reason=specs[name].unavailable,
                )
                continue
            first_of_system = workload is workloads[0]
            results[key] = sweep_system(
                specs[name],
                plan,
                workload,
                args.endpointing_ms,
                deadline,
                reserve,
                log_dir,
                log=_log,
                nonspeech=first_of_system,
            )
        if not args.skip_offline:
            results = attach_offline(results, workloads, model_path, args.device, tail)
        tail["summary"] = summarize(results)
        tail["summary_markdown"] = markdown_table(tail["summary"], args.endpointing_ms)
    except KeyboardInterrupt:
        exit_code = 130
        tail["interrupted"] = True
    finally:
        tail["measure_seconds"] = round(time.monotonic() - measure_start, 1)
        tail["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
        run = RunResult(**head, systems=results, **tail)
        paths = write_results(run, out_dir, args.device, plan.mode, args.tag, log=_log)
        _log(f"[run] results: {', '.join(str(p) for p in paths)}")
    if "summary_markdown" in tail:
        _log(tail["summary_markdown"])
    return exit_code


def core_benchmark(model_path: str, device: str, plan: Plan) -> dict[str, Any]:
    """The Whisper core alone (``decode_core``); a failure is recorded, not fatal."""
    from .decode_core import run_core_benchmark

    try:
        return run_core_benchmark(model_path, device, list(plan.core_batch_sizes), plan.core_utterances, log=_log)
    except Exception as exc:
        _log(f"[decode_core] FAILED: {exc}")
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}


def attach_offline(
    results: dict[str, SystemResult], workloads: list[Workload], model_path: str, device: str, tail: dict[str, Any]
) -> dict[str, SystemResult]:
    """faster-whisper offline on the very excerpts that were streamed, and every system's WER beside it."""
    excerpts = []
    for workload in workloads:
        levels = [lv.clients for key, s in results.items() if base_name(key)[1] == workload.name for lv in s.levels]
        excerpts += workload.excerpts(max(levels)) if levels else []
    distinct = distinct_excerpts(excerpts)
    if not distinct:
        return results
    t0 = time.monotonic()
    offline = offline_reference(model_path, device, distinct)
    tail["offline_reference"] = {
        "engine": "faster-whisper WhisperModel.transcribe, beam 5",
        "excerpts": len(distinct),
        "seconds": round(time.monotonic() - t0, 1),
        "texts": [{"source": src, "offset_s": off, "text": text} for (src, off), text in offline.items()],
    }
    out = {}
    for key, system in results.items():
        out[key] = attach_wer_summary(system, offline)
        if out[key].levels:
            _log(f"[wer] {key:20s} streamed/offline by level: {by_level_line(out[key])}")
    return out


if __name__ == "__main__":
    sys.exit(main())
