"""The run's summary (one row per system and workload, ratios against ours), its markdown table, and the
files a run writes (the latest JSON, a dated copy, PNG plots)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import metrics
from .results import RunResult, SystemResult

OURS = "ours"
WORKLOAD_SEPARATOR = "@"  # result key of a system on a workload other than the long recordings: "ours@turns"


def system_key(system: str, workload: str) -> str:
    return system if workload == "long" else f"{system}{WORKLOAD_SEPARATOR}{workload}"


def base_name(key: str) -> tuple[str, str]:
    """(system, workload) of a result key."""
    system, _, workload = key.partition(WORKLOAD_SEPARATOR)
    return system, workload or "long"


def summary_row(s: SystemResult) -> dict[str, Any]:
    levels = {lv.clients: lv for lv in s.levels}
    one = levels.get(1)
    at_cap = levels.get(s.capacity) if s.capacity else None
    probe = s.single_stream if s.single_stream and "final_latency_s" in s.single_stream else None
    single = probe["final_latency_s"] if probe else (one.final_latency_s if one else None)
    return {
        "label": s.label,
        "workload": s.workload or "long",
        "status": s.status,
        "reason": s.reason,
        "capacity_streams": s.capacity,
        "max_streams_kept_up": s.max_streams_kept_up,
        "single_stream_final_latency_s": single,
        "single_stream_source": "probe" if probe else "level 1",
        # finals that waited for the endpointing silence, apart from those cut by the length rule
        "single_stream_endpointed_final_latency_s": ((probe or {}).get("final_latency_by_reason_s") or {}).get(
            "endpoint"
        ),
        "single_stream_partial_lag_p50_s": one.partial_lag_s["p50"] if one else None,
        "at_capacity_final_latency_s": at_cap.final_latency_s if at_cap else None,
        "at_capacity_final_latency_by_reason_s": at_cap.final_latency_by_reason_s if at_cap else None,
        "at_capacity_latency_breakdown_s": at_cap.latency_breakdown_s if at_cap else None,
        "at_capacity_cpu_cores_used": at_cap.server.get("cpu_cores_used") if at_cap else None,
        "at_capacity_peak_rss_mb": at_cap.server.get("peak_rss_mb") if at_cap else None,
        "nonspeech_words_per_minute": (s.nonspeech or {}).get("words_per_minute"),
        "wer_pooled": s.wer_pooled,
        "offline_faster_whisper_wer_same_audio": s.offline_faster_whisper_wer_same_audio,
        "stopped": s.stopped,
    }


def summarize(systems: dict[str, SystemResult]) -> dict[str, Any]:
    """One row per system and workload; each system's ratios against ours on the same workload."""
    rows = {key: summary_row(s) for key, s in systems.items()}
    ratios = {}
    for key, row in rows.items():
        name, workload = base_name(key)
        if name == OURS:
            continue
        ours = rows.get(system_key(OURS, workload), {})
        ours_one = ours.get("single_stream_final_latency_s") or {}
        theirs_one = row.get("single_stream_final_latency_s") or {}
        ratios[key] = {
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


def _s(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _n(summary: dict[str, Any]) -> str:
    return f" (n={summary['count']})" if summary.get("count") is not None else ""


def markdown_table(summary: dict[str, Any], endpointing_ms: int) -> str:
    """The README's results table: every percentile with its sample count."""
    head = (
        "| system | workload | capacity (streams, p95 ≤ 1.2 s) | streams kept up | final latency 1 stream "
        "p50 / p95 / p99 (s) | p95 at capacity (s) | WER streamed | WER faster-whisper offline, same audio "
        "| non-speech words/min |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in summary["systems"].values():
        one = row.get("single_stream_final_latency_s") or {}
        cap = row.get("at_capacity_final_latency_s") or {}
        status = "" if row.get("status") == "ok" else f" ({row.get('status')}: {str(row.get('reason'))[:80]})"
        wpm = row.get("nonspeech_words_per_minute")
        wpm_text = ", ".join(f"{k} {v:.1f}" for k, v in wpm.items()) if wpm else "n/a"
        lines.append(
            f"| {row.get('label')}{status} | {row.get('workload', 'long')} | {row.get('capacity_streams')} | "
            f"{row.get('max_streams_kept_up')} | {_s(one.get('p50'))} / {_s(one.get('p95'))} / "
            f"{_s(one.get('p99'))}{_n(one)} | {_s(cap.get('p95'))}{_n(cap)} | {metrics.pct(row.get('wer_pooled'))} "
            f"| {metrics.pct(row.get('offline_faster_whisper_wer_same_audio'))} | {wpm_text} |"
        )
    return head + "\n".join(lines) + f"\n\nendpointing_ms = {endpointing_ms} for every stream of ours.\n"


def write_results(result: RunResult, out_dir: Path, device: str, mode: str, tag: str, log: Any = print) -> list[Path]:
    """The latest JSON (``stream_<device>_<mode>[_tag].json``, replaced atomically), a dated copy under
    ``history/``, and the plots when matplotlib is installed."""
    suffix = f"_{tag}" if tag else ""
    stamp = result.date_utc.replace(":", "").replace("-", "")[:15]
    latest = out_dir / f"stream_{device}_{mode}{suffix}.json"
    dated = out_dir / "history" / f"stream_{device}_{mode}{suffix}_{stamp}.json"
    dated.parent.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    text = json.dumps(data, indent=1, default=str)
    tmp = latest.with_suffix(".json.tmp")
    tmp.write_text(text)
    tmp.replace(latest)
    dated.write_text(text)
    paths = [latest, dated]
    try:
        from .plots import plot_breakdown, plot_core, plot_latency

        paths.append(plot_latency(data, out_dir / f"latency_{device}_{mode}{suffix}.png"))
        breakdown = plot_breakdown(data, out_dir / f"breakdown_{device}_{mode}{suffix}.png")
        paths.extend([breakdown] if breakdown else [])
        if isinstance(result.decode_core, dict) and result.decode_core.get("rows"):
            paths.append(plot_core(result.decode_core, out_dir / f"decode_core_{device}_{mode}{suffix}.png"))
    except ImportError as exc:
        log(f"[run] no plots ({exc}); install the 'bench' extra (matplotlib)")
    return paths


def load_results(path: Path) -> RunResult:
    """A results JSON written by this or an earlier version of the benchmark."""
    return RunResult.from_json(json.loads(path.read_text()))
