"""VAD segmenter with the real webrtcvad and with an injected classifier."""

from __future__ import annotations

import numpy as np
import pytest

from stream_server.config import Settings
from stream_server.session.segmenter import (
    FRAME_SAMPLES,
    SegmenterConfig,
    UtteranceEnded,
    UtteranceStarted,
    VadSegmenter,
    split_utterances,
)
from tests.helpers import silence, synthesize
from tests.session.support import params, policy

RATE = 16000


def config(**overrides: object) -> SegmenterConfig:
    """The server's segmenter settings, overridden by name."""
    server = policy()
    settings: dict[str, object] = dict(
        aggressiveness=server.vad_aggressiveness,
        endpointing_ms=params().endpointing_ms,
        max_utterance_s=server.max_utterance_s,
        soft_max_utterance_s=server.soft_max_utterance_s,
    )
    return SegmenterConfig(**(settings | overrides))  # type: ignore[arg-type]


def split(audio: np.ndarray) -> list[tuple[int, int]]:
    server = policy()
    return split_utterances(
        audio,
        max_utterance_s=server.max_utterance_s,
        endpointing_ms=Settings().endpointing_ms,
        aggressiveness=server.vad_aggressiveness,
    )


def loud(frame: np.ndarray) -> bool:
    return float(np.abs(frame).mean()) > 0.05


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def push_all(seg: VadSegmenter, audio: np.ndarray, chunk: int = 1234) -> list:
    return [e for i in range(0, len(audio), chunk) for e in seg.push(audio[i : i + chunk])]


def test_preroll_tail_and_endpointing():
    cfg = config(endpointing_ms=500, preroll_ms=300, tail_ms=300)
    seg = VadSegmenter(cfg, loud)
    events = push_all(seg, np.concatenate([silence(1.0), tone(1.0), silence(0.45)]))
    assert [type(e) for e in events] == [UtteranceStarted]  # 450 ms of silence: not yet the end
    assert events[0].speech_sample == pytest.approx(RATE, abs=FRAME_SAMPLES)
    assert events[0].start_sample == pytest.approx(0.7 * RATE, abs=FRAME_SAMPLES)
    (ended,) = push_all(seg, silence(0.1))
    assert isinstance(ended, UtteranceEnded) and ended.reason == "endpoint"
    assert ended.speech_end_sample == pytest.approx(2 * RATE, abs=FRAME_SAMPLES)
    assert ended.end_sample == pytest.approx(2.3 * RATE, abs=FRAME_SAMPLES)
    assert len(ended.audio) == ended.end_sample - ended.start_sample


def room(seconds: float) -> np.ndarray:
    """Unvoiced room noise (too quiet for ``loud``), not digital silence."""
    rng = np.random.default_rng(1)
    return (0.01 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


def test_a_pause_ended_final_is_complete_early_in_its_pause():
    """Its audio is known ``heard_tail_ms`` into the pause (when its speculative decode starts) and is the same
    at the end: the stream's audio up to ``heard_tail_ms`` after the last voiced frame, digital silence after."""
    seg = VadSegmenter(config(endpointing_ms=500, tail_ms=300, heard_tail_ms=200), loud)
    push_all(seg, np.concatenate([silence(1.0), tone(1.0), room(0.18)]))
    assert seg.pending_end() is None
    push_all(seg, room(0.04))
    span = seg.pending_end()
    assert span is not None
    early = seg.final_audio(*span)
    (ended,) = [e for e in push_all(seg, room(0.4)) if isinstance(e, UtteranceEnded)]
    assert ended.reason == "endpoint" and (ended.start_sample, ended.end_sample) == span
    np.testing.assert_array_equal(ended.audio, early)
    assert ended.end_sample - ended.speech_end_sample == pytest.approx(0.3 * RATE, abs=FRAME_SAMPLES)
    heard = ended.speech_end_sample + int(0.2 * RATE) - ended.start_sample
    assert np.all(ended.audio[heard - 100 : heard] != 0)  # the room, heard
    assert not np.any(ended.audio[heard:])  # then digital silence


def test_a_flushed_utterance_keeps_the_audio_it_received():
    seg = VadSegmenter(config(endpointing_ms=500, tail_ms=300, heard_tail_ms=200), loud)
    push_all(seg, np.concatenate([tone(1.0), room(0.4)]))
    (ended,) = seg.flush()
    assert ended.reason == "flush" and ended.end_sample == int(1.4 * RATE)
    assert np.all(ended.audio[-100:] != 0)


def test_short_clicks_do_not_start_speech():
    seg = VadSegmenter(config(), loud)
    clicks = np.concatenate([np.concatenate([tone(0.03), silence(0.3)]) for _ in range(10)])
    assert push_all(seg, clicks) == []


def test_flush_ends_the_open_utterance():
    seg = VadSegmenter(config(), loud)
    push_all(seg, tone(1.0))
    (ended,) = seg.flush()
    assert ended.reason == "flush" and ended.end_sample == RATE
    assert seg.flush() == []


def test_buffer_stays_bounded_over_a_long_stream():
    seg = VadSegmenter(config(max_utterance_s=5.0), loud)
    capacity = len(seg._buf)
    for _ in range(60):  # two minutes of speech and pauses
        push_all(seg, np.concatenate([tone(1.5), silence(0.6)]), chunk=1600)
    assert len(seg._buf) == capacity


def test_real_webrtcvad_finds_two_spoken_sentences():
    audio = np.concatenate(
        [
            silence(0.5),
            synthesize("Good morning everyone."),
            silence(1.0),
            synthesize("Let us begin the meeting."),
            silence(1.0),
        ]
    )
    ranges = split(audio)
    assert len(ranges) == 2
    (s1, e1), (s2, e2) = ranges
    assert s1 < e1 <= s2 < e2 <= len(audio)


def test_near_silent_noise_is_not_speech():
    rng = np.random.default_rng(0)
    hum = (rng.standard_normal(RATE * 5) * 10 ** (-60 / 20)).astype(np.float32)  # -60 dBFS dither
    assert split(hum) == []


def test_a_long_utterance_ends_at_a_shorter_pause():
    cfg = config(endpointing_ms=500, soft_max_utterance_s=3.0, soft_endpointing_ms=200)
    seg = VadSegmenter(cfg, loud)
    early_pause = np.concatenate([tone(1.0), silence(0.3), tone(2.5)])  # pause before 3 s: not an end
    events = push_all(seg, np.concatenate([early_pause, silence(0.3), tone(1.0), silence(0.6)]))
    ended = [e for e in events if isinstance(e, UtteranceEnded)]
    assert [e.reason for e in ended] == ["pause", "endpoint"]
    assert ended[0].speech_end_sample == pytest.approx(3.8 * RATE, abs=FRAME_SAMPLES)


def test_without_endpointing_only_flush_and_the_length_cut_end_an_utterance():
    seg = VadSegmenter(config(endpointing_ms=None, max_utterance_s=6.0), loud)
    events = push_all(seg, np.concatenate([tone(1.0), silence(2.0), tone(1.0), silence(1.0)]))
    assert [type(e) for e in events] == [UtteranceStarted]  # pauses of 2 s and 1 s end nothing
    assert seg.pending_end() is None  # and nothing is speculated on
    (ended,) = seg.flush()
    assert ended.reason == "flush" and ended.end_sample == 5 * RATE
    events = push_all(seg, np.concatenate([tone(3.0), silence(4.0)]))
    assert [e.reason for e in events if isinstance(e, UtteranceEnded)] == ["max_length"]


def test_clear_discards_the_open_utterance_and_its_audio():
    seg = VadSegmenter(config(), loud)
    push_all(seg, tone(1.0))
    seg.clear()
    assert not seg.in_speech and seg.flush() == []
    events = push_all(seg, np.concatenate([silence(0.1), tone(1.0), silence(1.0)]))
    started, ended = events
    assert isinstance(started, UtteranceStarted) and isinstance(ended, UtteranceEnded)
    assert started.start_sample >= RATE  # the pre-roll does not reach into the discarded audio
