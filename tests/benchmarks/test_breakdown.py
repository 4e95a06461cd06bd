"""Where the final latency goes, on the benchmark's side: the native adapter asks for each final's ``timing`` and
keeps it, a level pools the stages of every client's finals (all, and by end reason), the log line and the
stacked plot. No server, no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import metrics
from benchmarks.plots import plot_breakdown
from benchmarks.protocols import NativeAdapter
from benchmarks.results import LevelResult
from benchmarks.stream_load import ClientResult, summarize_level
from benchmarks.sweep import breakdown_line


def timing(endpointing: float, queue: float, decode: float, send: float, reason: str = "endpoint") -> dict:
    stages = {"endpointing_ms": endpointing, "queue_ms": queue, "decode_ms": decode, "send_ms": send}
    total = round(endpointing + queue + decode + send, 1)
    return {**stages, "total_ms": total, "speculative": decode == 0, "reason": reason}


def test_the_native_adapter_asks_for_timing_and_keeps_it():
    adapter = NativeAdapter()
    assert "timing=true" in adapter.url("ws://x")
    assert "timing" not in NativeAdapter(timing=False).url("ws://x")
    stages = {"endpointing_ms": 520.0, "queue_ms": 2.0, "decode_ms": 80.0, "send_ms": 0.3, "total_ms": 602.3}
    final = {"type": "final", "utterance_id": 0, "channel": 0, "start": 0, "end": 2.0, "text": "hi", "timing": stages}
    (event,) = adapter.feed(json.dumps(final), 3.0)
    assert event.timing == stages
    (plain,) = adapter.feed(json.dumps(final | {"utterance_id": 1, "timing": None} | {"end": 3.0}), 4.0)
    assert plain.timing is None


def test_breakdown_gives_median_and_p95_of_each_stage_with_counts():
    timings = [timing(500 + i, 10 * i, 100, 1) for i in range(11)]  # queue 0..100 ms
    breakdown = metrics.latency_breakdown(timings)
    assert breakdown is not None and breakdown["count"] == 11 and breakdown["speculative"] == 0
    assert breakdown["queue"] == {"count": 11, "p50": 0.05, "p95": 0.095}
    assert breakdown["decode"]["p50"] == breakdown["decode"]["p95"] == 0.1
    assert breakdown["endpointing"]["p50"] == 0.505
    assert breakdown["total"]["p50"] == pytest.approx(0.505 + 0.05 + 0.1 + 0.001)
    assert metrics.latency_breakdown([]) is None
    missing = metrics.latency_breakdown([{"queue_ms": 5.0}])  # a stage a final did not report is not a zero
    assert missing is not None and missing["queue"]["count"] == 1 and missing["decode"]["count"] == 0


def test_a_level_pools_every_clients_finals_and_splits_them_by_reason():
    def client(index: int, timings: list[dict]) -> ClientResult:
        lat = [t["total_ms"] / 1000 for t in timings]
        points = [(2.0 + 8 * i, x) for i, x in enumerate(lat)]
        return ClientResult(
            index, "a.wav", 0.0, 20.0, lat, points, [t["reason"] for t in timings], final_timings=timings
        )

    one = client(0, [timing(500, 5, 90, 1), timing(480, 0, 0, 1)])
    two = client(1, [timing(520, 50, 120, 2), timing(30, 20, 150, 1, "max_length")])
    level = summarize_level("ours", 100, 21.0, [one, two])
    breakdown = level.latency_breakdown_s
    assert breakdown is not None and set(breakdown) == {"all", "endpoint", "max_length"}
    assert breakdown["all"]["count"] == 4 and breakdown["all"]["speculative"] == 1
    assert breakdown["endpoint"]["count"] == 3 and breakdown["max_length"]["endpointing"]["p50"] == 0.03
    assert all("final_timings" not in row for row in level.per_client)
    assert LevelResult.from_json(json.loads(json.dumps(level.to_json()))).latency_breakdown_s == breakdown
    line = breakdown_line(breakdown)
    assert line.startswith("endpointing 0.49/") and "(n=4, speculative 1)" in line
    plain = summarize_level("whisperlive", 100, 21.0, [client(0, [])])
    assert plain.latency_breakdown_s is None and "latency_breakdown_s" not in plain.to_json()


def test_the_breakdown_is_plotted_stacked_for_the_systems_that_report_it(tmp_path: Path):
    def level(n: int, queue_ms: float) -> dict:
        timings = [timing(500, queue_ms, 100, 1) for _ in range(5)]
        return {"clients": n, "latency_breakdown_s": metrics.breakdown_by_reason(timings)}

    result = {
        "systems": {
            "ours@turns": {"label": "ours", "workload": "turns", "levels": [level(1, 2), level(8, 40)]},
            "whisperlive": {"label": "WhisperLive", "levels": [{"clients": 1}]},
        }
    }
    path = plot_breakdown(result, tmp_path / "breakdown.png")
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    assert plot_breakdown({"systems": {"whisperlive": result["systems"]["whisperlive"]}}, tmp_path / "x.png") is None
