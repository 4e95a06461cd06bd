"""The small streaming policies: stable prefix and rolling prompt."""

from __future__ import annotations

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
