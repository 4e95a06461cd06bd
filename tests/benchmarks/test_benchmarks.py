"""The benchmark's pure parts: percentiles, WER, kept-up and capacity rules, excerpt planning, each peer
protocol's message parsing, the WER summary. No server, no model, no network."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import metrics
from benchmarks.audio import SAMPLE_RATE, LongRecording, Utterance, make_excerpt, plan_excerpts
from benchmarks.protocols import NativeAdapter, WhisperLiveAdapter, WhisperLiveKitAdapter, parse_clock
from benchmarks.results import SystemResult
from benchmarks.stream_load import ClientResult, summarize_level
from benchmarks.sweep import scheduler_delta


@pytest.mark.parametrize("q", [0, 10, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy_linear(q):
    values = [0.3, 1.7, 0.9, 2.4, 0.1, 0.55, 1.2]
    assert metrics.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edge_cases():
    assert metrics.percentile([], 50) is None
    assert metrics.percentile([4.0], 99) == 4.0
    summary = metrics.summarize([1.0, 2.0, 3.0])
    assert summary["count"] == 3 and summary["p50"] == 2.0 and summary["max"] == 3.0
    assert metrics.summarize([])["p95"] is None


def test_latency_slope_flat_growing_and_unknown():
    flat = [(t, 0.8 + (0.1 if t % 2 else -0.1)) for t in range(0, 30, 3)]
    growing = [(t, 0.5 + 0.4 * t) for t in range(0, 30, 3)]
    assert abs(metrics.latency_slope(flat)) < 0.05
    assert metrics.latency_slope(growing) == pytest.approx(0.4)
    assert metrics.latency_slope(growing[:3]) is None  # too few points
    assert metrics.latency_slope([(1.0 + 0.1 * i, 1.0) for i in range(10)]) is None  # too short a span


def test_kept_up_and_level_rules():
    assert metrics.kept_up(0.01, clients_ok=True)
    assert metrics.kept_up(None, clients_ok=True)
    assert not metrics.kept_up(0.5, clients_ok=True)
    assert not metrics.kept_up(0.0, clients_ok=False)
    assert metrics.level_passes(1.2, True)
    assert not metrics.level_passes(1.21, True)
    assert not metrics.level_passes(0.5, False)
    assert not metrics.level_passes(None, True)


def test_capacity_is_the_last_pass_before_the_first_failure():
    assert metrics.capacity([(1, True), (2, True), (4, True), (8, False), (16, True)]) == 4
    assert metrics.capacity([(4, True), (1, True), (2, True)]) == 4
    assert metrics.capacity([(1, False), (2, True)]) == 0
    assert metrics.capacity([]) == 0


def test_ratio():
    assert metrics.ratio(8, 2) == 4
    assert metrics.ratio(8, 0) is None
    assert metrics.ratio(None, 2) is None


def test_wer_normalizes_like_the_whisper_paper():
    counts = metrics.wer_counts("Mister Smith, it's 10 o'clock!", "mr smith it is ten o'clock")
    assert counts.errors == 0
    counts = metrics.wer_counts("the cat sat on the mat", "the cat sat on a mat")
    assert (counts.errors, counts.reference_words) == (1, 6)
    assert metrics.wer_counts("hello world", "").errors == 2


def test_corpus_wer_pools_counts_not_rates():
    pairs = [("red green blue cyan", "red green blue cyan"), ("black white", "black gray")]
    assert metrics.corpus_wer(pairs) == pytest.approx(1 / 6)
    assert metrics.corpus_wer([]) is None


def _recording(durations, gap=0.5):
    utts, cursor = [], 0.0
    for i, d in enumerate(durations):
        utts.append(Utterance(cursor, cursor + d, f"utterance {i}"))
        cursor += d + gap
    samples = np.zeros(int(cursor * SAMPLE_RATE), dtype=np.int16)
    return LongRecording("rec.wav", "g", samples, tuple(utts))


def test_excerpt_is_whole_utterances_with_their_reference():
    rec = _recording([4.0, 5.0, 6.0, 3.0])
    ex = make_excerpt(rec, 1, 9.0)
    assert ex.first_utterance == 1
    assert ex.reference == "utterance 1 utterance 2"
    assert ex.offset_s == pytest.approx(4.5 - 0.25)
    assert ex.duration_s == pytest.approx(5.0 + 0.5 + 6.0 + 0.5, abs=1e-3)


def test_plan_gives_each_client_its_own_offset_independent_of_level():
    recs = [_recording([3.0] * 40), _recording([2.0] * 60)]
    plan8 = plan_excerpts(recs, 8, 10.0)
    plan4 = plan_excerpts(recs, 4, 10.0)
    assert [(e.source, e.offset_s) for e in plan8[:4]] == [(e.source, e.offset_s) for e in plan4]
    assert len({(e.first_utterance, len(e.samples), e.reference) for e in plan8}) == 8
    whole = plan_excerpts(recs, 3, None)
    assert whole[0].first_utterance == 0 and whole[0].reference.count("utterance") == 40


def test_parse_clock():
    assert parse_clock("0:01:02.50") == pytest.approx(62.5)
    assert parse_clock("12.345") == pytest.approx(12.345)
    assert parse_clock(3) == 3.0


def test_native_adapter_parses_protocol_v1():
    a = NativeAdapter()
    assert "endpointing_ms=500" in a.url("ws://x")
    started = {"type": "session.started", "session_id": "s", "model": "m", "sample_rate": 16000, "channels": 1}
    assert a.feed(json.dumps(started | {"language": "en"}), 1.0) == []
    (partial,) = a.feed(
        json.dumps({"type": "partial", "utterance_id": 0, "channel": 0, "start": 0.1, "end": 1.5, "text": "hel"}),
        2.0,
    )
    assert (partial.kind, partial.end_s, partial.arrival) == ("partial", 1.5, 2.0)
    final_1 = {"type": "final", "utterance_id": 1, "channel": 0, "start": 3, "end": 4, "text": " world"}
    a.feed(json.dumps(final_1 | {"reason": "max_length"}), 5.0)
    final_0 = {"type": "final", "utterance_id": 0, "channel": 0, "start": 0, "end": 2.0, "text": "Hello,"}
    (final,) = a.feed(json.dumps(final_0), 3.0)
    assert final.kind == "final" and final.end_s == 2.0 and final.reason is None  # v1 does not say why yet
    a.feed(json.dumps({"type": "error", "code": "x", "message": "y"}), 6.0)
    assert a.errors == ["x: y"]
    a.feed(json.dumps({"type": "session.closed", "reason": "client", "audio_seconds": 4}), 7.0)
    assert a.finished.is_set()
    assert a.transcript() == "Hello, world"
    a.feed("not json", 8.0)
    assert a.errors[-1].startswith("malformed server message")


def test_whisperlive_adapter_counts_each_completed_segment_once():
    a = WhisperLiveAdapter()
    a.feed(json.dumps({"uid": a.uid, "message": "SERVER_READY", "backend": "faster_whisper"}), 0.0)
    assert a.ready.is_set()
    msg1 = {"uid": a.uid, "segments": [{"start": "0.000", "end": "2.000", "text": " Hello", "completed": False}]}
    (p,) = a.feed(json.dumps(msg1), 1.0)
    assert p.kind == "partial" and p.end_s == 2.0 and a.pending is not None
    msg2 = {
        "uid": a.uid,
        "segments": [
            {"start": "0.000", "end": "2.100", "text": " Hello there.", "completed": True},
            {"start": "2.100", "end": "3.000", "text": " How", "completed": False},
        ],
    }
    events = a.feed(json.dumps(msg2), 2.0)
    assert [e.kind for e in events] == ["final", "partial"]
    events = a.feed(json.dumps(msg2 | {"segments": msg2["segments"][:1]}), 3.0)
    assert events == [] and a.pending is None
    a.pending = (2.1, 3.0, " How are you")  # dropped tail is still shown at the end
    assert a.transcript() == "Hello there. How are you"
    a.feed(json.dumps({"uid": a.uid, "status": "WAIT", "message": 1.5}), 4.0)
    assert a.errors and "WAIT" in a.errors[0]


def test_whisperlivekit_adapter_reports_a_final_when_the_committed_end_advances():
    a = WhisperLiveKitAdapter()
    a.feed(json.dumps({"type": "config", "useAudioWorklet": True, "mode": "full"}), 0.0)
    assert a.config_seen.is_set() and not a.errors
    snap = {
        "status": "active_transcription",
        "lines": [],
        "buffer_transcription": "hel",
        "remaining_time_transcription": 0.4,
    }
    assert a.feed(json.dumps(snap), 1.0) == []
    snap["lines"] = [{"speaker": 1, "text": "Hello", "start": "0:00:00.10", "end": "0:00:01.20"}]
    (final,) = a.feed(json.dumps(snap), 2.0)
    assert final.end_s == pytest.approx(1.2)
    assert a.feed(json.dumps(snap), 2.5) == []  # same snapshot again
    snap["buffer_transcription"] = "wor"
    assert a.transcript() == "Hello hel"
    a.feed(json.dumps({"type": "ready_to_stop"}), 3.0)
    assert a.finished.is_set()
    b = WhisperLiveKitAdapter()
    b.feed(json.dumps({"type": "config", "useAudioWorklet": False}), 0.0)
    assert b.errors


def test_summarize_level_pools_clients_and_applies_the_rules():
    good = ClientResult(
        0,
        "a.wav",
        0.0,
        20.0,
        final_latencies_s=[0.6, 0.7, 0.8],
        final_points=[(2.0, 0.6), (9.0, 0.7), (18.0, 0.8)],
        partial_lags_s=[0.3],
        transcript="hello world",
        reference="hello world",
        finish_s=0.5,
    )
    slow = ClientResult(
        1,
        "b.wav",
        5.0,
        20.0,
        final_latencies_s=[0.9, 1.0, 1.1],
        final_points=[(3.0, 0.9), (10.0, 1.0), (19.0, 1.1)],
        transcript="good bye",
        reference="good night",
        finish_s=0.7,
    )
    level = summarize_level("ours", 100, 21.0, [good, slow])
    assert level.clients == 2 and level.final_latency_s["count"] == 6
    assert level.kept_up and level.passed
    assert level.wer == pytest.approx(1 / 4)
    assert level.finish_s_max == pytest.approx(0.7)
    failed = ClientResult(2, "c.wav", 0.0, 20.0, errors=["InvalidStatus: HTTP 500"])
    level = summarize_level("ours", 100, 21.0, [good, failed])
    assert not level.kept_up and not level.passed and level.client_errors


def test_scheduler_delta_from_status_snapshots():
    before = {"scheduler": {"batches": 10, "items": 12, "batch_size_histogram": {"1": 8, "2": 2}}}
    after = {
        "scheduler": {
            "batches": 14,
            "items": 24,
            "max_batch_size_seen": 4,
            "batch_size_histogram": {"1": 8, "2": 2, "4": 3, "0": 0, "10": 1},
        }
    }
    delta = scheduler_delta(before, after)
    assert delta["batches"] == 4 and delta["items"] == 12 and delta["mean_batch_size"] == 3.0
    assert delta["batch_size_histogram"] == {"4": 3, "10": 1}


def test_wer_summary_compares_each_level_with_offline_on_its_own_clients():
    from benchmarks.accuracy import attach_wer_summary

    def client(offset: float, transcript: str) -> ClientResult:
        return ClientResult(0, "a.wav", offset, 5.0, [1.0], transcript=transcript, reference="red green blue gray")

    system = SystemResult(
        label="ours",
        levels=[
            summarize_level("ours", 100, 5.0, [client(0.0, "red green blue gray")]),
            summarize_level("ours", 100, 5.0, [client(0.0, "red green blue"), client(5.0, "red green glue gray")]),
        ],
    )
    offline = {("a.wav", 0.0): "red green blue gray", ("a.wav", 5.0): "red grin blue grab"}
    system = attach_wer_summary(system, offline)
    assert [lv.offline_wer_same_audio for lv in system.levels] == [0.0, 0.25]
    assert system.wer_pooled == pytest.approx(2 / 12, abs=1e-3)
    assert system.offline_faster_whisper_wer_same_audio == pytest.approx(2 / 12, abs=1e-3)
    assert system.wer_minus_offline_points == pytest.approx(0.0)
