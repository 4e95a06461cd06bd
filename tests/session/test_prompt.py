"""Rolling prompt: bound, resets, sentence style and the split for acoustic context."""

from __future__ import annotations

from stream_server.session.prompt import RollingPrompt


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


def test_clear_forgets_every_final():
    prompt = RollingPrompt(max_tokens=100)
    prompt.commit("bonjour", end_s=1.0, suspicious=False, start_s=0.0)
    prompt.clear()
    assert prompt.text(now_s=2.0) == "" and prompt.starts(now_s=2.0) == []
    prompt.commit("hello", end_s=3.0, suspicious=False, start_s=2.0)
    assert prompt.text(now_s=4.0) == "Hello."
