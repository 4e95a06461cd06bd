"""The dialect benchmark's pairing: a dialect's final is compared with protocol v1's final of the same utterance."""

from __future__ import annotations

import pytest

from benchmarks.dialects import compare_levels, paired_differences, reference_of, summarize_pairs
from benchmarks.stream_load import ClientResult


def client(points: list[tuple[float, float]]) -> ClientResult:
    result = ClientResult(0, "src", 0.0, 10.0)
    result.final_points = points
    result.final_latencies_s = [lat for _, lat in points]
    return result


def test_pairs_match_by_end_and_use_each_reference_once() -> None:
    native = client([(2.0, 0.50), (5.0, 0.60), (9.0, 0.55)])
    dialect = client([(2.05, 0.52), (5.0, 0.58), (7.0, 0.90), (9.1, 0.75)])
    # 7.0 has no utterance within the tolerance in the reference; each reference final pairs once
    assert paired_differences(native, dialect) == pytest.approx([0.02, -0.02, 0.20])
    assert paired_differences(client([(2.0, 0.5)]), client([(2.0, 0.6), (2.1, 0.7)])) == pytest.approx([0.1])


def test_pair_summary_in_milliseconds_with_count() -> None:
    row = summarize_pairs("deepgram", "native+words", 16, [0.001, 0.003, 0.002])
    assert row["pairs"] == 3
    assert row["difference_ms"]["p50"] == pytest.approx(2.0)
    assert row["against"] == "native+words" == reference_of("deepgram")
    assert reference_of("openai_realtime") == "native"
    assert reference_of("deepgram", ["native", "deepgram"]) == "native"  # words estimated: v1 without words


def test_level_comparison_against_the_right_reference() -> None:
    def row(system: str, p50: float, p95: float, passed: bool = True) -> dict[str, object]:
        return {
            "system": system,
            "clients": 8,
            "final_latency_s": {"p50": p50, "p95": p95},
            "passed": passed,
            "wer": 0.1,
        }

    rows = [row("native", 0.6, 0.9), row("native+words", 0.7, 1.0), row("deepgram", 0.71, 1.3, False),
            row("openai_realtime", 0.59, 0.95)]  # fmt: skip
    by = {c["protocol"]: c for c in compare_levels(rows)}
    assert by["deepgram"]["against"] == "native+words"
    assert by["deepgram"]["p50_minus_native_ms"] == pytest.approx(10.0)
    assert by["deepgram"]["passed"] is False and by["deepgram"]["native_passed"] is True
    assert by["openai_realtime"]["p95_minus_native_ms"] == pytest.approx(50.0)
    assert set(by) == {"native+words", "deepgram", "openai_realtime"}


def test_paired_start_order_rotates_between_excerpts() -> None:
    from benchmarks.dialects import start_delay_s

    firsts = []
    for k in range(4):
        delays = [start_delay_s(k, 4, (j + k) % 4) for j in range(4)]
        firsts.append(delays.index(min(delays)))
    assert sorted(firsts) == [0, 1, 2, 3]  # each protocol starts first for one excerpt
