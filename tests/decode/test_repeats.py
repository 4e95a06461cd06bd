"""Repetition loops cut to one copy; repetitions people really say left alone."""

from __future__ import annotations

import pytest

from stream_server.decode.repeats import collapse_loops, drop_repeats, near_repeat, repeated_tail

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
    (  # a phrase said twice with words changed (``near_repeat``): a 2.4 s fragment
        "sentenced to fines or a short imprisonment sentence to fines or short imprisonment",
        "sentenced to fines or a short imprisonment",
    ),
    (  # the second copy cut short
        "In the same rooms with transbers and felons. In the same rooms with transporters",
        "In the same rooms with transbers and felons.",
    ),
    ("as was frequently the case as was frequently the", "as was frequently the case"),
    (  # two copies and a third with one word changed (the JFK clip at -50 dBFS, a greedy final)
        "and so am I fell America and, so am I fell America and so am I fell Americans Ask not.",
        "and so am I fell America Ask not.",
    ),
]
SEEN_SECONDS = 2.0  # the fragments above were 1-3 s long

SPEECH = [
    "no, no, no, I said no",
    "no no no no",
    "thank you thank you",
    "had had that that",
    "We will go. We will go to the beach and swim in the sea all day",
    "One, two, three, four, five, six.",
    "I told you so. I told him so.",  # said twice with a word changed, at the pace of speech
    "I want this one, I want this one, I want that one.",  # two copies and a changed one, at the pace of speech
    "Wait... what? ... no.",
    "",
]


@pytest.mark.parametrize(("decoded", "kept"), SEEN)
def test_loops_keep_their_first_copy(decoded, kept):
    assert drop_repeats(decoded, SEEN_SECONDS) == kept


@pytest.mark.parametrize("text", SPEECH)
def test_real_repetitions_are_left_alone(text):
    seconds = len(text.split()) / 3.0  # read speech: about three words a second
    assert drop_repeats(text, seconds) == text
    assert collapse_loops(text) == text


def test_a_phrase_said_twice_with_changes_is_a_repeat_only_when_too_fast_for_speech():
    text = "no where they miss the men ons no more they missed the men ons"  # 14 words
    assert near_repeat(text, duration_s=2.6) == 7  # 5.4 words a second: two copies in the time of one
    assert near_repeat(text, duration_s=4.0) == 0  # 3.5 words a second: somebody may have said it twice
    assert near_repeat("we will go to the beach and swim in the sea all day", duration_s=1.0) == 0  # no copy


def test_the_second_copy_starts_where_the_first_did():
    # the most similar split with equal halves would be "... transbers and | felons. In the same ..."
    assert near_repeat("In the same rooms with transbers and felons. In the same rooms with transporters", 2.5) == 8
    assert near_repeat("Prisonors were committed to it. Prisoners were committed to it.", 2.0) == 5


def test_a_doubled_utterance_is_measured_in_words():
    doubled = "The children are playing football in the park. The children are playing football in the park"
    assert repeated_tail(doubled) == 8
    assert repeated_tail("thank you thank you") == 0  # two words: too short to call a loop


def test_a_loop_in_the_middle_keeps_what_follows():
    text = "we met with its five wards with its five wards with its five wards which held seventy men"
    assert collapse_loops(text) == "we met with its five wards which held seventy men"
