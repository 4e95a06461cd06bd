"""Accuracy: faster-whisper's offline transcription of the very audio that was streamed, and the WER summary
that sets each system's streamed WER beside it (pooled, and per level on that level's own clients)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from . import metrics
from .audio import Excerpt
from .results import SystemResult, replace

ExcerptKey = tuple[str, float]  # (source, offset_s rounded to ms): one streamed piece of audio


def excerpt_key(source: str, offset_s: float) -> ExcerptKey:
    return (source, round(offset_s, 3))


def offline_reference(model_path: str, device: str, excerpts: Mapping[ExcerptKey, Excerpt]) -> dict[ExcerptKey, str]:
    """faster-whisper's offline ``transcribe`` (beam 5, its defaults) of each distinct streamed excerpt."""
    from faster_whisper import WhisperModel

    compute_type = "float16" if device == "cuda" else "int8"  # our server's default on each device
    model = WhisperModel(model_path, device=device, compute_type=compute_type, cpu_threads=os.cpu_count() or 0)
    texts = {}
    for key, ex in excerpts.items():
        segments, _ = model.transcribe(ex.samples.astype("float32") / 32768.0, language="en", beam_size=5)
        texts[key] = " ".join(s.text.strip() for s in segments)
    return texts


def attach_wer_summary(system: SystemResult, offline: Mapping[ExcerptKey, str]) -> SystemResult:
    """Pooled streaming WER over every client the system served, and faster-whisper offline on the same audio."""
    stream_pairs: list[tuple[str, str]] = []
    offline_pairs: list[tuple[str, str]] = []
    levels = []
    for level in system.levels:
        level_offline = []
        for client in level.per_client:
            if not client["reference"]:
                continue  # non-speech has no reference
            key = excerpt_key(client["source"], client["offset_s"])
            stream_pairs.append((client["reference"], client["transcript"]))
            if key in offline:
                offline_pairs.append((client["reference"], offline[key]))
                level_offline.append((client["reference"], offline[key]))
        # the same level's clients offline: accuracy by load
        level_wer = metrics.rounded(metrics.corpus_wer(level_offline)) if level_offline else None
        levels.append(replace(level, offline_wer_same_audio=level_wer))
    pooled = metrics.rounded(metrics.corpus_wer(stream_pairs)) if stream_pairs else None
    reference = metrics.rounded(metrics.corpus_wer(offline_pairs)) if offline_pairs else None
    difference = None if pooled is None or reference is None else round(100 * (pooled - reference), 2)
    return replace(
        system,
        levels=levels,
        wer_pooled=pooled,
        offline_faster_whisper_wer_same_audio=reference,
        wer_minus_offline_points=difference,
    )


def by_level_line(system: SystemResult) -> str:
    """'N=1 8.1%/7.5%  N=2 ...': streamed / offline WER per level, for the log."""
    return "  ".join(
        f"N={lv.clients} {metrics.pct(lv.wer)}/{metrics.pct(lv.offline_wer_same_audio)}" for lv in system.levels
    )


def distinct_excerpts(excerpts: list[Excerpt]) -> dict[ExcerptKey, Excerpt]:
    out: dict[ExcerptKey, Excerpt] = {}
    for ex in excerpts:
        out.setdefault(excerpt_key(ex.source, ex.offset_s), ex)
    return out
