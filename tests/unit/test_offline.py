"""Long-file transcription with a fake engine: chunking, in-flight cap, prompts, file times, cancelling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from stream_server.decode.types import SAMPLE_RATE, DecodeJob, DecodeOptions, DecodeResult, Word
from stream_server.offline import (
    FALLBACK_TEMPERATURES,
    plan_chunks,
    transcribe_file,
    transcribe_segments,
    upload_decode_options,
)

S = SAMPLE_RATE
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeEngine:
    """Resolves each job after ``delay_s`` with text naming the chunk's first sample."""

    def __init__(self, delay_s: float = 0.01, language: str = "en") -> None:
        self.delay_s = delay_s
        self.language = language
        self.jobs: list[DecodeJob] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled: list[str] = []
        self.offsets: dict[int, int] = {}

    def submit(self, job: DecodeJob) -> asyncio.Future[DecodeResult]:
        self.jobs.append(job)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        future: asyncio.Future[DecodeResult] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(self.delay_s, self._finish, job, future)
        return future

    def _finish(self, job: DecodeJob, future: asyncio.Future[DecodeResult]) -> None:
        self.in_flight -= 1
        if future.done():
            return
        marker = int(job.audio[0])  # the test audio holds its own sample index
        words = (
            (Word(" chunk", 0.5, 0.9, 0.9), Word(f" {marker}.", 1.0, 1.4, 0.9)) if job.options.word_timestamps else ()
        )
        future.set_result(
            DecodeResult(
                job_id=job.job_id,
                text=f" chunk {marker}.",
                tokens=(1, 2),
                language=self.language,
                avg_logprob=-0.2,
                compression_ratio=1.2,
                no_speech_prob=0.01,
                temperature=0.0,
                words=words,
            )
        )

    def cancel_owner(self, owner: str) -> None:
        self.cancelled.append(owner)


def _audio(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * S), dtype=np.float32)


def _speech_every(period_s: float, length_s: float) -> Callable[[np.ndarray], list[tuple[int, int]]]:
    def split(audio: np.ndarray) -> list[tuple[int, int]]:
        step = int(period_s * S)
        return [(s, min(len(audio), s + int(length_s * S))) for s in range(0, len(audio), step)]

    return split


def test_plan_chunks_merges_short_pauses_and_caps_length() -> None:
    speech = [(0, 3 * S), (int(3.5 * S), 6 * S), (20 * S, 22 * S)]
    assert plan_chunks(speech, total_samples=30 * S) == [(0, 6 * S), (20 * S, 22 * S)]
    many = [(i * 4 * S, i * 4 * S + 3 * S) for i in range(20)]
    chunks = plan_chunks(many, total_samples=80 * S, max_chunk_s=25.0)
    assert all(e - s <= 25 * S for s, e in chunks) and len(chunks) == 4


def test_plan_chunks_cuts_an_overlong_range_and_clips() -> None:
    chunks = plan_chunks([(-100, 60 * S + 100)], total_samples=60 * S, max_chunk_s=25.0)
    assert chunks[0][0] == 0 and chunks[-1][1] == 60 * S and len(chunks) == 3
    assert all(e - s <= 25 * S for s, e in chunks)


def test_decode_options_for_temperature() -> None:
    greedy = upload_decode_options(
        temperature=0.0, final_beam_size=5, task="transcribe", language="en", prompt="", word_timestamps=False
    )
    assert greedy.temperatures == FALLBACK_TEMPERATURES and greedy.beam_size == 5 and greedy.initial_prompt is None
    sampled = upload_decode_options(
        temperature=0.3,
        final_beam_size=5,
        task="translate",
        language=None,
        prompt="Names",
        word_timestamps=True,
    )
    assert sampled.temperatures == (0.3,) and sampled.beam_size == 1 and sampled.initial_prompt == "Names"


def _options(words: bool = False) -> DecodeOptions:
    return upload_decode_options(
        temperature=0.0,
        final_beam_size=5,
        task="transcribe",
        language="en",
        prompt=None,
        word_timestamps=words,
    )


async def test_segments_in_file_order_with_file_times_and_bounded_in_flight() -> None:
    engine = FakeEngine()
    audio = _audio(300)
    transcript = await transcribe_file(
        engine,
        audio,
        owner="r1",
        options=_options(words=True),
        split=_speech_every(30, 10),
        default_language="en",
        max_in_flight=3,
    )
    assert engine.max_in_flight == 3
    assert len(transcript.segments) == 10
    for i, segment in enumerate(transcript.segments):
        chunk_start = i * 30
        assert segment.id == i and segment.seek == chunk_start * 100
        assert segment.text == f" chunk {chunk_start * S}."
        assert segment.start == chunk_start + 0.5 and segment.end == chunk_start + 1.4  # words, in file time
        assert [w.start for w in segment.words] == [chunk_start + 0.5, chunk_start + 1.0]
    assert transcript.duration == 300.0 and transcript.language == "en"
    assert transcript.text.startswith("chunk 0. chunk 480000.")
    assert all(job.owner == "r1" and job.kind.name == "OFFLINE" for job in engine.jobs)


async def test_prompt_is_the_text_decoded_before_the_chunk() -> None:
    engine = FakeEngine()
    await transcribe_file(
        engine,
        _audio(100),
        owner="r",
        options=_options(),
        split=_speech_every(20, 5),
        default_language="en",
        max_in_flight=1,
    )
    prompts = [job.prompt_text for job in engine.jobs]
    assert prompts[0] == ""
    assert prompts[1] == "chunk 0."
    assert prompts[2] == f"chunk 0. chunk {20 * S}."


async def test_multilingual_detects_on_the_first_chunk_then_fixes_the_language() -> None:
    engine = FakeEngine(language="de")
    options = upload_decode_options(
        temperature=0.0,
        final_beam_size=5,
        task="transcribe",
        language=None,
        prompt=None,
        word_timestamps=False,
    )
    transcript = await transcribe_file(
        engine,
        _audio(100),
        owner="r",
        options=options,
        split=_speech_every(20, 5),
        default_language="en",
        detect_language=True,
    )
    assert engine.jobs[0].options.language is None
    assert all(job.options.language == "de" for job in engine.jobs[1:])
    assert transcript.language == "de"


async def test_stopping_early_cancels_the_queued_jobs() -> None:
    engine = FakeEngine(delay_s=0.05)
    segments = transcribe_segments(
        engine, _audio(300), owner="gone", options=_options(), split=_speech_every(30, 10), max_in_flight=4
    )
    first = await segments.__anext__()
    assert first.id == 0
    await segments.aclose()
    assert engine.cancelled == ["gone"]
    assert len(engine.jobs) < 10


async def test_silence_gives_an_empty_transcript() -> None:
    engine = FakeEngine()
    transcript = await transcribe_file(
        engine,
        np.zeros(5 * S, dtype=np.float32),
        owner="r",
        options=_options(),
        split=lambda a: [],
        default_language="en",
    )
    assert transcript.segments == () and transcript.text == "" and engine.jobs == []


async def test_chunks_finishing_together_refill_with_one_shared_prompt() -> None:
    engine = FakeEngine()
    await transcribe_file(
        engine, _audio(240), owner="r", options=_options(), split=_speech_every(30, 10), default_language="en"
    )
    prompts = [job.prompt_text for job in engine.jobs]
    assert prompts[:4] == [""] * 4
    assert len(set(prompts[4:8])) == 1 and prompts[4].count("chunk") == 4  # the whole first wave as context


async def test_a_finished_request_releases_its_owner_once_every_job_is_done() -> None:
    """As a closed session does: a decoder tier counts an owner as load until it is released."""
    engine = FakeEngine()
    await transcribe_file(
        engine, _audio(100), owner="done", options=_options(), split=_speech_every(30, 10), default_language="en"
    )
    assert engine.cancelled == ["done"] and engine.in_flight == 0 and len(engine.jobs) == 4
