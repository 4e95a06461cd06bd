"""Shared pieces of the dialects' end-to-end tests: one real server with keys, the two-sentence recording (real
speech from ../shared/audio) in the encodings the dialects take, and the protocol v1 baseline on the same audio."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from benchmarks.metrics import wer_counts

from ..helpers import SAMPLE_RATE, SHARED_AUDIO, resample, silence, to_pcm16

API_KEY = "dialects-test-key"
TWILIO_TOKEN = "twilio-test-auth-token"
CLIPS = ("ljspeech_LJ001-0004.wav", "ljspeech_LJ001-0011.wav")
GAP_S = 1.5  # silence after each sentence: longer than every endpointing used here


def references() -> list[str]:
    by_name = {}
    for line in (SHARED_AUDIO / "manifest.jsonl").read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            by_name[entry["audio"]] = entry["text"]
    return [by_name[name] for name in CLIPS]


def sentences_16k() -> list[np.ndarray]:
    """Each sentence as float32 mono 16 kHz (skips when the shared recordings are absent)."""
    if not all((SHARED_AUDIO / name).exists() for name in CLIPS):
        pytest.skip(f"shared recordings {CLIPS} are not in {SHARED_AUDIO}")
    import soundfile as sf

    out = []
    for name in CLIPS:
        audio, rate = sf.read(str(SHARED_AUDIO / name), dtype="float32", always_2d=True)
        out.append(resample(audio.mean(axis=1), rate, SAMPLE_RATE))
    return out


def two_sentences_16k() -> np.ndarray:
    parts: list[np.ndarray] = [silence(0.5)]
    for sentence in sentences_16k():
        parts += [sentence, silence(GAP_S)]
    return np.concatenate(parts)


def mulaw_8k(audio_16k: np.ndarray, law: str = "mulaw") -> bytes:
    """G.711 at 8 kHz made by ffmpeg (an encoder independent of the server's decoder)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    cmd = ["ffmpeg", "-v", "error", "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "pipe:0",
           "-ar", "8000", "-f", law, "pipe:1"]  # fmt: skip
    return subprocess.run(cmd, input=to_pcm16(audio_16k), capture_output=True, check=True).stdout


def pcm16_at(audio_16k: np.ndarray, rate: int) -> bytes:
    return to_pcm16(resample(audio_16k, SAMPLE_RATE, rate))


# word errors a dialect may have beyond protocol v1 on the two sentences (29 words) whatever ``points`` allows:
# which of two hearings of the last words a stream gets depends on its pace: protocol v1 alone gives "fine and
# form" (one error) at 4x real time and "fine informed" (two) at 1x (2026-12-01, Intel Xeon)
SLACK_WORD_ERRORS = 1


def assert_wer_close(text: str, baseline: str, points: float) -> None:
    reference = " ".join(references())
    got, base = wer_counts(reference, text), wer_counts(reference, baseline)
    allowed = max(points / 100 * base.reference_words, SLACK_WORD_ERRORS)
    assert got.errors <= base.errors + allowed, (
        f"WER {got.errors}/{got.reference_words} vs protocol v1 {base.errors}/{base.reference_words}: {text!r}"
    )
