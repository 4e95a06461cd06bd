"""The capacity model's simulator on toy service times with known answers, its fit, and its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.capacity.service import SHAPES, Coefficients, constant, decoder_flops_per_token, fit, gpu_model
from benchmarks.capacity.sim import Policy, Simulation
from benchmarks.capacity.workload import CALL_CENTER, Workload
from benchmarks.capacity_model import capacity, simulate

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
QUIET = Policy(partials=False, speculative=False, final_context_s=0.0)
# One stream, turns of 3 s with no breaths, 2 s pauses: every utterance ends on a pause longer than endpointing.
STEADY = Workload("steady", (3.0, 3.0), (2.0, 2.0), (3.0, 3.0), (0.0, 0.0))


def test_one_stream_latency_is_endpointing_plus_service() -> None:
    result = Simulation(constant(0.1), QUIET).run(STEADY, 1, 30.0, warmup_s=0.0, count_cut=True)
    assert result.finals == 6
    assert result.final_latency_p50_s == pytest.approx(0.6)
    assert result.final_latency_p95_s == pytest.approx(0.6)
    assert result.unfinished_finals == 0


def test_speculative_final_done_before_the_endpoint_costs_nothing() -> None:
    policy = Policy(partials=False, final_context_s=0.0, heard_tail_s=0.2)
    fast = Simulation(constant(0.1), policy).run(STEADY, 1, 30.0, warmup_s=0.0)
    assert fast.final_latency_p95_s == pytest.approx(0.5)  # asked 0.2 s into the pause, back at 0.3 s, sent at 0.5 s
    slow = Simulation(constant(0.4), policy).run(STEADY, 1, 30.0, warmup_s=0.0)
    assert slow.final_latency_p95_s == pytest.approx(0.6)  # asked 0.2 s into the pause + 0.4 s decode


def test_saturation_when_offered_work_exceeds_the_model() -> None:
    policy = Policy(partials=False, speculative=False, final_context_s=0.0, max_batch_size=1)
    # about one final per 5 s per stream at 0.5 s each: 4 streams offer 0.4 s of work per second, 24 offer 2.4
    light = Simulation(constant(0.5), policy).run(STEADY, 4, 60.0, warmup_s=5.0)
    heavy = Simulation(constant(0.5), policy).run(STEADY, 24, 60.0, warmup_s=5.0)
    assert light.final_latency_p95_s <= 0.5 + 0.5 * 4
    assert light.unfinished_finals == 0
    assert heavy.utilisation > 0.95
    assert heavy.final_latency_p95_s > 10.0


def test_finals_go_before_partials() -> None:
    """Partials alone would need far more than the model has; finals still wait at most for the call under way
    and the finals ahead of them, while partial cadence degrades instead."""
    policy = Policy(speculative=False, final_context_s=0.0, max_batch_size=1)
    result = Simulation(constant(0.2), policy).run(CALL_CENTER, 8, 60.0, warmup_s=5.0, seed=3)
    assert result.utilisation > 0.95  # partials fill every idle moment
    assert result.partial_interval_p50_s > 1.0  # asked every 0.5 s, delivered far less often
    assert result.final_latency_p95_s < 0.5 + 0.2 * 4
    assert result.unfinished_finals == 0


def test_finals_cut_by_the_end_of_streams_count_only_when_asked() -> None:
    """Streams that all end together end their last utterances together: a burst of finals no steady state has."""
    steady = Simulation(constant(0.1), QUIET).run(STEADY, 1, 30.0, warmup_s=0.0)
    assert steady.finals == 5


def test_batching_raises_capacity() -> None:
    """With a call costing as much for 16 items as for one, batching holds many more streams than batch 1."""
    one = capacity(lambda n: simulate(constant(0.2), Policy(max_batch_size=1), CALL_CENTER, n, 30.0, 5.0, 1))[0]
    many = capacity(lambda n: simulate(constant(0.2), Policy(max_batch_size=16), CALL_CENTER, n, 30.0, 5.0, 1))[0]
    assert 0 < one < many


def test_fit_recovers_known_coefficients() -> None:
    truth = Coefficients(0.02, 0.01, 0.005, 0.003)
    points = [(b, w, truth.seconds(b, w)) for b in (1, 2, 4, 8, 16) for w in (4, 6, 10, 20, 30)]
    got = fit(points)
    for name in ("a", "w", "b", "bw"):
        assert getattr(got, name) == pytest.approx(getattr(truth, name), rel=1e-6)


def test_larger_models_cost_more_per_call() -> None:
    tiny = Coefficients(0.014, 0.0, 0.008, 0.0)
    calls = {m: gpu_model(m, tiny).call_s("final", 8, 10.0) for m in SHAPES}
    assert calls["tiny.en"] < calls["base"] < calls["large-v3-turbo"]
    assert decoder_flops_per_token(SHAPES["large-v3-turbo"]) > 5 * decoder_flops_per_token(SHAPES["tiny.en"])
    assert "ESTIMATE" in gpu_model("base", tiny).source


def test_recorded_result_has_the_documented_shape() -> None:
    path = RESULTS / "capacity_quick.json"
    if not path.exists():
        pytest.skip("benchmarks/results/capacity_quick.json not generated")
    result = json.loads(path.read_text())
    assert result["kind"] == "capacity_model"
    for check in result["validation"].values():
        assert {"real_capacity", "sim_capacity", "capacity_within_one_level", "levels"} <= set(check)
        for level in check["levels"]:
            assert {"streams", "real_p95_s", "sim_p95_s", "relative_error"} <= set(level)
    for model in SHAPES:
        entry = result[f"gpu_{model}"]
        assert entry["capacity_streams"] > 0
        assert set(entry["gpus"]) == {"1000", "10000"}
        assert entry["gpus"]["10000"] >= entry["gpus"]["1000"]


def test_measure_times_the_real_backend_at_the_windows_asked_for() -> None:
    """Each grid cell decodes speech cut so the backend's own window rule lands on the cell's window (real speech
    from ``BENCH_AUDIO_DIR``, else espeak-ng's, as the benchmarks do)."""
    from benchmarks.capacity.measure import measure

    result = measure(1, (1,), (4, 8), log=lambda *_: None)
    assert {(r["kind"], r["beam"]) for r in result["rows"]} == {("partial", 1), ("final", 1), ("final", 5)}
    for row in result["rows"]:
        assert row["windows_seen"] == [float(row["window_s"])]
        assert row["min_s"] > 0
        assert row["words"] > 0  # real speech, transcribed
