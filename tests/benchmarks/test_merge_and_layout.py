"""A capacity search run in several invocations merges into one result by the single run's rule; the
many-cores layout benchmark parses its layouts and measures both sides on the real model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import cpu_layout, metrics
from benchmarks.merge import merge_runs
from benchmarks.results import RunResult, replace

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _split_run(run: RunResult, key: str, below: int) -> tuple[RunResult, RunResult]:
    """The run as two invocations: levels under ``below`` in the first, the rest in the second."""
    system = run.systems[key]

    def part(keep: Callable[[int], bool], **changes: Any) -> RunResult:
        levels = [lv for lv in system.levels if keep(lv.clients)]
        search = [s for s in system.search or [] if keep(s["clients"])]
        capacity = metrics.capacity((lv.clients, lv.passed) for lv in levels)
        return replace(run, systems={key: replace(system, levels=levels, search=search, capacity=capacity, **changes)})

    return part(lambda n: n < below), part(lambda n: n >= below, single_stream=None)


def test_a_search_split_over_two_runs_merges_back_to_the_same_capacity_and_levels():
    run = RunResult.from_json(json.loads((RESULTS / "stream_cpu_quick_ours.json").read_text()))
    key = "ours@turns"
    original = run.systems[key]
    assert original.capacity and any(not lv.passed for lv in original.levels)
    first, second = _split_run(run, key, below=original.capacity)
    assert first.systems[key].capacity != original.capacity  # each half alone gets it wrong

    merged = merge_runs([("a.json", first), ("b.json", second)]).systems[key]

    assert [lv.clients for lv in merged.levels] == [lv.clients for lv in original.levels]
    assert merged.capacity == original.capacity
    assert merged.max_streams_kept_up == original.max_streams_kept_up
    assert merged.single_stream == original.single_stream  # from the run that probed it
    assert {s["run"] for s in merged.search or []} == {"a.json", "b.json"}
    assert merged.stopped and merged.stopped.startswith("searched in 2 runs")


def test_merged_result_round_trips_and_names_its_inputs():
    run = RunResult.from_json(json.loads((RESULTS / "stream_cpu_quick_ours.json").read_text()))
    first, second = _split_run(run, "ours@turns", below=16)
    merged = merge_runs([("a.json", first), ("b.json", second)])
    assert [m["file"] for m in merged.extra["merged_from"]] == ["a.json", "b.json"]
    assert RunResult.from_json(json.loads(json.dumps(merged.to_json()))).to_json() == merged.to_json()
    assert merged.summary_markdown and "| turns |" in merged.summary_markdown


def test_runs_of_different_devices_or_a_level_measured_twice_do_not_merge():
    run = RunResult.from_json(json.loads((RESULTS / "stream_cpu_quick_ours.json").read_text()))
    other = replace(run, machine={**run.machine, "device": "cuda"})
    with pytest.raises(ValueError, match="devices"):
        merge_runs([("a.json", run), ("b.json", other)])
    with pytest.raises(ValueError, match="measured twice"):
        merge_runs([("a.json", run), ("b.json", run)])


def test_layouts_parse_and_auto_splits_the_cores_in_powers_of_two():
    assert cpu_layout.parse_layouts("1x16,16x1", 16) == [(1, 16), (16, 1)]
    assert cpu_layout.parse_layouts("auto", 16) == [(1, 16), (2, 8), (4, 4), (8, 2), (16, 1)]
    assert cpu_layout.parse_layouts("auto", 2) == [(1, 2), (2, 1)]


def test_both_layouts_decode_real_speech_alone_and_saturated(shared_audio):
    from stream_server.config import embedded_model_path

    result = cpu_layout.run_layouts(
        embedded_model_path(), [(1, 2), (2, 1)], batch=2, rounds=1, alone_n=2, utterance_limit=4, log=lambda _: None
    )
    rows = result["rows"]
    assert [(r["workers"], r["threads"]) for r in rows] == [(1, 2), (2, 1)]
    for row in rows:
        assert row["alone_n"] == 2 and row["alone_p50_ms"] > 0
        assert row["saturated_batches"] == 2 and row["saturated_audio_s_per_s"] > 0
    assert result["best_throughput"] in {"1x2", "2x1"}
    assert result["throughput_ratio_best_vs_one_model"] >= 1.0


def test_audio_packed_for_a_gpu_machine_unpacks_to_the_same_samples(shared_audio, tmp_path):
    from benchmarks.audio import read_wav_int16
    from benchmarks.gpu_lease.pack import long_recording_segments, pack_audio
    from benchmarks.gpu_lease.unpack import unpack

    first, second, out = tmp_path / "a1", tmp_path / "a2", tmp_path / "audio"
    first.mkdir()
    second.mkdir()
    pack_audio(shared_audio, first, second, first_bytes=5_000_000)
    longs = long_recording_segments(shared_audio)
    assert longs and not any((first / n).exists() or (second / n).exists() for n in longs)  # rebuilt, not carried
    assert sum(f.stat().st_size for f in first.iterdir()) <= 5_000_000

    unpack([first, second], out)

    for name in longs:
        assert np.array_equal(read_wav_int16(out / name), read_wav_int16(shared_audio / name)), name
    for wav in [*first.glob("*.wav"), *second.glob("*.wav")]:
        assert np.array_equal(read_wav_int16(out / wav.name), read_wav_int16(shared_audio / wav.name))
