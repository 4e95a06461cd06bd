"""benchmarks/finals_wer.py: a stream's finals decoded without a network, by the real session, VAD and model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.finals_wer import stream_finals, with_noise
from benchmarks.metrics import wer
from stream_server.config import Settings
from stream_server.decode.loader import load_backend
from tests.helpers import silence, synthesize

SENTENCES = ("The children are playing football in the park.", "Please send the quarterly report to the finance team.")


def test_a_streamed_conversation_gets_one_final_per_sentence() -> None:
    settings = Settings()
    backend = load_backend(dataclasses.replace(settings.backend_config(), workers=1))
    audio = np.concatenate(
        [silence(0.5), synthesize(SENTENCES[0]), silence(1.0), synthesize(SENTENCES[1]), silence(1.0)]
    )
    texts = stream_finals(backend, settings, (audio * 32767).astype(np.int16))
    assert len(texts) == 2, texts
    assert wer(" ".join(SENTENCES), " ".join(texts)) <= 0.1


def test_noise_is_seeded_and_at_its_level() -> None:
    quiet = np.zeros(16000, dtype=np.int16)
    noisy = with_noise(quiet, -40.0, seed=3)
    np.testing.assert_array_equal(noisy, with_noise(quiet, -40.0, seed=3))
    rms = float(np.sqrt(np.mean((noisy / 32768.0) ** 2)))
    assert 20 * np.log10(rms) == pytest.approx(-40.0, abs=0.5)
    assert with_noise(quiet, None, seed=3) is quiet
