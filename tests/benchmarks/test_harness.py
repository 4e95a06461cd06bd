"""The benchmark harness's rules: the capacity search, typed results that still read old files, the workloads
(conversational turns, non-speech), the report, and the one subprocess launcher."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import workloads
from benchmarks.audio import SAMPLE_RATE
from benchmarks.launch import ServerProcess, free_port, http_ok
from benchmarks.report import markdown_table, summarize, system_key
from benchmarks.results import LevelResult, RunResult, SystemResult
from benchmarks.stream_load import ClientResult, summarize_level
from benchmarks.sweep import next_level

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
PLAN = (1, 2, 4, 8, 16, 32)


def search(capacity: int, plan: tuple[int, ...] = PLAN, limit: int = 512) -> list[tuple[int, str]]:
    """Run the search against a system that passes every level up to ``capacity``."""
    outcomes: dict[int, bool] = {}
    steps = []
    while (step := next_level(plan, outcomes, limit=limit)) is not None:
        steps.append(step)
        outcomes[step[0]] = step[0] <= capacity
    return steps


def test_search_follows_the_plan_then_bisects_below_a_failure():
    steps = search(5)
    assert [n for n, _ in steps] == [1, 2, 4, 8, 6, 5]
    assert [why for _, why in steps][-2:] == ["bisect", "bisect"]


def test_search_goes_past_the_plans_top_until_a_level_fails():
    steps = search(45)
    assert steps[6:] == [(64, "beyond the plan"), (48, "bisect"), (40, "bisect"), (44, "bisect")]
    # stops once the gap (44 passes, 48 fails) is within 1/8 of the last pass


def test_search_of_a_system_that_holds_no_stream_stops_at_once():
    assert search(0) == [(1, "plan")]


def test_search_stops_at_the_level_limit():
    steps = search(10_000, limit=100)
    assert steps[-1] == (100, "beyond the plan") and len(steps) == 8
    assert search(10_000, limit=3) == [(1, "plan"), (2, "plan"), (3, "beyond the plan")]


def test_search_ignores_a_pass_above_a_failure():
    assert next_level(PLAN, {1: True, 2: True, 4: False, 8: True}) == (3, "bisect")
    assert next_level(PLAN, {1: True, 2: True, 3: False, 4: False}) is None


@pytest.mark.parametrize("name", sorted(p.name for p in RESULTS.glob("stream_*.json")))
def test_old_results_load_and_write_back_unchanged(name):
    data = json.loads((RESULTS / name).read_text())
    run = RunResult.from_json(data)
    assert run.systems, name  # a run of ours, or of the peers and the naive baseline alone
    for key in run.systems:  # "ours", "ours@turns", "whisperlive_batch@turns", ...
        assert isinstance(run.systems[key], SystemResult)
        assert all(isinstance(lv, LevelResult) for lv in run.systems[key].levels)
        assert run.systems[key].capacity == data["systems"][key]["capacity"]
    assert run.to_json() == data


def test_a_result_of_the_turns_workload_round_trips_with_its_new_fields():
    level = summarize_level("ours", 100, 61.0, [_client(0, [0.5, 0.6, 1.4], ["endpoint", "endpoint", "max_length"])])
    assert level.final_reasons == {"endpoint": 2, "max_length": 1}
    assert level.final_latency_by_reason_s["max_length"]["count"] == 1
    system = SystemResult(label="ours", levels=[level], workload="turns", capacity=1, search=[{"clients": 1}])
    again = SystemResult.from_json(json.loads(json.dumps(system.to_json())))
    assert again == system
    assert "nonspeech" not in system.to_json() and "reason" not in system.to_json()


def _client(k: int, latencies: list[float], reasons: list[str], text: str = "hello world") -> ClientResult:
    points = [(5.0 * i, lat) for i, lat in enumerate(latencies)]
    return ClientResult(k, "x", 0.0, 60.0, list(latencies), points, reasons, transcript=text, reference=text)


def test_summary_and_table_give_every_percentile_its_count_and_compare_on_the_same_workload():
    def system(capacity: int, latency: float, workload: str) -> SystemResult:
        levels = [
            summarize_level("x", 100, 60.0, [_client(k, [latency] * 4, ["endpoint"] * 4) for k in range(n)])
            for n in (1, 2)
        ]
        return SystemResult(
            label=f"x {workload}",
            levels=levels,
            workload=workload,
            capacity=capacity,
            max_streams_kept_up=2,
            status="ok",
        )

    systems = {
        system_key("ours", "long"): system(2, 0.5, "long"),
        system_key("ours", "turns"): system(2, 0.6, "turns"),
        system_key("peer", "turns"): system(1, 1.2, "turns"),
    }
    assert list(systems) == ["ours", "ours@turns", "peer@turns"]
    summary = summarize(systems)
    assert summary["ratios_vs_ours"]["peer@turns"]["capacity_ours_over_theirs"] == 2.0
    assert summary["ratios_vs_ours"]["peer@turns"]["single_stream_p50_theirs_over_ours"] == pytest.approx(2.0)
    table = markdown_table(summary, 500)
    assert "| x turns | turns | 2 | 2 | 0.60 / 0.60 / 0.60 (n=4) | 0.60 (n=8) |" in table


def test_conversations_are_seeded_per_client_and_independent_of_the_level():
    pool = [  # "speech" that is never zero, so that the pauses can be measured
        workloads.Utterance(f"u{i}", np.full(int(d * SAMPLE_RATE), 1000 + i, dtype=np.int16), f"w{i}")
        for i, d in enumerate([2.0, 3.5, 5.0, 8.0, 12.0])
    ]
    turns = workloads.Turns(pool, seconds_per_client=60.0, seed=3)
    four, two = turns.excerpts(4), turns.excerpts(2)
    assert [e.reference for e in four[:2]] == [e.reference for e in two]
    assert np.array_equal(four[1].samples, two[1].samples)
    assert len({e.reference for e in four}) == 4
    for ex in four:
        assert 60.0 <= ex.duration_s <= 60.0 + 12.0 + 1.6
        voiced = np.abs(ex.samples) > 0
        edges = np.flatnonzero(np.diff(voiced.astype(np.int8)))  # speech on/off switches
        pauses = np.diff(edges)[1::2] / SAMPLE_RATE  # the silent stretches between utterances
        assert np.all((pauses >= 0.8 - 1e-3) & (pauses <= 1.6 + 1e-3)), pauses
        assert ex.utterances == len(ex.reference.split())
    assert turns.single_stream(30).utterances == 30


def test_turn_utterances_are_real_english_of_two_to_twelve_seconds(shared_audio):
    pool = workloads.load_turn_utterances(shared_audio)
    assert len(pool) >= 100
    assert all(2.0 - 0.05 <= u.duration_s <= 12.0 + 0.05 for u in pool)
    assert not any(u.name.startswith("dctts") for u in pool)


def test_nonspeech_signals_are_seeded_and_at_speech_level():
    a, b = workloads.nonspeech_signals(2.0, seed=1), workloads.nonspeech_signals(2.0, seed=1)
    assert sorted(a) == ["babble", "hum", "tones", "white"]
    for name, x in a.items():
        assert x.dtype == np.int16 and len(x) == 2 * SAMPLE_RATE and np.array_equal(x, b[name])
        rms_dbfs = 20 * np.log10(np.sqrt(np.mean(np.square(x.astype(np.float64)))) / 32767)
        assert rms_dbfs == pytest.approx(workloads.NONSPEECH_LEVEL_DBFS, abs=0.5), name
    assert not np.array_equal(a["white"], workloads.nonspeech_signals(2.0, seed=2)["white"])
    assert workloads.words_per_minute("thank you thank you", 30.0) == 8.0


def test_server_process_starts_waits_for_ready_and_stops_its_process_group(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]
    with ServerProcess(lambda p: [*command, str(p)], http_ok("/"), name="http", log_dir=tmp_path, port=port) as srv:
        assert srv.base_url == f"http://127.0.0.1:{port}" and srv.ws_url == f"ws://127.0.0.1:{port}"
        assert srv.process.poll() is None and srv.startup_s is not None
    assert srv.process.returncode == -signal.SIGTERM
    assert srv.log_path.parent == tmp_path


def test_server_process_that_exits_during_start_up_says_why(tmp_path):
    failing = ServerProcess(
        lambda p: [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"],
        http_ok("/"),
        log_dir=tmp_path,
    )
    with pytest.raises(RuntimeError, match="exited with 3:\nno model here"):
        failing.start(timeout_s=30)


def test_machine_record_names_the_cpu_features_int8_speed_depends_on():
    from benchmarks.run import INT8_CPU_FLAGS, machine_info

    info = machine_info("cpu")
    flags = info["cpu_int8_flags"]
    assert set(flags) <= set(INT8_CPU_FLAGS)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        present = next(
            (ln.split(":", 1)[1].split() for ln in cpuinfo.read_text().splitlines() if ln.startswith("flags")), []
        )
        assert flags == [f for f in INT8_CPU_FLAGS if f in present]
