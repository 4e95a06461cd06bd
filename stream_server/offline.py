"""Long-file transcription through the shared engine: the algorithm behind the batch HTTP API.

Why not hand a whole file to the model: the engine is shared with live streams and decodes utterance-sized
windows. A file is therefore cut by the VAD into chunks of at most ``max_chunk_s`` (speech ranges, merged
across short pauses), each chunk is one ``JobKind.OFFLINE`` job, and at most ``max_in_flight`` jobs of one
request wait in the engine at a time. The scheduler ranks offline jobs after finals and partials, and the
in-flight cap keeps a one-hour upload from filling the queue: it advances a few chunks per batch while
streams keep their latency.

Context: each chunk is prompted with the text of the chunks before it (Whisper's "previous text"), as
``WhisperModel.transcribe(condition_on_previous_text=True)`` does. With several chunks in flight, a chunk's
prompt is the text decoded so far, which ends up to ``max_in_flight - 1`` chunks before it: the price of
keeping a few chunks in one batch. The prompt is dropped after a decode that looks hallucinated or needed a
high fallback temperature, as faster-whisper does, so one bad chunk does not poison the next.

Times: every segment and word is in seconds of the original file.

Runs on the event loop (it only awaits futures); VAD splitting runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .decode.types import FALLBACK_TEMPERATURES, SAMPLE_RATE, DecodeJob, DecodeOptions, DecodeResult, JobKind, Task
from .media import pcm16_to_float32

# faster-whisper drops the previous-text prompt after a decode that needed a temperature above this.
PROMPT_RESET_TEMPERATURE = 0.5
# Whisper's prompt holds at most 223 tokens; ~1.3 tokens per English word leaves room for the user's prompt.
PROMPT_MAX_WORDS = 120

Splitter = Callable[[np.ndarray], Sequence[tuple[int, int]]]


class DecodeEngine(Protocol):
    """What this module needs from ``stream_server.decode.engine.Engine``."""

    def submit(self, job: DecodeJob) -> asyncio.Future[DecodeResult]: ...

    def cancel_owner(self, owner: str) -> None: ...


@dataclass(frozen=True)
class TranscriptWord:
    word: str  # as Whisper writes it, usually with a leading space
    start: float  # seconds of the original file
    end: float
    probability: float


@dataclass(frozen=True)
class TranscriptSegment:
    """One decoded chunk, in OpenAI ``verbose_json`` terms."""

    id: int
    seek: int  # offset of the chunk in 10 ms mel frames, as Whisper reports it
    start: float  # seconds of the original file
    end: float
    text: str  # with a leading space, as OpenAI returns segment text
    tokens: tuple[int, ...]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: tuple[TranscriptWord, ...] = ()


@dataclass(frozen=True)
class Transcript:
    task: Task
    language: str
    duration: float  # seconds of decoded audio
    segments: tuple[TranscriptSegment, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        return join_segment_text(self.segments)


def join_segment_text(segments: Sequence[TranscriptSegment]) -> str:
    return " ".join(s.text.strip() for s in segments if s.text.strip())


def upload_decode_options(
    *,
    temperature: float,
    final_beam_size: int,
    task: Task,
    language: str | None,
    prompt: str | None,
    word_timestamps: bool,
) -> DecodeOptions:
    """Temperature 0 means OpenAI's (and faster-whisper's) fallback schedule with beam search; a positive
    temperature means sampling at exactly that temperature."""
    if temperature > 0:
        temperatures: tuple[float, ...] = (temperature,)
        beam_size = 1
    else:
        temperatures = FALLBACK_TEMPERATURES
        beam_size = final_beam_size
    return DecodeOptions(
        task=task,
        language=language,
        beam_size=beam_size,
        temperatures=temperatures,
        word_timestamps=word_timestamps,
        initial_prompt=prompt or None,
    )


def plan_chunks(
    speech: Sequence[tuple[int, int]],
    *,
    total_samples: int,
    max_chunk_s: float = 25.0,
    max_merge_gap_s: float = 2.0,
) -> list[tuple[int, int]]:
    """Merge VAD speech ranges into decode chunks of at most ``max_chunk_s``.

    Whisper reads a sentence better whole than in the pieces a VAD cuts at word pauses, and fewer chunks mean
    fewer encoder calls; a pause longer than ``max_merge_gap_s`` still separates chunks, so long silences are
    never sent to the model. Ranges are clipped to the audio and sorted; a range longer than the cap (the
    splitter should not produce one) is cut into equal pieces.
    """
    max_chunk = int(max_chunk_s * SAMPLE_RATE)
    max_gap = int(max_merge_gap_s * SAMPLE_RATE)
    ranges = sorted((max(0, s), min(total_samples, e)) for s, e in speech)
    chunks: list[tuple[int, int]] = []
    for start, end in ranges:
        if end <= start:
            continue
        if chunks and start - chunks[-1][1] <= max_gap and end - chunks[-1][0] <= max_chunk:
            chunks[-1] = (chunks[-1][0], max(end, chunks[-1][1]))
            continue
        pieces = -(-(end - start) // max_chunk)
        step = -(-(end - start) // pieces)
        chunks.extend((s, min(end, s + step)) for s in range(start, end, step))
    return chunks


def _prompt_tail(texts: collections.deque[str]) -> str:
    words = " ".join(texts).split()
    return " ".join(words[-PROMPT_MAX_WORDS:])


def _segment(index: int, chunk: tuple[int, int], result: DecodeResult) -> TranscriptSegment:
    chunk_start_s = chunk[0] / SAMPLE_RATE
    chunk_end_s = chunk[1] / SAMPLE_RATE

    def in_chunk(t: float) -> float:
        return round(min(max(chunk_start_s + t, chunk_start_s), chunk_end_s), 3)

    words = tuple(
        TranscriptWord(w.word, in_chunk(w.start), max(in_chunk(w.start), in_chunk(w.end)), w.probability)
        for w in result.words
    )
    start, end = round(chunk_start_s, 3), round(chunk_end_s, 3)
    if words:
        # The VAD pads its ranges; the words say where speech really is.
        start, end = words[0].start, max(words[-1].end, words[0].start)
    return TranscriptSegment(
        id=index,
        seek=int(chunk[0] * 100 // SAMPLE_RATE),
        start=start,
        end=end,
        text=" " + result.text.strip(),
        tokens=tuple(result.tokens),
        temperature=result.temperature,
        avg_logprob=result.avg_logprob,
        compression_ratio=result.compression_ratio,
        no_speech_prob=result.no_speech_prob,
        words=words,
    )


@dataclass
class _Progress:
    """What the submit loop knows so far: the language (once detected) and the prompt window."""

    language: str | None
    recent_texts: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=16))


async def transcribe_segments(
    engine: DecodeEngine,
    audio: np.ndarray,
    *,
    owner: str,
    options: DecodeOptions,
    split: Splitter,
    detect_language: bool = False,
    max_in_flight: int = 4,
    max_chunk_s: float = 25.0,
    language_found: Callable[[str], None] | None = None,
) -> AsyncIterator[TranscriptSegment]:
    """Decode ``audio`` (16 kHz mono int16 as uploads are held, or float32; not written to while this runs)
    chunk by chunk, yielding segments in file order as they complete. Each job gets a float32 copy of its
    chunk only.

    ``owner`` names the request to the engine; however the request ends (done, client gone, error), the
    generator's ``finally`` calls ``cancel_owner``: queued jobs of a request stopped early do not occupy the
    model, and a decoder tier stops counting the request as load.
    ``detect_language``: decode the first chunk alone and fix its detected language for the others (a
    multilingual model without a ``language`` field), reported through ``language_found``.
    Raises ``Overloaded`` from ``engine.submit`` and whatever a failed decode sets on its future.
    """
    speech = await asyncio.to_thread(split, audio)
    chunks = plan_chunks(speech, total_samples=len(audio), max_chunk_s=max_chunk_s)
    progress = _Progress(language=options.language)
    in_flight: collections.deque[tuple[tuple[int, int], asyncio.Future[DecodeResult]]] = collections.deque()
    next_chunk = 0
    segment_id = 0
    try:
        while next_chunk < len(chunks) or in_flight:
            limit = 1 if detect_language and progress.language is None else max_in_flight
            while next_chunk < len(chunks) and len(in_flight) < limit:
                start, end = chunks[next_chunk]
                job = DecodeJob(
                    owner=owner,
                    kind=JobKind.OFFLINE,
                    audio=pcm16_to_float32(audio[start:end]),
                    options=_with_language(options, progress.language),
                    prompt_text=_prompt_tail(progress.recent_texts),
                )
                in_flight.append((chunks[next_chunk], engine.submit(job)))
                next_chunk += 1
            # The head first (file order), then every later chunk that finished in the same batch: the refill
            # above then gives all new jobs the same, freshest prompt, so they stay batchable together.
            ready = [(in_flight[0][0], await in_flight[0][1])]
            in_flight.popleft()
            while in_flight and in_flight[0][1].done():
                chunk, future = in_flight.popleft()
                ready.append((chunk, future.result()))
            for chunk, result in ready:
                if progress.language is None:
                    progress.language = result.language
                    if language_found is not None:
                        language_found(result.language)
                if result.looks_hallucinated(options) or result.temperature > PROMPT_RESET_TEMPERATURE:
                    progress.recent_texts.clear()
                elif result.text.strip():
                    progress.recent_texts.append(result.text.strip())
                if not result.text.strip() or result.looks_silent(options):
                    continue
                yield _segment(segment_id, chunk, result)
                segment_id += 1
    finally:
        for _, future in in_flight:
            future.cancel()
        # The request is over, as a closed session is: release its owner. That drops its queued jobs when the
        # consumer stopped early or a decode failed, and frees its place on a decoder tier (a no-op in one
        # process once every job has finished).
        engine.cancel_owner(owner)


def _with_language(options: DecodeOptions, language: str | None) -> DecodeOptions:
    return options if language == options.language else dataclasses.replace(options, language=language)


async def transcribe_file(
    engine: DecodeEngine,
    audio: np.ndarray,
    *,
    owner: str,
    options: DecodeOptions,
    split: Splitter,
    default_language: str,
    detect_language: bool = False,
    max_in_flight: int = 4,
) -> Transcript:
    """The whole transcript of ``audio``: ``transcribe_segments`` collected (for non-streaming responses)."""
    detected: list[str] = []
    segments = [
        segment
        async for segment in transcribe_segments(
            engine,
            audio,
            owner=owner,
            options=options,
            split=split,
            detect_language=detect_language,
            max_in_flight=max_in_flight,
            language_found=detected.append,
        )
    ]
    return Transcript(
        task=options.task,
        language=options.language or (detected[0] if detected else default_language),
        duration=round(len(audio) / SAMPLE_RATE, 3),
        segments=tuple(segments),
    )
