"""Service-time model: seconds of one model call as a function of its search (partial greedy, final greedy,
final beam 5), batch size and encoder window.

Each search has ``t = a + w * W + b * B + bw * B * W`` (B items, W seconds of window), fitted by least squares
to measured calls (``measure.py``) or derived for a GPU from the recorded H200 decode-core rows and, for larger
models, scaled by FLOPs relative to tiny.en (an estimate, labelled as one wherever it is used).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

SEARCHES = ("partial", "final", "final_beam5")


@dataclass(frozen=True)
class Coefficients:
    a: float  # seconds per call
    w: float  # seconds per window second, per call
    b: float  # seconds per item
    bw: float  # seconds per item and window second

    def seconds(self, batch: int, window_s: float) -> float:
        return max(0.0, self.a + self.w * window_s + self.b * batch + self.bw * batch * window_s)

    def scaled(self, factor: float) -> Coefficients:
        return Coefficients(self.a * factor, self.w * factor, self.b * factor, self.bw * factor)


@dataclass(frozen=True)
class ServiceModel:
    """Seconds of one model call; ``source`` says where the figures come from (measured, or estimated how)."""

    name: str
    source: str
    coefficients: Mapping[str, Coefficients]

    def call_s(self, search: str, batch: int, window_s: float) -> float:
        return self.coefficients[search].seconds(batch, window_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "coefficients": {k: vars(c) for k, c in self.coefficients.items()},
        }


def constant(seconds: float, name: str = "constant") -> ServiceModel:
    """Every call takes ``seconds`` whatever its size (the toy model of the tests)."""
    c = Coefficients(seconds, 0.0, 0.0, 0.0)
    return ServiceModel(name, "toy", {s: c for s in SEARCHES})


def fit(points: Iterable[tuple[int, float, float]]) -> Coefficients:
    """Non-negative least squares over ``(batch, window_s, seconds)`` points, relative error weighted (a 0.1 s
    call matters as much as a 5 s one): the best fit over every subset of the four terms whose coefficients
    all come out non-negative."""
    rows = list(points)
    x = np.array([[1.0, w, b, b * w] for b, w, _ in rows])
    y = np.array([t for _, _, t in rows])
    weight = 1.0 / np.maximum(y, 1e-6)
    xw, yw = x * weight[:, None], y * weight
    best: tuple[float, np.ndarray] | None = None
    for mask in range(1, 16):
        cols = [i for i in range(4) if mask >> i & 1]
        coef, *_ = np.linalg.lstsq(xw[:, cols], yw, rcond=None)
        if (coef < 0).any():
            continue
        full = np.zeros(4)
        full[cols] = coef
        residual = float(np.sum((xw @ full - yw) ** 2))
        if best is None or residual < best[0]:
            best = (residual, full)
    assert best is not None  # a single positive column always fits positive times
    a, w, b, bw = (float(v) for v in best[1])
    return Coefficients(a, w, b, bw)


def search_of(row: Mapping[str, Any]) -> str:
    if row["kind"] == "partial":
        return "partial"
    return "final_beam5" if row["beam"] > 1 else "final"


def cpu_model(measured: Mapping[str, Any], idle_ms_per_call: float | None = None) -> ServiceModel:
    """Fit the measured grid (min of repeats per cell). ``idle_ms_per_call``: a greedy final of batch 1 and a
    6.5 s mean window as measured on the idle machine (the stream benchmark's decode-core rows); when given,
    every coefficient is scaled so the fit meets it (the grid was measured on a busy, shared machine)."""
    cells: dict[tuple[str, int, float], float] = {}
    for row in measured["rows"]:
        # partials and greedy finals run the same decode (finals add rare retries): one fit, from the quicker
        # of the two measurements of each cell, halves the noise of a shared machine
        search = "final_beam5" if search_of(row) == "final_beam5" else "final"
        key = (search, row["batch"], row["window_s"])
        cells[key] = min(cells.get(key, row["min_s"]), row["min_s"])
    by_search: dict[str, list[tuple[int, float, float]]] = {}
    for (search, batch, window), seconds in cells.items():
        by_search.setdefault(search, []).append((batch, window, seconds))
    coefficients = {s: fit(p) for s, p in by_search.items()}
    source = (
        f"measured on this machine ({measured.get('date_utc', '?')}, min of repeats, cpu_threads=1; partials and "
        "greedy finals one fit)"
    )
    coefficients["partial"] = coefficients["final"]
    ratios = measured.get("beam5_over_greedy")
    if ratios:  # paired measurement: steadier than the grid's beam 5 cells on a shared machine
        factor = float(np.mean(list(ratios.values())))
        coefficients["final_beam5"] = coefficients["final"].scaled(factor)
        source += f"; beam 5 = greedy x{factor:.2f} (paired measurement, mean over batch sizes)"
    elif "final_beam5" not in coefficients:
        coefficients["final_beam5"] = coefficients["final"].scaled(BEAM5_DECODER_FACTOR)
        source += f"; beam 5 taken as greedy x{BEAM5_DECODER_FACTOR} (not measured)"
    if idle_ms_per_call:
        factor = idle_ms_per_call / 1000.0 / coefficients["final"].seconds(1, 6.5)
        coefficients = {s: c.scaled(factor) for s, c in coefficients.items()}
        source += f"; scaled by {factor:.2f} to the idle machine's decode-core figure"
    return ServiceModel("tiny.en cpu", source, coefficients)


# --- GPU (H100/H200 class)

# Whisper shapes: encoder layers, decoder layers, d_model. Vocabulary 51864-51866 for all.
SHAPES = {"tiny.en": (4, 4, 384), "base": (6, 6, 512), "large-v3-turbo": (32, 4, 1280)}
VOCAB = 51865
FRAMES_PER_S = 50  # encoder positions per second of audio (after the conv stride)
GPU_PEAK_FLOPS = 989e12  # H100/H200 dense fp16 tensor peak
GPU_EFFICIENCY = 0.35  # assumed share of peak a batched encoder reaches
BEAM5_DECODER_FACTOR = 1.5  # assumed: beam 5 decoding costs 1.5x greedy per item on a GPU (no H200 beam rows)


def encoder_flops_per_s(shape: tuple[int, int, int]) -> float:
    """Encoder FLOPs per second of window: projections and MLP (24 d^2 per position and layer) plus attention
    over a 30 s context (4 * positions * d), the conv front end left out."""
    layers, _, d = shape
    return 2.0 * FRAMES_PER_S * layers * (12 * d * d + 2 * 1500 * d)


def decoder_flops_per_token(shape: tuple[int, int, int]) -> float:
    """Self- and cross-attention projections and MLP (16 d^2 per layer) plus the vocabulary projection."""
    _, layers, d = shape
    return 2.0 * (layers * 16 * d * d + d * VOCAB)


def gpu_tiny_from_record(decode_core: Mapping[str, Any]) -> Coefficients:
    """Greedy per-call cost of tiny.en on the H200 from the stream benchmark's decode-core rows (30 s windows,
    batch 1 and 8; 12 utterances, so batch 8 ran calls of 8 and 4): a per-call and a per-item term. The
    encoder's share is taken from FLOPs (it is under a millisecond per item at any window)."""
    rows = {(r["window"], r["batch_size"]): r for r in decode_core["rows"]}
    one = rows[("full", 1)]["wall_s"] / rows[("full", 1)]["utterances"]  # seconds per call of 1
    n = rows[("full", 8)]["utterances"]
    calls = -(-n // 8)
    per_batch8 = rows[("full", 8)]["wall_s"]  # = calls * a + n * per_item
    per_item = (per_batch8 - calls * one) / (n - calls)
    a = one - per_item
    enc = encoder_flops_per_s(SHAPES["tiny.en"]) / (GPU_PEAK_FLOPS * GPU_EFFICIENCY)
    return Coefficients(max(0.0, a), 0.0, max(0.0, per_item - 30 * enc), enc)


def gpu_model(model: str, tiny: Coefficients) -> ServiceModel:
    """tiny.en from the H200 record; ``base`` and ``large-v3-turbo`` estimated from FLOPs relative to tiny.en:
    the per-item (decoding) term scales with decoder FLOPs per token, the per-call term with decoder layers
    (kernel launches per step), the encoder term with encoder FLOPs at the assumed efficiency."""
    shape, ref = SHAPES[model], SHAPES["tiny.en"]
    dec = decoder_flops_per_token(shape) / decoder_flops_per_token(ref)
    enc = encoder_flops_per_s(shape) / (GPU_PEAK_FLOPS * GPU_EFFICIENCY)
    greedy = Coefficients(tiny.a * shape[1] / ref[1], 0.0, tiny.b * dec, enc)
    beam = Coefficients(greedy.a, 0.0, greedy.b * BEAM5_DECODER_FACTOR, enc)
    source = (
        "H200 record (benchmarks/results/stream_cuda_quick.json decode_core), greedy"
        if model == "tiny.en"
        else f"ESTIMATE from FLOPs relative to tiny.en on the H200 record (decoder x{dec:.2f}, encoder by FLOPs)"
    )
    source += f"; beam 5 assumed x{BEAM5_DECODER_FACTOR} per item; encoder at {GPU_EFFICIENCY:.0%} of fp16 peak"
    return ServiceModel(f"{model} H200", source, {"partial": greedy, "final": greedy, "final_beam5": beam})
