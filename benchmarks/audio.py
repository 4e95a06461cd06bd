"""Benchmark audio: the long recordings of ``../shared/audio`` cut into excerpts of whole utterances.

The long files in the manifest (``kind: long_derived``) are concatenations of utterances with 0.5 s of silence
between them, and the manifest names the segment files in order; their durations give exact utterance
boundaries, so an excerpt made of whole consecutive utterances has an exact reference text. Each streaming
client gets its own excerpt (its own start offset into the recordings). Without ``../shared/audio`` the same
structure is synthesized with espeak-ng (one sentence per utterance).

Audio is kept as int16 mono at 16 kHz, the wire format of every server under test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
GAP_S = 0.5  # silence between utterances inside the derived long files
EDGE_PAD_S = 0.25  # silence kept before the first and after the last utterance of an excerpt
GOLDEN = 0.6180339887498949


def default_audio_dir() -> Path:
    env = os.environ.get("BENCH_AUDIO_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "audio"


@dataclass(frozen=True)
class Utterance:
    start_s: float  # within the long recording
    end_s: float
    text: str


@dataclass(frozen=True)
class LongRecording:
    name: str
    group: str
    samples: np.ndarray  # int16
    utterances: tuple[Utterance, ...]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class Excerpt:
    """What one client streams: whole utterances of one recording, with the matching reference."""

    source: str
    first_utterance: int
    offset_s: float  # where the excerpt starts in the source recording
    samples: np.ndarray  # int16
    reference: str
    utterances: int = 0  # how many utterances it holds

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def read_wav_int16(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != SAMPLE_RATE:
        data = resample_int16(data, rate, SAMPLE_RATE)
    return data


def resample_int16(data: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Linear-interpolation resampling; good enough for synthesized fallback speech."""
    if rate_in == rate_out:
        return data
    n_out = int(round(len(data) * rate_out / rate_in))
    x_out = np.arange(n_out) * (rate_in / rate_out)
    out = np.interp(x_out, np.arange(len(data)), data.astype(np.float32))
    clipped: np.ndarray = np.clip(out, -32768, 32767).astype(np.int16)
    return clipped


def load_manifest(audio_dir: Path) -> list[dict[str, Any]]:
    with (audio_dir / "manifest.jsonl").open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def segment_names(entry: Mapping[str, Any]) -> list[str]:
    """The files a derived long recording was joined from, in order (its manifest ``source`` names them)."""
    match = re.search(r"segment files: (.*)$", entry.get("source", ""))
    return match.group(1).split(", ") if match else []


def load_long_recordings(audio_dir: Path | None = None) -> list[LongRecording]:
    """The derived long recordings with utterance boundaries; espeak-ng speech if the directory is absent."""
    audio_dir = audio_dir or default_audio_dir()
    if not (audio_dir / "manifest.jsonl").exists():
        return [synthesize_long_recording()]
    entries = load_manifest(audio_dir)
    by_name = {e["audio"]: e for e in entries}
    recordings = []
    for entry in entries:
        if entry.get("kind") != "long_derived":
            continue
        names = segment_names(entry)
        if not names or any(name not in by_name for name in names):
            continue
        utterances = []
        cursor = 0.0
        for name in names:
            duration = read_wav_int16(audio_dir / name).shape[0] / SAMPLE_RATE
            utterances.append(Utterance(cursor, cursor + duration, by_name[name]["text"]))
            cursor += duration + GAP_S
        samples = read_wav_int16(audio_dir / entry["audio"])
        recordings.append(LongRecording(entry["audio"], entry["group"], samples, tuple(utterances)))
    return recordings


def load_short_utterances(group: str, audio_dir: Path | None = None) -> list[tuple[str, np.ndarray, str]]:
    """(name, int16 samples, reference) of the manifest's short utterances in ``group``."""
    audio_dir = audio_dir or default_audio_dir()
    if not (audio_dir / "manifest.jsonl").exists():
        rec = synthesize_long_recording()
        return [
            (f"espeak_{i}", rec.samples[int(u.start_s * SAMPLE_RATE) : int(u.end_s * SAMPLE_RATE)], u.text)
            for i, u in enumerate(rec.utterances)
        ]
    return [
        (e["audio"], read_wav_int16(audio_dir / e["audio"]), e["text"])
        for e in load_manifest(audio_dir)
        if e.get("kind") == "short" and e.get("group") == group
    ]


def make_excerpt(recording: LongRecording, first: int, min_duration_s: float) -> Excerpt:
    """Whole utterances from ``first`` on until at least ``min_duration_s`` of audio (or the recording ends)."""
    last = first
    while last + 1 < len(recording.utterances) and (
        recording.utterances[last].end_s - recording.utterances[first].start_s < min_duration_s
    ):
        last += 1
    utts = recording.utterances[first : last + 1]
    start_s = max(0.0, utts[0].start_s - EDGE_PAD_S)
    end_s = min(recording.duration_s, utts[-1].end_s + EDGE_PAD_S)
    samples = recording.samples[int(start_s * SAMPLE_RATE) : int(end_s * SAMPLE_RATE)]
    return Excerpt(recording.name, first, start_s, samples, " ".join(u.text for u in utts), len(utts))


def plan_excerpts(recordings: list[LongRecording], n_clients: int, duration_s: float | None) -> list[Excerpt]:
    """One excerpt per client, each at its own start offset.

    ``duration_s`` None: every client streams a whole recording (clients rotate over the recordings).
    Otherwise clients rotate over the recordings and, within one, start at well-spread utterances; excerpts
    that would run past 1.6x ``duration_s`` (a 50 s sonnet in a 30 s budget) are avoided when possible.
    """
    if not recordings:
        raise ValueError("no long recordings available")
    if duration_s is None:
        return [make_excerpt(recordings[k % len(recordings)], 0, float("inf")) for k in range(n_clients)]
    candidates: list[list[Excerpt]] = []
    for rec in recordings:
        usable = []
        for first in range(len(rec.utterances)):
            ex = make_excerpt(rec, first, duration_s)
            if duration_s * 0.8 <= ex.duration_s <= duration_s * 1.6:
                usable.append(ex)
        if usable:
            candidates.append(usable)
    if not candidates:  # recordings too short or utterances too long: take what there is
        candidates = [[make_excerpt(rec, 0, duration_s)] for rec in recordings]
    excerpts = []
    for k in range(n_clients):
        pool = candidates[k % len(candidates)]
        round_index = k // len(candidates)
        # golden-ratio spread: client k's excerpt does not depend on n_clients, and successive rounds over one
        # recording start far apart
        excerpts.append(pool[int(round_index * GOLDEN * len(pool)) % len(pool)])
    return excerpts


SYNTH_SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Streaming speech recognition turns live audio into text while people speak.",
    "Please call the office tomorrow morning and ask for the latest report.",
    "A final transcript should arrive shortly after the speaker stops talking.",
    "The weather today is sunny with a light breeze from the west.",
    "Our team measured latency, throughput and accuracy on the same machine.",
    "She opened the window and listened to the birds in the garden.",
    "Every new client connection streams audio at real time pace.",
)


def synthesize_long_recording(repeats: int = 6) -> LongRecording:
    """espeak-ng fallback: sentences joined with 0.5 s gaps, like the derived long files."""
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if espeak is None:
        raise RuntimeError("no ../shared/audio and no espeak-ng to synthesize speech")
    pieces: list[np.ndarray] = []
    utterances = []
    cursor = 0.0
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.int16)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats * len(SYNTH_SENTENCES)):
            text = SYNTH_SENTENCES[i % len(SYNTH_SENTENCES)]
            out = Path(tmp) / f"s{i}.wav"
            subprocess.run(
                [espeak, "-w", str(out), "-s", str(150 + 10 * (i % 4)), text],
                check=True,
                capture_output=True,
                timeout=60,
            )
            speech = read_wav_int16(out)
            if pieces:
                pieces.append(gap)
                cursor += GAP_S
            pieces.append(speech)
            utterances.append(Utterance(cursor, cursor + len(speech) / SAMPLE_RATE, text))
            cursor += len(speech) / SAMPLE_RATE
    return LongRecording("espeak_synthetic.wav", "espeak", np.concatenate(pieces), tuple(utterances))


def write_wav_int16(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.astype(np.int16).tobytes())
