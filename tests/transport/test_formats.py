"""Response formats: pure rendering, no server and no model."""

from __future__ import annotations

import json
import re

import pytest

from stream_server.offline import Transcript, TranscriptSegment, TranscriptWord
from stream_server.transport.http import formats

SRT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")
VTT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")


def _segment(i: int, start: float, end: float, text: str, words: tuple[TranscriptWord, ...] = ()) -> TranscriptSegment:
    return TranscriptSegment(
        id=i,
        seek=int(start * 100),
        start=start,
        end=end,
        text=" " + text,
        tokens=(1, 2, 3),
        temperature=0.0,
        avg_logprob=-0.2,
        compression_ratio=1.3,
        no_speech_prob=0.01,
        words=words,
    )


def _words(text: str, start: float, step: float) -> tuple[TranscriptWord, ...]:
    return tuple(
        TranscriptWord(" " + w, round(start + i * step, 3), round(start + (i + 1) * step - 0.05, 3), 0.9)
        for i, w in enumerate(text.split())
    )


LONG = (
    "Young Fitzooth had been commanded to his mother's chamber so soon as he had come out from his converse "
    "with the squire. There befell an anxious interview, Mistress Fitzooth arguing for and against the "
    "squire's project in a breath."
)


def _transcript(with_words: bool) -> Transcript:
    first = "Hello there."
    segments = (
        _segment(0, 0.5, 1.6, first, _words(first, 0.5, 0.5) if with_words else ()),
        _segment(1, 2.0, 20.0, LONG, _words(LONG, 2.0, 0.45) if with_words else ()),
    )
    return Transcript(task="transcribe", language="en", duration=21.0, segments=segments)


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_srt(body: str) -> list[tuple[float, float, list[str]]]:
    cues = []
    for number, block in enumerate(body.strip().split("\n\n"), start=1):
        lines = block.split("\n")
        assert lines[0] == str(number)
        match = SRT_TIME.match(lines[1])
        assert match, lines[1]
        g = match.groups()
        cues.append((_seconds(*g[:4]), _seconds(*g[4:]), lines[2:]))
    return cues


def parse_vtt(body: str) -> list[tuple[float, float, list[str]]]:
    assert body.startswith("WEBVTT\n\n")
    cues = []
    for block in body[len("WEBVTT\n\n") :].strip().split("\n\n"):
        lines = block.split("\n")
        match = VTT_TIME.match(lines[0])
        assert match, lines[0]
        g = match.groups()
        cues.append((_seconds(*g[:4]), _seconds(*g[4:]), lines[1:]))
    return cues


@pytest.mark.parametrize(
    ("seconds", "marker", "expected"),
    [
        (0, ",", "00:00:00,000"),
        (1.2345, ".", "00:00:01.234"),
        (3725.5, ",", "01:02:05,500"),
        (0.9996, ".", "00:00:01.000"),
        (-0.1, ",", "00:00:00,000"),
        (360000.0, ".", "100:00:00.000"),
    ],
)
def test_format_timestamp(seconds: float, marker: str, expected: str) -> None:
    assert formats.format_timestamp(seconds, marker) == expected


@pytest.mark.parametrize("with_words", [True, False])
@pytest.mark.parametrize("kind", ["srt", "vtt"])
def test_subtitles_are_valid_and_readable(kind: str, with_words: bool) -> None:
    transcript = _transcript(with_words)
    body = formats.render(transcript, kind)  # type: ignore[arg-type]
    assert isinstance(body, str)
    cues = parse_srt(body) if kind == "srt" else parse_vtt(body)
    assert len(cues) >= 4  # the long segment is split into several cues
    previous_end = 0.0
    for start, end, lines in cues:
        assert previous_end <= start <= end <= transcript.duration
        assert 1 <= len(lines) <= 2
        assert all(0 < len(line) <= 42 for line in lines)
        assert end - start <= 7.0 + 1e-6
        previous_end = end
    words_out = " ".join(" ".join(lines) for _, _, lines in cues).split()
    assert words_out == transcript.text.split()


def test_cues_follow_word_timestamps() -> None:
    cues = formats.split_cues(_transcript(True).segments, duration=21.0)
    assert cues[0].start == 0.5 and cues[0].lines == ("Hello there.",)
    assert cues[1].start == 2.0  # the long segment's first word


def test_two_lines_are_balanced() -> None:
    words = _words("one two three four five six seven eight nine ten eleven twelve", 0, 0.3)
    lines = formats.wrap_lines(words, 42)
    assert len(lines) == 2
    assert abs(len(lines[0]) - len(lines[1])) <= 8


def test_overlong_word_gets_its_own_line() -> None:
    word = "x" * 60
    cues = formats.split_cues([_segment(0, 0.0, 3.0, f"a {word} b")], duration=3.0)
    assert any(word in cue.lines for cue in cues)


def test_zero_length_words_still_give_increasing_cues() -> None:
    words = tuple(TranscriptWord(" w" + str(i), 1.0, 1.0, 0.5) for i in range(30))
    cues = formats.split_cues([_segment(0, 1.0, 1.0, " ".join(w.word for w in words), words)], duration=5.0)
    ends = [c.end for c in cues]
    starts = [c.start for c in cues]
    assert starts == sorted(starts) and all(c.end >= c.start for c in cues)
    assert all(s >= e for s, e in zip(starts[1:], ends, strict=False)) and max(ends) <= 5.0


def test_empty_transcript() -> None:
    empty = Transcript(task="transcribe", language="en", duration=2.0, segments=())
    assert formats.render(empty, "srt") == ""
    assert formats.render(empty, "vtt") == "WEBVTT\n\n"
    assert formats.render(empty, "text") == "\n"
    assert formats.render(empty, "json") == {"text": "", "usage": {"type": "duration", "seconds": 2}}


def test_json_and_text() -> None:
    transcript = _transcript(False)
    assert formats.render(transcript, "text") == "Hello there. " + LONG + "\n"
    body = formats.render(transcript, "json")
    assert isinstance(body, dict) and body["text"] == "Hello there. " + LONG
    json.dumps(body)


def test_verbose_json_shape() -> None:
    transcript = _transcript(True)
    body = formats.render_verbose_json(transcript, ("segment", "word"))
    assert body["task"] == "transcribe" and body["language"] == "english" and body["duration"] == 21.0
    assert body["text"] == transcript.text
    keys = {
        "id",
        "seek",
        "start",
        "end",
        "text",
        "tokens",
        "temperature",
        "avg_logprob",
        "compression_ratio",
        "no_speech_prob",
    }
    assert all(set(s) == keys for s in body["segments"])
    assert body["words"][0] == {"word": "Hello", "start": 0.5, "end": 0.95}
    json.dumps(body)


def test_verbose_json_granularities() -> None:
    transcript = _transcript(True)
    only_segments = formats.render_verbose_json(transcript)
    assert "segments" in only_segments and "words" not in only_segments
    only_words = formats.render_verbose_json(transcript, ("word",))
    assert "segments" not in only_words and len(only_words["words"]) == len(transcript.text.split())


def test_language_names() -> None:
    assert formats.LANGUAGE_NAMES["en"] == "english"
    assert formats.LANGUAGE_NAMES["ht"] == "haitian creole"
    assert len(formats.LANGUAGE_NAMES) == 100
