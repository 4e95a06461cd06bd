"""What the streaming clients send: the long-recordings workload, conversational turns, and non-speech.

* ``long``: excerpts of whole utterances of the long read-aloud recordings (``audio.plan_excerpts``).
* ``turns``: the traffic of voice assistants and call centers: real English utterances of 2-12 s from
  ``../shared/audio`` (synthetic TTS groups excluded) with pauses of 0.8-1.6 s between them, ``seconds`` per
  client. Client k's conversation depends only on (seed, k), so it is the same whatever the level and differs
  between clients.
* non-speech (``nonspeech_signals``): white noise, mains hum, tones and babble-like noise, synthesized with
  numpy from a seed, to count the words a server invents where nobody speaks.

Everything is int16 mono at 16 kHz. Building the audio is pure apart from reading the manifest's files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .audio import SAMPLE_RATE, Excerpt, LongRecording, load_manifest, plan_excerpts, read_wav_int16

TURN_MIN_S, TURN_MAX_S = 2.0, 12.0
PAUSE_MIN_S, PAUSE_MAX_S = 0.8, 1.6
LEAD_IN_S = 0.5
SYNTHETIC_GROUPS = ("dctts",)  # text-to-speech output, not people speaking
WARMUP_CLIENT, PROBE_CLIENT = 1_000_000, 1_000_001  # their own seed streams, apart from the load's clients


class Workload(Protocol):
    """Audio for N concurrent clients; client k's audio does not depend on N."""

    @property
    def name(self) -> str: ...

    @property
    def seconds(self) -> float:
        """Typical seconds of audio per client (budgeting)."""
        ...

    def excerpts(self, n_clients: int) -> list[Excerpt]: ...

    def warmup(self) -> Excerpt: ...

    def single_stream(self, finals: int) -> Excerpt:
        """One client's audio holding at least ``finals`` utterances."""
        ...

    def utterances_in(self, excerpt: Excerpt) -> int: ...


@dataclass(frozen=True)
class LongRecordings:
    recordings: Sequence[LongRecording]
    excerpt_s: float
    name: str = "long"

    @property
    def seconds(self) -> float:
        return self.excerpt_s

    def excerpts(self, n_clients: int) -> list[Excerpt]:
        return plan_excerpts(list(self.recordings), n_clients, self.excerpt_s)

    def warmup(self) -> Excerpt:
        return plan_excerpts(list(self.recordings), 1, 6.0)[0]

    def single_stream(self, finals: int) -> Excerpt:
        return plan_excerpts(list(self.recordings), 1, self.excerpt_s)[0]

    def utterances_in(self, excerpt: Excerpt) -> int:
        return excerpt.utterances


@dataclass(frozen=True)
class Utterance:
    name: str
    samples: np.ndarray  # int16
    text: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_turn_utterances(audio_dir: Path) -> list[Utterance]:
    """The manifest's real English utterances of 2-12 s, in manifest order."""
    out = []
    for entry in load_manifest(audio_dir):
        if entry.get("kind") != "short" or entry.get("language") != "en":
            continue
        if str(entry.get("group", "")).startswith(SYNTHETIC_GROUPS):
            continue
        if not TURN_MIN_S <= float(entry.get("duration_s", 0.0)) <= TURN_MAX_S:
            continue
        out.append(Utterance(entry["audio"], read_wav_int16(audio_dir / entry["audio"]), entry["text"]))
    return out


def conversation(pool: Sequence[Utterance], seconds: float, seed: int, client: int, min_turns: int = 0) -> Excerpt:
    """Client ``client``'s conversation: utterances drawn without repetition (until the pool is used up) with
    seeded pauses, until ``seconds`` of audio and ``min_turns`` utterances are reached."""
    if not pool:
        raise ValueError("no utterances for the turns workload")
    rng = np.random.default_rng([seed, client])
    order: list[int] = []
    pieces = [np.zeros(int(LEAD_IN_S * SAMPLE_RATE), dtype=np.int16)]
    texts: list[str] = []
    total = LEAD_IN_S
    while total < seconds or len(texts) < min_turns:
        if not order:
            order = list(rng.permutation(len(pool)))
        utterance = pool[order.pop()]
        pause = float(rng.uniform(PAUSE_MIN_S, PAUSE_MAX_S))
        pieces += [utterance.samples, np.zeros(int(pause * SAMPLE_RATE), dtype=np.int16)]
        texts.append(utterance.text)
        total += utterance.duration_s + pause
    return Excerpt(f"turns-seed{seed}-client{client}", 0, 0.0, np.concatenate(pieces), " ".join(texts), len(texts))


@dataclass(frozen=True)
class Turns:
    pool: Sequence[Utterance]
    seconds_per_client: float = 60.0
    seed: int = 16
    name: str = "turns"

    @property
    def seconds(self) -> float:
        return self.seconds_per_client

    def excerpts(self, n_clients: int) -> list[Excerpt]:
        return [conversation(self.pool, self.seconds_per_client, self.seed, k) for k in range(n_clients)]

    def warmup(self) -> Excerpt:
        return conversation(self.pool, 6.0, self.seed, WARMUP_CLIENT)

    def single_stream(self, finals: int) -> Excerpt:
        return conversation(self.pool, 0.0, self.seed, PROBE_CLIENT, min_turns=finals)

    def utterances_in(self, excerpt: Excerpt) -> int:
        return excerpt.utterances


# ---- non-speech --------------------------------------------------------------------------------------------

NONSPEECH_LEVEL_DBFS = -26.0  # about the RMS of the recordings' speech


def _at_level(x: np.ndarray, dbfs: float = NONSPEECH_LEVEL_DBFS) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x)))) or 1.0
    scaled = x / rms * (10 ** (dbfs / 20) * 32767)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def nonspeech_signals(seconds: float = 30.0, seed: int = 6) -> dict[str, np.ndarray]:
    """White noise, 50 Hz hum with harmonics, a sequence of pure and dual tones, and babble-like noise
    (speech-band noise modulated at syllable rate, several voices summed), each ``seconds`` long."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    white = rng.standard_normal(n)
    hum = np.zeros(n)
    for h in (1, 2, 3, 5, 7):
        hum += np.sin(2 * np.pi * 50 * h * t + rng.uniform(0, 2 * np.pi)) / h
    tones = np.zeros(n)
    step = SAMPLE_RATE // 2  # a new tone (or DTMF-like pair) every 0.5 s, 0.1 s gaps
    for i, first in enumerate(range(0, n, step)):
        span = slice(first, min(n, first + step - SAMPLE_RATE // 10))
        f1 = rng.uniform(300, 3000)
        tones[span] = np.sin(2 * np.pi * f1 * t[span])
        if i % 2:
            tones[span] += np.sin(2 * np.pi * rng.uniform(300, 3000) * t[span])
    babble = np.zeros(n)
    spectrum_f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    band = (spectrum_f > 150) & (spectrum_f < 4000)
    shape = np.where(band, 1.0 / np.sqrt(np.maximum(spectrum_f, 1.0)), 0.0)  # pink-ish, speech band
    for _ in range(6):
        noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * shape, n)
        rate = rng.uniform(3.0, 6.0)  # syllables per second
        envelope = np.clip(np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)), 0, None) ** 2
        babble += noise * envelope
    return {name: _at_level(x) for name, x in (("white", white), ("hum", hum), ("tones", tones), ("babble", babble))}


def nonspeech_excerpts(seconds: float = 30.0, seed: int = 6) -> list[Excerpt]:
    """The non-speech signals as excerpts with empty references (one client each)."""
    return [Excerpt(f"nonspeech-{name}", 0, 0.0, x, "", 0) for name, x in nonspeech_signals(seconds, seed).items()]


def words_per_minute(text: str, seconds: float) -> float:
    """Words emitted per minute of audio."""
    return len(text.split()) * 60.0 / seconds if seconds > 0 else 0.0
