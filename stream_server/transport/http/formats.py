"""OpenAI ``response_format`` renderings of a transcript: json, text, srt, vtt, verbose_json.

Pure functions, no I/O: the HTTP route picks one and sends its output. Subtitles need more than one line
per segment: a Whisper segment can hold 25 s of speech, far more than a viewer can read at once, so
``split_cues`` cuts segments into cues of at most ``max_lines`` lines of at most ``max_line_chars``
characters (42 and 2: the common broadcast/Netflix guideline) and at most ``max_cue_s`` seconds, timed by
word timestamps when the decode has them, otherwise by spreading the segment's time over its characters.
Cue times never decrease, never overlap and stay inside ``[0, duration]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ...offline import Transcript, TranscriptSegment, TranscriptWord
from ..languages import LANGUAGE_NAMES

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)
TimestampGranularity = Literal["segment", "word"]


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


def format_timestamp(seconds: float, decimal_marker: str) -> str:
    """``HH:MM:SS,mmm`` (SRT, marker ``,``) or ``HH:MM:SS.mmm`` (WebVTT, marker ``.``)."""
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def _timed_words(segment: TranscriptSegment) -> list[TranscriptWord]:
    """The segment's words; without word timestamps, its time spread over its characters."""
    if segment.words:
        return list(segment.words)
    tokens = segment.text.split()
    if not tokens:
        return []
    span = max(segment.end - segment.start, 0.0)
    total_chars = sum(len(t) + 1 for t in tokens)
    words, t = [], segment.start
    for token in tokens:
        length = span * (len(token) + 1) / total_chars
        words.append(TranscriptWord(" " + token, t, t + length, 1.0))
        t += length
    return words


def _text(words: Sequence[TranscriptWord]) -> str:
    return "".join(w.word for w in words).strip()


def _greedy_lines(words: Sequence[TranscriptWord], max_line_chars: int) -> list[list[TranscriptWord]]:
    lines: list[list[TranscriptWord]] = []
    for word in words:
        if lines and len(_text([*lines[-1], word])) <= max_line_chars:
            lines[-1].append(word)
        else:
            lines.append([word])
    return lines


def wrap_lines(words: Sequence[TranscriptWord], max_line_chars: int) -> list[str]:
    """As few lines as the limit allows; two lines are balanced (no long line over a one-word line)."""
    lines = _greedy_lines(words, max_line_chars)
    if len(lines) != 2:
        return [_text(line) for line in lines]
    best: tuple[int, int] | None = None
    for cut in range(1, len(words)):
        first, second = _text(words[:cut]), _text(words[cut:])
        if len(first) <= max_line_chars and len(second) <= max_line_chars:
            width = max(len(first), len(second))
            if best is None or width < best[0]:
                best = (width, cut)
    if best is None:
        return [_text(line) for line in lines]
    return [_text(words[: best[1]]), _text(words[best[1] :])]


def split_cues(
    segments: Sequence[TranscriptSegment],
    *,
    duration: float | None = None,
    max_line_chars: int = 42,
    max_lines: int = 2,
    max_cue_s: float = 7.0,
) -> list[Cue]:
    """Subtitle cues for ``segments`` (in time order); see the module docstring for the rules."""
    groups: list[list[TranscriptWord]] = []
    for segment in segments:
        current: list[TranscriptWord] = []
        for word in _timed_words(segment):
            candidate = [*current, word]
            too_long = len(_greedy_lines(candidate, max_line_chars)) > max_lines
            if current and (too_long or word.end - current[0].start > max_cue_s):
                groups.append(current)
                candidate = [word]
            current = candidate
            # A sentence end is a natural cue end once the cue holds a line's worth of text.
            if word.word.rstrip().endswith((".", "?", "!")) and len(_text(current)) >= max_line_chars * 0.6:
                groups.append(current)
                current = []
        if current:
            groups.append(current)

    cues: list[Cue] = []
    previous_end = 0.0
    limit = math.inf if duration is None else duration
    for group in groups:
        start = min(max(group[0].start, previous_end), limit)
        end = min(max(group[-1].end, start), limit)
        if end <= start:  # zero-length words (a model quirk): show the cue a moment when there is room
            end = min(start + 0.2, limit)
        lines = tuple(line.replace("-->", "->") for line in wrap_lines(group, max_line_chars))
        cues.append(Cue(round(start, 3), round(end, 3), lines))
        previous_end = end
    return cues


def render_srt(transcript: Transcript) -> str:
    blocks = [
        f"{i}\n{format_timestamp(c.start, ',')} --> {format_timestamp(c.end, ',')}\n" + "\n".join(c.lines)
        for i, c in enumerate(split_cues(transcript.segments, duration=transcript.duration), start=1)
    ]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def render_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{format_timestamp(c.start, '.')} --> {format_timestamp(c.end, '.')}\n" + "\n".join(c.lines)
        for c in split_cues(transcript.segments, duration=transcript.duration)
    ]
    return "WEBVTT\n\n" + "".join(block + "\n\n" for block in blocks)


def render_text(transcript: Transcript) -> str:
    return transcript.text + "\n"


def _usage(transcript: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(transcript.duration)}


def render_json(transcript: Transcript) -> dict[str, Any]:
    return {"text": transcript.text, "usage": _usage(transcript)}


def render_verbose_json(
    transcript: Transcript, granularities: Sequence[TimestampGranularity] = ("segment",)
) -> dict[str, Any]:
    """OpenAI's verbose shape. Like OpenAI, ``segments`` come with the ``segment`` granularity (the default)
    and ``words`` only when the ``word`` granularity is asked for."""
    body: dict[str, Any] = {
        "task": transcript.task,
        "language": LANGUAGE_NAMES.get(transcript.language, transcript.language),
        "duration": transcript.duration,
        "text": transcript.text,
    }
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": s.id,
                "seek": s.seek,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": list(s.tokens),
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in transcript.segments
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end} for s in transcript.segments for w in s.words
        ]
    body["usage"] = _usage(transcript)
    return body


def render(
    transcript: Transcript,
    response_format: ResponseFormat,
    granularities: Sequence[TimestampGranularity] = ("segment",),
) -> dict[str, Any] | str:
    """A JSON-able dict for ``json``/``verbose_json``, a string for the text formats."""
    if response_format == "json":
        return render_json(transcript)
    if response_format == "verbose_json":
        return render_verbose_json(transcript, granularities)
    if response_format == "srt":
        return render_srt(transcript)
    if response_format == "vtt":
        return render_vtt(transcript)
    return render_text(transcript)


MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "text/plain; charset=utf-8",  # what OpenAI sends; clients treat the body as a string
    "vtt": "text/vtt; charset=utf-8",
}
