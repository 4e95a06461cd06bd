"""Repetition loops cut to one copy; repetitions people really say left alone."""

from __future__ import annotations

import pytest

from stream_server.decode.repeats import collapse_loops, drop_repeats, repeated_tail

SEEN = [  # what tiny.en wrote on ../shared/audio fragments, and what is kept
    (
        "but when the ward was obliged to accommodate double the number as was frequently the case as was "
        "frequently the case as was frequently the case.",
        "but when the ward was obliged to accommodate double the number as was frequently the case",
    ),
    (
        "for for 14 years 14 years 14 years 14 years 14 years 14 years 14 years 14 years and 3 of them",
        "for for 14 years and 3 of them",
    ),
    (
        "a foot and a half, quote, quote, quote, quote, quote, quote, quote. A common",
        "a foot and a half, quote, A common",
    ),
    ("has never been surpassed... ... ... ... ... ... ...", "has never been surpassed..."),
    (  # cut off mid-copy by the token cap (the JFK clip of ../shared/audio)
        "And so my fellow Americans. And so my fellow Americans. And so my fellow",
        "And so my fellow Americans.",
    ),
    ("... ... ... It is of the first importance", "It is of the first importance"),
    (
        "The children are playing football in the park. The children are playing football in the park",
        "The children are playing football in the park.",
    ),
]

SPEECH = [
    "no, no, no, I said no",
    "no no no no",
    "thank you thank you",
    "had had that that",
    "We will go. We will go to the beach and swim in the sea all day",
    "One, two, three, four, five, six.",
    "Wait... what? ... no.",
    "",
]


@pytest.mark.parametrize(("decoded", "kept"), SEEN)
def test_loops_keep_their_first_copy(decoded, kept):
    assert drop_repeats(decoded) == kept


@pytest.mark.parametrize("text", SPEECH)
def test_real_repetitions_are_left_alone(text):
    assert drop_repeats(text) == text
    assert collapse_loops(text) == text


def test_a_doubled_utterance_is_measured_in_words():
    doubled = "The children are playing football in the park. The children are playing football in the park"
    assert repeated_tail(doubled) == 8
    assert repeated_tail("thank you thank you") == 0  # two words: too short to call a loop


def test_a_loop_in_the_middle_keeps_what_follows():
    text = "we met with its five wards with its five wards with its five wards which held seventy men"
    assert collapse_loops(text) == "we met with its five wards which held seventy men"
