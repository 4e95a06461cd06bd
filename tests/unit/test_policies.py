"""The small streaming policies: stable prefix and rolling prompt."""

from __future__ import annotations

import numpy as np
import pytest

from stream_server.session.agreement import StablePrefix
from stream_server.session.prompt import RollingPrompt


def test_stable_prefix_needs_two_agreeing_hypotheses_and_never_shrinks():
    agreement = StablePrefix()
    assert agreement.update("the cat") == ("", "the cat")
    assert agreement.update("the cat sat") == ("the cat", "the cat sat")
    assert agreement.update("the cat sat on") == ("the cat sat", "the cat sat on")
    # a hypothesis that rewrites stable words cannot retract them
    assert agreement.update("a hat sat on the mat") == ("the cat sat", "the cat sat on the mat")
    assert agreement.update("a hat sat on the mat") == ("the cat sat", "the cat sat on the mat")


def test_stable_prefix_ignores_case_and_punctuation_when_comparing():
    agreement = StablePrefix()
    agreement.update("Hello, world")
    stable, shown = agreement.update("hello world again")
    assert stable == "hello world"
    assert shown == "hello world again"


def test_rolling_prompt_window_and_resets():
    prompt = RollingPrompt(max_tokens=5, reset_silence_s=10)
    prompt.commit("one two three", end_s=1.0, suspicious=False)
    prompt.commit("four five six seven", end_s=2.0, suspicious=False)
    text = prompt.text(now_s=3.0)
    assert len(text) <= 20 and text.endswith("six seven.") and not text.startswith(" ")
    assert prompt.text(now_s=20.0) == ""
    prompt.commit("eight", end_s=21.0, suspicious=False)
    prompt.commit("loop loop loop", end_s=22.0, suspicious=True)
    assert prompt.text(now_s=23.0) == ""


def test_rolling_prompt_holds_finals_as_sentences():
    # Whisper follows its prompt's style: bare fragments in it make the next ones come out bare
    prompt = RollingPrompt()
    for i, text in enumerate(["by Arthur Griffiths.", "Section 5", "newgate down to 1818,", "part two", "Really?"]):
        prompt.commit(text, end_s=float(i), suspicious=False)
    assert prompt.text(now_s=5.0) == "By Arthur Griffiths. Section 5. Newgate down to 1818, part two. Really?"


def test_rolling_prompt_splits_off_the_newest_finals_for_a_context():
    prompt = RollingPrompt(max_tokens=100)
    for start, text in [(0.0, "one"), (2.0, "two"), (4.0, ""), (5.0, "three?")]:
        prompt.commit(text, end_s=start + 1.0, suspicious=False, start_s=start)
    assert prompt.starts(now_s=6.0) == [0.0, 2.0, 5.0]  # an empty final leaves nothing to force
    assert prompt.split(2.0, now_s=6.0) == ("One.", "Two. Three?")
    assert prompt.split(0.0, now_s=6.0) == ("", "One. Two. Three?")
    assert prompt.text(now_s=6.0) == "One. Two. Three?"
    assert prompt.starts(now_s=60.0) == []  # a long silence drops them all


def test_audio_history_keeps_the_newest_samples_by_absolute_index():
    from stream_server.session.history import AudioHistory

    history = AudioHistory(seconds=0.001)  # 16 samples
    sent = (np.arange(-20, 20, dtype=np.int16) * 1000).astype(np.float32) / 32768
    for chunk in np.array_split(sent, 7):  # wraps around the ring several times
        history.push(chunk)
    assert (history.start, history.end) == (24, 40)
    np.testing.assert_array_equal(history.audio(24, 40), sent[24:40])  # 16-bit audio comes back exactly
    np.testing.assert_array_equal(history.audio(30, 33), sent[30:33])
    with pytest.raises(ValueError):
        history.audio(20, 30)  # already overwritten
    history.push(np.ones(100, dtype=np.float32) * 2.0)  # one push larger than the ring; clipped to full scale
    assert (history.start, history.end) == (124, 140)
    assert np.all(history.audio(124, 140) == 32767 / 32768)
