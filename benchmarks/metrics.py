"""Pure bookkeeping for the benchmarks: send-time mapping, percentiles, WER, the kept-up and capacity rules.

No I/O and no clocks here, so ``tests/benchmarks/`` checks every rule in milliseconds.

Definitions used throughout (the README repeats them):

* final latency: wall time at which a final (committed, never retracted) result arrived, minus the wall time
  at which the client sent the audio sample at that result's ``end`` (stream seconds mapped to send times). It
  includes the endpointing silence a server waits for before it finalizes.
* partial lag: the same for a partial (interim) result's ``end``.
* kept up: the backlog did not grow: final latency does not trend upwards over stream time (least-squares slope
  at most ``MAX_LATENCY_SLOPE`` s per s) and every client finished (connected, got at least one final, and the
  server acknowledged the end of the stream within the drain timeout; no protocol errors).
* capacity: the largest number of concurrent streams whose pooled p95 final latency is at most
  ``CAPACITY_P95_S`` and that kept up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# final latency is defined once, in the client library
from stream_server.clients.v1 import SendLog as SendLog

CAPACITY_P95_S = 1.2
# Growth of final latency per second of stream beyond which the backlog is taken to grow. A server that keeps
# up shows a flat latency whatever its level; one that gets 1.1x more audio than it can decode falls behind by
# 0.1 s per second. Final latencies scatter by about +-0.5 s (utterance length, commit policy), so on 20 s
# excerpts a smaller threshold would flag noise.
MAX_LATENCY_SLOPE = 0.1
MIN_POINTS_FOR_SLOPE = 6
MIN_SPAN_FOR_SLOPE_S = 10.0  # the finals must spread over at least this much stream time


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method), ``q`` in [0, 100]; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    frac = rank - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * frac)


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50 / p95 / p99 / mean / max / count of a list of seconds."""
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "mean": (sum(values) / len(values)) if values else None,
        "max": max(values) if values else None,
    }


def latency_slope(points: Iterable[tuple[float, float]]) -> float | None:
    """Least-squares slope of latency (y) against stream time (x); None with too few points or no spread."""
    pts = list(points)
    if len(pts) < MIN_POINTS_FOR_SLOPE:
        return None
    if max(x for x, _ in pts) - min(x for x, _ in pts) < MIN_SPAN_FOR_SLOPE_S:
        return None
    n = len(pts)
    mean_x = sum(x for x, _ in pts) / n
    mean_y = sum(y for _, y in pts) / n
    var_x = sum((x - mean_x) ** 2 for x, _ in pts)
    return sum((x - mean_x) * (y - mean_y) for x, y in pts) / var_x


def kept_up(slope: float | None, clients_ok: bool, max_slope: float = MAX_LATENCY_SLOPE) -> bool:
    """The backlog did not grow: every client finished and latency did not trend up (unknown slope: no
    evidence of growth)."""
    if not clients_ok:
        return False
    return slope is None or slope <= max_slope


def level_passes(p95_s: float | None, level_kept_up: bool, limit_s: float = CAPACITY_P95_S) -> bool:
    return level_kept_up and p95_s is not None and p95_s <= limit_s


def capacity(levels: Iterable[tuple[int, bool]]) -> int:
    """Largest N whose level passed, counting only levels up to the first failure (N ascending).

    A pass above a failed level is noise, not capacity: the sweep stops at the first failure anyway.
    """
    best = 0
    for n, passed in sorted(levels):
        if not passed:
            break
        best = n
    return best


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, None when either is unknown or the divisor is 0."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


# ---- word error rate ---------------------------------------------------------------------------------------

_normalizer = None


def normalize_text(text: str) -> str:
    """Whisper's English normalizer (as in the Whisper paper), whitespace collapsed."""
    global _normalizer
    if _normalizer is None:
        from whisper_normalizer.english import EnglishTextNormalizer

        _normalizer = EnglishTextNormalizer()
    return " ".join(_normalizer(text).split())


@dataclass(frozen=True)
class WerCounts:
    errors: int  # substitutions + deletions + insertions
    reference_words: int

    @property
    def wer(self) -> float | None:
        return self.errors / self.reference_words if self.reference_words else None

    def __add__(self, other: WerCounts) -> WerCounts:
        return WerCounts(self.errors + other.errors, self.reference_words + other.reference_words)


def wer_counts(reference: str, hypothesis: str) -> WerCounts:
    """Edit counts of one hypothesis against its reference, both normalized first."""
    import jiwer

    ref = normalize_text(reference)
    hyp = normalize_text(hypothesis)
    if not ref:
        return WerCounts(len(hyp.split()), 0)
    if not hyp:
        return WerCounts(len(ref.split()), len(ref.split()))
    out = jiwer.process_words(ref, hyp)
    return WerCounts(out.substitutions + out.deletions + out.insertions, len(ref.split()))


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> float | None:
    """Corpus WER: total edits over total reference words, over (reference, hypothesis) pairs."""
    total = WerCounts(0, 0)
    for ref, hyp in pairs:
        total = total + wer_counts(ref, hyp)
    return total.wer


def wer(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> float:
    """``corpus_wer`` of one (reference, hypothesis) pair or of two parallel lists; the tests' WER too."""
    refs = [reference] if isinstance(reference, str) else list(reference)
    hyps = [hypothesis] if isinstance(hypothesis, str) else list(hypothesis)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    value = corpus_wer(zip(refs, hyps))
    if value is None:
        raise ValueError("the references have no words")
    return value


def rounded(x: float | None, digits: int = 4) -> float | None:
    """``x`` rounded for the JSON results; unknown (None) stays None."""
    return None if x is None else round(x, digits)


def pct(x: float | None) -> str:
    """A rate as a percentage for printed tables; 'n/a' when unknown."""
    return "n/a" if x is None else f"{100 * x:.1f}%"


# Where a final's latency went, as our server reports it (protocol v1 ``timing``, docs/protocol.md#timing): stages
# in the order they happen, summing to the server's share of the final's latency.
STAGES = ("endpointing", "queue", "decode", "send")


def latency_breakdown(timings: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Median and p95 in seconds, with counts, of each stage and of their total over ``timings`` (``timing``
    objects in milliseconds); ``speculative``: how many finals were decoded during their pause. None for none."""
    if not timings:
        return None
    out: dict[str, Any] = {"count": len(timings), "speculative": sum(1 for t in timings if t.get("speculative"))}
    for stage in (*STAGES, "total"):
        values = [float(t[f"{stage}_ms"]) / 1000 for t in timings if isinstance(t.get(f"{stage}_ms"), (int, float))]
        out[stage] = {
            "count": len(values),
            "p50": rounded(percentile(values, 50)),
            "p95": rounded(percentile(values, 95)),
        }
    return out


def breakdown_by_reason(timings: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """``latency_breakdown`` of every final (``all``) and of each end reason's finals apart (``reason`` key of
    each timing): an endpointed final waited for silence, one cut by the length rule did not."""
    if not timings:
        return None
    reasons = sorted({str(t.get("reason")) for t in timings})
    by_reason = {r: latency_breakdown([t for t in timings if str(t.get("reason")) == r]) for r in reasons}
    return {"all": latency_breakdown(timings), **by_reason}
